"""inotify read straight from the event loop; `controlplane.sources.watch` says what is reported when.

One inotify watch per directory of the tree (inotify is not recursive): directories created or
moved in are watched and reported whole (files written before their watch existed are found by
comparing the subtree), directories removed or moved out are unwatched and reported whole.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

log = logging.getLogger("controlplane.sources.watch")

QUIET = 0.020  # seconds without an event that end a burst
MAX_HOLD = 0.5  # a burst that never pauses is still reported this often
OPEN_WRITE_LIMIT = 2.0  # a file written but not closed (a writer holding it open) is read anyway after this
ROOT_RETRY = 1.0  # how often a missing root directory is looked for again

MASK = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.DELETE | flags.MODIFY
        | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR)  # fmt: skip
GONE = (errno.ENOENT, errno.ENOTDIR)

Report = Callable[[set[Path]], None]


class InotifyWatcher:
    """Reports changed files (by suffix) and directories under `directory` to `report`, on the loop.

    `start()` raises OSError when inotify cannot watch the tree (no instance or watch left); at run
    time, running out of watches calls `on_failed` after closing, so the caller can switch to polling.
    """

    def __init__(
        self, directory: Path, report: Report, suffixes: tuple[str, ...], on_failed: Callable[[], None] = lambda: None
    ) -> None:
        self.directory = directory
        self._report = report
        self._suffixes = suffixes
        self._on_failed = on_failed
        self._quiet, self._max_hold, self._open_limit = QUIET, MAX_HOLD, OPEN_WRITE_LIMIT
        self._inotify = INotify(nonblocking=True)
        self._path_of: dict[int, Path] = {}  # watch descriptor -> directory
        self._wd_of: dict[Path, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._complete: set[Path] = set()  # written and closed, or renamed into place: ready to read
        self._held: dict[Path, float] = {}  # removed, moved away, touched; directories: after a quiet moment
        self._writing: dict[Path, float] = {}  # opened for writing and not closed yet -> since when
        self._last_event = float("-inf")
        self._burst_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.reports = 0  # how many times `report` was called
        self.rescans = 0  # queue overflows and root re-appearances: the whole tree was reported

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            if not self._watch_tree(self.directory):
                self._retry = self._loop.call_later(ROOT_RETRY, self._look_for_root)
        except OSError:
            self._inotify.close()
            raise
        self._loop.add_reader(self._inotify.fileno(), self._readable)

    async def stop(self) -> None:
        for handle in (self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        if self._loop is not None and not self._inotify.closed:
            self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()

    # -- events -> pending paths ------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return
        assert self._loop is not None
        now = self._loop.time()
        relevant = False
        try:
            for ev in events:
                relevant |= self._note(ev.wd, ev.mask, ev.name, now)
        except OSError as exc:  # no watch left for a new directory: inotify cannot cover the tree any more
            log.error("%s: cannot watch a new directory (%s); switching to polling", self.directory, exc)
            self._fail()
            return
        if not relevant:
            return
        was_quiet = now - self._last_event >= self._quiet and self._timer is None
        self._last_event = now
        if was_quiet and self._complete and not self._held and not self._writing:
            self._flush(now)  # an isolated, complete write: no reason to wait
        else:
            self._arm(now)

    def _note(self, wd: int, mask: int, name: str, now: float) -> bool:
        """Record one event; whether it concerns a path the caller reads."""
        if mask & flags.Q_OVERFLOW:
            log.warning("%s: inotify queue overflowed; rescanning the whole directory", self.directory)
            self.rescans += 1
            self._prune_watches()
            self._watch_tree(self.directory)
            self._held.setdefault(self.directory, now)
            return True
        if mask & flags.IGNORED:  # the watch is gone (its directory removed, or rm_watch)
            path = self._path_of.pop(wd, None)
            if path is not None and self._wd_of.get(path) == wd:
                del self._wd_of[path]
            return False
        parent = self._path_of.get(wd)
        if parent is None:
            return False
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            if parent != self.directory:
                return False  # its parent reports it
            self._unwatch_tree(self.directory)
            self._held.setdefault(self.directory, now)
            if self._retry is None and self._loop is not None:
                self._retry = self._loop.call_later(ROOT_RETRY, self._look_for_root)
            return True
        path = parent / name
        if mask & flags.ISDIR:
            if mask & (flags.CREATE | flags.MOVED_TO):
                self._watch_tree(path)
            elif mask & (flags.DELETE | flags.MOVED_FROM):
                self._unwatch_tree(path)
            else:
                return False
            self._held.setdefault(path, now)
            return True
        if not name.endswith(self._suffixes):
            return False  # editors' swap files, `.x.yaml.tmp` written before a rename, ...
        if mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
            self._complete.add(path)
            self._writing.pop(path, None)
            self._held.pop(path, None)
        elif mask & (flags.CREATE | flags.MODIFY):
            self._writing.setdefault(path, now)
            self._complete.discard(path)
        else:  # DELETE, MOVED_FROM, ATTRIB
            if mask & (flags.DELETE | flags.MOVED_FROM):
                self._writing.pop(path, None)
                self._complete.discard(path)
            if path not in self._complete:
                self._held.setdefault(path, now)
        return True

    # -- pending paths -> reports -----------------------------------------------------------------
    def _arm(self, now: float) -> None:
        """Report once the tree has been quiet for QUIET, and at most MAX_HOLD after the burst began."""
        assert self._loop is not None
        if self._burst_since is None:
            self._burst_since = now
        due = min(now + self._quiet, self._burst_since + self._max_hold)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._flush(self._loop.time())

    def _flush(self, now: float) -> None:
        stale = {p for p, since in self._writing.items() if now - since >= self._open_limit}
        for p in stale:
            del self._writing[p]
        ready = {p for p in self._held if p not in self._writing}  # a path moved aside and being rewritten waits
        paths = self._complete | ready | stale
        self._complete = set()
        for p in ready:
            del self._held[p]
        self._burst_since = None
        if self._writing or self._held:  # a write still open: look again when it is due at the latest
            assert self._loop is not None
            due = min(self._writing.values(), default=now) + self._open_limit
            self._timer = self._loop.call_at(max(due, now + self._quiet), self._on_timer)
        if paths:
            self.reports += 1
            self._report(paths)

    # -- watches ------------------------------------------------------------------------------------
    def _watch_tree(self, top: Path) -> bool:
        """Watch `top` and every directory below it (symlinked directories are not followed, as
        `Path.rglob`); False when `top` is not a directory (any more)."""
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                wd = self._inotify.add_watch(directory, MASK)
            except OSError as exc:
                if exc.errno in GONE:
                    if directory == top:
                        return False
                    continue  # removed meanwhile: its parent's event reports it
                raise
            old = self._path_of.get(wd)
            if old is not None and old != directory:
                self._wd_of.pop(old, None)
            self._path_of[wd] = directory
            self._wd_of[directory] = wd
            try:
                with os.scandir(directory) as entries:
                    stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return True

    def _unwatch_tree(self, top: Path) -> None:
        """Forget the watches at and below `top` (a directory moved away keeps its watch otherwise)."""
        for path in [p for p in self._wd_of if p == top or top in p.parents]:
            wd = self._wd_of.pop(path)
            self._path_of.pop(wd, None)
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # already gone with its directory

    def _prune_watches(self) -> None:
        for path in [p for p in self._wd_of if not p.is_dir()]:
            self._unwatch_tree(path)

    def _look_for_root(self) -> None:
        assert self._loop is not None
        self._retry = None
        try:
            found = self._watch_tree(self.directory)
        except OSError as exc:
            log.error("%s: cannot watch (%s); switching to polling", self.directory, exc)
            self._fail()
            return
        if not found:
            self._retry = self._loop.call_later(ROOT_RETRY, self._look_for_root)
            return
        self.rescans += 1
        now = self._loop.time()
        self._held.setdefault(self.directory, now)
        self._last_event = now
        self._arm(now)

    def _fail(self) -> None:
        assert self._loop is not None
        self._loop.create_task(self.stop())
        self._on_failed()
