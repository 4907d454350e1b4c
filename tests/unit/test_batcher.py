"""The Batcher alone: events from any thread become one batch per loop turn, gated, GC paused."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from controlplane.engine.batcher import Batcher
from controlplane.store import ObjectRef, StoreEvent
from tests.support.wait import wait_until_async


def event(i: int) -> StoreEvent:
    return StoreEvent(ObjectRef("c", "Service", "ns", f"s{i}"), None, {"i": i})


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[StoreEvent]] = []
        self.seen_at: list[float] = []
        self.gc_during: list[bool] = []
        self.durations: list[float] = []

    def build(self, events: list[StoreEvent], seen_at: float) -> None:
        self.batches.append(events)
        self.seen_at.append(seen_at)
        self.gc_during.append(gc.isenabled())

    def done(self, seconds: float) -> None:
        self.durations.append(seconds)


async def test_events_from_threads_become_one_batch_in_order() -> None:
    rec = Recorder()
    batcher = Batcher(rec.build, done=rec.done)
    batcher.attach(asyncio.get_running_loop())
    before = time.monotonic()

    def writer() -> None:
        for i in range(100):
            batcher.on_event(event(i))

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()  # the loop has not run yet: everything waits for one flush
    assert not batcher.idle()
    await wait_until_async(lambda: rec.batches, timeout=5, message="a batch")
    assert len(rec.batches) == 1 and [e.new["i"] for e in rec.batches[0]] == list(range(100))  # type: ignore[index]
    assert before <= rec.seen_at[0] <= time.monotonic()
    assert rec.gc_during == [False] and len(rec.durations) == 1
    assert batcher.idle()


async def test_gate_holds_events_until_building_is_allowed() -> None:
    rec = Recorder()
    allowed = False
    batcher = Batcher(rec.build, may_build=lambda: allowed, done=rec.done)
    batcher.attach(asyncio.get_running_loop())
    batcher.on_event(event(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.batches == [] and rec.durations == []
    batcher.on_event(event(2))
    allowed = True
    batcher.request_flush()
    await wait_until_async(lambda: rec.batches, timeout=5, message="the held batch")
    assert [e.new["i"] for e in rec.batches[0]] == [1, 2]  # type: ignore[index]


async def test_gc_comes_back_after_a_failed_build_and_flush_at_fires() -> None:
    def boom(events: list[StoreEvent], seen_at: float) -> None:
        raise RuntimeError("bug")

    batcher = Batcher(boom)
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        batcher.flush()
    assert gc.isenabled()

    rec = Recorder()
    timed = Batcher(rec.build)
    timed.attach(asyncio.get_running_loop())
    timed.flush_at(time.monotonic() + 0.05)
    timed.flush_at(time.monotonic() + 60)  # a later one does not push the earlier one back
    await wait_until_async(lambda: rec.batches == [[]], timeout=5, message="the timed flush")


def test_without_a_loop_nothing_is_scheduled() -> None:
    rec = Recorder()
    batcher = Batcher(rec.build)
    batcher.on_event(event(1))  # not attached yet: queued, no flush scheduled
    assert rec.batches == [] and not batcher.idle()
    batcher.flush()
    assert len(rec.batches) == 1 and batcher.idle()


async def test_events_do_not_wake_the_loop_while_the_gate_is_closed() -> None:
    """An initial list is tens of thousands of events: behind a closed gate they wait quietly until
    whatever opens it asks for a flush, and then go out as one batch."""
    rec = Recorder()
    allowed = False
    asked = 0

    def may_build() -> bool:
        nonlocal asked
        asked += 1
        return allowed

    batcher = Batcher(rec.build, may_build=may_build, done=rec.done)
    batcher.attach(asyncio.get_running_loop())
    batcher.on_event(event(0))
    await wait_until_async(lambda: asked == 1, timeout=5, message="the first flush finding the gate closed")
    for i in range(1, 1000):
        batcher.on_event(event(i))
    for _ in range(5):
        await asyncio.sleep(0)
    assert asked == 1 and rec.batches == [] and not batcher.idle()
    allowed = True
    batcher.request_flush()  # what a store's status change does
    await wait_until_async(lambda: rec.batches, timeout=5, message="the held batch")
    assert [e.new["i"] for e in rec.batches[0]] == list(range(1000)) and asked == 2  # type: ignore[index]
    batcher.on_event(event(1000))  # the gate is open again: an event schedules its own flush
    await wait_until_async(lambda: len(rec.batches) == 2, timeout=5, message="the next batch")


def test_built_count_follows_the_batches_that_succeeded() -> None:
    outcome = [True]
    batcher = Batcher(lambda events, seen_at: outcome[0])
    batcher.on_event(event(1))
    batcher.on_event(event(2))
    assert (batcher.queued_count, batcher.built_count) == (2, 0)
    batcher.flush()
    assert batcher.built_count == 2
    batcher.on_event(event(3))
    outcome[0] = False  # a failed batch: its events are not in what is served yet
    batcher.flush()
    assert (batcher.queued_count, batcher.built_count) == (3, 2)
    outcome[0] = True  # the recovery's rebuild (from the objects) makes them served
    batcher.flush()
    assert batcher.built_count == 3
