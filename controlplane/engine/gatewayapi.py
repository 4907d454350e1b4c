"""The engine's Gateway API step: rebuild the Gateway API frontend when one of its objects (or a
Service or Secret it may refer to) changed, and say which hosts and certificates changed.

The frontend is recomputed whole (controlplane/gatewayapi/build.py is linear in its objects, which
are few next to Ingresses); only hosts whose entries differ are re-merged and re-rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Any

from controlplane.config import GatewayConfig
from controlplane.engine.gateway_ports import port_resources, port_secrets
from controlplane.gatewayapi.build import GatewayApiResult, HostEntries
from controlplane.gatewayapi.frontend import add_certificates, gateway_api
from controlplane.gatewayapi.grpcroute import GRPC_UPSTREAM
from controlplane.ingress.variants import ClusterVariants
from controlplane.services import ServiceIndex
from controlplane.store import GATEWAY_API_KINDS, SECRET, SERVICE, ClusterRegistry, object_name
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, make_resource

_TOUCHES = frozenset(GATEWAY_API_KINDS) | {SERVICE, SECRET}


class GatewayApiState:
    def __init__(self, registry: ClusterRegistry, services: ServiceIndex, config: GatewayConfig,
                 get_secret: Callable[[str, str, str], Mapping[str, Any] | None],
                 variants: ClusterVariants | None = None) -> None:  # fmt: skip
        self.variants = variants if variants is not None else ClusterVariants()  # shared with the Ingresses
        self.registry = registry
        self.services = services
        self.config = config
        self.get_secret = get_secret
        self.result = GatewayApiResult()
        self._any = False  # some Gateway API object exists (else Service/Secret changes cost nothing)
        self.ports_dirty = False  # the own ports' listeners and route tables need rendering
        self.port_clusters: dict[str, Any] = {}  # extra clusters their routes need
        self._emitted: dict[tuple[str, str], Resource] = {}

    @staticmethod
    def touched_by(kind: str) -> bool:
        return kind in _TOUCHES

    def rebuild(self, kinds: set[str], *, full: bool) -> tuple[set[str], bool]:
        """(hosts whose Gateway API routes changed, whether listener certificates changed)."""
        if not full and not (kinds & set(GATEWAY_API_KINDS)) and not (self._any and kinds & _TOUCHES):
            return set(), False
        objects = {
            store.cluster_id: {kind: {object_name(o): o for o in store.list(kind)} for kind in GATEWAY_API_KINDS}
            for store in self.registry.stores()
        }
        self._any = any(objs for kinds_ in objects.values() for k, objs in kinds_.items() if k != "Namespace")
        new = gateway_api(objects, self.services, self.config, self.get_secret)
        old, self.result = self.result, new
        for ref, names in old.variant_users.items():  # GRPCRoutes' HTTP/2 clusters follow their users
            if new.variant_users.get(ref) != names:
                self.variants.remove_users(ref, names)
        for ref, names in new.variant_users.items():
            if old.variant_users.get(ref) != names:
                self.variants.add_users(ref, names, GRPC_UPSTREAM)
        hosts = {h for h in set(new.hosts) | set(old.hosts) if new.hosts.get(h) != old.hosts.get(h)}
        self.ports_dirty = self.ports_dirty or full or new.ports != old.ports
        return hosts, new.tls != old.tls or port_secrets(new.ports) != port_secrets(old.ports)

    def port_secrets(self) -> set[str]:
        """SDS names the listeners on ports of their own may use (served when usable)."""
        return port_secrets(self.result.ports)

    def render_ports(self, changes: dict[str, dict[str, Resource | None]], usable: Container[str]) -> bool:
        """The listeners and route tables of ports of their own (engine/gateway_ports.py), as changes
        against what was emitted before; their extra clusters are left in `port_clusters`. Returns
        whether those changed."""
        self.ports_dirty = False
        own = port_resources(self.result.ports, self.config.listen_address, usable)
        old_clusters, self.port_clusters = self.port_clusters, dict(own.resources[rt.CLUSTER])
        clusters_changed = old_clusters.keys() != self.port_clusters.keys() or any(
            old_clusters[n].SerializeToString(deterministic=True) != c.SerializeToString(deterministic=True)
            for n, c in self.port_clusters.items())  # fmt: skip
        made = {(t, n): make_resource(n, t, m) for t in (rt.LISTENER, rt.ROUTE) for n, m in own.resources[t].items()}
        for (t, n), res in made.items():
            if self._emitted.get((t, n)) != res:
                changes[t][n] = res
        for t, n in set(self._emitted) - set(made):
            changes[t][n] = None
        self._emitted = made
        return clusters_changed

    def entries(self, host: str) -> HostEntries | None:
        return self.result.hosts.get(host)

    def hosts(self) -> set[str]:
        return set(self.result.hosts)

    def add_certificates(self, certs: dict[str, str]) -> None:
        add_certificates(self.result, certs)
