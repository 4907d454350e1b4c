"""The incremental engine: object changes in, snapshot deltas out.

Store events (from any thread) are queued and drained on the event loop in one
batch per loop turn, so a burst of changes becomes one snapshot version without
any fixed delay. Each batch recomputes only what depends on the changed
objects: an EndpointSlice rebuilds one ClusterLoadAssignment, an Ingress its
own IR and the virtual hosts it touches; route tables are re-assembled from
cached per-host bytes.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.annotations.base import ParsedAnnotations
from controlplane.annotations.passthrough import SslPassthrough
from controlplane.build.classes import ClassPolicy, ClassView, is_accepted
from controlplane.build.hosts import HostResult, merge_host
from controlplane.build.ingress import IngressIR, Lookups, build_ingress
from controlplane.build.names import cluster_name, eds_name, parse_cluster_name, secret_name
from controlplane.build.secrets import decode_tls_secret
from controlplane.build.services import ServiceIndex, ServiceKey
from controlplane.build.tls import TlsPlan, plan_tls
from controlplane.eastwest import east_west_vhosts
from controlplane.ir import CertificateSecret, Finding, Forward, IngressRef, ServiceCluster
from controlplane.metrics import Metrics
from controlplane.route_tables import RouteTables
from controlplane.store import (
    ENDPOINT_SLICE,
    INGRESS,
    INGRESS_CLASS,
    SECRET,
    SERVICE,
    ClusterRegistry,
    StoreEvent,
)
from controlplane.translate import listeners as lst
from controlplane.translate.features import FEATURES, load_builtin_features
from controlplane.translate.resources import certificate_secret, load_assignment, service_cluster
from controlplane.translate.routes import framed_vhost, vhost_bytes
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, SnapshotCache, make_resource

log = logging.getLogger("controlplane.controller")


@dataclass(frozen=True)
class GatewayConfig:
    listen_address: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    east_west_port: int = 15080
    classes: ClassPolicy = field(default_factory=ClassPolicy)
    publish_address: str | None = None
    # Route tables per listener: N fixed hash partitions (1 = one table), or None to grow them
    # automatically with the number of hosts (see translate/partitions.py).
    route_partitions: int | None = None


def upstream_variant(parsed: ParsedAnnotations) -> str:
    if not parsed.upstream:
        return ""
    return hashlib.blake2b(repr(parsed.upstream).encode(), digest_size=4).hexdigest()


class Controller:
    def __init__(
        self, registry: ClusterRegistry, cache: SnapshotCache, metrics: Metrics, config: GatewayConfig
    ) -> None:
        load_builtin_features()
        self.registry = registry
        self.cache = cache
        self.metrics = metrics
        self.config = config
        self.services = ServiceIndex()
        self.ingress_objs: dict[IngressRef, Mapping[str, Any]] = {}
        self.irs: dict[IngressRef, IngressIR] = {}
        self.host_index: dict[str, set[IngressRef]] = {}
        self.default_holders: set[IngressRef] = set()
        self.svc_deps: dict[ServiceKey, set[IngressRef]] = {}
        self.secret_deps: dict[tuple[str, str, str], set[IngressRef]] = {}
        self.class_views: dict[str, ClassView] = {}
        self.host_results: dict[str, HostResult] = {}
        # Per-host VirtualHost bytes, framed as RouteConfiguration.virtual_hosts fields, kept per route
        # table (split into hash partitions at scale): a change re-assembles one partition with one join.
        self.routes = RouteTables(config.route_partitions, metrics)
        # Only hosts that use a feature / need extra clusters are listed, so per-change scans stay small.
        self.host_features: dict[str, dict[str, frozenset[str]]] = {}  # host -> feature -> filter keys
        # (feature, filter key) -> number of hosts needing it, kept by _set_host_features so the listener
        # inputs are known without scanning every host when most hosts use some feature (e.g. retries).
        self._feature_key_hosts: Counter[tuple[str, str]] = Counter()
        self.host_extra_clusters: dict[str, dict[str, Any]] = {}
        self.host_errors: dict[str, str] = {}  # hosts whose last build failed (previous routes kept)
        self._ingress_states: dict[IngressRef, str] = {}  # accepted | rejected | ignored, counted incrementally
        self._state_counts: Counter[str] = Counter()
        self.variant_policies: dict[str, tuple[Any, ...]] = {}
        self.variant_users: dict[str, set[IngressRef]] = {}  # variant cluster name -> ingresses
        self.svc_clusters: dict[ServiceKey, set[str]] = {}  # clusters emitted per Service
        self.svc_variants: dict[ServiceKey, set[str]] = {}  # variant cluster names per Service
        self.svc_eds: dict[ServiceKey, set[str]] = {}  # ClusterLoadAssignments emitted per Service
        self._touched_variants: set[str] = set()  # variant clusters whose users changed this batch
        self.tls_refs: set[IngressRef] = set()  # Ingresses with TLS bindings or ssl-passthrough
        self._tls_dirty = True
        self.good_certs: dict[str, CertificateSecret] = {}
        self.tls = TlsPlan()  # certificates, TLS policies and passthrough per host
        self._listener_inputs: tuple[Any, ...] | None = None
        self._extra_cluster_names: set[str] = set()
        self._events: deque[StoreEvent] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._first_event_at: float | None = None
        self.last_build_seconds = 0.0
        self.ready = asyncio.Event()

    # -- intake ----------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.registry.subscribe(self._on_event)

    def _on_event(self, event: StoreEvent) -> None:
        with self._lock:
            self._events.append(event)
            if self._first_event_at is None:
                self._first_event_at = time.monotonic()
        self.request_flush()

    def idle(self) -> bool:
        """No store event is waiting to be built."""
        with self._lock:
            return not self._events and not self._scheduled

    def request_flush(self) -> None:
        """Schedule one flush on the loop from any thread; events queued meanwhile join that batch."""
        with self._lock:
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Drain queued events and publish one snapshot delta. Runs on the event loop."""
        if not self.ready.is_set() and not self.registry.primary_synced():
            # Nothing is served before the primary cluster's first full list: build once from all
            # of it rather than many times from the parts that arrive while it is being read.
            with self._lock:
                self._scheduled = False
            return
        with self._lock:
            events = list(self._events)
            self._events.clear()
            self._scheduled = False
            seen_at = self._first_event_at or time.monotonic()
            self._first_event_at = None
        started = time.perf_counter()
        # A batch allocates many short-lived objects and no cycles worth chasing mid-build: the
        # cyclic GC would otherwise run dozens of times during a cold build of 10,000 Ingresses.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._process(events, seen_at)
        except Exception:  # never let one bad batch kill the control plane
            log.exception("snapshot build failed; keeping the previous snapshot")
        finally:
            if gc_was_enabled:
                gc.enable()
        self.last_build_seconds = time.perf_counter() - started
        self.metrics.build_duration.observe(self.last_build_seconds)
        self.metrics.snapshot_version.set(self.cache.version)
        # Serve once the primary cluster is in; remote clusters join as their events arrive
        # (readiness also waits for their first sync attempt, checked when /readyz is asked).
        if not self.ready.is_set() and self.registry.primary_synced():
            self.cache.ready = True
            self.ready.set()

    # -- the batch -------------------------------------------------------------
    def _process(self, events: list[StoreEvent], seen_at: float) -> None:
        dirty_ing: set[IngressRef] = set()
        dirty_svc: set[ServiceKey] = set()
        dirty_eds: set[ServiceKey] = set()
        dirty_secrets: set[tuple[str, str, str]] = set()
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
                dirty_ing |= self.svc_deps.get(key, set())
            elif ref.kind == ENDPOINT_SLICE:
                dirty_eds |= self.services.set_slice(ref.cluster, ref.namespace, ref.name, obj)
            elif ref.kind == SECRET:
                skey = (ref.cluster, ref.namespace, ref.name)
                dirty_secrets.add(skey)
                dirty_ing |= self.secret_deps.get(skey, set())
            elif ref.kind == INGRESS_CLASS:
                store = self.registry.get(ref.cluster)
                self.class_views[ref.cluster] = ClassView.from_objects(store.list(INGRESS_CLASS) if store else [])
                dirty_ing |= {r for r in self.ingress_objs if r.cluster == ref.cluster}

        changes: dict[str, dict[str, Resource | None]] = {t: {} for t in rt.PUSH_ORDER}
        hosts = self._rebuild_ingresses(dirty_ing)
        hosts_tls = self._rebuild_tls(changes, dirty_secrets)
        hosts |= hosts_tls
        cluster_keys = self._rebuild_clusters(changes, dirty_svc)
        self._rebuild_endpoints(changes, dirty_eds | cluster_keys)
        self._rebuild_hosts(changes, hosts)
        self._rebuild_east_west(dirty_svc)
        filters = self._http_filters()
        tls_hosts, passthrough = self.tls.chains()
        self.routes.render(changes, filters, https_listener=bool(tls_hosts))
        self.routes.schedule_retirement(self._loop, self.request_flush)
        self._rebuild_listeners(changes, filters, tls_hosts, passthrough)
        self.cache.apply(changes, seen_at=seen_at, trigger=events)
        self._update_ingress_metrics()

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
        hosts: set[str] = set()
        for ref in dirty:
            old = self.irs.pop(ref, None)
            if old is not None:
                self._unindex(old)
                hosts |= old.hosts
                if old.default_backend is not None:
                    hosts.add("")
            obj = self.ingress_objs.get(ref)
            if obj is None:
                self._set_ingress_state(ref, None)
                continue
            lookups = Lookups(resolve_port=self.services.resolve_port, get_secret=self._get_secret)
            try:
                ir = build_ingress(
                    obj,
                    ref,
                    class_accepted=is_accepted(obj, self._class_view(ref.cluster), self.config.classes),
                    lookups=lookups,
                    upstream_variant=upstream_variant,
                )
            except Exception as exc:  # a bug must cost this Ingress only, never the batch
                log.exception("building Ingress %s failed; it is not served", ref)
                ir = _failed_ingress(obj, ref, exc)
            self.irs[ref] = ir
            self._set_ingress_state(ref, _ingress_state(ir))
            self._index(ir)
            hosts |= ir.hosts
            if ir.default_backend is not None:
                hosts.add("")
        return hosts

    def _set_ingress_state(self, ref: IngressRef, state: str | None) -> None:
        old = self._ingress_states.pop(ref, None)
        if old is not None:
            self._state_counts[old] -= 1
        if state is not None:
            self._ingress_states[ref] = state
            self._state_counts[state] += 1

    def _index(self, ir: IngressIR) -> None:
        if ir.tls or ir.annotations.get(SslPassthrough) is not None:
            self.tls_refs.add(ir.ref)
            self._tls_dirty = True
        for host in ir.hosts:
            self.host_index.setdefault(host, set()).add(ir.ref)
        if ir.default_backend is not None:
            self.default_holders.add(ir.ref)
        for key in ir.services:
            self.svc_deps.setdefault(key, set()).add(ir.ref)
        for skey in ir.secrets:
            self.secret_deps.setdefault(skey, set()).add(ir.ref)
        variant = upstream_variant(ir.annotations)
        if variant and ir.served:
            self.variant_policies[variant] = ir.annotations.upstream
            for name in _forward_clusters(ir):
                self.variant_users.setdefault(name, set()).add(ir.ref)
                self._touched_variants.add(name)
                parsed = parse_cluster_name(name)
                if parsed:
                    self.svc_variants.setdefault((parsed[0], parsed[1]), set()).add(name)

    def _unindex(self, ir: IngressIR) -> None:
        if ir.ref in self.tls_refs:
            self.tls_refs.discard(ir.ref)
            self._tls_dirty = True
        for host in ir.hosts:
            refs = self.host_index.get(host)
            if refs is not None:
                refs.discard(ir.ref)
                if not refs:
                    del self.host_index[host]
        self.default_holders.discard(ir.ref)
        for key in ir.services:
            self.svc_deps.get(key, set()).discard(ir.ref)
        for skey in ir.secrets:
            self.secret_deps.get(skey, set()).discard(ir.ref)
        for name in _forward_clusters(ir):
            users = self.variant_users.get(name)
            if users is not None:
                users.discard(ir.ref)
                self._touched_variants.add(name)

    # -- TLS -----------------------------------------------------------------------
    def _rebuild_tls(
        self, changes: dict[str, dict[str, Resource | None]], dirty_secrets: set[tuple[str, str, str]]
    ) -> set[str]:
        """Host -> certificate map, SDS secrets; a broken Secret keeps its last good certificate.

        Recomputed only when a TLS-bearing Ingress or a Secret changed in this batch.
        """
        if not dirty_secrets and not self._tls_dirty:
            return set()
        self._tls_dirty = False
        for skey in dirty_secrets:
            name = secret_name(*skey)
            obj = self._get_secret(*skey)
            if obj is None:
                continue
            try:
                cert, key = decode_tls_secret(obj)
            except ValueError as exc:
                if name in self.good_certs:
                    log.warning("secret %s is unusable (%s); keeping its previous certificate", name, exc)
                continue
            self.good_certs[name] = CertificateSecret(name, cert, key)
        tls_irs = (self.irs[r] for r in self.tls_refs if r in self.irs and self.irs[r].served)
        plan = plan_tls(sorted(tls_irs, key=IngressIR.order_key), self.good_certs)
        used = set(plan.certs.values())
        sds = changes[rt.SECRET]
        for name in used:
            sds[name] = make_resource(name, rt.SECRET, certificate_secret(self.good_certs[name]))
        for name in set(self.cache.get(rt.SECRET).resources) - used:
            sds[name] = None
        old = self.tls.certs
        self.tls = plan
        return {h for h in set(plan.certs) | set(old) if plan.certs.get(h) != old.get(h)}

    # -- clusters and endpoints ------------------------------------------------------
    def _service_clusters(self, key: ServiceKey) -> dict[str, ServiceCluster]:
        ns, name = key
        out: dict[str, ServiceCluster] = {}
        for port in self.services.ports(key):
            base = cluster_name(ns, name, port.port)
            out[base] = ServiceCluster(base, eds_name(ns, name, port.port), ns, name, port.port)
        for cname in self.svc_variants.get(key, ()):
            parsed = parse_cluster_name(cname)
            if not self.variant_users.get(cname) or parsed is None or not parsed[3]:
                continue
            port_no = parsed[2]
            if any(p.port == port_no for p in self.services.ports(key)):
                policies = self.variant_policies.get(parsed[3], ())
                static = None
                # service-upstream: the Service's ClusterIP is the single endpoint.
                if any(getattr(p, "use_cluster_ip", False) for p in policies):
                    ip = self.services.cluster_ip(key)
                    static = (ip, port_no) if ip else None
                # A variant has its own ClusterLoadAssignment: Envoy only fetches an assignment when a
                # new name is subscribed, so sharing the base one left new variants warming for 15 s.
                out[cname] = ServiceCluster(cname, cname, ns, name, port_no, policies, static)
        return out

    def _rebuild_clusters(
        self, changes: dict[str, dict[str, Resource | None]], dirty_svc: set[ServiceKey]
    ) -> set[ServiceKey]:
        """Clusters of changed Services and of Services whose variants changed; returns those Services."""
        keys = set(dirty_svc)
        for cname in self._touched_variants:
            parsed = parse_cluster_name(cname)
            if parsed:
                keys.add((parsed[0], parsed[1]))
            if not self.variant_users.get(cname):
                self.variant_users.pop(cname, None)  # nobody uses it: its cluster goes away
                if parsed:
                    self.svc_variants.get((parsed[0], parsed[1]), set()).discard(cname)
        self._touched_variants = set()
        cds = changes[rt.CLUSTER]
        for key in keys:
            want = self._service_clusters(key)
            for name in self.svc_clusters.get(key, set()) - want.keys():
                cds[name] = None
            for name, sc in want.items():
                cds[name] = make_resource(name, rt.CLUSTER, service_cluster(sc))
            if want:
                self.svc_clusters[key] = set(want)
            else:
                self.svc_clusters.pop(key, None)
        return keys

    def _rebuild_endpoints(self, changes: dict[str, dict[str, Resource | None]], dirty: set[ServiceKey]) -> None:
        eds = changes[rt.ENDPOINT]
        primary = self.registry.primary_id()
        for key in dirty:
            ports = {p.port: p for p in self.services.ports(key)}
            # One assignment per EDS cluster of the Service (the base per port, plus its variants).
            want = {sc.eds_name: sc.port for sc in self._service_clusters(key).values() if sc.static_address is None}
            for name in self.svc_eds.get(key, set()) - want.keys():
                eds[name] = None
            localities = {n: self.services.localities(key, p, primary) for n, p in ports.items()}
            for name, port_no in want.items():
                eds[name] = make_resource(name, rt.ENDPOINT, load_assignment(name, localities[port_no]))
            if want:
                self.svc_eds[key] = set(want)
            else:
                self.svc_eds.pop(key, None)

    # -- virtual hosts and route tables ---------------------------------------------------
    def _rebuild_hosts(self, changes: dict[str, dict[str, Resource | None]], hosts: set[str]) -> None:
        if not hosts:
            return
        tls_hosts = frozenset(self.tls.certs)
        for host in hosts:
            try:
                self._build_host(host, tls_hosts)
                self.host_errors.pop(host, None)
            except Exception as exc:  # keep this host's last good routes; every other host goes on
                log.exception("building virtual host %r failed; keeping its previous routes", host or "*")
                self.host_errors[host] = f"internal error building host {host or '*'}: {exc}"
        # Extra clusters (auth, mirror targets) follow the routes that need them.
        wanted: dict[str, Any] = {}
        for extra in self.host_extra_clusters.values():
            wanted.update(extra)
        cds = changes[rt.CLUSTER]
        for name in self._extra_cluster_names - set(wanted):
            cds[name] = None
        for name, pb in wanted.items():
            cds[name] = make_resource(name, rt.CLUSTER, pb)
        self._extra_cluster_names = set(wanted)

    def _drop_host(self, host: str) -> None:
        self.host_results.pop(host, None)
        self.routes.http.remove(host)
        self.routes.https.remove(host)
        self._set_host_features(host, {})
        self.host_extra_clusters.pop(host, None)

    def _build_host(self, host: str, tls_hosts: frozenset[str]) -> None:
        """Merge and translate one host; cache its framed vhost bytes, filter needs and extra clusters.

        Everything is computed before any table is touched, so a failure leaves the host as it was.
        """
        refs = set(self.host_index.get(host, set()))
        if host == "":
            refs |= self.default_holders
        irs = [self.irs[r] for r in refs if r in self.irs and self.irs[r].served]
        if not irs:
            self._drop_host(host)
            return
        result = merge_host(host, irs, tls_hosts=tls_hosts, https_port=self.config.https_port)
        if not result.https.routes:
            self._drop_host(host)
            self.host_results[host] = result  # keeps its findings (conflicts) for the reports
            return
        https = framed_vhost(vhost_bytes(result.https))
        http = https if result.http is result.https else framed_vhost(vhost_bytes(result.http))
        needs: dict[str, frozenset[str]] = {}
        extra: dict[str, Any] = {}
        for f in FEATURES:
            keys = frozenset().union(*(f.filter_keys(r) for r in result.https.routes))
            if keys:
                needs[f.name] = keys
            for r in result.https.routes:
                for c in f.extra_clusters(r):
                    extra[c.name] = c
        self.host_results[host] = result
        self.routes.https.put(host, https, (host,))
        self.routes.http.put(host, http, (host,))
        self._set_host_features(host, needs)
        if extra:
            self.host_extra_clusters[host] = extra
        else:
            self.host_extra_clusters.pop(host, None)

    def _set_host_features(self, host: str, needs: dict[str, frozenset[str]]) -> None:
        for name, keys in self.host_features.pop(host, {}).items():
            for key in keys:
                self._feature_key_hosts[(name, key)] -= 1
        if needs:
            self.host_features[host] = needs
            for name, keys in needs.items():
                for key in keys:
                    self._feature_key_hosts[(name, key)] += 1

    def _rebuild_east_west(self, dirty: set[ServiceKey]) -> None:
        for key in dirty:
            ports = self.services.ports(key)
            if ports:
                vhosts = east_west_vhosts(key[0], key[1], ports)
                frames = b"".join(framed_vhost(vhost_bytes(v)) for v in vhosts)
                self.routes.east_west.put(key, frames, [d for v in vhosts for d in v.domains])
            else:
                self.routes.east_west.remove(key)

    # -- listeners --------------------------------------------------------------------------
    def _http_filters(self) -> list[Any]:
        """The north-south HTTP filters that some route needs right now."""
        needs: dict[str, frozenset[str]] = {}
        for (name, key), count in self._feature_key_hosts.items():
            if count > 0:
                needs[name] = needs.get(name, frozenset()) | {key}
        features = [f for f in FEATURES if f.name in needs]
        return [flt for f in features for flt in f.http_filters(needs[f.name])]

    def _rebuild_listeners(
        self,
        changes: dict[str, dict[str, Resource | None]],
        filters: list[Any],
        tls_hosts: list[Any],
        passthrough: list[Any],
    ) -> None:
        """Listeners change only when their inputs do (filters in use, TLS chains), never per route."""
        hosts_k, ew_k = self.routes.https.partitions, self.routes.east_west.partitions
        inputs = (
            tuple(flt.SerializeToString(deterministic=True) for flt in filters),
            tuple(tls_hosts),
            tuple(passthrough),
            hosts_k,
            ew_k,
        )
        if inputs == self._listener_inputs:
            return
        self._listener_inputs = inputs
        c = self.config
        lds = changes[rt.LISTENER]
        lds[lst.HTTP_LISTENER] = make_resource(
            lst.HTTP_LISTENER,
            rt.LISTENER,
            lst.http_listener(
                lst.HTTP_LISTENER, c.listen_address, c.http_port, lst.HTTP_ROUTES, filters, partitions=hosts_k
            ),
        )
        lds[lst.EAST_WEST_LISTENER] = make_resource(
            lst.EAST_WEST_LISTENER,
            rt.LISTENER,
            lst.http_listener(
                lst.EAST_WEST_LISTENER, c.listen_address, c.east_west_port, lst.EAST_WEST_ROUTES, [], partitions=ew_k
            ),
        )
        if tls_hosts or passthrough:
            lds[lst.HTTPS_LISTENER] = make_resource(
                lst.HTTPS_LISTENER,
                rt.LISTENER,
                lst.https_listener(
                    c.listen_address, c.https_port, tls_hosts, FEATURES, filters, passthrough, partitions=hosts_k
                ),
            )
        else:
            lds[lst.HTTPS_LISTENER] = None

    # -- reports ----------------------------------------------------------------------------
    def ingress_report(self, ir: IngressIR) -> dict[str, Any]:
        findings: list[Finding] = list(ir.findings)
        for host in ir.hosts | ({""} if ir.default_backend else set()):
            result = self.host_results.get(host)
            if result:
                findings.extend(f for ref, f in result.findings if ref == ir.ref)
            if host in self.host_errors:
                findings.append(Finding("warning", host or "*", self.host_errors[host] + "; previous routes kept"))
        address = self.config.publish_address or self.config.listen_address
        reasons = []
        if not ir.class_accepted:
            reasons.append("ingress class is not served by Meridian")
        reasons.extend(f"{f.key}: {f.message}" for f in findings if f.level == "rejected")
        return {
            "cluster": ir.ref.cluster,
            "namespace": ir.ref.namespace,
            "name": ir.ref.name,
            "accepted": ir.served,
            "reasons": reasons,
            "warnings": [f"{f.key}: {f.message}" for f in findings if f.level in ("warning", "conflict")],
            "findings": [f.as_dict() for f in findings],
            "address": address if ir.served else None,
            "hosts": sorted(h or "*" for h in ir.hosts),
        }

    def ingress_reports(self) -> list[dict[str, Any]]:
        return [self.ingress_report(self.irs[r]) for r in sorted(self.irs)]

    def _update_ingress_metrics(self) -> None:
        for state in ("accepted", "rejected", "ignored"):
            self.metrics.ingresses.labels(state).set(self._state_counts[state])


def _failed_ingress(obj: Mapping[str, Any], ref: IngressRef, exc: Exception) -> IngressIR:
    """An Ingress whose translation crashed: rejected, with the reason in its report."""
    meta = obj.get("metadata") or {}
    return IngressIR(
        ref=ref,
        created=str(meta.get("creationTimestamp") or ""),
        class_accepted=True,
        rules=(),
        default_backend=None,
        tls=(),
        annotations=ParsedAnnotations(),
        findings=(Finding("rejected", "spec", f"internal error translating this Ingress: {exc}"),),
        rejected=True,
    )


def _forward_clusters(ir: IngressIR) -> set[str]:
    names: set[str] = set()
    actions = [r.action for r in ir.rules] + ([ir.default_backend] if ir.default_backend else [])
    for a in actions:
        if isinstance(a, Forward):
            names.update(wc.cluster for wc in a.clusters)
    return {n for n in names if "~" in n}


def _ingress_state(ir: IngressIR) -> str:
    if ir.served:
        return "accepted"
    return "rejected" if ir.class_accepted and ir.rejected else "ignored"
