"""Lease-based leader election (coordination.k8s.io/v1), as client-go's leaderelection does it.

Every replica serves xDS, but only one may write Ingress status and Events, or
replicas would fight over the same objects. The leader holds the Lease
`meridian-leader` in Meridian's namespace and renews it; the others take over
once it has not changed for a whole lease duration (measured on their own clock,
so clock skew between nodes does not matter). Writes use resourceVersion
preconditions, so two candidates can never both win the same round. Only the
get/create/update verbs are used (what the Helm chart's Role grants).

The campaign runs on a thread of its own, on its own schedule, as client-go's runs in its own
goroutine: a renewal never waits for the event loop (busy with a large build) nor for the shared
worker threads (busy with status writes and history I/O). Under CPU load those delays added up to a
lease duration, and a healthy leader lost its lease to a replica that merely polled in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client as k8s

log = logging.getLogger(__name__)

LEASE_NAME = "meridian-leader"


def default_identity() -> str:
    """The pod name in Kubernetes (downward API env POD_NAME), else hostname and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def _micro_time() -> str:
    """MicroTime, the format Lease times use."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how often it is renewed (and retried), and when a leader gives up.

    A leader stops acting as leader `renew_deadline` after its last successful renewal
    started, which is before any other candidate may take over (`duration`).
    """

    duration: float = 15.0
    renew_interval: float = 5.0
    renew_deadline: float | None = None  # default: two thirds of `duration`

    @property
    def deadline(self) -> float:
        return self.renew_deadline if self.renew_deadline is not None else self.duration * 2 / 3


class LeaderElector:
    """Campaigns for one Lease until stopped; `is_leader` is true only while the lease is surely ours."""

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        *,
        name: str = LEASE_NAME,
        identity: str | None = None,
        timings: LeaseTimings | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timings = timings or LeaseTimings()
        self.holder: str | None = None  # last observed holder
        self.transitions = 0  # times this elector became leader
        self._coord = k8s.CoordinationV1Api(api)
        self._leading = False
        self._renewed_at = 0.0  # monotonic start of the last successful acquire/renew
        self._observed_rv: str | None = None
        self._observed_at = 0.0  # monotonic time the lease record last changed, as we saw it
        self._listeners: list[Callable[[bool], None]] = []
        self._reported = False  # last leadership state told to listeners
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public ----------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._leading and time.monotonic() < self._renewed_at + self.timings.deadline

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """`listener(leading)` runs on the event loop whenever leadership is gained or lost."""
        self._listeners.append(listener)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._halt.clear()
        self._thread = threading.Thread(target=self._campaign, name=f"leader-election-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader hands the lease back so another replica takes over at once."""
        self._halt.set()
        if self._thread is not None:  # an API call in flight ends within its timeout
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        was_leading = self._leading
        self._leading = False
        self._notify()
        if release and was_leading:
            try:
                await asyncio.to_thread(self._release)
            except Exception as exc:  # the lease simply expires instead
                log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, _describe(exc))

    async def wait_leader(self, timeout: float) -> bool:
        """True once this elector leads (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while not self.is_leader:
            left = deadline - time.monotonic()
            if left <= 0 or self._changed is None:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, self.timings.renew_interval))
        return True

    # -- the campaign (its own thread) ---------------------------------------------
    def _campaign(self) -> None:
        """Acquire or renew every `renew_interval` (client-go's retry period) until halted."""
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                won = self._try_acquire_or_renew()
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, _describe(exc))
                won = False
            if won:
                self._renewed_at = started  # before _leading: is_leader never sees a stale time
                self._leading = True
            elif self._leading and not self.is_leader:
                log.warning("lost lease %s/%s: not renewed in time", self.namespace, self.name)
                self._leading = False
            elif self._leading and self.holder not in (None, self.identity):
                self._leading = False  # someone else holds it now
            if self._halt.is_set():
                return  # stop() tells the listeners, and releases what this round may have won
            self._notify_soon()
            wait = self.timings.renew_interval
            if self._leading:  # wake up in time to step down if renewals keep failing
                wait = min(wait, max(0.0, self._renewed_at + self.timings.deadline - time.monotonic()) + 0.01)
            self._halt.wait(wait)

    def _notify_soon(self) -> None:
        """Listeners run on the event loop; a leader whose deadline passes is not leader before that
        (is_leader reads the clock), whenever the loop gets to tell them."""
        if self.is_leader == self._reported or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        leading = self.is_leader
        if leading == self._reported:
            return
        self._reported = leading
        if leading:
            self.transitions += 1
        log.info("%s %s leadership of %s/%s", self.identity, "acquired" if leading else "lost",
                 self.namespace, self.name)
        if self._changed is not None:
            self._changed.set()
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:
                log.exception("leadership listener failed")

    # -- API calls (worker thread) ----------------------------------------
    def _timeout(self) -> tuple[float, float]:
        budget = max(0.5, self.timings.deadline / 2)
        return (budget, budget)

    def _read(self) -> dict[str, Any] | None:
        try:
            resp = self._coord.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self._timeout()
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(orjson.loads(resp.data))

    def _observe(self, lease: dict[str, Any]) -> None:
        meta = lease.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        if rv != self._observed_rv:
            self._observed_rv = rv
            self._observed_at = time.monotonic()
        self.holder = (lease.get("spec") or {}).get("holderIdentity") or None

    def _try_acquire_or_renew(self) -> bool:
        now = _micro_time()
        duration = max(1, math.ceil(self.timings.duration))
        lease = self._read()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                resp = self._coord.create_namespaced_lease(
                    self.namespace, body, _preload_content=False, _request_timeout=self._timeout()
                )
            except k8s.ApiException as exc:
                if exc.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(orjson.loads(resp.data))
            return True
        self._observe(lease)
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or ""
        theirs = int(spec.get("leaseDurationSeconds") or duration)
        if holder and holder != self.identity and time.monotonic() < self._observed_at + theirs:
            return False  # held by someone else and not expired
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=duration, renewTime=now)
        lease["spec"] = spec
        try:
            resp = self._coord.replace_namespaced_lease(
                self.name, self.namespace, lease, _preload_content=False, _request_timeout=self._timeout()
            )
        except k8s.ApiException as exc:
            if exc.status in (404, 409):  # changed or deleted under us: re-read next round
                return False
            raise
        self._observe(orjson.loads(resp.data))
        return True

    def _release(self) -> None:
        # Another writer (a candidate's takeover attempt) may land between our read and our write
        # (409): read again, and release the lease if it is still ours.
        for _ in range(3):
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, renewTime=_micro_time())
            lease["spec"] = spec
            try:
                self._coord.replace_namespaced_lease(
                    self.name, self.namespace, lease, _preload_content=False, _request_timeout=self._timeout()
                )
                return
            except k8s.ApiException as exc:
                if exc.status != 409:
                    raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, k8s.ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]
