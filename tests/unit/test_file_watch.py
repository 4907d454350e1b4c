"""The file source's watcher on a real directory: inotify (and the watchfiles fallback) against the
ways manifests get written: renamed into place, editors' saves, bursts, directories, lost events."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.engine.batcher import Batcher
from controlplane.sources import inotify
from controlplane.sources.files import FileSource
from controlplane.sources.inotify import InotifyWatcher
from controlplane.sources.watch import WatchfilesWatcher
from controlplane.store import ClusterStore, StoreEvent
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="inotify is Linux's")


def service(name: str, port: int = 80) -> str:
    return f"{{apiVersion: v1, kind: Service, metadata: {{name: {name}}}, spec: {{ports: [{{port: {port}}}]}}}}\n"


def write_atomically(path: Path, text: str) -> None:
    """As kubectl-like tools and the benchmarks do: a temporary file, then a rename over the target."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Running:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = ClusterStore("c1", primary=True)
        self.events: list[StoreEvent] = []
        self.store.subscribe(self.events.append)
        self.source = FileSource(directory, self.store)

    def port(self, name: str) -> int | None:
        obj = self.store.get("Service", "default", name)
        return None if obj is None else obj["spec"]["ports"][0]["port"]

    def deleted(self, name: str) -> bool:
        return any(ev.ref.name == name and ev.new is None for ev in self.events)

    @property
    def watcher(self) -> InotifyWatcher:
        assert isinstance(self.source.watcher, InotifyWatcher), self.source.watcher
        return self.source.watcher


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    (tmp_path / "c1").mkdir()
    r = Running(tmp_path / "c1")
    await r.source.start()
    try:
        yield r
    finally:
        await r.source.stop()


async def test_a_rename_into_place_is_one_report_and_reaches_the_store(running: Running) -> None:
    write_atomically(running.directory / "a.yaml", service("a"))
    await wait_until_async(lambda: running.port("a") == 80, timeout=5, interval=0.001)
    assert running.watcher.reports == 1  # the temporary file's own events are not reported
    write_atomically(running.directory / "a.yaml", service("a", 81))
    await wait_until_async(lambda: running.port("a") == 81, timeout=5, interval=0.001)
    assert not running.deleted("a")


async def test_deleting_a_file_removes_its_objects(running: Running) -> None:
    write_atomically(running.directory / "a.yaml", service("a"))
    await wait_until_async(lambda: running.port("a"), timeout=5)
    (running.directory / "a.yaml").unlink()
    await wait_until_async(lambda: running.port("a") is None, timeout=5)
    assert running.deleted("a")


