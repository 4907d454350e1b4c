"""File watcher alone: a file renamed into place -> its object in the store, per watcher.

Variants, run interleaved (round 1: each variant once, round 2 the same, ...):
  inotify            `controlplane.sources.inotify` (the default on Linux)
  watchfiles s=N     watchfiles' `awatch` with step N ms (s=2, debounce 500: the watcher before)
and for each: write -> store event p50/p99 over single isolated changes, the process's idle CPU
while nothing changes (% of one core), and a burst of 100 files written back to back: how many
reports (builds) it became and when the last file was in the store.

    .venv/bin/python -m bench.file_watch --trials 50 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine_facts, summary_ms
from controlplane.sources.files import SUFFIXES, FileSource
from controlplane.sources.inotify import InotifyWatcher
from controlplane.sources.watch import Watcher, WatchfilesWatcher
from controlplane.store import ClusterStore

Factory = Callable[[Path, Callable[[set[Path]], None]], Watcher]
VARIANTS: dict[str, Factory] = {
    "inotify": lambda d, report: InotifyWatcher(d, report, SUFFIXES),
    "watchfiles step=2 debounce=500 (before)": lambda d, report: WatchfilesWatcher(d, report, SUFFIXES, step=2),
    "watchfiles step=1": lambda d, report: WatchfilesWatcher(d, report, SUFFIXES, step=1),
    "watchfiles step=5": lambda d, report: WatchfilesWatcher(d, report, SUFFIXES, step=5),
    "watchfiles step=2 rust_timeout=50": lambda d, report: WatchfilesWatcher(
        d, report, SUFFIXES, step=2, rust_timeout=50
    ),
}


def manifest(name: str) -> str:
    return f"{{apiVersion: v1, kind: Service, metadata: {{name: {name}}}, spec: {{ports: [{{port: 80}}]}}}}\n"


def write_atomically(directory: Path, name: str) -> float:
    tmp = directory / f".{name}.yaml.tmp"
    tmp.write_text(manifest(name))
    t0 = time.monotonic()
    os.replace(tmp, directory / f"{name}.yaml")
    return t0


async def measure(name: str, factory: Factory, trials: int, idle_seconds: float) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="file-watch-"))
    store = ClusterStore("c1", primary=True)
    arrived: dict[str, float] = {}
    store.subscribe(lambda ev: arrived.setdefault(ev.ref.name, time.monotonic()))
    source = FileSource(directory, store)
    reports = 0

    def report(paths: set[Path]) -> None:
        nonlocal reports
        reports += 1
        source.apply_changes(paths)

    watcher = factory(directory, report)
    watcher.start()
    source.load_all()
    await asyncio.sleep(0.2)  # watchfiles' thread starts
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(idle_seconds)
        idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
        latencies = []
        for i in range(trials):
            key = f"single-{i}"
            t0 = write_atomically(directory, key)
            while key not in arrived and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.0002)
            latencies.append(arrived[key] - t0)
            await asyncio.sleep(0.05)  # isolated changes
        reports = 0
        burst = [f"burst-{i}" for i in range(100)]
        writer = threading.Thread(target=lambda: [write_atomically(directory, n) for n in burst])
        t0 = time.monotonic()
        writer.start()
        while not all(n in arrived for n in burst) and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.001)
        writer.join()
        burst_ms = (max(arrived[n] for n in burst) - t0) * 1000
        await asyncio.sleep(0.1)
    finally:
        await watcher.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {"variant": name, "latency": latencies, "idle_cpu_pct": idle_cpu, "burst_reports": reports,
            "burst_last_ms": burst_ms}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="File watcher latency, idle CPU and burst coalescing")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measurement per run")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from the list above")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    names = [n for n in VARIANTS if n in args.variants.split(",")]
    runs: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name in names:
            runs.append(asyncio.run(measure(name, VARIANTS[name], args.trials, args.idle)))
            load.append(os.getloadavg()[0])
    facts = machine_facts() | {"load_avg_during": [round(x, 2) for x in load]}
    print(json.dumps(facts))
    print("| watcher | write->store p50 / p99 ms | idle CPU % of a core | 100-file burst: reports, last in store ms |")
    print("|---|---|---|---|")
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        lat = summary_ms([x for r in mine for x in r["latency"]])
        idle = sorted(r["idle_cpu_pct"] for r in mine)[len(mine) // 2]
        bursts = ", ".join(f"{r['burst_reports']} / {r['burst_last_ms']:.0f}" for r in mine)
        print(f"| {name} | {lat['p50']:.2f} / {lat['p99']:.2f} | {idle:.2f} | {bursts} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
