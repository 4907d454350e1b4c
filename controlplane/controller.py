"""The incremental engine: object changes in, snapshot deltas out.

Store events (from any thread) are batched by the Batcher, one batch per loop turn, so a burst of
changes becomes one snapshot version without any fixed delay. Each batch recomputes only what
depends on the changed objects: an EndpointSlice rebuilds one ClusterLoadAssignment, an Ingress
its own IR and the virtual hosts it touches; route tables are re-assembled from cached per-host
bytes. The result must equal what `controlplane.compile.compile` gives for the same objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.config import GatewayConfig
from controlplane.engine.backends import ServiceBackends
from controlplane.engine.batcher import Batcher
from controlplane.engine.dependencies import DependencyIndex, SecretKey, hosts_of
from controlplane.engine.host_routes import HostRoutes
from controlplane.engine.tls import TlsState
from controlplane.engine.view import IngressView
from controlplane.ingress.aliases import AliasPlan, assign_aliases
from controlplane.ingress.classes import ClassView, is_accepted
from controlplane.ingress.convert import IngressIR, Lookups, build_ingress
from controlplane.ingress.hosts import HostResult
from controlplane.ingress.reports import failed_ingress, ingress_state
from controlplane.ingress.tls import TlsPlan
from controlplane.ingress.variants import ClusterVariants
from controlplane.ir import IngressRef
from controlplane.metrics import Metrics
from controlplane.services import ServiceIndex, ServiceKey
from controlplane.store import ENDPOINT_SLICE, INGRESS, INGRESS_CLASS, SECRET, SERVICE, ClusterRegistry, StoreEvent
from controlplane.translate import listeners as lst
from controlplane.translate.policies import FEATURES
from controlplane.translate.route_tables import RouteTables
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, SnapshotCache, make_resource

__all__ = ["Controller", "GatewayConfig"]

log = logging.getLogger("controlplane.controller")

Changes = dict[str, dict[str, Resource | None]]


class Controller:
    """The orchestrator: routes each batch's changes through the frontend, the indexes and the
    translator, and applies the resulting delta to the cache."""

    def __init__(
        self, registry: ClusterRegistry, cache: SnapshotCache, metrics: Metrics, config: GatewayConfig
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.metrics = metrics
        self.config = config
        self.services = ServiceIndex()
        self.ingress_objs: dict[IngressRef, Mapping[str, Any]] = {}
        self.irs: dict[IngressRef, IngressIR] = {}
        self.deps = DependencyIndex()
        self.variants = ClusterVariants()
        self.class_views: dict[str, ClassView] = {}
        # Per-host VirtualHost bytes, framed as RouteConfiguration.virtual_hosts fields, kept per route
        # table (split into hash partitions at scale): a change re-assembles one partition with one join.
        self.routes = RouteTables(config.route_partitions, self._partitions_metric)
        self.hosts = HostRoutes(self.routes, config.public_https_port)
        self._ingress_states: dict[IngressRef, str] = {}  # accepted | rejected | ignored, counted incrementally
        self._state_counts: Counter[str] = Counter()
        self.backends = ServiceBackends(self.services, self.variants)
        self.tls_state = TlsState(self._get_secret)
        self.alias_plan: AliasPlan = {}
        self._listener_inputs: tuple[Any, ...] | None = None
        self.last_build_seconds = 0.0
        self.ready = asyncio.Event()
        # Nothing is served before the primary cluster's first full list: build once from all of it
        # rather than many times from the parts that arrive while it is being read.
        self.batcher = Batcher(self._build, self._may_build, self._built)
        self.view = IngressView(self)

    # -- what the view reads -----------------------------------------------------------
    @property
    def host_results(self) -> dict[str, HostResult]:
        return self.hosts.results

    @property
    def host_errors(self) -> dict[str, str]:
        return self.hosts.errors

    @property
    def publish_address(self) -> str:
        return self.config.publish_address or self.config.listen_address

    def built_once(self) -> bool:
        return self.ready.is_set()

    def ingress_report(self, ir: IngressIR) -> dict[str, Any]:
        return self.view.report(ir)

    def ingress_reports(self) -> list[dict[str, Any]]:
        return self.view.reports()

    # -- intake (the Batcher) -----------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.batcher.attach(loop)
        self.registry.subscribe(self._on_event)

    def _on_event(self, event: StoreEvent) -> None:
        self.batcher.on_event(event)

    def idle(self) -> bool:
        """No store event is waiting to be built."""
        return self.batcher.idle()

    def request_flush(self) -> None:
        self.batcher.request_flush()

    def flush(self) -> None:
        """Build the queued events and publish one snapshot delta. Runs on the event loop."""
        self.batcher.flush()

    def _may_build(self) -> bool:
        return self.ready.is_set() or self.registry.primary_synced()

    def _built(self, took: float) -> None:
        self.last_build_seconds = took
        self.metrics.build_duration.observe(took)
        self.metrics.snapshot_version.set(self.cache.version)
        # Serve once the primary cluster is in; remote clusters join as their events arrive
        # (readiness also waits for their first sync attempt, checked when /readyz is asked).
        if not self.ready.is_set() and self.registry.primary_synced():
            self.cache.ready = True
            self.ready.set()

    def _build(self, events: list[StoreEvent], seen_at: float) -> None:
        try:
            self._process(events, seen_at)
        except Exception:  # never let one bad batch kill the control plane
            log.exception("snapshot build failed; keeping the previous snapshot")

    # -- the batch -------------------------------------------------------------
    def _process(self, events: list[StoreEvent], seen_at: float) -> None:
        dirty_ing: set[IngressRef] = set()
        dirty_svc: set[ServiceKey] = set()
        dirty_eds: set[ServiceKey] = set()
        dirty_secrets: set[SecretKey] = set()
        for ev in events:
            ref, obj = ev.ref, ev.new
            if ref.kind == INGRESS:
                iref = IngressRef(ref.cluster, ref.namespace, ref.name)
                if obj is None:
                    self.ingress_objs.pop(iref, None)
                else:
                    self.ingress_objs[iref] = obj
                dirty_ing.add(iref)
            elif ref.kind == SERVICE:
                key = self.services.set_service(ref.cluster, ref.namespace, ref.name, obj)
                dirty_svc.add(key)
                dirty_eds.add(key)
                dirty_ing |= self.deps.of_service(key)
            elif ref.kind == ENDPOINT_SLICE:
                dirty_eds |= self.services.set_slice(ref.cluster, ref.namespace, ref.name, obj)
            elif ref.kind == SECRET:
                skey = (ref.cluster, ref.namespace, ref.name)
                dirty_secrets.add(skey)
                dirty_ing |= self.deps.of_secret(skey)
            elif ref.kind == INGRESS_CLASS:
                self.class_views.pop(ref.cluster, None)
                dirty_ing |= {r for r in self.ingress_objs if r.cluster == ref.cluster}

        changes: Changes = {t: {} for t in rt.PUSH_ORDER}
        hosts = self._rebuild_ingresses(dirty_ing)
        if dirty_ing:
            hosts |= self._rebuild_aliases()
        hosts |= self._rebuild_tls(changes, dirty_secrets)
        cluster_keys = dirty_svc | self.variants.take_touched()
        self.backends.rebuild_clusters(changes, cluster_keys)
        self.backends.rebuild_endpoints(changes, dirty_eds | cluster_keys, self.registry.primary_id())
        if hosts:
            self.hosts.rebuild(hosts, self._served_for_host, frozenset(self.tls.certs), self.alias_plan)
            self.backends.set_extra_clusters(changes, self.hosts.wanted_extra_clusters())
        self.hosts.rebuild_east_west(self.services, dirty_svc)
        filters = self.hosts.http_filters()
        tls_hosts, passthrough = self.tls.chains()
        self.routes.render(_emitter(changes), filters, https_listener=bool(tls_hosts))
        when = self.routes.next_retirement()  # an old partition layout is due to be deleted then
        if when is not None:
            self.batcher.flush_at(when)
        self._rebuild_listeners(changes, filters, tls_hosts, passthrough)
        self.cache.apply(changes, seen_at=seen_at)
        for state in ("accepted", "rejected", "ignored"):
            self.metrics.ingresses.labels(state).set(self._state_counts[state])

    # -- ingresses ---------------------------------------------------------------
    def _class_view(self, cluster: str) -> ClassView:
        view = self.class_views.get(cluster)
        if view is None:
            store = self.registry.get(cluster)
            view = ClassView.from_objects(store.list(INGRESS_CLASS) if store else [])
            self.class_views[cluster] = view
        return view

    def _get_secret(self, cluster: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        store = self.registry.get(cluster)
        return store.get(SECRET, namespace, name) if store else None

    def _rebuild_ingresses(self, dirty: set[IngressRef]) -> set[str]:
        """Rebuild the IRs of `dirty`; returns the hosts whose routes may have changed."""
        hosts: set[str] = set()
        for ref in dirty:
            old = self.irs.pop(ref, None)
            if old is not None:
                self.deps.remove(old)
                self.variants.remove(old)
                hosts |= hosts_of(old)
            obj = self.ingress_objs.get(ref)
            if obj is None:
                self._set_ingress_state(ref, None)
                continue
            lookups = Lookups(resolve_port=self.services.resolve_port, get_secret=self._get_secret)
            try:
                accepted = is_accepted(obj, self._class_view(ref.cluster), self.config.classes)
                ir = build_ingress(obj, ref, class_accepted=accepted, lookups=lookups)
            except Exception as exc:  # a bug must cost this Ingress only, never the batch
                log.exception("building Ingress %s failed; it is not served", ref)
                ir = failed_ingress(obj, ref, exc)
            self.irs[ref] = ir
            self._set_ingress_state(ref, ingress_state(ir))
            self.deps.add(ir)
            self.variants.add(ir)
            hosts |= hosts_of(ir)
        return hosts

    def _rebuild_aliases(self) -> set[str]:
        """Re-assign server-alias names (they depend on every host); returns the hosts whose changed."""
        irs = self.irs
        alias_irs = [irs[r] for r in self.deps.alias_refs if r in irs and irs[r].served]
        plan = assign_aliases(alias_irs, self._is_served_host) if alias_irs else {}
        old, self.alias_plan = self.alias_plan, plan
        return {h for h in old.keys() | plan.keys() if old.get(h) != plan.get(h)}

    def _is_served_host(self, host: str) -> bool:
        return any(r in self.irs and self.irs[r].served for r in self.deps.by_host.get(host, ()))

    def _served_for_host(self, host: str) -> list[IngressIR]:
        irs = self.irs
        return [irs[r] for r in self.deps.of_host(host) if r in irs and irs[r].served]

    def _set_ingress_state(self, ref: IngressRef, state: str | None) -> None:
        old = self._ingress_states.pop(ref, None)
        if old is not None:
            self._state_counts[old] -= 1
        if state is not None:
            self._ingress_states[ref] = state
            self._state_counts[state] += 1

    # -- TLS, clusters and endpoints ------------------------------------------------------
    def _rebuild_tls(self, changes: Changes, dirty_secrets: set[SecretKey]) -> set[str]:
        """Recomputed only when a TLS-bearing Ingress or a Secret changed in this batch."""
        if not dirty_secrets and not self.deps.tls_dirty:
            return set()
        self.deps.tls_dirty = False
        tls_irs = (self.irs[r] for r in self.deps.tls_refs if r in self.irs and self.irs[r].served)
        ordered = sorted(tls_irs, key=IngressIR.order_key)
        return self.tls_state.rebuild(changes, dirty_secrets, ordered, self.cache.get(rt.SECRET).resources)

    @property
    def tls(self) -> TlsPlan:
        return self.tls_state.plan

    # -- route tables and listeners -----------------------------------------------------------
    def _partitions_metric(self, table: str, partitions: int) -> None:
        self.metrics.route_partitions.labels(table).set(partitions)

    def _rebuild_listeners(
        self, changes: Changes, filters: list[Any], tls_hosts: list[Any], passthrough: list[Any]
    ) -> None:
        """Listeners change only when their inputs do (filters in use, TLS chains), never per route."""
        hosts_k, ew_k = self.routes.https.partitions, self.routes.east_west.partitions
        filter_bytes = tuple(flt.SerializeToString(deterministic=True) for flt in filters)
        inputs = (filter_bytes, tuple(tls_hosts), tuple(passthrough), hosts_k, ew_k)
        if inputs == self._listener_inputs:
            return
        self._listener_inputs = inputs
        lds = changes[rt.LISTENER]
        listeners = self.config.listeners(tls=bool(tls_hosts or passthrough))
        partitions = {lst.HTTP_ROUTES: hosts_k, lst.HTTPS_ROUTES: hosts_k, lst.EAST_WEST_ROUTES: ew_k}
        messages = lst.listener_messages(listeners, filters, tls_hosts, passthrough, FEATURES, partitions)
        for name, msg in messages.items():
            lds[name] = make_resource(name, rt.LISTENER, msg)
        if lst.HTTPS_LISTENER not in messages:
            lds[lst.HTTPS_LISTENER] = None


def _emitter(changes: Changes) -> Callable[[str, str, Any], None]:
    def emit(type_url: str, name: str, body: Any) -> None:
        changes[type_url][name] = None if body is None else make_resource(name, type_url, body)

    return emit
