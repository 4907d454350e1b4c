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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from kubernetes import client as k8s
from prometheus_client import Counter, Gauge

from controlplane.ir import IngressRef
from controlplane.leader import LeaderElector, LeaseTimings
from controlplane.store import INGRESS, INGRESS_CLASS, SECRET, SERVICE, StoreEvent

if TYPE_CHECKING:
    from controlplane.app import MeridianApp

log = logging.getLogger(__name__)

Address = tuple[tuple[str, str], ...]  # one status.loadBalancer.ingress entry, as sorted items
EVENT_REASONS: dict[str, str] = {
    "rejected": "Rejected",
    "conflict": "Conflict",
    "warning": "AnnotationInvalid",
    "unsupported": "AnnotationUnsupported",
}
_RELEVANT = frozenset((INGRESS, INGRESS_CLASS, SERVICE, SECRET))
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


def _key(entries: Iterable[Mapping[str, str]]) -> frozenset[Address]:
    return frozenset(tuple(sorted(e.items())) for e in entries)


def event_name(ingress_name: str, uid: str, generation: Any, reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{uid}\0{generation}\0{reason}\0{message}".encode()).hexdigest()[:16]
    return f"{ingress_name[:200]}.{digest}"


@dataclass(frozen=True)
class _Write:
    """One API call the leader should make."""

    ref: IngressRef
    kind: str  # "status" | "event"
    body: dict[str, Any]
    seen_rv: str = ""  # the Ingress resourceVersion the decision was based on (status)


class StatusWriter:
    """Leader-only writer of Ingress status and Events for every cluster in the registry."""

    def __init__(
        self,
        app: MeridianApp,
        api_client: k8s.ApiClient,
        *,
        identity: str | None = None,
        concurrency: int = 8,
        debounce: float = 0.05,
        retry_delay: float = 1.0,
    ) -> None:
        self.app = app
        self.api = api_client
        self.controller = app.controller
        self.registry = app.registry
        opts = app.opts
        self.elector = LeaderElector(
            api_client,
            opts.namespace,
            identity=identity,
            timings=LeaseTimings(duration=opts.lease_duration, renew_interval=opts.lease_renew_interval),
        )
        self.elector.add_listener(self._on_leadership)
        self.concurrency = concurrency
        self.debounce = debounce
        self.retry_delay = retry_delay
        self._seen: dict[IngressRef, tuple[Any, ...]] = {}
        self._inflight: dict[IngressRef, tuple[str, frozenset[Address]]] = {}
        self._emitted: dict[IngressRef, tuple[str, set[str]]] = {}  # -> (uid, event names created)
        self._published: set[Address] = set()  # every address this process has published
        self._addresses: frozenset[Address] | None = None
        self._touched: set[IngressRef] = set()  # Ingresses changed in a store since the last pass
        self._touched_lock = threading.Lock()
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        r = app.metrics.registry
        self.writes = Counter(
            "meridian_status_writes_total", "Ingress status patches and Events written", ["kind", "result"], registry=r
        )
        self.leader_gauge = Gauge("meridian_leader", "1 while this replica holds the leader lease", registry=r)

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
        opts = self.app.opts
        if opts.publish_address:
            return parse_addresses(opts.publish_address)
        if opts.publish_service and "/" in opts.publish_service:
            ns, name = opts.publish_service.split("/", 1)
            primary = self.registry.primary_id()
            store = self.registry.get(primary) if primary is not None else None
            return service_addresses(store.get(SERVICE, ns, name) if store is not None else None)
        return []

    # -- triggers --------------------------------------------------------
    def _on_store_event(self, event: StoreEvent) -> None:
        # Runs in the writer's thread, after the controller's listener queued the same event,
        # so the controller's flush is scheduled ahead of this wake-up.
        if event.ref.kind in _RELEVANT and self._loop is not None:
            if event.ref.kind == INGRESS:
                with self._touched_lock:
                    self._touched.add(IngressRef(event.ref.cluster, event.ref.namespace, event.ref.name))
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._kick.set)

    def _on_leadership(self, leading: bool) -> None:
        self.leader_gauge.set(1 if leading else 0)
        self._seen.clear()  # a new term starts with a full comparison
        self._inflight.clear()
        if leading:
            self._kick.set()

    def _retry_later(self, ref: IngressRef) -> None:
        self._seen.pop(ref, None)
        if self._loop is not None:
            self._loop.call_later(self.retry_delay, self._kick.set)

    async def _run(self) -> None:
        await self.controller.ready.wait()
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
                self._seen.clear()
                assert self._loop is not None
                self._loop.call_later(self.retry_delay, self._kick.set)

    # -- one pass --------------------------------------------------------
    def _token(self, ref: IngressRef, ir: Any) -> tuple[Any, ...]:
        store = self.registry.get(ref.cluster)
        obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
        hosts = sorted(ir.hosts) + ([""] if ir.default_backend is not None else [])
        results = self.controller.host_results
        return (ir, obj, *(results.get(h) for h in hosts))

    def _controller_lags(self) -> bool:
        """True while the controller has not yet built IRs from the latest stored Ingresses."""
        with self._touched_lock:
            touched, self._touched = self._touched, set()
        lagging: set[IngressRef] = set()
        built = self.controller.ingress_objs
        for ref in touched:
            store = self.registry.get(ref.cluster)
            obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
            if built.get(ref) is not obj:
                lagging.add(ref)
        if lagging:
            with self._touched_lock:
                self._touched |= lagging
        return bool(lagging)

    def dirty(self) -> list[IngressRef]:
        """Ingresses whose IR, stored object or host findings changed since the last pass."""
        if self._controller_lags() and self._loop is not None:
            self._loop.call_later(self.debounce, self._kick.set)  # look again once it has caught up
        addresses = _key(self.addresses())
        if addresses != self._addresses:
            self._addresses = addresses
            self._seen.clear()
        irs = self.controller.irs
        for ref in [r for r in self._seen if r not in irs]:
            del self._seen[ref]
            self._inflight.pop(ref, None)
            self._emitted.pop(ref, None)
        out: list[IngressRef] = []
        for ref, ir in list(irs.items()):
            token = self._token(ref, ir)
            old = self._seen.get(ref)
            if old is None or len(old) != len(token) or any(a is not b for a, b in zip(old, token, strict=True)):
                self._seen[ref] = token
                out.append(ref)
        return out

    async def run_pass(self) -> int:
        """Compare dirty Ingresses with what they should say and write the differences."""
        self.passes += 1
        addresses = self.addresses()
        self._published |= _key(addresses)
        writes: list[_Write] = []
        for ref in self.dirty():
            writes.extend(self._plan(ref, addresses))
        if not writes:
            return 0
        sem = asyncio.Semaphore(self.concurrency)

        async def one(w: _Write) -> None:
            async with sem:
                await self._execute(w)

        await asyncio.gather(*(one(w) for w in writes))
        return len(writes)

    def _plan(self, ref: IngressRef, addresses: list[dict[str, str]]) -> list[_Write]:
        ir = self.controller.irs.get(ref)
        store = self.registry.get(ref.cluster)
        obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
        if ir is None or obj is None:
            return []
        out: list[_Write] = []
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        current = _key(current_addresses(obj))
        opts = self.app.opts
        if not (opts.publish_address or opts.publish_service):
            desired = None  # nothing to publish: leave status alone
        elif ir.served:
            desired: frozenset[Address] | None = _key(addresses)
        elif ir.class_accepted or (current and current <= self._published):
            desired = frozenset()  # ours but rejected, or it left our class with our address on it
        else:
            desired = None  # another controller's Ingress: never touch its status
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
            out.extend(self._plan_events(ref, obj))
        return out

    def _plan_events(self, ref: IngressRef, obj: Mapping[str, Any]) -> list[_Write]:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid:
            return []
        ir = self.controller.irs[ref]
        report = self.controller.ingress_report(ir)
        known = self._emitted.get(ref)
        if known is None or known[0] != uid:  # new, or deleted and created again
            known = self._emitted[ref] = (uid, set())
        emitted = known[1]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out: list[_Write] = []
        for finding in report.get("findings") or ():
            reason = EVENT_REASONS.get(str(finding.get("level")))
            if reason is None:
                continue
            key, text = str(finding.get("key") or ""), str(finding.get("message") or "")
            message = (f"{key}: {text}" if key and text else key or text)[:1000]
            name = event_name(ref.name, uid, meta.get("generation"), reason, message)
            if name in emitted:
                continue
            emitted.add(name)
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ref.namespace},
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
                "reportingInstance": self.elector.identity,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            out.append(_Write(ref, "event", body))
        return out

    # -- API calls -------------------------------------------------------
    def client_for(self, cluster: str) -> k8s.ApiClient | None:
        """The API client of the cluster an Ingress came from."""
        if cluster == self.registry.primary_id():
            return self.api
        kube = self.app.kube
        remotes = getattr(kube, "remotes", None)
        return remotes.api_client(cluster) if remotes is not None else None

    async def _execute(self, w: _Write) -> None:
        if not self.is_leader:  # lost the lease meanwhile: the next leader does it
            self._retry_later(w.ref)
            return
        api = self.client_for(w.ref.cluster)
        if api is None:
            self._retry_later(w.ref)
            return
        try:
            await asyncio.to_thread(self._call, api, w)
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
            known = self._emitted.get(w.ref)
            if known is not None:
                known[1].discard(w.body["metadata"]["name"])
        self._retry_later(w.ref)

    @staticmethod
    def _call(api: k8s.ApiClient, w: _Write) -> None:
        timeout = (5.0, 10.0)
        if w.kind == "status":
            resp = k8s.NetworkingV1Api(api).patch_namespaced_ingress_status(
                w.ref.name, w.ref.namespace, w.body,
                _content_type=_MERGE, _preload_content=False, _request_timeout=timeout,
            )
        else:
            resp = k8s.CoreV1Api(api).create_namespaced_event(
                w.ref.namespace, w.body, _preload_content=False, _request_timeout=timeout
            )
        with contextlib.suppress(Exception):
            orjson.loads(resp.data)
            resp.release_conn()
