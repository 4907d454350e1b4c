"""Store events in from any thread, one batch per event-loop turn out.

Watchers (files, Kubernetes reflectors in worker threads) call `on_event`; the first event of a
batch schedules one `flush` on the loop, and every event that arrives before it runs joins the
batch, so a burst of changes becomes one build without any fixed delay.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import deque
from collections.abc import Callable

from controlplane.store import StoreEvent

# (events, when the first of them was seen) -> False if the batch failed (it is built again later)
Build = Callable[[list[StoreEvent], float], bool | None]
Done = Callable[[float], None]  # (seconds the batch took)


class Batcher:
    """Intake, locking, loop hand-off and GC control; what a batch means is `build`'s business.

    `may_build()` gates batches (no build before the clusters' first full lists); events keep
    queueing meanwhile and go into the first batch that may build. While a flush found the gate
    closed, events do not wake the loop (an initial list is tens of thousands of them): whatever
    opens the gate calls `request_flush()`. `done(seconds)` runs after each batch, on the loop.
    """

    def __init__(
        self, build: Build, may_build: Callable[[], bool] = lambda: True, done: Done = lambda seconds: None
    ) -> None:
        self._build = build
        self._may_build = may_build
        self._done = done
        self._events: deque[StoreEvent] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None  # the loop's thread, when attach() was called on it
        self._scheduled = False
        self._first_event_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._gated = False  # the last flush found may_build() false: events wait for request_flush()
        # Events counted in as queued, and how many of the first of them are built: readers that
        # hear of the same events (status writers) tell by these whether a build has caught up.
        self._queued_count = 0
        self._built_count = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        self._loop_thread = threading.get_ident() if running is loop else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def on_event(self, event: StoreEvent) -> None:
        """Queue one change (any thread) and make sure a flush is scheduled."""
        with self._lock:
            self._events.append(event)
            self._queued_count += 1
            if self._first_event_at is None:
                self._first_event_at = time.monotonic()
            if self._gated:
                return
        self.request_flush()

    @property
    def queued_count(self) -> int:
        """Events queued since the start (any thread; a plain read)."""
        return self._queued_count

    @property
    def built_count(self) -> int:
        """How many of the events queued since the start a finished batch has built."""
        return self._built_count

    def idle(self) -> bool:
        """No event is waiting to be built."""
        with self._lock:
            return not self._events and not self._scheduled

    def request_flush(self) -> None:
        """Schedule one flush on the loop from any thread; events queued meanwhile join that batch."""
        with self._lock:
            self._gated = False
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self.flush)  # a watcher on the loop (inotify): no self-pipe write and wake-up
        else:
            self._loop.call_soon_threadsafe(self.flush)

    def flush_at(self, when: float) -> None:
        """Flush at time.monotonic() `when` (the loop's clock), unless one is due earlier already."""
        loop = self._loop
        if loop is None or (self._timer is not None and self._timer.when() <= when):
            return
        if self._timer is not None:
            self._timer.cancel()

        def fire() -> None:
            self._timer = None
            self.request_flush()

        self._timer = loop.call_at(when + 0.001, fire)

    def flush(self) -> None:
        """Build the queued events as one batch (on the loop), unless `may_build()` says not yet."""
        with self._lock:
            self._scheduled = False
            self._gated = True  # until the gate is seen open; a request_flush() meanwhile schedules again
        if not self._may_build():
            return
        with self._lock:
            self._gated = False
            events = list(self._events)
            self._events.clear()
            taken = self._queued_count
            seen_at = self._first_event_at or time.monotonic()
            self._first_event_at = None
        started = time.perf_counter()
        # A batch allocates many short-lived objects and no cycles worth chasing mid-build: the
        # cyclic GC would otherwise run dozens of times during a cold build of 10,000 Ingresses.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            built = self._build(events, seen_at) is not False
        finally:
            if gc_was_enabled:
                gc.enable()
        if built:
            self._built_count = taken
        self._done(time.perf_counter() - started)
