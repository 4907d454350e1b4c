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

Build = Callable[[list[StoreEvent], float], None]  # (events, when the first of them was seen)
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
            if self._first_event_at is None:
                self._first_event_at = time.monotonic()
            if self._gated:
                return
        self.request_flush()

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
            seen_at = self._first_event_at or time.monotonic()
            self._first_event_at = None
        started = time.perf_counter()
        # A batch allocates many short-lived objects and no cycles worth chasing mid-build: the
        # cyclic GC would otherwise run dozens of times during a cold build of 10,000 Ingresses.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._build(events, seen_at)
        finally:
            if gc_was_enabled:
                gc.enable()
        self._done(time.perf_counter() - started)
