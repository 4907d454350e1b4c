"""Ingress status and Events, written by the elected leader only.

For every Ingress Meridian serves, `status.loadBalancer.ingress` carries the
gateway's address (`--publish-address`, or the address of the Service named by
`--publish-service`); it is cleared when Meridian stops serving the Ingress.
Warnings, rejections and conflicts become Warning Events on the Ingress.
Writes go to the cluster the Ingress came from.

Cost stays proportional to what changed: the writer listens to the registry,
and after the controller has processed a batch it compares, per Ingress, the
identity of the IR, of the host results holding its conflict findings and of
the stored object. Only Ingresses where one of them changed are looked at, and
a write happens only when the desired status differs from the stored one.
Event names are derived from (uid, generation, reason, message), so the same
finding is created once even across restarts and leader changes (409 = done).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, Counter, Gauge

from controlplane.engine.view import IngressView
from controlplane.ir import IngressRef
from controlplane.leader import LeaderElector, LeaseTimings
from controlplane.status_tracking import RELEVANT, Address, ChangeTracker, addresses_key
from controlplane.store import INGRESS, SERVICE, ClusterRegistry, StoreEvent

log = logging.getLogger(__name__)

EVENT_REASONS: dict[str, str] = {
    "rejected": "Rejected",
    "conflict": "Conflict",
    "warning": "AnnotationInvalid",
    "unsupported": "AnnotationUnsupported",
}
_MERGE = "application/merge-patch+json"


def parse_addresses(text: str) -> list[dict[str, str]]:
    """`--publish-address a,b` -> load balancer entries: IPs as `ip`, anything else as `hostname`."""
    out: list[dict[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ipaddress.ip_address(part)
            out.append({"ip": part})
        except ValueError:
            out.append({"hostname": part})
    return out


def service_addresses(svc: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """A Service's load balancer entries, else its external IPs, else its cluster IP."""
    if not svc:
        return []
    lb = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    entries = [{k: str(e[k]) for k in ("ip", "hostname") if e.get(k)} for e in lb if isinstance(e, dict)]
    entries = [e for e in entries if e]
    if entries:
        return entries
    spec = svc.get("spec") or {}
    if spec.get("externalIPs"):
        return parse_addresses(",".join(str(ip) for ip in spec["externalIPs"]))
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        return parse_addresses(str(cluster_ip))
    return []


def current_addresses(obj: Mapping[str, Any]) -> list[dict[str, str]]:
    lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [{k: str(v) for k, v in e.items() if k in ("ip", "hostname")} for e in lb if isinstance(e, dict)]


