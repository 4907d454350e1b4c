"""The engine's Knative step: rebuild the KIngress frontend when a KIngress (or a Service or Secret it
may refer to) changed, and say which north-south hosts, cluster-local hosts and certificates changed.

As the Gateway API step, the frontend is recomputed whole (linear in the KIngresses, which are few
next to Ingresses) and only hosts whose routes differ are re-merged and re-rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.gatewayapi.build import HostEntries
from controlplane.gatewayapi.grpcroute import GRPC_UPSTREAM
from controlplane.ingress.variants import ClusterVariants
from controlplane.knative import frontend as kn
from controlplane.knative.build import Cache, KnativeResult
from controlplane.services import ServiceIndex
from controlplane.store import KINGRESS, KNATIVE_KINDS, SECRET, SERVICE, ClusterRegistry, StoreEvent, object_name

_TOUCHES = frozenset(KNATIVE_KINDS) | {SERVICE, SECRET}


_META_READ = ("name", "namespace", "generation", "annotations", "creationTimestamp")


def _served_part(obj: Mapping[str, Any] | None) -> Any:
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    return (obj.get("spec"), obj.get("apiVersion"), {k: meta.get(k) for k in _META_READ})


def _served_part_changed(ev: StoreEvent) -> bool:
    """What the frontend reads of a KIngress changed (not only its status or resourceVersion)."""
    return _served_part(ev.old) != _served_part(ev.new)


class KnativeState:
    def __init__(self, registry: ClusterRegistry, services: ServiceIndex,
                 get_secret: Callable[[str, str, str], Mapping[str, Any] | None],
                 variants: ClusterVariants) -> None:  # fmt: skip
        self.registry = registry
        self.services = services
        self.get_secret = get_secret
        self.variants = variants  # shared with the Ingresses and the Gateway API
        self.result = KnativeResult()
        self.cache: Cache = {}  # each KIngress as last built (rebuilt only when it or what it read changed)
        self._any = False  # some KIngress exists (else Service/Secret changes cost nothing)

    def rebuild(self, events: Iterable[StoreEvent], *, full: bool) -> tuple[set[str], set[str], bool]:
        """(north-south hosts whose KIngress routes changed, cluster-local hosts that changed, whether
        certificates changed). A KIngress whose status alone changed (the leader's own writes) costs
        nothing."""
        kinds = {ev.ref.kind for ev in events if ev.ref.kind != KINGRESS or _served_part_changed(ev)}
        if not full and not (kinds & set(KNATIVE_KINDS)) and not (self._any and kinds & _TOUCHES):
            return set(), set(), False
        objects = {
            store.cluster_id: {kind: {object_name(o): o for o in store.list(kind)} for kind in KNATIVE_KINDS}
            for store in self.registry.stores()
        }
        self._any = any(objs for kinds_ in objects.values() for objs in kinds_.values())
        new = kn.knative(objects, self.services, self.get_secret, self.cache)
        old, self.result = self.result, new
        for ref, names in old.variant_users.items():  # split variants (h2c, ExternalName) follow their users
            if new.variant_users.get(ref) != names:
                self.variants.remove_users(ref, names)
        for ref, names in new.variant_users.items():
            if old.variant_users.get(ref) != names:
                for name in names:
                    self.variants.add_users(ref, (name,), new.variant_policies.get(name.variant, GRPC_UPSTREAM))
        hosts = {h for h in set(new.hosts) | set(old.hosts) if new.hosts.get(h) != old.hosts.get(h)}
        local = {h for h in set(new.local) | set(old.local) if new.local.get(h) != old.local.get(h)}
        return hosts, local, new.tls != old.tls

    def entries(self, host: str) -> HostEntries | None:
        return self.result.hosts.get(host)

    def add_certificates(self, certs: dict[str, str], usable: Callable[[str], bool]) -> None:
        kn.add_certificates(self.result, certs, usable)
