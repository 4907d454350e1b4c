"""Cluster variants: a Service port's cluster with the upstream policies of the Ingresses using it.

Ingresses whose annotations set upstream policies (backend protocol, connect timeout, load
balancing, service-upstream) forward to `ClusterName(ns, svc, port, variant)`, where the variant
is a digest of those policies (ir.policies.cluster_variant): equal policies share one cluster.
A variant exists while a served Ingress uses it and its Service has the port.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.ingress import registry
from controlplane.ingress.convert import IngressIR
from controlplane.ir import IngressRef, ServiceCluster
from controlplane.ir.model import find_policy
from controlplane.ir.names import ClusterName, cluster_name, eds_name
from controlplane.ir.policies import ExternalName, UpstreamPolicy
from controlplane.services import ServiceIndex, ServiceKey


class ClusterVariants:
    """Who uses which variant, kept up to date Ingress by Ingress."""

    def __init__(self) -> None:
        self.policies: dict[str, tuple[UpstreamPolicy, ...]] = {}  # variant -> its upstream policies
        self.users: dict[ClusterName, set[IngressRef]] = {}  # variant cluster -> Ingresses using it
        self.by_service: dict[ServiceKey, set[ClusterName]] = {}
        self.touched: set[ClusterName] = set()  # variants whose users changed since take_touched()

    def add(self, ir: IngressIR) -> None:
        if not ((ir.variant or ir.extra_variants) and ir.served):
            return
        if ir.variant:
            self.policies[ir.variant] = ir.annotations.upstream
        self.policies.update(ir.extra_variants)
        self.add_users(ir.ref, _variants_of(ir))

    def add_users(
        self, ref: IngressRef, names: Iterable[ClusterName], upstream: tuple[UpstreamPolicy, ...] | None = None
    ) -> None:
        """`ref` (an Ingress, or a route of another frontend) forwards to these variants; `upstream`:
        the policies they are made of, when not known already (every name's variant is
        `cluster_variant(upstream)`)."""
        for name in names:
            if upstream is not None:
                self.policies[name.variant] = upstream
            self.users.setdefault(name, set()).add(ref)
            self.touched.add(name)
            self.by_service.setdefault(name.service_key, set()).add(name)

    def remove(self, ir: IngressIR) -> None:
        self.remove_users(ir.ref, _variants_of(ir))

    def remove_users(self, ref: IngressRef, names: Iterable[ClusterName]) -> None:
        for name in names:
            users = self.users.get(name)
            if users is not None:
                users.discard(ref)
                self.touched.add(name)

    def take_touched(self) -> set[ServiceKey]:
        """Services whose variants changed since the last call; unused variants are forgotten."""
        keys: set[ServiceKey] = set()
        for variant in self.touched:
            keys.add(variant.service_key)
            if not self.users.get(variant):
                self.users.pop(variant, None)  # nobody uses it: its cluster goes away
                self.by_service.get(variant.service_key, set()).discard(variant)
        self.touched = set()
        return keys

    def service_clusters(self, key: ServiceKey, services: ServiceIndex) -> dict[str, ServiceCluster]:
        """The clusters of one Service: one per port, plus each used variant of a port it has."""
        ns, name = key
        ports = [p.port for p in services.ports(key)]  # sorted by number
        out: dict[str, ServiceCluster] = {}
        for port in ports:
            base = cluster_name(ns, name, port)
            out[base] = ServiceCluster(base, eds_name(ns, name, port), ns, name, port)
        variants = self.by_service.get(key)
        for variant in sorted(variants) if variants else ():
            if not self.users.get(variant) or variant.port not in ports:
                continue
            policies = self.policies.get(variant.variant, ())
            static = None
            external = find_policy(policies, ExternalName)
            if external is not None:  # an ExternalName Service: its DNS name, resolved by Envoy
                static = (external.host, variant.port)
            elif registry.uses_service_address(policies):  # service-upstream: the ClusterIP only
                ip = services.cluster_ip(key)
                static = (ip, variant.port) if ip else None
            # A variant has its own ClusterLoadAssignment: Envoy only fetches an assignment when a
            # new name is subscribed, so sharing the base one left new variants warming for 15 s.
            cname = str(variant)
            out[cname] = ServiceCluster(cname, cname, ns, name, variant.port, policies, static)
        return out


def _variants_of(ir: IngressIR) -> set[ClusterName]:
    return {c for c in ir.backends() if c.variant}