def event_name(ingress_name: str, uid: str, generation: Any, reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{uid}\0{generation}\0{reason}\0{message}".encode()).hexdigest()[:16]
    return f"{ingress_name[:200]}.{digest}"


@dataclass(frozen=True)
class StatusSettings:
    """What the operator said about status writing (the `serve` flags of the same names)."""

    namespace: str = "meridian-system"
    lease_duration: float = 15.0
    lease_renew_interval: float = 5.0
    publish_address: str | None = None
    publish_service: str | None = None  # "namespace/name" of a Service in the primary cluster


def publish_addresses(settings: StatusSettings, registry: ClusterRegistry) -> list[dict[str, str]]:
    """What goes into status.loadBalancer.ingress right now (empty: nothing to publish)."""
    if settings.publish_address:
        return parse_addresses(settings.publish_address)
    if settings.publish_service and "/" in settings.publish_service:
        ns, name = settings.publish_service.split("/", 1)
        primary = registry.primary_id()
        store = registry.get(primary) if primary is not None else None
        return service_addresses(store.get(SERVICE, ns, name) if store is not None else None)
    return []


@dataclass(frozen=True)
class _Write:
    """One API call the leader should make."""

    ref: IngressRef
    kind: str  # "status" | "event"
    body: dict[str, Any]
    seen_rv: str = ""  # the Ingress resourceVersion the decision was based on (status)


class StatusWriter:
    """Leader-only writer of Ingress status and Events for every cluster in the registry.

    Reads what is served through the engine's IngressView only.
    """

    def __init__(
        self,
        view: IngressView,
        registry: ClusterRegistry,
        api_client: k8s.ApiClient,
        settings: StatusSettings,
        metrics_registry: CollectorRegistry,
        *,
        remote_client: Callable[[str], k8s.ApiClient | None] = lambda cluster: None,
        identity: str | None = None,
        concurrency: int = 8,
        debounce: float = 0.05,
        retry_delay: float = 1.0,
    ) -> None:
        self.view = view
        self.registry = registry
        self.api = api_client
        self.settings = settings
        self.remote_client = remote_client  # API client of a remote cluster, by id
        self.elector = LeaderElector(
            api_client,
            settings.namespace,
            identity=identity,
            timings=LeaseTimings(duration=settings.lease_duration, renew_interval=settings.lease_renew_interval),
        )
        self.elector.add_listener(self._on_leadership)
        self.concurrency = concurrency
        self.debounce = debounce
        self.retry_delay = retry_delay
        self.changes = ChangeTracker(view, registry, self._recheck_soon)
        self._inflight: dict[IngressRef, tuple[str, frozenset[Address]]] = {}
        self.events = EmittedEvents()
        self._published: set[Address] = set()  # every address this process has published
        self._kick = asyncio.Event()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.writes = Counter("meridian_status_writes_total", "Ingress status patches and Events written",
                              ["kind", "result"], registry=metrics_registry)  # fmt: skip
        self.leader_gauge = Gauge(
            "meridian_leader", "1 while this replica holds the leader lease", registry=metrics_registry
        )

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry.subscribe(self._on_store_event)
        self._task = asyncio.create_task(self._run(), name="status-writer")
        await self.elector.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.elector.stop()

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    def addresses(self) -> list[dict[str, str]]:
        """What goes into status.loadBalancer.ingress right now (empty: nothing to publish)."""
        return publish_addresses(self.settings, self.registry)

    # -- triggers --------------------------------------------------------
    def _on_store_event(self, event: StoreEvent) -> None:
        # Runs in the writer's thread, after the engine's listener queued the same event,
        # so the engine's flush is scheduled ahead of this wake-up.
        if event.ref.kind not in RELEVANT or self._loop is None:
            return
        self.changes.note(event)
        with self._wake_lock:
            if self._wake_scheduled:  # one wake-up per batch, not one loop write per event
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._wake_lock:
            self._wake_scheduled = False
        self._kick.set()

    def _recheck_soon(self) -> None:
        if self._loop is not None:
            self._loop.call_later(self.debounce, self._kick.set)

    def _on_leadership(self, leading: bool) -> None:
        self.leader_gauge.set(1 if leading else 0)
        self._forget_all()  # a new term starts with a full comparison
        if leading:
            self._kick.set()

    def _forget_all(self) -> None:
        self.changes.forget_all()
        self._inflight.clear()

    def _retry_later(self, ref: IngressRef) -> None:
        self.changes.touch(ref)
        if self._loop is not None:
            self._loop.call_later(self.retry_delay, self._kick.set)

    async def _wait_primary_synced(self) -> None:
        """Status decisions need a complete primary store (an unseen IngressClass would clear statuses).

        Not readiness: that also waits for every remote cluster, so a remote that is slow to sync
        would hold back status for the primary cluster. Once the primary is synced this also waits
        for the engine's first build of it: status follows what is served, and a first pass
        over thousands of Ingresses would otherwise compete with that build for the CPU.
        """
        while not _primary_built(self.registry, self.view):
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        await self._wait_primary_synced()
        self._kick.set()
        while True:
            await self._kick.wait()
            await asyncio.sleep(self.debounce)  # let a burst of changes settle into one pass
            self._kick.clear()
            if not self.is_leader:
                continue
            try:
                await self.run_pass()
            except Exception:
                log.exception("writing Ingress status failed")
                self._forget_all()
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)

    # -- one pass --------------------------------------------------------
    def dirty(self) -> list[IngressRef]:
        """Ingresses whose IR, stored object or host findings changed since the last pass."""
        changed, gone = self.changes.dirty(addresses_key(self.addresses()))
        for ref in gone:
            self._inflight.pop(ref, None)
            self.events.forget(ref)
        return changed

    async def run_pass(self) -> int:
        """Compare dirty Ingresses with what they should say and write the differences."""
        self.passes += 1
        addresses = self.addresses()
        self._published |= addresses_key(addresses)
        writes: list[_Write] = []
        dirty = self.dirty()
        for ref in dirty:
            writes.extend(self._plan(ref, addresses))
        log.debug("status pass %d: %d Ingresses to check, %d writes", self.passes, len(dirty), len(writes))
        if not writes:
            return 0
        sem = asyncio.Semaphore(self.concurrency)

        async def one(w: _Write) -> None:
            async with sem:
                await self._execute(w)

        await asyncio.gather(*(one(w) for w in writes))
        return len(writes)

    def _plan(self, ref: IngressRef, addresses: list[dict[str, str]]) -> list[_Write]:
        ir = self.view.irs.get(ref)
        store = self.registry.get(ref.cluster)
        obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
        if ir is None or obj is None or store is None:
            return []
        if store.status.state == "pending":  # that cluster has not listed everything yet: decide later
            self._retry_later(ref)
            return []
        out: list[_Write] = []
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        current = addresses_key(current_addresses(obj))
        desired = self._desired(ir, current, addresses)
        inflight = self._inflight.get(ref)
        if inflight is not None and inflight[0] != rv:
            self._inflight.pop(ref, None)
            inflight = None
        if desired is not None and desired != current and inflight != (rv, desired):
            entries = addresses if ir.served else []
            body = {"status": {"loadBalancer": {"ingress": entries or None}}}
            out.append(_Write(ref, "status", body, rv))
            self._inflight[ref] = (rv, desired)
        if ir.class_accepted:
            report = self.view.report(ir)
            out.extend(_Write(ref, "event", body) for body in self.events.new(ref, meta, report, self.elector.identity))
        return out

    def _desired(
        self, ir: Any, current: frozenset[Address], addresses: list[dict[str, str]]
    ) -> frozenset[Address] | None:
        """The addresses the Ingress's status should hold; None: leave its status alone."""
        if not (self.settings.publish_address or self.settings.publish_service):
            return None  # nothing to publish
        if ir.served:
            return addresses_key(addresses)
        if ir.class_accepted or (current and current <= self._published):
            return frozenset()  # ours but rejected, or it left our class with our address on it
        return None  # another controller's Ingress: never touch its status

    # -- API calls -------------------------------------------------------
    def client_for(self, cluster: str) -> k8s.ApiClient | None:
        """The API client of the cluster an Ingress came from."""
        if cluster == self.registry.primary_id():
            return self.api
        return self.remote_client(cluster)

    async def _execute(self, w: _Write) -> None:
        if not self.is_leader:  # lost the lease meanwhile: the next leader does it
            self._retry_later(w.ref)
            return
        api = self.client_for(w.ref.cluster)
        if api is None:
            self._retry_later(w.ref)
            return
        try:
            await asyncio.to_thread(_call, api, w)
        except k8s.ApiException as exc:
            if w.kind == "event" and exc.status == 409:
                self.writes.labels(w.kind, "exists").inc()  # emitted before (another term or replica)
                return
            if exc.status == 404:  # the Ingress (or its namespace) is gone
                self.writes.labels(w.kind, "gone").inc()
                return
            self._failed(w, f"HTTP {exc.status} {exc.reason or ''}".strip())
        except Exception as exc:
            self._failed(w, f"{type(exc).__name__}: {exc}"[:200])
        else:
            self.writes.labels(w.kind, "ok").inc()

    def _failed(self, w: _Write, message: str) -> None:
        log.warning("writing %s of Ingress %s failed: %s", w.kind, w.ref, message)
        self.writes.labels(w.kind, "error").inc()
        self._inflight.pop(w.ref, None)
        if w.kind == "event":
            self.events.unsent(w.ref, w.body["metadata"]["name"])
        self._retry_later(w.ref)


