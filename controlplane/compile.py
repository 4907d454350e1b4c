"""The reference semantics: the objects that exist in, every Envoy resource and report out.

`compile` is a pure function (no event loop, no controller, no cache): frontend (Ingresses ->
IngressIR -> merged hosts, TLS plan, cluster variants) -> one GatewayIR -> `translate_gateway`.
`meridian translate`, the golden tests and the differential test use it; the incremental
`Controller` is an optimisation that must produce the same resources from the same objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.config import GatewayConfig
from controlplane.eastwest import east_west_vhosts
from controlplane.engine.gateway_ports import port_resources
from controlplane.gatewayapi.build import GatewayApiResult
from controlplane.gatewayapi.frontend import add_certificates, gateway_api
from controlplane.gatewayapi.grpcroute import GRPC_UPSTREAM
from controlplane.gatewayapi.merge import merge_gateway_routes
from controlplane.ingress import registry
from controlplane.ingress.aliases import assign_aliases
from controlplane.ingress.classes import ClassView, is_accepted
from controlplane.ingress.convert import IngressIR, Lookups, build_ingress
from controlplane.ingress.hosts import HostResult, merge_host
from controlplane.ingress.reports import failed_ingress, ingress_report
from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ingress.tls import TlsPlan, plan_tls
from controlplane.ingress.variants import ClusterVariants
from controlplane.ir import CertificateSecret, IngressRef, ServiceCluster, VirtualHost
from controlplane.ir.gateway import ClusterEndpoints, GatewayIR, RouteTableIR
from controlplane.ir.names import ClusterName
from controlplane.ir.policies import UpstreamPolicy, endpoint_labels
from controlplane.knative import frontend as kn
from controlplane.knative.build import KnativeResult
from controlplane.services import ServiceIndex
from controlplane.store import (
    ENDPOINT_SLICE,
    INGRESS,
    INGRESS_CLASS,
    KNATIVE_KINDS,
    SECRET,
    SERVICE,
    KubeObject,
    object_name,
)
from controlplane.translate.gateway import translate_gateway
from controlplane.translate.listeners import EAST_WEST_ROUTES, HTTP_ROUTES, HTTPS_ROUTES
from controlplane.translate.resources import certificate_secret
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, make_resource

log = logging.getLogger("controlplane.compile")


@dataclass(frozen=True)
class SourceObjects:
    """The objects of every source cluster: cluster id -> kind -> objects. `primary` is the
    primary cluster's id (its localities come first when a Service fails over)."""

    clusters: Mapping[str, Mapping[str, Iterable[KubeObject]]]
    primary: str | None = None


@dataclass(frozen=True)
class Compiled:
    """What `compile` produced: the IR, the resources (by type URL and name) and the reports."""

    gateway: GatewayIR
    resources: dict[str, dict[str, Resource]]
    reports: list[dict[str, Any]]
    irs: dict[IngressRef, IngressIR] = field(default_factory=dict)
    host_results: dict[str, HostResult] = field(default_factory=dict)
    gateway_api: GatewayApiResult = field(default_factory=GatewayApiResult)
    knative: KnativeResult = field(default_factory=KnativeResult)


def compile(objects: SourceObjects, config: GatewayConfig) -> Compiled:
    """Every resource and report for `objects` (see the module docstring)."""
    frontend = _Frontend(objects, config)
    gw = frontend.gateway()
    problems = gw.problems()
    if problems:  # a frontend bug: say so loudly (tests fail on it), still translate what there is
        log.error("the gateway IR is inconsistent:\n  %s", "\n  ".join(problems))
    body = translate_gateway(gw)
    # Gateway listeners on ports of their own: their listeners, route tables, certificates.
    own = port_resources(frontend.gateway_api.ports, config.listen_address, frontend.certs)
    for type_url, by_name in own.resources.items():
        body[type_url].update(by_name)
    for name in own.secrets:
        body[rt.SECRET][name] = certificate_secret(frontend.certs[name])
    resources = {t: {n: make_resource(n, t, m) for n, m in by_name.items()} for t, by_name in body.items()}
    address = config.publish_address or config.listen_address
    f = frontend
    reports = [ingress_report(f.irs[r], f.host_results, f.host_errors, address, f.plan, f.certs)
               for r in sorted(f.irs)]  # fmt: skip
    return Compiled(gw, resources, reports, frontend.irs, frontend.host_results, frontend.gateway_api,
                    frontend.knative)  # fmt: skip


