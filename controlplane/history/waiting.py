"""Changes already served whose history records are written a moment later, oldest first.

The record (and the save it wakes) would otherwise run while the xDS streams send the change and
the TLS relay carries it and Envoy's ACK, on the same event loop. Each waiting change keeps the
sources cache's type snapshots as they were when it was applied (never mutated, so nothing is
copied), so its record is the one it would have had at once. Whoever reads the history first
writes what is waiting (`HistoryService.history`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.history.recorder import Sources
from controlplane.history.sources_cache import Effective
from controlplane.xds import resources as rt
from controlplane.xds.cache import TypeSnapshot

RECORD_DELAY = 0.05  # seconds from a change being served to its record being written
# Seconds a history save's worker thread steps aside, at each of its steps, after a change was
# applied: the save holds the GIL in stretches (sorting, framing, JSON), and the change's sends
# and reads on the event loop would wait behind them (a 10 ms new Service took 30-190 ms when a
# save overlapped it at 10,000 Services, bench/route_breakdown.py).
SERVE_QUIET = 0.03


@dataclass(frozen=True)
class SourcesAt:
    """The sources cache's types as they were when a change was applied."""

    types: Mapping[str, TypeSnapshot]

    @staticmethod
    def of(sources: Sources) -> SourcesAt:
        return SourcesAt({t: sources.get(t) for t in rt.PUSH_ORDER})

    def get(self, type_url: str) -> TypeSnapshot:
        return self.types[type_url]


@dataclass(frozen=True)
class Waiting:
    """A change served but not yet recorded."""

    effective: Effective
    trigger: Sequence[object]
    sources: Sources  # SourcesAt, or the sources cache itself for a record made at once
    served: bool  # unpinned when it was applied
    served_version: int | None  # the served cache's version it became


class RecordQueue:
    """`write(w)` each waiting change in order, RECORD_DELAY after the first (at once without a
    running event loop), then `after()`."""

    def __init__(self, write: Callable[[Waiting], None], after: Callable[[], None]) -> None:
        self._write = write
        self._after = after
        self._waiting: deque[Waiting] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._added_at = 0.0  # time.monotonic() of the last change added

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiting: Waiting) -> None:
        self._added_at = time.monotonic()
        self._waiting.append(waiting)
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
            return
        self._timer = loop.call_later(RECORD_DELAY, self.drain)

    def drain(self) -> None:
        if not self._waiting:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            self._write(self._waiting.popleft())
        self._after()

    def step_aside(self) -> None:
        """In a save's worker thread, between its steps: wait until SERVE_QUIET has passed since the
        last change was applied, so the save does not compete with serving it. Each call waits at
        most SERVE_QUIET, so a save under a steady stream of changes is slowed, never starved."""
        wait = self._added_at + SERVE_QUIET - time.monotonic()
        if wait > 0:
            time.sleep(wait)
