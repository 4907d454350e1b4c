"""Which paths under a directory tree changed, reported as soon as a write is complete.

On Linux, inotify's descriptor is read straight from the event loop (`loop.add_reader`): a file
closed after writing, or renamed into place, reaches the file source a fraction of a millisecond
later. watchfiles, used before, polls its event list every few milliseconds in a thread and hands
over only once a check finds nothing new (~4 ms of every change). It stays the fallback where
inotify is not available (another OS, no inotify instance or watch left) or not wanted
(`WATCHFILES_FORCE_POLLING` set: a network file system whose changes inotify cannot see).

Bursts (inotify; the constants are in `controlplane.sources.inotify`): the first complete write
after a quiet moment is reported at once; events that follow within QUIET (20 ms) are held and
reported together once the tree has been quiet for QUIET (at most MAX_HOLD after the first),
so a script or `cp -r` writing 100 files makes two builds, not 100.
Removals, renames away and unfinished writes are always held: editors save by moving the old
file aside before writing the new one, and its objects must not vanish in between. A path still
open for writing waits for its close (up to OPEN_WRITE_LIMIT). A queue overflow (events lost)
reports the root, which the file source rescans whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("controlplane.sources.watch")

Report = Callable[[set[Path]], None]
"""Paths that may have changed: files with one of the watched suffixes (present or gone), or directories
(created, removed, moved, or the root after lost events) whose whole subtree must be compared."""


class Watcher(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...


def open_watcher(
    directory: Path, report: Report, suffixes: tuple[str, ...], on_failed: Callable[[], None] = lambda: None
) -> Watcher:
    """inotify where it works, watchfiles otherwise (on the running loop). `on_failed` runs if inotify
    stops covering the tree later (no watch left for a new directory): start a `WatchfilesWatcher`."""
    if sys.platform.startswith("linux") and not os.environ.get("WATCHFILES_FORCE_POLLING"):
        from controlplane.sources.inotify import InotifyWatcher  # Linux only (ctypes on libc)

        try:
            watcher = InotifyWatcher(directory, report, suffixes, on_failed)
            watcher.start()
            return watcher
        except OSError as exc:
            log.warning("%s: inotify unavailable (%s); watching with watchfiles", directory, exc)
    fallback = WatchfilesWatcher(directory, report, suffixes)
    fallback.start()
    return fallback


class WatchfilesWatcher:
    """The fallback: watchfiles' native backend, or polling with WATCHFILES_FORCE_POLLING."""

    def __init__(
        self, directory: Path, report: Report, suffixes: tuple[str, ...], step: int = 2, debounce: int = 500,
        rust_timeout: int | None = None, force_polling: bool | None = None,
    ) -> None:  # fmt: skip
        self.directory = directory
        self._report = report
        self._suffixes = suffixes
        # step: the Rust thread checks its event list every `step` ms and yields once a check finds
        # no new ones (~2 steps per change); debounce caps how long a burst that never pauses is held.
        self._options = {"step": step, "debounce": debounce, "rust_timeout": rust_timeout,
                         "force_polling": force_polling}  # fmt: skip
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watchfiles:{self.directory}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        from watchfiles import awatch

        options = self._options | {"rust_timeout": self._options["rust_timeout"] or 1000}
        started = False
        async for changes in awatch(self.directory, stop_event=self._stop, recursive=True, yield_on_timeout=True,
                                    **options):  # fmt: skip
            if not started:  # the watcher has its first view now: what changed before it was taken, once
                started = True
                self._report({self.directory})
            paths = {Path(p) for _change, p in changes}
            paths = {p for p in paths if p.suffix in self._suffixes or p.is_dir() or not (p.suffix or p.exists())}
            if paths:
                self._report(paths)
