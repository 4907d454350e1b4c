"""The pin: which version every replica serves instead of the sources, and rolling back to it.

Rolling back replaces the served cache with the pinned version's resources, so the xDS server's
ordinary diffing sends Envoy only what differs (Delta: just those resources). Secrets come from
current Secrets with the same certificate fingerprint, since keys are never stored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from prometheus_client import Gauge

from controlplane.history.persist import Persister
from controlplane.history.recorder import History
from controlplane.history.records import PinEvent
from controlplane.history.sources_cache import SourcesCache
from controlplane.metrics import Metrics
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, SnapshotCache

log = logging.getLogger("controlplane.history")


@dataclass(frozen=True)
class Pin:
    version: int
    reason: str
    at: float
    by: str = ""

    def banner(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))
        text = f"configuration pinned to version {self.version} since {since}"
        return text + (f": {self.reason}" if self.reason else "")


class RollbackRefused(Exception):
    def __init__(self, status: int, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.reasons = list(reasons)


class PinHost(Protocol):
    """What the pin needs of the history service (service.py, which owns a PinControl): named here
    so that this module does not import that one."""

    served: SnapshotCache
    sources: SourcesCache
    history: History
    max_age: float
    persister: Persister | None
    is_writer: Callable[[], bool]
    warn: Callable[[str, str], None]
    find_secret: Callable[[str], tuple[bytes, bytes] | None] | None

    def _wake(self) -> None: ...


class PinControl:
    def __init__(self, svc: PinHost, metrics: Metrics) -> None:
        self.svc = svc
        self.pin: Pin | None = None
        self.missing: list[str] = []  # what the served pinned version lacks
        self.endpoints: set[str] = set()  # the pinned version's ClusterLoadAssignments (they follow the sources)
        self.gauge = Gauge(
            "meridian_config_pinned", "1 while the served configuration is pinned to an earlier version",
            registry=metrics.registry,
        )  # fmt: skip
        self.pinned_version = Gauge(
            "meridian_config_pinned_version", "The version served while pinned (0 when not pinned)",
            registry=metrics.registry,
        )  # fmt: skip

    def set(self, pin: Pin | None, *, note: bool) -> None:
        was = self.pin
        self.pin = pin
        self.gauge.set(1 if pin else 0)
        self.pinned_version.set(pin.version if pin else 0)
        if note:
            if pin is not None:
                self.svc.history.note_pin(PinEvent("rollback", pin.version, pin.at, pin.reason))
            elif was is not None:
                self.svc.history.note_pin(PinEvent("resume", self.svc.history.latest, time.time()))
        if not self.svc.sources.ready:
            return
        if pin is not None:
            if not self.serve():
                log.error("pinned version %s is not in this replica's history yet", pin.version)
        elif was is not None:
            self.svc.served.replace({t: dict(self.svc.sources.get(t).resources) for t in rt.PUSH_ORDER})

    def serve(self) -> bool:
        """Put the pinned version in the served cache; False if this replica does not have it."""
        assert self.pin is not None
        if self.pin.version not in self.svc.history.timeline.deltas and self.svc.history.manifest(
            self.pin.version
        ) is None:
            return False
        served = self.svc.served
        # Like a controller batch: many short-lived objects, no cycles worth a collection of the
        # whole (large, long-lived) heap in the middle of a rollback.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            resources, missing = self.svc.history.pinned_resources(
                self.pin.version, self.svc.sources.get(rt.SECRET).resources, self.svc.find_secret,
                current=lambda t: served.get(t).resources,
                live_endpoints=self.svc.sources.get(rt.ENDPOINT).resources,
            )  # fmt: skip
            self.missing = missing
            self.endpoints = set(resources.get(rt.ENDPOINT, ()))
            served.replace(resources)
        finally:
            if gc_was_enabled:
                gc.enable()
        return True

    def follow_endpoints(self, changed: dict[str, Resource | None], seen_at: float | None) -> None:
        """While pinned, endpoint changes of the pinned version's clusters still reach Envoy."""
        upserts = {n: r for n, r in changed.items() if r is not None and n in self.endpoints}
        if upserts:
            self.svc.served.apply({rt.ENDPOINT: upserts}, seen_at=seen_at)

    def check(self, version: int) -> tuple[list[str], list[str]]:
        """(reasons that need --yes, reasons that forbid it) for pinning `version`."""
        rec = self.svc.history.get(version)
        if rec is None:
            kept = f"{self.svc.history.oldest}..{self.svc.history.latest}" if self.svc.history.records else "none"
            raise RollbackRefused(404, f"version {version} is not in the history (kept: {kept})")
        confirm: list[str] = []
        age = time.time() - rec.at
        limit = self.svc.max_age
        if age > limit:
            confirm.append(f"version {version} is {age / 3600:.1f} h old (over the {limit / 3600:g} h limit)")
        _, missing = self.svc.history.pinned_resources(
            version, self.svc.sources.get(rt.SECRET).resources, self.svc.find_secret, build=False,
            current=lambda t: self.svc.served.get(t).resources,
            live_endpoints=self.svc.sources.get(rt.ENDPOINT).resources,
        )  # fmt: skip
        fatal = [m for m in missing if "not stored" in m or "no longer kept" in m]
        confirm += [m for m in missing if m not in fatal]
        return confirm, fatal

    async def rollback(self, version: int, reason: str = "", yes: bool = False, by: str = "") -> dict[str, Any]:
        confirm, fatal = self.check(version)
        if fatal:
            raise RollbackRefused(409, f"cannot serve version {version}", fatal)
        if confirm and not yes:
            raise RollbackRefused(409, f"rolling back to version {version} needs --yes", confirm)
        pin = Pin(version, reason, time.time(), by)
        if self.svc.persister is not None:
            await asyncio.to_thread(self.svc.persister.write_pin, asdict(pin))
        started = time.perf_counter()
        self.set(pin, note=self.svc.is_writer())
        self.svc.warn("ConfigPinned", pin.banner())
        self.svc._wake()
        return {"pin": asdict(pin), "confirmed": confirm, "missing": self.missing,
                "seconds": round(time.perf_counter() - started, 6)}  # fmt: skip

    async def resume(self) -> dict[str, Any]:
        was = self.pin
        if self.svc.persister is not None:
            await asyncio.to_thread(self.svc.persister.write_pin, None)
        self.set(None, note=self.svc.is_writer())
        if was is not None:
            self.svc.warn("ConfigResumed", f"configuration pin on version {was.version} dropped; serving the sources")
        self.svc._wake()
        return {"resumed_from": was.version if was else None, "serving": self.svc.history.latest}
