"""The cache's per-stream wake-up flag and its lineage lookup (both on every stream's push path)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.xds.cache import DEFAULT_GROUP, SnapshotCache, Waker, make_resource
from controlplane.xds.resources import CLUSTER, ENDPOINT


async def test_waker_wait_returns_at_once_when_set_and_blocks_after_clear() -> None:
    w = Waker()
    w.set()
    assert w.is_set()
    assert await asyncio.wait_for(w.wait(), 1) is True
    w.clear()
    assert not w.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(w.wait(), 0.02)
    # A timed-out wait leaves it usable: a later set wakes the next waiter.
    waiter = asyncio.create_task(w.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    w.set()
    assert await asyncio.wait_for(waiter, 1) is True


async def test_waker_refuses_a_second_concurrent_waiter() -> None:
    w = Waker()
    first = asyncio.create_task(w.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await w.wait()
    w.set()
    await asyncio.wait_for(first, 1)


async def test_cache_change_sets_every_waiter_and_dropped_ones_stay_clear() -> None:
    cache = SnapshotCache()
    a, b = cache.waiter(), cache.waiter()
    cache.drop_waiter(b)
    cache.apply({CLUSTER: {"c": make_resource("c", CLUSTER, b"x")}})
    assert a.is_set() and not b.is_set()


def test_lineage_is_the_group_only_where_it_has_its_own_snapshot() -> None:
    cache = SnapshotCache()
    cache.apply({CLUSTER: {"c": make_resource("c", CLUSTER, b"x")}})
    cache.apply({ENDPOINT: {"e": make_resource("e", ENDPOINT, b"y")}}, group="g")
    assert cache.lineage(CLUSTER, DEFAULT_GROUP) == DEFAULT_GROUP
    assert cache.lineage(CLUSTER, "g") == DEFAULT_GROUP  # g has no clusters of its own: reads the default's
    assert cache.lineage(ENDPOINT, "g") == "g"
    assert cache.lineage(ENDPOINT, "other") == DEFAULT_GROUP
    for type_url in (CLUSTER, ENDPOINT):
        for group in (DEFAULT_GROUP, "g", "other"):
            # The definition it replaces: the group's own snapshot unless it is the default group's.
            own = cache.get(type_url, group)
            expected = DEFAULT_GROUP if own is cache.get(type_url, DEFAULT_GROUP) else group
            assert cache.lineage(type_url, group) == expected


def test_the_young_gc_threshold_follows_the_fleet_and_never_drops_under_the_floor() -> None:
    from controlplane.xds.server import GC_YOUNG_PER_STREAM, fit_young_gc, young_gc_threshold

    assert young_gc_threshold(0, 700) == 700
    assert young_gc_threshold(99, 700) == 700  # a few gateways: what the process had
    assert young_gc_threshold(1000, 700) == 1000 * GC_YOUNG_PER_STREAM
    assert young_gc_threshold(1099, 700) == 1000 * GC_YOUNG_PER_STREAM  # moves in steps of 100 streams
    assert young_gc_threshold(300, 50_000) == 50_000
    import gc

    saved = gc.get_threshold()
    try:
        fit_young_gc(1000, saved[0])
        assert gc.get_threshold() == (1000 * GC_YOUNG_PER_STREAM, *saved[1:])
        fit_young_gc(0, saved[0])
        assert gc.get_threshold() == saved
    finally:
        gc.set_threshold(*saved)
