"""Give memory freed after a burst of sending back to the operating system.

Connecting gateways are each sent ~1.8 MiB at 1,000 Services: gRPC, the TLS front and the response
bodies allocate and free hundreds of MiB within seconds, across the allocator's arenas (gRPC's
threads have their own). glibc returns only the top of a heap by itself, so most of that stays
resident: a bare grpc.aio server holds ~120 KiB per stream after 30 KiB messages, ~78 KiB after
`malloc_trim(0)`. Once enough has been sent and sending has gone quiet, the heap is trimmed (in a
thread: it walks every arena). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("controlplane.xds")

_THRESHOLD = 16 * 1024 * 1024  # bytes sent since the last trim before another is worth it
_QUIET = 1024 * 1024  # ... and at most this much sent in the last interval (the burst is over)


def glibc_trim() -> Callable[[], object] | None:
    """`malloc_trim(0)` of the C library, when it has one (glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class HeapTrimmer:
    """Counts bytes sent; trims the heap once a burst of at least `threshold` bytes has ended."""

    def __init__(self, trim: Callable[[], object] | None, threshold: int = _THRESHOLD, quiet: int = _QUIET) -> None:
        self._trim = trim
        self._threshold = threshold
        self._quiet = quiet
        self._since_trim = 0
        self._recent = 0
        self.trims = 0

    def sent(self, n: int) -> None:
        self._since_trim += n
        self._recent += n

    def due(self) -> bool:
        """Called once per interval: whether to trim now (and if so, start counting afresh)."""
        recent, self._recent = self._recent, 0
        if self._trim is None or self._since_trim < self._threshold or recent > self._quiet:
            return False
        self._since_trim = 0
        return True

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.due():
                assert self._trim is not None
                await asyncio.to_thread(self._trim)
                self.trims += 1
                log.debug("heap trimmed after a burst of xDS responses")
