"""The history service: records every published version, persists it, and serves a pin.

The controller writes to `sources` (a SourcesCache); the xDS server reads `served`. Unpinned,
every change is mirrored to `served` as it is, at once; its record is written a moment later
(waiting.py), off the path from a change to Envoy's ACK, from the sources as they were then.
Pinned to version V, `served` holds V's resources (replaced, so the xDS server's own diffing
sends Envoy only what differs) while the sources keep syncing and every new version is recorded
as pending. Only the writer (the leader in Kubernetes mode, the process in file mode) records
and persists; other replicas load what the writer stored and follow the pin document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import Gauge

from controlplane.history.persist import Persister
from controlplane.history.pin import Pin, PinControl, RollbackRefused
from controlplane.history.recorder import History
from controlplane.history.sources_cache import Effective, SourcesCache
from controlplane.history.waiting import RecordQueue, SourcesAt, Waiting
from controlplane.metrics import Metrics
from controlplane.store import StoreEvent
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache

log = logging.getLogger("controlplane.history")
MIN_SAVE_INTERVAL = 0.25  # seconds between saves: a burst of versions is written once, not once each
HOLD_LIMIT = 30.0  # seconds a starting replica waits for a pinned version's content before serving the sources


class Unreadable:
    """Since when the stored history has failed to load. A read that failed because the API server
    blinked must not cost the stored history, so a writer writes nothing over what it could not read;
    one that keeps failing while writes would succeed is a damaged store, and the history must not
    stay off for good: after `limit` seconds a new one is started over it."""

    def __init__(self, limit: float = 300.0) -> None:
        self.limit = limit
        self.since: float | None = None  # time.monotonic() of the first failure in a row

    async def load(self, reload: Callable[[], Awaitable[bool]]) -> bool:
        """Run `reload`; False while what is stored cannot be read and may not be written over yet."""
        try:
            await reload()
        except Exception as exc:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                log.warning("stored history could not be read (%s); not writing until it is", exc)
            if now - self.since < self.limit:
                return False
            log.error("stored history unreadable for %.0f s (%s); starting a new one over it", now - self.since, exc)
        self.since = None
        return True


class HistoryService:
    def __init__(self, served: SnapshotCache, metrics: Metrics, *, size: int = 200, max_age: float = 86400.0) -> None:
        self.served = served
        self.sources = SourcesCache(self._on_change, self._on_ready)
        self._history = History(size)
        self._waiting = RecordQueue(self._write_record, self._wake)  # served, not recorded yet
        self.max_age = max_age
        self.persister: Persister | None = None
        self.is_writer: Callable[[], bool] = lambda: True
        self.fleet: Callable[[], list[dict[str, Any]]] = lambda: []
        self.warn: Callable[[str, str], None] = lambda _reason, _message: None  # Warning Event (Kubernetes)
        self.find_secret: Callable[[str], tuple[bytes, bytes] | None] | None = None  # by fingerprint
        self.admin_token: str | None = None  # mutating admin endpoints need it; None: they are disabled
        self.poll_interval = 0.5
        self.pins = PinControl(self, metrics)
        self._held_since: float | None = None  # ready, but waiting for the pinned version's content
        self._writing = False  # recorded as the writer since the last load
        self._resync_note = ""  # set when the next record must be a full resync
        self._blobs: dict[str, bytes] = {}
        self._saved_at = 0.0
        self._pin_error = ""
        self._woken = False  # a wake-up that came while no sleep was waiting
        self._waiter: asyncio.Future[None] | None = None  # the background loop's sleep, cut short by _wake()
        self._task: asyncio.Task[None] | None = None
        self._write: asyncio.Future[None] | None = None  # the write in a worker thread, if one is running
        self._watch_stop: threading.Event | None = None
        self._watcher: Any = None
        self.unreadable = Unreadable()

    @property
    def history(self) -> History:
        """The recorded history, with every change served so far in it."""
        self._waiting.drain()
        return self._history

    # -- the pin (see pin.py) -------------------------------------------------------------------
    @property
    def pin(self) -> Pin | None:
        return self.pins.pin

    @property
    def pin_missing(self) -> list[str]:
        return self.pins.missing

    @property
    def gauge(self) -> Gauge:
        return self.pins.gauge

    def check_rollback(self, version: int) -> tuple[list[str], list[str]]:
        return self.pins.check(version)

    async def rollback(self, version: int, reason: str = "", yes: bool = False, by: str = "") -> dict[str, Any]:
        return await self.pins.rollback(version, reason, yes, by)

    async def resume(self) -> dict[str, Any]:
        return await self.pins.resume()

    # -- startup and the background loop ---------------------------------------------------------
    async def start(self, persister: Persister | None, is_writer: Callable[[], bool] | None = None) -> None:
        """Load what is stored (history, pin) before any source is read: a replica started pinned serves the pin."""
        self.persister = persister
        if is_writer is not None:
            self.is_writer = is_writer
        if persister is not None:
            persister.step_aside = self._waiting.step_aside  # a save yields to the changes being served
            for _ in range(50):  # a set written while we read it is inconsistent: read again
                try:
                    if await self._reload() or await asyncio.to_thread(persister.read_head) is None:
                        break
                except Exception:  # not fatal: serve, and keep trying before writing anything over it
                    log.exception("stored history could not be read; nothing is written over it until it is")
                    self.unreadable.since = time.monotonic()
                    break
                await asyncio.sleep(0.05)
            self._writing = self.is_writer() and self.unreadable.since is None
            self.pins.set(await self._read_pin(), note=False)
        self._task = asyncio.create_task(self._run(), name="history")

    async def _read_pin(self) -> Pin | None:
        """The stored pin; a malformed one (hand-edited) is reported and ignored, never fatal."""
        assert self.persister is not None
        try:
            doc = await asyncio.to_thread(self.persister.read_pin)
            if not doc:
                return None
            return Pin(int(doc["version"]), str(doc.get("reason", "")), float(doc["at"]), str(doc.get("by", "")))
        except (ValueError, TypeError, KeyError) as exc:
            if str(exc) != self._pin_error:
                log.error("the stored pin is malformed (%s); ignoring it", exc)
            self._pin_error = str(exc)
            return self.pin

    def follow(self, backend: Any) -> None:
        """Watch the pin document (Kubernetes), so a rollback taken by another replica is served here
        within a round trip rather than the next poll."""
        loop = asyncio.get_running_loop()
        self._watcher = backend
        self._watch_stop = threading.Event()
        threading.Thread(
            target=backend.watch, args=("pin", lambda: loop.call_soon_threadsafe(self._wake), self._watch_stop),
            name="history-pin-watch", daemon=True,
        ).start()  # fmt: skip

    async def stop(self) -> None:
        if self._watch_stop is not None:
            self._watch_stop.set()
            self._watcher.stop_watch()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        """Write what is not stored yet (writer only).

        A write runs in a worker thread and is shielded: cancelling the background loop (stop) must
        not leave it half done while the final flush, seeing the generation already planned, returns.
        Writes never overlap: each waits for the one before it.
        """
        if self._write is not None and not self._write.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write)
        if self.persister is not None and self._writing and self.is_writer():
            plan = self.persister.snapshot(self.history)
            if plan is not None:
                self._write = asyncio.ensure_future(asyncio.to_thread(self.persister.write, plan))
                await asyncio.shield(self._write)

    async def _reload(self) -> bool:
        assert self.persister is not None
        fresh = History(self.history.size)
        blobs = dict(self._blobs)
        ok = await asyncio.to_thread(self.persister.load, fresh, blobs)
        if ok:
            self._history, self._blobs = fresh, blobs
            self._resync_note = "first publish after a restart or leader change"
        return ok

    async def _run(self) -> None:
        last_fleet = 0.0
        while True:
            await self._sleep()
            try:
                await self._tick()
                if time.monotonic() - last_fleet >= 1.0 and self._writing:
                    last_fleet = time.monotonic()
                    self.history.update_fleet(self.fleet())
            except Exception:  # the history must never take the control plane down
                log.exception("history background step failed; retrying")

    async def _sleep(self) -> None:
        if self._woken:  # woken while the last step ran: go again at once
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        timer = loop.call_later(self.poll_interval, self._wake)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None
            self._woken = False

    def _wake(self) -> None:
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _tick(self) -> None:
        writer = self.is_writer()
        if self.persister is None:
            self._writing = writer
            return
        if writer and not self._writing:
            if await self.unreadable.load(self._reload):  # take over from where the last writer stopped
                self._writing = True
                if self.sources.ready:
                    self._record({t: dict(self.sources.get(t).resources) for t in rt.PUSH_ORDER}, ())
        elif not writer:
            self._writing = False
            head = await asyncio.to_thread(self.persister.read_head)
            if head and self.persister.changed(head):
                await self._reload()
        pin = await self._read_pin()
        if pin != self.pin:
            if pin is not None and not writer and self.history.manifest(pin.version) is None:
                await self._reload()  # pinned by another replica to a version we have not loaded
            self.pins.set(pin, note=writer)
        await self._release_held()
        if time.monotonic() - self._saved_at >= MIN_SAVE_INTERVAL:
            self._saved_at = time.monotonic()
            await self.flush()

    # -- the controller's changes ---------------------------------------------------------------
    def _on_change(self, effective: Effective, trigger: Sequence[object], seen_at: float | None) -> None:
        served_version = None
        if self.pin is None:
            served_version = self.served.apply(effective, seen_at=seen_at)
        elif rt.SECRET in effective:
            self.pins.serve()  # a Secret the pinned version needs may have (re)appeared
        elif rt.ENDPOINT in effective:
            self.pins.follow_endpoints(effective[rt.ENDPOINT], seen_at)
        if self.is_writer() and (self._writing or self.persister is None):
            self._waiting.add(Waiting(effective, trigger, SourcesAt.of(self.sources), self.pin is None, served_version))

    def _record(self, effective: Effective, trigger: Sequence[object]) -> Any:  # now, after what is waiting
        self._waiting.drain()
        return self._write_record(Waiting(effective, trigger, self.sources, self.pin is None, None))

    def _write_record(self, w: Waiting) -> Any:
        events = [e for e in w.trigger if isinstance(e, StoreEvent)]
        if self._resync_note:
            note, self._resync_note = self._resync_note, ""
            rec = self._history.resync(w.sources, served=w.served, note=note, events=events)
        else:
            rec = self._history.record(w.effective, w.sources, events, served=w.served)
        if rec is not None and w.served_version is not None:
            self._history.served_versions[rec.version] = w.served_version
        return rec

    def _on_ready(self, ready: bool) -> None:
        if ready and self.pin is not None and not self.pins.serve():
            # Pinned to a version this replica has not loaded yet: serve nothing rather than the
            # sources; the background loop reloads the history and then serves the pin.
            self._held_since = time.monotonic()
            return
        self.served.ready = ready

    async def _release_held(self) -> None:
        if self._held_since is None:
            return
        if self.pin is None or self.pins.serve():
            self._held_since = None
            self.served.ready = True
            return
        if self.persister is not None:
            await self._reload()
        if time.monotonic() - self._held_since > HOLD_LIMIT:
            log.error("pinned version %s is not in the stored history; serving the sources", self.pin.version)
            self._held_since = None
            self.served.replace({t: dict(self.sources.get(t).resources) for t in rt.PUSH_ORDER})
            self.served.ready = True


__all__ = ["HistoryService", "Pin", "RollbackRefused"]
