"""The incremental engine: object changes in, snapshot deltas out.

Store events (from any thread) are batched by the Batcher, one batch per loop turn, so a burst of
changes becomes one snapshot version without any fixed delay. Each batch recomputes only what
depends on the changed objects: an EndpointSlice rebuilds one ClusterLoadAssignment, an Ingress
its own IR and the virtual hosts it touches; route tables are re-assembled from cached per-host
bytes. The result must equal what `controlplane.compile.compile` gives for the same objects. A
batch is all or nothing: after a failed one, the next rebuilds everything (recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane.certificates import CertificateBook
from controlplane.config import GatewayConfig
from controlplane.engine.backends import ServiceBackends
from controlplane.engine.batcher import Batcher
from controlplane.engine.dependencies import SecretKey
from controlplane.engine.first_build import FirstBuildGate
from controlplane.engine.gatewayapi import GatewayApiState
from controlplane.engine.host_routes import HostRoutes
from controlplane.engine.ingresses import IngressState
from controlplane.engine.knative import KnativeState
from controlplane.engine.tls import TlsState
from controlplane.engine.view import IngressView
from controlplane.gatewayapi.build import GatewayApiResult
from controlplane.ingress.aliases import AliasPlan
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.hosts import HostResult
from controlplane.ingress.tls import TlsPlan
from controlplane.ir import IngressRef
from controlplane.knative.build import KnativeResult
from controlplane.knative.frontend import claimed_service, combine
from controlplane.metrics import Metrics
from controlplane.recovery import FailedBatchRecovery, remove_unlisted
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
        self.certificates = CertificateBook()  # usable certificates; kept across rebuilds (certificates.py)
        self._reset_derived_state()
        self.last_build_seconds = 0.0
        self.ready = asyncio.Event()
        # Nothing is served before the primary cluster's first full list; the first build also waits
        # for the other clusters' lists (engine/first_build.py): built once from all of it rather than
        # many times from the parts that arrive while they are being read.
        self.batcher = Batcher(self._build, self._may_build, self._built)
        self._first_build = FirstBuildGate(registry, self.request_flush)
        self._recovery = FailedBatchRecovery()
        self.view = IngressView(self, self.batcher)
        self._built_listeners: list[Callable[[], None]] = []

    def _reset_derived_state(self) -> None:
        """Everything computed from the objects: empty at start, emptied again for a full rebuild."""
        self.services = ServiceIndex()
        self.ingresses = IngressState(self.registry, self.services, self.config, self._get_secret)
        # Per-host VirtualHost bytes, framed as RouteConfiguration.virtual_hosts fields, kept per route
        # table (split into hash partitions at scale): a change re-assembles one partition with one join.
        self.routes = RouteTables(self.config.route_partitions, self._partitions_metric)
        self.hosts = HostRoutes(self.routes, self.config.public_https_port)
        self.gateway_api = GatewayApiState(self.registry, self.services, self.config, self._get_secret,
                                           self.ingresses.variants)  # fmt: skip
        self.knative = KnativeState(self.registry, self.services, self._get_secret, self.ingresses.variants)
        self.hosts.gateway = lambda host: combine(self.gateway_api.entries(host), self.knative.entries(host))
        self.backends = ServiceBackends(self.services, self.ingresses.variants)
        self.tls_state = TlsState(self._get_secret, self.certificates, self.config, self.registry.primary_id)
        self._listener_inputs: tuple[Any, ...] | None = None
        self.alias_plan: AliasPlan = {}  # server-alias names of every host (ingress/aliases.py)

    # -- what the view reads -----------------------------------------------------------
    @property
    def irs(self) -> dict[IngressRef, IngressIR]:
        return self.ingresses.irs

    @property
    def ingress_objs(self) -> dict[IngressRef, Mapping[str, Any]]:
        return self.ingresses.objects

    @property
    def host_results(self) -> dict[str, HostResult]:
        return self.hosts.results

    @property
    def host_errors(self) -> dict[str, str]:
        return self.hosts.errors

    @property
    def tls(self) -> TlsPlan:
        return self.tls_state.plan

    @property
    def gateway_api_result(self) -> GatewayApiResult:
        return self.gateway_api.result

    @property
    def knative_result(self) -> KnativeResult:
        return self.knative.result

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
        self.registry.on_status(self._first_build.status_changed)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        return self.batcher.loop

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
        return self.ready.is_set() or self._first_build.open(self.batcher.loop)

    def add_built_listener(self, listener: Callable[[], None]) -> None:
        self._built_listeners.append(listener)

    def _built(self, took: float) -> None:
        self.last_build_seconds = took
        loop = self.batcher.loop
        args = (self._built_listeners, self.metrics, self.ingresses.state_counts, took, self.cache.version)
        if self.ready.is_set() and loop is not None and loop.is_running():
            loop.call_soon(_after_build, *args)  # serving already: the streams it woke send first
            return
        _after_build(*args)
        # Serve once the primary cluster is in; remote clusters join as their events arrive
        # (readiness also waits for their first sync attempt, checked when /readyz is asked).
        if not self.ready.is_set() and self.registry.primary_synced():
            self.cache.ready = True
            self.ready.set()
            self._first_build.done()

    def _build(self, batch: list[StoreEvent], seen_at: float) -> bool:
        full = self._recovery.pending
        events = trigger = batch  # trigger: the object changes behind this version (the history records them)
        try:
            if full:  # the last batch failed half-way: start again from the objects, not from its leftovers
                self._reset_derived_state()
                trigger = self._recovery.trigger(batch)
                events = self._recovery.events(batch, self.registry)
            self._process(events, seen_at, full=full, trigger=trigger)
            self._recovery.succeeded()
            return True
        except Exception:  # never let one bad batch kill the control plane
            log.exception("snapshot build failed; keeping the previous snapshot, the next build is a full one")
            self._recovery.failed(batch, self.batcher.loop, self.request_flush)
            return False

    # -- the batch -------------------------------------------------------------
    def _process(
        self, events: list[StoreEvent], seen_at: float, *, full: bool = False, trigger: Sequence[StoreEvent] = ()
    ) -> None:
        ing = self.ingresses
        dirty_ing: set[IngressRef] = set()
        dirty_svc: set[ServiceKey] = set()
        dirty_eds: set[ServiceKey] = set()
        dirty_secrets: dict[SecretKey, bool] = {}  # -> a delete of it was seen in this batch
        for ev in events:
            ref, obj = ev.ref, ev.new
            if ref.kind == INGRESS:
                iref = IngressRef(ref.cluster, ref.namespace, ref.name)
                ing.set_object(iref, obj)
                dirty_ing.add(iref)
            elif ref.kind == SERVICE:
                key = self.services.set_service(ref.cluster, ref.namespace, ref.name, obj)
                dirty_svc.add(key)
                dirty_eds.add(key)
                dirty_ing |= ing.deps.of_service(key)
            elif ref.kind == ENDPOINT_SLICE:
                dirty_eds |= self.services.set_slice(ref.cluster, ref.namespace, ref.name, obj)
            elif ref.kind == SECRET:
                skey = (ref.cluster, ref.namespace, ref.name)
                dirty_secrets[skey] = dirty_secrets.get(skey, False) or obj is None
                dirty_ing |= ing.deps.of_secret(skey)
            elif ref.kind == INGRESS_CLASS:
                dirty_ing |= ing.classes_changed(ref.cluster)

        changes: Changes = {t: {} for t in rt.PUSH_ORDER}
        hosts = ing.rebuild(dirty_ing)
        if dirty_ing:  # aliases depend on every host: re-assign them, rebuild the hosts whose changed
            old, self.alias_plan = self.alias_plan, ing.alias_plan()
            hosts |= {h for h in old.keys() | self.alias_plan.keys() if old.get(h) != self.alias_plan.get(h)}
        gw_hosts, gw_tls = self.gateway_api.rebuild({ev.ref.kind for ev in events}, full=full)
        hosts |= gw_hosts
        kn_hosts, kn_local, kn_tls = self.knative.rebuild(events, full=full)
        hosts |= kn_hosts
        # A cluster-local host takes its names over from the Service of the same name on east-west.
        dirty_svc |= {key for h in kn_local if (key := claimed_service(h)) is not None}
        # The TLS plan: a Secret or a TLS binding changed (or none was planned yet: the default certificate).
        if dirty_secrets or ing.deps.tls_dirty or gw_tls or kn_tls or not self.tls_state.built:
            ing.deps.tls_dirty = False
            published = self.cache.get(rt.SECRET).resources
            hosts |= self.tls_state.rebuild(changes, dirty_secrets, ing.served_with_tls(), published,
                                            self._other_certificates,
                                            self.gateway_api.port_secrets())  # fmt: skip
        if full or not self.ready.is_set():  # a cold build: the tables get every host at once
            self.routes.presize(len(ing.deps.by_host), len(self.services.services))
        cluster_keys = dirty_svc | ing.variants.take_touched()
        self.backends.rebuild_clusters(changes, cluster_keys)
        self.backends.rebuild_endpoints(changes, dirty_eds | cluster_keys, self.registry.primary_id())
        ports = False  # whether the extra clusters of listeners on ports of their own changed
        if self.gateway_api.ports_dirty or dirty_secrets:  # (a certificate may have become usable)
            ports = self.gateway_api.render_ports(changes, self.certificates)
        if hosts or ports:
            if hosts:
                self.hosts.rebuild(hosts, ing.served_for_host, frozenset(self.tls.certs), self.alias_plan)
            self.backends.set_extra_clusters(changes, {**self.hosts.wanted_extra_clusters(),
                                                       **self.gateway_api.port_clusters})  # fmt: skip
        self.hosts.rebuild_local(kn_local, self.knative.result.local)
        self.hosts.rebuild_east_west(self.services, dirty_svc, self.knative.result.local)
        filters = self.hosts.http_filters()
        tls_hosts, passthrough = self.tls.chains()
        self.routes.render(_emitter(changes), filters, https_listener=bool(tls_hosts))
        when = self.routes.next_retirement()  # an old partition layout is due to be deleted then
        if when is not None:
            self.batcher.flush_at(when)
        self._rebuild_listeners(changes, filters, tls_hosts, passthrough)
        if full:  # built from nothing, `changes` holds every resource: whatever else is cached goes
            remove_unlisted(changes, self.cache)
        self.cache.apply(changes, seen_at=seen_at, trigger=trigger)

    def _other_certificates(self, certs: dict[str, str]) -> None:
        """Host -> certificate bindings of the other frontends (Gateway API listeners, KIngress tls)."""
        self.gateway_api.add_certificates(certs)
        self.knative.add_certificates(certs, self.certificates.__contains__)

    def _get_secret(self, cluster: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        store = self.registry.get(cluster)
        return store.get(SECRET, namespace, name) if store else None

    # -- route tables and listeners -----------------------------------------------------------
    def _partitions_metric(self, table: str, partitions: int) -> None:
        self.metrics.route_partitions.labels(table).set(partitions)

    def _rebuild_listeners(
        self, changes: Changes, filters: list[Any], tls_hosts: list[Any], passthrough: list[Any]
    ) -> None:
        """Listeners change only when their inputs do (filters in use, TLS chains), never per route."""
        hosts_k, ew_k = self.routes.https.partitions, self.routes.east_west.partitions
        inputs = (self.hosts.http_filter_bytes(), tuple(tls_hosts), tuple(passthrough), hosts_k, ew_k)
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


def _after_build(
    listeners: list[Callable[[], None]], metrics: Metrics, counts: Mapping[str, int], took: float, version: int
) -> None:
    """A build's metrics and built listeners (status writers): nothing Envoy waits for."""
    for listener in listeners:
        listener()
    metrics.build_duration.observe(took)
    metrics.snapshot_version.set(version)
    for state in ("accepted", "rejected", "ignored"):
        metrics.ingresses.labels(state).set(counts[state])


def _emitter(changes: Changes) -> Callable[[str, str, Any], None]:
    def emit(type_url: str, name: str, body: Any) -> None:
        changes[type_url][name] = None if body is None else make_resource(name, type_url, body)

    return emit