async def test_a_burst_of_100_files_is_at_most_two_builds(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write after a quiet moment goes at once; the rest wait for the burst to end and
    become one batch. QUIET is widened so a writer thread descheduled on a loaded machine does not
    end the burst early."""
    monkeypatch.setattr(inotify, "QUIET", 0.3)
    await running.source.stop()
    running.source = FileSource(running.directory, running.store)
    batches: list[int] = []
    batcher = Batcher(lambda events, seen_at: batches.append(len(events)))
    batcher.attach(asyncio.get_running_loop())
    running.store.subscribe(batcher.on_event)
    await running.source.start()
    writer = threading.Thread(
        target=lambda: [write_atomically(running.directory / f"s{i}.yaml", service(f"s{i}")) for i in range(100)]
    )
    writer.start()
    await wait_until_async(lambda: len(running.store.list("Service")) == 100, timeout=20)
    await wait_until_async(batcher.idle, timeout=5)
    writer.join()
    assert sum(batches) == 100
    assert len(batches) <= 2, batches
    assert running.watcher.reports <= 2


async def test_an_editors_save_never_drops_the_objects(running: Running) -> None:
    path = running.directory / "a.yaml"
    write_atomically(path, service("a"))
    await wait_until_async(lambda: running.port("a") == 80, timeout=5)

    # vim (backupcopy=no), emacs: the old file is renamed to a backup, a new one written, the backup removed.
    backup = path.with_name("a.yaml~")
    os.rename(path, backup)
    path.write_text(service("a", 81))
    backup.unlink()
    await wait_until_async(lambda: running.port("a") == 81, timeout=5)

    # In place, slowly: truncated, half written, held open longer than a burst's quiet moment.
    with path.open("w") as f:
        f.write(service("a", 82)[:20])
        f.flush()
        await asyncio.sleep(3 * inotify.QUIET)  # the writer is slow: the half-written file must not be read
        f.write(service("a", 82)[20:])
    await wait_until_async(lambda: running.port("a") == 82, timeout=5)
    assert not running.deleted("a")
    assert str(path) not in running.store.status.errors


async def test_directories_created_moved_in_moved_out_and_removed(running: Running, tmp_path: Path) -> None:
    nested = running.directory / "team" / "deep"
    nested.mkdir(parents=True)  # files land before the new directories' watches exist: found by the scan
    (nested / "x.yaml").write_text(service("x"))
    await wait_until_async(lambda: running.port("x"), timeout=5)
    (nested / "y.yaml").write_text(service("y"))  # now through the new watch
    await wait_until_async(lambda: running.port("y"), timeout=5)

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "z.yaml").write_text(service("z"))
    os.rename(staged, running.directory / "moved-in")
    await wait_until_async(lambda: running.port("z"), timeout=5)

    os.rename(running.directory / "moved-in", tmp_path / "moved-out")
    await wait_until_async(lambda: running.port("z") is None, timeout=5)
    (tmp_path / "moved-out" / "z.yaml").write_text(service("z", 99))  # outside the tree now: not read
    shutil.rmtree(running.directory / "team")
    await wait_until_async(lambda: running.port("x") is None and running.port("y") is None, timeout=5)
    write_atomically(running.directory / "after.yaml", service("after"))
    await wait_until_async(lambda: running.port("after"), timeout=5)
    assert running.port("z") is None


async def test_a_queue_overflow_rescans_the_whole_tree(running: Running) -> None:
    """More events than inotify queues, while the loop is busy: the kernel drops the rest and says
    so; the rescan still finds every file written and the one removed."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 40_000:
        pytest.skip(f"max_queued_events is {limit}: too many files to overflow it quickly")
    write_atomically(running.directory / "gone.yaml", service("gone"))
    await wait_until_async(lambda: running.port("gone"), timeout=5)
    count = limit // 3 + 500  # each new file: CREATE, MODIFY, CLOSE_WRITE
    for i in range(count):  # the loop does not run meanwhile: nothing reads the queue
        (running.directory / f"s{i}.yaml").write_text(service(f"s{i}"))
    (running.directory / "gone.yaml").unlink()  # its event is among those dropped
    await wait_until_async(lambda: running.watcher.rescans >= 1, timeout=10)
    await wait_until_async(lambda: len(running.store.list("Service")) == count, timeout=60)
    assert running.port("gone") is None


async def test_the_root_removed_and_recreated(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inotify, "ROOT_RETRY", 0.05)
    write_atomically(running.directory / "a.yaml", service("a"))
    await wait_until_async(lambda: running.port("a"), timeout=5)
    shutil.rmtree(running.directory)
    await wait_until_async(lambda: running.port("a") is None, timeout=5)
    running.directory.mkdir()
    (running.directory / "b.yaml").write_text(service("b"))
    await wait_until_async(lambda: running.port("b"), timeout=10)


async def test_a_directory_missing_at_start_is_read_once_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inotify, "ROOT_RETRY", 0.05)
    r = Running(tmp_path / "later")
    await r.source.start()
    try:
        assert r.store.status.state == "error" and str(r.directory) in r.store.status.errors
        r.directory.mkdir()
        (r.directory / "a.yaml").write_text(service("a"))
        await wait_until_async(lambda: r.port("a") == 80, timeout=10)
        assert r.store.status.state == "synced" and not r.store.status.errors
    finally:
        await r.source.stop()


async def test_running_out_of_watches_switches_to_watchfiles(running: Running) -> None:
    watcher = running.watcher

    def no_watch_left(path: object, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    watcher._inotify.add_watch = no_watch_left  # type: ignore[method-assign]  # the kernel's limit, reached
    sub = running.directory / "sub"
    sub.mkdir()
    (sub / "a.yaml").write_text(service("a"))
    await wait_until_async(lambda: isinstance(running.source.watcher, WatchfilesWatcher), timeout=5)
    await wait_until_async(lambda: running.port("a") == 80, timeout=10)
    write_atomically(sub / "a.yaml", service("a", 81))  # seen by watchfiles now
    await wait_until_async(lambda: running.port("a") == 81, timeout=10)


async def test_polling_fallback_when_inotify_is_not_wanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")  # a network file system: inotify would see nothing
    r = Running(tmp_path)
    await r.source.start()
    try:
        assert isinstance(r.source.watcher, WatchfilesWatcher)
        write_atomically(tmp_path / "a.yaml", service("a"))
        await wait_until_async(lambda: r.port("a") == 80, timeout=10)
        (tmp_path / "a.yaml").unlink()
        await wait_until_async(lambda: r.port("a") is None, timeout=10)
    finally:
        await r.source.stop()


def test_file_watch_bench_compares_watchers() -> None:
    """bench/file_watch.py, a few trials: every variant sees each change and the burst."""
    from bench import file_watch

    assert file_watch.main(["--trials", "2", "--rounds", "1", "--idle", "0.1",
                            "--variants", "inotify,watchfiles step=2 debounce=500 (before)"]) == 0  # fmt: skip