def _primary_built(registry: ClusterRegistry, view: IngressView) -> bool:
    primary = registry.primary_id()
    store = registry.get(primary) if primary is not None else None
    state = store.status.state if store is not None else "pending"
    return state != "pending" and (state != "synced" or view.built_once())


class EmittedEvents:
    """The Event names created per Ingress (uid), so a finding is created once per generation."""

    def __init__(self) -> None:
        self._by_ref: dict[IngressRef, tuple[str, set[str]]] = {}  # -> (uid, event names created)

    def new(self, ref: IngressRef, meta: Mapping[str, Any], report: Mapping[str, Any], identity: str) -> list[dict]:
        """The bodies of the report's Events not created yet (now counted as created)."""
        uid = str(meta.get("uid") or "")
        if not uid:
            return []
        known = self._by_ref.get(ref)
        if known is None or known[0] != uid:  # new, or deleted and created again
            known = self._by_ref[ref] = (uid, set())
        out = []
        for body in event_bodies(ref, meta, report, identity):
            if body["metadata"]["name"] not in known[1]:
                known[1].add(body["metadata"]["name"])
                out.append(body)
        return out

    def unsent(self, ref: IngressRef, name: str) -> None:
        known = self._by_ref.get(ref)
        if known is not None:
            known[1].discard(name)

    def forget(self, ref: IngressRef) -> None:
        self._by_ref.pop(ref, None)


