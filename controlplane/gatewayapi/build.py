"""Every Gateway API object of every source cluster -> per-host route entries, TLS bindings and
what the status of each object should say. Pure: the objects and the Service index in, values out.

Listeners on the fleet's shared ports feed `hosts` and `tls` (merged with Ingresses per host);
listeners on other ports feed `ports`, one entry per port (engine/gateway_ports.py renders each as
an Envoy listener with its own route table). Every Gateway is read before any route, so listeners
of one port in several Gateways are checked against each other first (listeners.resolve_conflicts).

Routes attach to Gateways of their own source cluster (parentRefs name a Gateway, optionally a
listener by sectionName or port); backendRefs name Services, whose clusters (ir.names.ClusterName
`ns/svc:port`) merge endpoints of every cluster exactly as Ingress backends do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.gatewayapi.grpcroute import GRPC_UPSTREAM, grpc_rule_routes
from controlplane.gatewayapi.httproute import RouteEntry, rule_routes
from controlplane.gatewayapi.kinds import (
    GATEWAY,
    GATEWAY_CLASS,
    GROUP,
    GRPC_ROUTE,
    HTTP_ROUTE,
    NAMESPACE,
    REFERENCE_GRANT,
    as_list,
    generation,
    meta,
    spec,
)
from controlplane.gatewayapi.listeners import (
    Condition,
    GatewayInfo,
    Listener,
    SecretRef,
    accepted_classes,
    gateway_info,
    resolve_conflicts,
)
from controlplane.gatewayapi.refs import Grants
from controlplane.ingress.convert import creation_time
from controlplane.ir import IngressRef
from controlplane.ir.names import ClusterName, cluster_name
from controlplane.ir.policies import cluster_variant
from controlplane.services import ServiceIndex

log = logging.getLogger("controlplane.gatewayapi")

Objects = Mapping[str, Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]]]  # cluster -> kind -> name -> obj


@dataclass(frozen=True)
class HostEntries:
    """The Gateway API routes of one host, per shared listener, in precedence order."""

    http: tuple[RouteEntry, ...] = ()
    https: tuple[RouteEntry, ...] = ()


@dataclass(frozen=True)
class PortEntries:
    """A Gateway listener port of its own (not the fleet's shared ones): its protocol, the routes of
    each host in precedence order, and its certificates (SNI name, "*" for the catch-all -> Secret;
    the first binding of a name wins)."""

    protocol: str  # "HTTP" or "HTTPS"
    hosts: tuple[tuple[str, tuple[RouteEntry, ...]], ...] = ()
    tls: tuple[tuple[str, SecretRef], ...] = ()


@dataclass(frozen=True)
class ParentStatus:
    parent_ref: Mapping[str, Any] = field(compare=False)
    gateway: IngressRef
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class RouteStatus:
    ref: IngressRef
    generation: int
    parents: tuple[ParentStatus, ...]


@dataclass
class GatewayApiResult:
    hosts: dict[str, HostEntries] = field(default_factory=dict)
    tls: list[tuple[tuple[str, ...], SecretRef]] = field(default_factory=list)  # SNI names -> certificate
    gateways: dict[IngressRef, GatewayInfo] = field(default_factory=dict)
    attached: dict[tuple[IngressRef, str], int] = field(default_factory=dict)  # (gateway, listener) -> routes
    routes: dict[IngressRef, RouteStatus] = field(default_factory=dict)
    classes: dict[tuple[str, str], tuple[bool, int]] = field(default_factory=dict)  # (cluster, name) -> ours, gen
    ports: dict[int, PortEntries] = field(default_factory=dict)  # listener ports of their own
    # GRPCRoutes -> the HTTP/2 cluster variants they forward to (made of grpcroute.GRPC_UPSTREAM).
    variant_users: dict[IngressRef, frozenset[ClusterName]] = field(default_factory=dict)


def intersect(listener: str | None, route_hosts: list[str]) -> list[str]:
    """The hostnames a route serves on a listener ("" = every host); empty when they never meet."""
    if not route_hosts:
        return [listener or ""]
    if listener is None:
        return list(route_hosts)
    out = []
    for h in route_hosts:
        if h == listener:
            out.append(h)
        elif listener.startswith("*.") and h.endswith(listener[1:]):
            out.append(h)  # a name (or narrower wildcard) under the listener's wildcard
        elif h.startswith("*.") and listener.endswith(h[1:]):
            out.append(listener)
    return out


class _Builder:
    def __init__(self, objects: Objects, services: ServiceIndex, http_ports: frozenset[int],
                 https_ports: frozenset[int], secret_problem: Callable[[SecretRef], str | None],
                 reserved: frozenset[int] = frozenset()) -> None:  # fmt: skip
        self.objects = objects
        self.services = services
        self.http_ports, self.https_ports, self.reserved = http_ports, https_ports, reserved
        self._ports: dict[int, dict[str, dict[str, RouteEntry]]] = {}  # own port -> host -> routes
        self._port_tls: dict[int, dict[str, SecretRef]] = {}
        self._port_protocol: dict[int, str] = {}
        self.secret_problem = secret_problem
        self.result = GatewayApiResult()
        self._http: dict[str, dict[str, RouteEntry]] = {}
        self._https: dict[str, dict[str, RouteEntry]] = {}
        self._attached_by: dict[IngressRef, list[tuple[IngressRef, str]]] = {}

    def build(self) -> GatewayApiResult:
        per_cluster = [(cluster, kinds, Grants(kinds.get(REFERENCE_GRANT, {}).values()))
                       for cluster, kinds in sorted(self.objects.items())]  # fmt: skip
        found = [info for cluster, kinds, grants in per_cluster for info in self._gateways(cluster, kinds, grants)]
        by_cluster: dict[str, dict[tuple[str, str], GatewayInfo]] = {}
        for info in resolve_conflicts(found):  # listeners of one own port across every Gateway
            by_cluster.setdefault(info.ref.cluster, {})[(info.ref.namespace, info.ref.name)] = info
            self.result.gateways[info.ref] = info
            for lst in info.listeners:
                self.result.attached[(info.ref, lst.name)] = 0
                if lst.table is not None and not lst.shared:
                    self._port_protocol.setdefault(lst.port, lst.protocol)
                    self._ports.setdefault(lst.port, {})
                if lst.table == "https" and lst.certificate is not None:
                    if lst.shared:
                        self.result.tls.append(((lst.hostname or "*",), lst.certificate))
                    else:
                        self._port_tls.setdefault(lst.port, {}).setdefault(lst.hostname or "*", lst.certificate)
        for cluster, kinds, grants in per_cluster:
            gateways = by_cluster.get(cluster, {})
            namespaces = kinds.get(NAMESPACE, {})

            def labels(ns: str, namespaces: Mapping[tuple[str, str], Mapping[str, Any]] = namespaces) -> Any:
                obj = namespaces.get(("", ns))
                return None if obj is None else (meta(obj).get("labels") or {})

            for kind in (HTTP_ROUTE, GRPC_ROUTE):
                for key, obj in sorted(kinds.get(kind, {}).items()):
                    try:
                        self._route(cluster, kind, key, obj, gateways, grants, labels)
                    except Exception:  # as above: a route the schema would have refused costs itself only
                        log.exception("%s %s/%s/%s cannot be read; it is not served", kind, cluster, *key)
                        self._drop_route(IngressRef(cluster, key[0], key[1], kind=kind))
        order = RouteEntry.precedence
        for host in sorted(set(self._http) | set(self._https)):
            self.result.hosts[host] = HostEntries(
                tuple(sorted(self._http.get(host, {}).values(), key=order)),
                tuple(sorted(self._https.get(host, {}).values(), key=order)),
            )
        for port, hosts in sorted(self._ports.items()):
            self.result.ports[port] = PortEntries(
                self._port_protocol[port],
                tuple((h, tuple(sorted(b.values(), key=order))) for h, b in sorted(hosts.items()) if b),
                tuple(sorted(self._port_tls.get(port, {}).items())),
            )
        return self.result

    def _gateways(self, cluster: str, kinds: Mapping[str, Any], grants: Grants) -> list[GatewayInfo]:
        """The Gateways of our classes in one cluster (and every GatewayClass's acceptance)."""
        classes = kinds.get(GATEWAY_CLASS, {})
        ours = accepted_classes(classes)
        for (_ns, name), obj in classes.items():
            self.result.classes[(cluster, name)] = (name in ours, generation(obj))
        out = []
        for key, obj in sorted(kinds.get(GATEWAY, {}).items()):
            if str(spec(obj).get("gatewayClassName") or "") not in ours:
                continue
            created, _ = creation_time(meta(obj).get("creationTimestamp"))
            try:
                out.append(gateway_info(cluster, obj, http_ports=self.http_ports, https_ports=self.https_ports,
                                        reserved=self.reserved, grants=grants, secret_ok=self.secret_problem,
                                        created=created))  # fmt: skip
            except Exception:  # malformed beyond what the CRD schema allows (file mode): this Gateway only
                log.exception("Gateway %s/%s/%s cannot be read; it is not served", cluster, *key)
        return out

    def _resolver(self, cluster: str, ns: str, grants: Grants, kind: str = HTTP_ROUTE,
                  used: set[ClusterName] | None = None) -> Callable[[Mapping[str, Any]], Any]:  # fmt: skip
        variant = cluster_variant(GRPC_UPSTREAM) if kind == GRPC_ROUTE else ""

        def resolve(ref: Mapping[str, Any]) -> tuple[str | None, tuple[str, str] | None]:
            group, target = str(ref.get("group") or ""), str(ref.get("kind") or "Service")
            if group != "" or target != "Service":
                return None, ("InvalidKind", f"backend kind {group or 'core'}/{target} is not supported")
            name, bns = str(ref.get("name") or ""), str(ref.get("namespace") or ns)
            if not grants.allows(GROUP, kind, ns, "", "Service", bns, name):
                return None, ("RefNotPermitted", f"no ReferenceGrant in {bns} allows a reference to Service {name}")
            port = ref.get("port")
            if (bns, name) not in self.services.services:
                return None, ("BackendNotFound", f"Service {bns}/{name} not found")
            if not isinstance(port, int) or not any(p.port == port for p in self.services.ports((bns, name))):
                return None, ("BackendNotFound", f"Service {bns}/{name} has no port {port}")
            if variant and used is not None:
                used.add(ClusterName(bns, name, port, variant))
            return cluster_name(bns, name, port, variant), None

        return resolve

    def _route(self, cluster: str, kind: str, key: tuple[str, str], obj: Mapping[str, Any],
               gateways: Mapping[tuple[str, str], GatewayInfo], grants: Grants,
               labels: Callable[[str], Any]) -> None:  # fmt: skip
        ns, name = key
        ref = IngressRef(cluster, ns, name, kind=kind)
        created, _ = creation_time(meta(obj).get("creationTimestamp"))
        s = spec(obj)
        used: set[ClusterName] = set()
        resolve = self._resolver(cluster, ns, grants, kind, used)
        convert = grpc_rule_routes if kind == GRPC_ROUTE else rule_routes
        entries: list[RouteEntry] = []
        problems: list[tuple[str, str, str]] = []
        for i, rule in enumerate(as_list(s.get("rules")) or [{}]):
            if isinstance(rule, Mapping):
                res = convert(ref, created, i, rule, resolve)
                entries.extend(res.entries)
                problems.extend(res.problems)
        route_hosts = [str(h) for h in as_list(s.get("hostnames"))]
        parents: list[ParentStatus] = []
        for pref in as_list(s.get("parentRefs")):
            if not isinstance(pref, Mapping):
                continue
            if str(pref.get("group") or GROUP) != GROUP or str(pref.get("kind") or GATEWAY) != GATEWAY:
                continue
            gw_key = (str(pref.get("namespace") or ns), str(pref.get("name") or ""))
            info = gateways.get(gw_key)
            if info is None:
                continue  # not a Gateway of ours: its controller writes this parent's status
            accepted = self._attach(info, pref, ref, route_hosts, entries, labels)
            conds = [accepted]
            refs = [p for p in problems if p[0] == "ResolvedRefs"]
            if refs:
                conds.append(("ResolvedRefs", "False", refs[0][1], "; ".join(p[2] for p in refs)))
            else:
                conds.append(("ResolvedRefs", "True", "ResolvedRefs", "every reference resolved"))
            partial = [p for p in problems if p[0] == "Accepted"]
            if partial:
                conds.append(("PartiallyInvalid", "True", "UnsupportedValue", "; ".join(p[2] for p in partial)))
            parents.append(ParentStatus(dict(pref), info.ref, tuple(conds)))
        self.result.routes[ref] = RouteStatus(ref, generation(obj), tuple(parents))
        if used and any(e.route.source == ref for t in (self._http, self._https, *self._ports.values())
                        for b in t.values() for e in b.values()):  # fmt: skip
            self.result.variant_users[ref] = frozenset(used)  # served: its HTTP/2 clusters must exist

    def _drop_route(self, ref: IngressRef) -> None:
        """Undo what a route that failed half-way added (its entries, its attachments)."""
        for table in (self._http, self._https, *self._ports.values()):
            for bucket in table.values():
                for name in [n for n, e in bucket.items() if e.route.source == ref]:
                    del bucket[name]
        for key in self._attached_by.pop(ref, []):
            self.result.attached[key] -= 1
        self.result.routes.pop(ref, None)
        self.result.variant_users.pop(ref, None)

    def _attach(self, info: GatewayInfo, pref: Mapping[str, Any], ref: IngressRef, route_hosts: list[str],
                entries: list[RouteEntry], labels: Callable[[str], Any]) -> Condition:  # fmt: skip
        section, port = pref.get("sectionName"), pref.get("port")
        candidates = [lst for lst in info.listeners
                      if (section is None or lst.name == section) and (port is None or lst.port == port)]  # fmt: skip
        if not candidates:
            return ("Accepted", "False", "NoMatchingParent", "no listener matches sectionName/port")
        allowed = [lst for lst in candidates
                   if lst.admits_namespace(ref.namespace, labels) and ref.kind in lst.kinds]  # fmt: skip
        if not allowed:
            return ("Accepted", "False", "NotAllowedByListeners", "no listener allows this route")
        attached = False
        for lst in allowed:
            hosts = intersect(lst.hostname, route_hosts)
            if not hosts:
                continue
            attached = True
            self.result.attached[(info.ref, lst.name)] += 1
            self._attached_by.setdefault(ref, []).append((info.ref, lst.name))
            if lst.table is not None:
                self._add(lst, hosts, entries)
        if not attached:
            return ("Accepted", "False", "NoMatchingListenerHostname", "no listener hostname matches the route's")
        return ("Accepted", "True", "Accepted", "attached")

    def _add(self, lst: Listener, hosts: list[str], entries: list[RouteEntry]) -> None:
        table = self._ports[lst.port] if not lst.shared else self._http if lst.table == "http" else self._https
        for host in hosts:
            if lst.table == "https" and lst.hostname is None and host and lst.certificate is not None:
                # A listener without a hostname serves its certificate for the hosts its routes name.
                if lst.shared:
                    self.result.tls.append(((host,), lst.certificate))
                else:
                    self._port_tls.setdefault(lst.port, {}).setdefault(host, lst.certificate)
            bucket = table.setdefault(host, {})
            for e in entries:
                bucket.setdefault(e.route.name, e)


def build(objects: Objects, services: ServiceIndex, *, http_ports: frozenset[int], https_ports: frozenset[int],
          secret_problem: Callable[[SecretRef], str | None],
          reserved: frozenset[int] = frozenset()) -> GatewayApiResult:  # fmt: skip
    """See the module docstring. `reserved`: ports the fleet uses otherwise (east-west)."""
    return _Builder(objects, services, http_ports, https_ports, secret_problem, reserved).build()
