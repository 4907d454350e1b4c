"""When a control plane's first build may run.

Nothing is served before the primary cluster's first full list. The first build also waits until
every cluster known to exist has listed (or failed to; see ClusterRegistry.all_synced), so a cold
start builds once rather than once per cluster, as their lists arrive. A remote cluster slower
than FIRST_BUILD_GRACE_S after the primary joins in a later build.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from controlplane.store import ClusterRegistry

FIRST_BUILD_GRACE_S = 5.0


class FirstBuildGate:
    def __init__(self, registry: ClusterRegistry, request_flush: Callable[[], None]) -> None:
        self.registry = registry
        self.request_flush = request_flush  # called when the grace is over
        self._primary_in_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def status_changed(self) -> None:
        """A source's state changed (any thread): before the first build, that may open the gate."""
        if not self._done:
            self.request_flush()

    def open(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        """May the first build run now? (On the loop; `loop` None: flushed by hand, build what there is.)"""
        if not self.registry.primary_synced():
            return False
        if self.registry.all_synced() or loop is None:
            return True
        now = time.monotonic()
        if self._primary_in_at is None:
            self._primary_in_at = now
            self._timer = loop.call_at(now + FIRST_BUILD_GRACE_S + 0.001, self.request_flush)
        return now >= self._primary_in_at + FIRST_BUILD_GRACE_S

    def done(self) -> None:
        """The first build ran: no flush is due for the grace, nor for a status change, any more."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