def event_bodies(
    ref: IngressRef, meta: Mapping[str, Any], report: Mapping[str, Any], identity: str
) -> list[dict[str, Any]]:
    """The Warning Events an Ingress's report asks for; names depend only on (uid, generation,
    reason, message), so the same finding is created once across passes, restarts and leaders."""
    uid = str(meta.get("uid") or "")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[dict[str, Any]] = []
    for finding in report.get("findings") or ():
        reason = EVENT_REASONS.get(str(finding.get("level")))
        if reason is None:
            continue
        key, text = str(finding.get("key") or ""), str(finding.get("message") or "")
        if key.startswith("tls[") and reason == "AnnotationInvalid":
            reason = "TLSSecretUnusable"  # a missing or broken Secret, not an annotation
        message = (f"{key}: {text}" if key and text else key or text)[:1000]
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": event_name(ref.name, uid, meta.get("generation"), reason, message),
                    "namespace": ref.namespace,
                },
                "involvedObject": {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "namespace": ref.namespace,
                    "name": ref.name,
                    "uid": uid,
                    "resourceVersion": str(meta.get("resourceVersion") or ""),
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "meridian"},
                "reportingComponent": "meridian.io/controller",
                "reportingInstance": identity,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )
    return out


def _call(api: k8s.ApiClient, w: _Write) -> None:
    """One write, synchronously (run in a worker thread)."""
    timeout = (5.0, 10.0)
    if w.kind == "status":
        resp = k8s.NetworkingV1Api(api).patch_namespaced_ingress_status(
            w.ref.name,
            w.ref.namespace,
            w.body,
            _content_type=_MERGE,
            _preload_content=False,
            _request_timeout=timeout,
        )
    else:
        resp = k8s.CoreV1Api(api).create_namespaced_event(
            w.ref.namespace, w.body, _preload_content=False, _request_timeout=timeout
        )
    with contextlib.suppress(Exception):
        orjson.loads(resp.data)
        resp.release_conn()
