"""The Ingress frontend's results, kept per Ingress: objects, IRs, their indexes and states."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controlplane.config import GatewayConfig
from controlplane.engine.dependencies import DependencyIndex, hosts_of
from controlplane.ingress.aliases import AliasPlan, assign_aliases
from controlplane.ingress.classes import ClassView, is_accepted
from controlplane.ingress.convert import IngressIR, Lookups, build_ingress
from controlplane.ingress.reports import failed_ingress, ingress_state
from controlplane.ingress.variants import ClusterVariants
from controlplane.ir import IngressRef
from controlplane.services import ServiceIndex
from controlplane.store import INGRESS_CLASS, ClusterRegistry

log = logging.getLogger("controlplane.controller")

GetSecret = Callable[[str, str, str], Mapping[str, Any] | None]


class IngressState:
    def __init__(
        self, registry: ClusterRegistry, services: ServiceIndex, config: GatewayConfig, get_secret: GetSecret
    ) -> None:
        self.registry = registry
        self.services = services
        self.config = config
        self.get_secret = get_secret
        self.objects: dict[IngressRef, Mapping[str, Any]] = {}
        self.irs: dict[IngressRef, IngressIR] = {}
        self.deps = DependencyIndex()
        self.variants = ClusterVariants()
        self.class_views: dict[str, ClassView] = {}
        self._states: dict[IngressRef, str] = {}  # accepted | rejected | ignored, counted incrementally
        self.state_counts: Counter[str] = Counter()

    def set_object(self, ref: IngressRef, obj: Mapping[str, Any] | None) -> None:
        if obj is None:
            self.objects.pop(ref, None)
        else:
            self.objects[ref] = obj

    def classes_changed(self, cluster: str) -> set[IngressRef]:
        """An IngressClass of `cluster` changed: every Ingress of that cluster is to be rebuilt."""
        self.class_views.pop(cluster, None)
        return {r for r in self.objects if r.cluster == cluster}

    def _class_view(self, cluster: str) -> ClassView:
        view = self.class_views.get(cluster)
        if view is None:
            store = self.registry.get(cluster)
            view = ClassView.from_objects(store.list(INGRESS_CLASS) if store else [])
            self.class_views[cluster] = view
        return view

    def rebuild(self, dirty: Iterable[IngressRef]) -> set[str]:
        """Rebuild the IRs of `dirty`; returns the hosts whose routes may have changed."""
        hosts: set[str] = set()
        for ref in dirty:
            old = self.irs.pop(ref, None)
            if old is not None:
                self.deps.remove(old)
                self.variants.remove(old)
                hosts |= hosts_of(old)
            obj = self.objects.get(ref)
            if obj is None:
                self._set_state(ref, None)
                continue
            lookups = Lookups(resolve_port=self.services.resolve_port, get_secret=self.get_secret)
            try:
                accepted = is_accepted(obj, self._class_view(ref.cluster), self.config.classes)
                ir = build_ingress(obj, ref, class_accepted=accepted, lookups=lookups)
            except Exception as exc:  # a bug must cost this Ingress only, never the batch
                log.exception("building Ingress %s failed; it is not served", ref)
                ir = failed_ingress(obj, ref, exc)
            self.irs[ref] = ir
            self._set_state(ref, ingress_state(ir))
            self.deps.add(ir)
            self.variants.add(ir)
            hosts |= hosts_of(ir)
        return hosts

    def served_for_host(self, host: str) -> list[IngressIR]:
        irs = self.irs
        return [irs[r] for r in self.deps.of_host(host) if r in irs and irs[r].served]

    def alias_plan(self) -> AliasPlan:
        """Which host gets which server-alias names (only Ingresses with aliases are looked at)."""
        irs = self.irs
        alias_irs = [irs[r] for r in self.deps.alias_refs if r in irs and irs[r].served]
        return assign_aliases(alias_irs, self._is_served_host) if alias_irs else {}

    def _is_served_host(self, host: str) -> bool:
        return any(r in self.irs and self.irs[r].served for r in self.deps.by_host.get(host, ()))

    def served_with_tls(self) -> list[IngressIR]:
        """Served Ingresses with TLS bindings or ssl-passthrough, in conflict order."""
        irs = self.irs
        return sorted((irs[r] for r in self.deps.tls_refs if r in irs and irs[r].served), key=IngressIR.order_key)

    def _set_state(self, ref: IngressRef, state: str | None) -> None:
        old = self._states.pop(ref, None)
        if old is not None:
            self.state_counts[old] -= 1
        if state is not None:
            self._states[ref] = state
            self.state_counts[state] += 1
