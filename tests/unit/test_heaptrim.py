"""The heap is trimmed once a burst of sending has ended, not during it, and not after a trickle."""

from __future__ import annotations

import asyncio

from controlplane.xds.heaptrim import HeapTrimmer, glibc_trim


def test_trims_once_after_a_burst_has_ended() -> None:
    trims: list[int] = []
    t = HeapTrimmer(lambda: trims.append(1), threshold=100, quiet=10)
    t.sent(60)
    assert not t.due()  # below the threshold
    t.sent(60)
    assert not t.due()  # over it, but still sending
    assert t.due()  # quiet now: trim
    assert not t.due()  # and not again until the next burst
    t.sent(50)
    assert not t.due()  # a little sent since: not worth a trim
    t.sent(60)
    assert not t.due()  # 110 since the last trim, but 60 just now: still sending
    assert t.due()
    assert not HeapTrimmer(None, threshold=1).due()  # no malloc_trim (not glibc): nothing to do


async def test_the_trim_runs_in_the_background() -> None:
    trims: list[int] = []
    t = HeapTrimmer(lambda: trims.append(1), threshold=100, quiet=10)
    t.sent(1000)
    task = asyncio.create_task(t.run(interval=0.01))
    try:
        for _ in range(500):
            if t.trims:
                break
            await asyncio.sleep(0.01)
        assert trims == [1] and t.trims == 1
    finally:
        task.cancel()


def test_glibc_trim_is_callable_here() -> None:
    trim = glibc_trim()
    assert trim is not None  # the CI image is glibc (Debian)
    trim()