class _Frontend:
    """Objects -> GatewayIR, all at once. The same steps the controller takes per change."""

    def __init__(self, objects: SourceObjects, config: GatewayConfig) -> None:
        self.config = config
        self.primary = objects.primary
        self.by_kind: dict[str, dict[str, dict[tuple[str, str], KubeObject]]] = {}
        for cluster, kinds in objects.clusters.items():
            store = self.by_kind.setdefault(cluster, {})
            for kind, objs in kinds.items():
                store[kind] = {object_name(o): o for o in objs}
        self.services = ServiceIndex()
        for cluster, kinds in self.by_kind.items():
            for (ns, name), obj in kinds.get(SERVICE, {}).items():
                self.services.set_service(cluster, ns, name, obj)
            for (ns, name), obj in kinds.get(ENDPOINT_SLICE, {}).items():
                self.services.set_slice(cluster, ns, name, obj)
        self.irs: dict[IngressRef, IngressIR] = {}
        self.host_results: dict[str, HostResult] = {}
        self.host_errors: dict[str, str] = {}
        self.plan = TlsPlan()
        self.certs: dict[str, CertificateSecret] = {}  # usable certificates, by SDS name
        self.gateway_api = GatewayApiResult()
        self.knative = KnativeResult()

    def _secret(self, cluster: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.by_kind.get(cluster, {}).get(SECRET, {}).get((namespace, name))

    def _ingresses(self) -> None:
        for cluster, kinds in self.by_kind.items():
            view = ClassView.from_objects(kinds.get(INGRESS_CLASS, {}).values())
            for (ns, name), obj in kinds.get(INGRESS, {}).items():
                ref = IngressRef(cluster, ns, name)
                lookups = Lookups(resolve_port=self.services.resolve_port, get_secret=self._secret)
                try:
                    accepted = is_accepted(obj, view, self.config.classes)
                    self.irs[ref] = build_ingress(obj, ref, class_accepted=accepted, lookups=lookups)
                except Exception as exc:  # a bug costs this Ingress only
                    log.exception("building Ingress %s failed; it is not served", ref)
                    self.irs[ref] = failed_ingress(obj, ref, exc)

    def gateway(self) -> GatewayIR:
        self._ingresses()
        served = sorted((ir for ir in self.irs.values() if ir.served), key=IngressIR.order_key)

        # TLS: certificates that decode, then which host gets which (oldest Ingress wins).
        certs = self.certs
        for cluster, kinds in self.by_kind.items():
            for (ns, name), obj in kinds.get(SECRET, {}).items():
                try:
                    chain, key = decode_tls_secret(obj)
                except ValueError:
                    continue
                sds = f"{cluster}/{ns}/{name}"
                certs[sds] = CertificateSecret(sds, chain, key)
        tls_irs = [ir for ir in served if ir.tls or registry.passes_tls_through(ir.annotations)]
        default = self.config.default_certificate_name(self.primary, certs)
        if default is not None and default not in certs and self.config.generated_certificate is not None:
            certs[default] = self.config.generated_certificate
        plan = self.plan = plan_tls(tls_irs, certs, default, lambda name: certs[name].cert_chain)
        # Gateway API: its routes per host, and its HTTPS listeners' certificates (hosts no Ingress binds);
        # such a certificate is the host's TLS for an Ingress's ssl-redirect too.
        self.gateway_api = gateway_api(self.by_kind, self.services, self.config, self._secret)
        add_certificates(self.gateway_api, plan.certs)
        # Knative: KIngresses' routes per host (north-south) and per cluster-local host, and their certificates.
        kn_objects = {c: {k: kinds.get(k, {}) for k in KNATIVE_KINDS} for c, kinds in self.by_kind.items()}
        self.knative = kn.knative(kn_objects, self.services, self._secret)
        kn.add_certificates(self.knative, plan.certs, certs.__contains__)
        host_tls = frozenset(plan.certs)
        tls_hosts, passthrough = plan.chains()

        # Hosts: every host an Ingress names, plus the catch-all when a default backend exists.
        hosts: set[str] = set()
        for ir in self.irs.values():
            hosts |= ir.hosts
            if ir.default_backend is not None:
                hosts.add("")
        defaults = [ir for ir in served if ir.default_backend is not None]
        served_hosts = {h for ir in served for h in ir.hosts}
        alias_plan = assign_aliases(served, served_hosts.__contains__)
        http: list[tuple[VirtualHost, ...]] = []
        https: list[tuple[VirtualHost, ...]] = []
        created = {ir.ref: ir.created for ir in served}
        for host in sorted(hosts | set(self.gateway_api.hosts) | set(self.knative.hosts)):
            irs = [ir for ir in served if host in ir.hosts] + ([ir for ir in defaults if host not in ir.hosts]
                                                                if host == "" else [])  # fmt: skip
            entries = kn.combine(self.gateway_api.hosts.get(host), self.knative.hosts.get(host))
            if not irs and entries is None:
                continue
            try:
                aliases, alias_findings = alias_plan.get(host, ((), ()))
                result = merge_host(host, irs, tls_hosts=host_tls, https_port=self.config.public_https_port,
                                    aliases=aliases, alias_findings=alias_findings)  # fmt: skip
                if entries is not None:
                    result = merge_gateway_routes(host, result if irs else None, entries, created) or result
            except Exception as exc:  # as the controller: this host is not served, the others are
                log.exception("building virtual host %r failed", host or "*")
                self.host_errors[host] = f"internal error building host {host or '*'}: {exc}"
                continue
            self.host_results[host] = result
            if result.https.routes or result.http.routes:
                https.append((result.https,))
                http.append((result.http,))

        users = {**self.gateway_api.variant_users, **self.knative.variant_users}
        clusters, endpoints, east_west = self._backends(served, users, self.knative.variant_policies)
        return GatewayIR(
            listeners=self.config.listeners(tls=bool(tls_hosts or passthrough)),
            route_tables=(
                RouteTableIR(HTTP_ROUTES, tuple(http)),
                RouteTableIR(HTTPS_ROUTES, tuple(https)),
                RouteTableIR(EAST_WEST_ROUTES, east_west, ignore_port=False),
            ),
            tls_hosts=tuple(tls_hosts),
            passthrough=tuple(passthrough),
            clusters=clusters,
            endpoints=endpoints,
            secrets=tuple(certs[name] for name in sorted(set(plan.certs.values()) | ({default} if default else set()))),
            route_partitions=self.config.route_partitions,
        )

    def _backends(
        self,
        served: list[IngressIR],
        other_users: Mapping[IngressRef, Iterable[ClusterName]] = {},
        policies: Mapping[str, tuple[UpstreamPolicy, ...]] = {},
    ) -> tuple[tuple[ServiceCluster, ...], tuple[ClusterEndpoints, ...], tuple[tuple[VirtualHost, ...], ...]]:
        """Service clusters (base per port, plus the variants served Ingresses use), their endpoint
        assignments and the east-west virtual hosts."""
        variants = ClusterVariants()
        for ir in served:
            variants.add(ir)
        for ref, names in other_users.items():  # GRPCRoutes' HTTP/2 variants, KIngress splits' variants
            for name in names:
                variants.add_users(ref, (name,), policies.get(name.variant, GRPC_UPSTREAM))
        clusters: list[ServiceCluster] = []
        endpoints: list[ClusterEndpoints] = []
        # Cluster-local KIngress hosts first (their table keys sort first), then every Service's names
        # but those the KIngresses take over.
        east_west: list[tuple[VirtualHost, ...]] = [
            (kn.local_vhost(host, routes),) for host, routes in sorted(self.knative.local.items())
        ]
        taken = frozenset(self.knative.local)
        for key in sorted(self.services.services):
            ports = {p.port: p for p in self.services.ports(key)}
            for sc in variants.service_clusters(key, self.services).values():
                clusters.append(sc)
                if sc.static_address is None:
                    localities = self.services.localities(key, ports[sc.port], self.primary)
                    endpoints.append(ClusterEndpoints(sc.eds_name, localities, endpoint_labels(sc.policies)))
            if ports:
                vhosts = east_west_vhosts(key[0], key[1], list(ports.values()), taken)
                if vhosts:
                    east_west.append(tuple(vhosts))
        return tuple(clusters), tuple(endpoints), tuple(east_west)


def objects_of(stores: Iterable[Any]) -> SourceObjects:
    """The objects of ClusterStores (a ClusterRegistry's `stores()`), primary first."""
    from controlplane.store import KINDS

    clusters: dict[str, dict[str, list[KubeObject]]] = {}
    primary = None
    for store in stores:
        clusters[store.cluster_id] = {kind: store.list(kind) for kind in KINDS}
        if store.primary:
            primary = store.cluster_id
    return SourceObjects(clusters, primary)
