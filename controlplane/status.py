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
        # What changed since the last pass (filled from store events, in the writers' threads).
        self._lock = threading.Lock()
        self._full = True  # compare every Ingress (start, new term, IngressClass or address change)
        self._touched: set[IngressRef] = set()
        self._services: set[tuple[str, str]] = set()
        self._secrets: set[tuple[str, str, str]] = set()
        # Reverse indexes over the IRs last compared, to find who a change can affect.
        self._by_host: dict[str, set[IngressRef]] = {}
        self._by_service: dict[tuple[str, str], set[IngressRef]] = {}
        self._by_secret: dict[tuple[str, str, str], set[IngressRef]] = {}
        self._kick = asyncio.Event()
        self._wake_scheduled = False
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
        ref = event.ref
        if ref.kind not in _RELEVANT or self._loop is None:
            return
        with self._lock:
            if ref.kind == INGRESS:
                self._touched.add(IngressRef(ref.cluster, ref.namespace, ref.name))
            elif ref.kind == SERVICE:
                self._services.add((ref.namespace, ref.name))
            elif ref.kind == SECRET:
                self._secrets.add((ref.cluster, ref.namespace, ref.name))
            else:
                self._full = True
            if self._wake_scheduled:  # one wake-up per batch, not one loop write per event
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._kick.set()

    def _on_leadership(self, leading: bool) -> None:
        self.leader_gauge.set(1 if leading else 0)
        self._forget_all()  # a new term starts with a full comparison
        if leading:
            self._kick.set()

    def _forget_all(self) -> None:
        self._seen.clear()
        self._inflight.clear()
        self._by_host.clear()
        self._by_service.clear()
        self._by_secret.clear()
        with self._lock:
            self._full = True

    def _retry_later(self, ref: IngressRef) -> None:
        self._seen.pop(ref, None)
        with self._lock:
            self._touched.add(ref)
        if self._loop is not None:
            self._loop.call_later(self.retry_delay, self._kick.set)

    async def _wait_primary_synced(self) -> None:
        """Status decisions need a complete primary store (an unseen IngressClass would clear statuses).

        Not readiness: that also waits for every remote cluster, so a remote that is slow to sync
        would hold back status for the primary cluster. Once the primary is synced this also waits
        for the controller's first build of it: status follows what is served, and a first pass
        over thousands of Ingresses would otherwise compete with that build for the CPU.
        """
        controller = getattr(self.app, "controller", None)
        while True:
            primary = self.registry.primary_id()
            store = self.registry.get(primary) if primary is not None else None
            state = store.status.state if store is not None else "pending"
            if state != "pending" and (state != "synced" or controller is None or controller.ready.is_set()):
                return
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
    @staticmethod
    def _hosts(ir: Any) -> list[str]:
        return sorted(ir.hosts) + ([""] if ir.default_backend is not None else [])

    def _token(self, ref: IngressRef, ir: Any) -> tuple[Any, ...]:
        store = self.registry.get(ref.cluster)
        obj = store.get(INGRESS, ref.namespace, ref.name) if store is not None else None
        results = self.controller.host_results
        return (ir, obj, *(results.get(h) for h in self._hosts(ir)))

    def _index(self, ref: IngressRef, ir: Any, add: bool) -> None:
        pairs: list[tuple[dict[Any, set[IngressRef]], Any]] = [(self._by_host, h) for h in self._hosts(ir)]
        pairs += [(self._by_service, key) for key in ir.services]
        pairs += [(self._by_secret, key) for key in ir.secrets]
        for index, key in pairs:
            if add:
                index.setdefault(key, set()).add(ref)
            else:
                refs = index.get(key)
                if refs is not None:
                    refs.discard(ref)
                    if not refs:
                        del index[key]

    def _record(self, ref: IngressRef, token: tuple[Any, ...] | None) -> None:
        old = self._seen.pop(ref, None)
        if old is not None:
            self._index(ref, old[0], add=False)
        if token is not None:
            self._seen[ref] = token
            self._index(ref, token[0], add=True)

    def _candidates(self) -> set[IngressRef] | None:
        """Ingresses a change since the last pass can affect; None means all of them."""
        with self._lock:
            full, self._full = self._full, False
            touched, self._touched = self._touched, set()
            services, self._services = self._services, set()
            secrets, self._secrets = self._secrets, set()
        # The controller builds IRs on the same loop, normally before this wakes up; if it has not
        # caught up with a stored Ingress yet, look at that one again shortly.
        built = self.controller.ingress_objs
        lagging = set()
        for ref in touched:
            store = self.registry.get(ref.cluster)
            if built.get(ref) is not (store.get(INGRESS, ref.namespace, ref.name) if store is not None else None):
                lagging.add(ref)
        if lagging:
            with self._lock:
                self._touched |= lagging
            if self._loop is not None:
                self._loop.call_later(self.debounce, self._kick.set)
        if full:
            return None
        out = set(touched)
        irs = self.controller.irs
        for ref in touched:  # conflicts: everyone sharing a host with the old or the new version
            for version in (self._seen.get(ref, (None,))[0], irs.get(ref)):
                if version is not None:
                    for h in self._hosts(version):
                        out |= self._by_host.get(h, set())
        for key in services:
            out |= self._by_service.get(key, set())
        for key in secrets:
            out |= self._by_secret.get(key, set())
        return out

    def dirty(self) -> list[IngressRef]:
        """Ingresses whose IR, stored object or host findings changed since the last pass."""
        candidates = self._candidates()
        addresses = _key(self.addresses())
        if addresses != self._addresses:  # every served Ingress must say the new address
            self._addresses = addresses
            self._seen.clear()
            self._by_host.clear()
            self._by_service.clear()
            self._by_secret.clear()
            candidates = None
        irs = self.controller.irs
        if candidates is None:
            candidates = set(irs) | set(self._seen)
        out: list[IngressRef] = []
        for ref in candidates:
            ir = irs.get(ref)
            if ir is None:
                self._record(ref, None)
                self._inflight.pop(ref, None)
                self._emitted.pop(ref, None)
                continue
            token = self._token(ref, ir)
            old = self._seen.get(ref)
            if old is None or len(old) != len(token) or any(a is not b for a, b in zip(old, token, strict=True)):
                self._record(ref, token)
                out.append(ref)
        return out

    async def run_pass(self) -> int:
        """Compare dirty Ingresses with what they should say and write the differences."""
        self.passes += 1
        addresses = self.addresses()
        self._published |= _key(addresses)
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
        ir = self.controller.irs.get(ref)
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
            if key.startswith("tls[") and reason == "AnnotationInvalid":
                reason = "TLSSecretUnusable"  # a missing or broken Secret, not an annotation
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
