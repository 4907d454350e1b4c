"""One-change cost of the control plane's in-process path, at N existing Ingresses.

Builds N Ingress+Service+EndpointSlice sets into a ClusterStore, flushes the Controller once (the
cold build), then times `upsert one new Ingress set + flush` (which includes serializing the
changed resources into the SnapshotCache) and, separately, the file source's parse of one file.
`--profile` prints a cProfile of the one-change path. No Envoy, no sockets: this isolates Meridian.

    .venv/bin/python -m bench.controller_micro --sizes 1000,10000 --trials 50 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sys
import time
from typing import Any

from bench.common import dump, objects_for, percentile, proc_status
from controlplane.controller import Controller, GatewayConfig
from controlplane.metrics import Metrics
from controlplane.sources.files import parse_manifests
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache

BACKEND_PORT = 9
QS = (("p50", 50), ("p99", 99), ("max", 100))


def build(n: int, partitions: int | None = None) -> tuple[Controller, ClusterStore, float]:
    """N Ingress sets built cold; `partitions` as serve --route-partitions (None: auto)."""
    registry = ClusterRegistry()
    store = registry.add(ClusterStore("c1", primary=True))
    cache = SnapshotCache()
    config = GatewayConfig(classes=_all_classes(), route_partitions=partitions)
    ctl = Controller(registry, cache, Metrics(), config)
    registry.subscribe(ctl._on_event)  # no event loop: flush() is called by hand
    for i in range(n):
        for obj in objects_for(i, BACKEND_PORT):
            store.upsert(obj["kind"], obj)
    store.mark_synced()
    t0 = time.perf_counter()
    ctl.flush()
    return ctl, store, time.perf_counter() - t0


def _all_classes() -> Any:
    from controlplane.ingress.classes import ClassPolicy

    return ClassPolicy(frozenset({"meridian"}), True)


def one_change(ctl: Controller, store: ClusterStore, i: int) -> float:
    objs = objects_for(i, BACKEND_PORT)
    t0 = time.perf_counter()
    for obj in objs:
        store.upsert(obj["kind"], obj)
    ctl.flush()
    return time.perf_counter() - t0


def parse_one(i: int) -> float:
    text = dump(objects_for(i, BACKEND_PORT))
    t0 = time.perf_counter()
    parse_manifests(text)
    return time.perf_counter() - t0


def run(n: int, trials: int, profile: bool, partitions: int | None = None) -> dict[str, Any]:
    ctl, store, cold = build(n, partitions)
    routes = ctl.cache.get(rt.ROUTE).resources
    assert sum(len(r.any_bytes) for r in routes.values()) > n * 20, "route tables were not built"
    gc.collect()
    for k in range(3):  # warm-up
        one_change(ctl, store, n + k)
    times = [one_change(ctl, store, n + 3 + k) for k in range(trials)]
    parse = [parse_one(n + k) for k in range(trials)]
    out = {
        "n": n,
        "route_partitions": partitions or "auto",
        "cold_flush_s": round(cold, 3),
        "one_change_ms": {q: round(percentile(times, p) * 1000, 2) for q, p in QS},
        "parse_one_file_ms": round(percentile(parse, 50) * 1000, 3),
        "rss_hwm_mib": round(proc_status(__import__("os").getpid())["VmHWM"] / 1024, 1),
    }
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for k in range(20):
            one_change(ctl, store, n + 1000 + k)
        prof.disable()
        stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative")
        print(f"--- cProfile: 20 one-Ingress changes at N={n} (cumulative) ---", file=sys.stderr)
        stats.print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--partitions", default="auto", help="route partitions to compare in one run, e.g. 1,auto")
    args = p.parse_args(argv)
    for n in (int(s) for s in args.sizes.split(",")):
        for part in args.partitions.split(","):
            partitions = None if part == "auto" else int(part)
            print(json.dumps(run(n, args.trials, args.profile, partitions)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
