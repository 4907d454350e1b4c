"""Envoy's own memory and update time at N Ingresses, per `meridian bootstrap --envoy-stats` variant.

One control plane serves N Ingresses, each with its own Service (so N clusters). For every round
and every variant, in turn (A/B/A/B, so machine load hits both alike), one Envoy starts with that
variant's bootstrap and
  (a) cold: Envoy start -> every sampled host (incl. the last) answers 200;
  (b) RSS (VmRSS), tcmalloc's allocated bytes (admin /memory) and its own account of the rest
      (admin /memory/tcmalloc) once xDS has settled;
  (c) update time: write one new Ingress + Service + EndpointSlice (a new cluster, so its stats are
      created) -> first 200 through Envoy, `--trials` times, p50/p99, and Envoy's CPU time per update;
  (d) RSS after the updates, peak RSS, and how many stats Envoy holds (admin /stats, counted last).
then stops. Envoy runs with `--concurrency` workers (default 2: one per core of a 2-core gateway).
A variant is `full` or `gateway` (`meridian bootstrap --envoy-stats`), optionally with experiments
appended: `+eager` (gateway stats created with the cluster, not on first use), `+eagerclusters`
(every worker builds every cluster up front: the bootstrap before lazy creation was the default),
`+lazyclusters` (`cluster_manager.enable_deferred_cluster_creation`, for `full`), `+release<MiB>`
(tcmalloc gives freed memory back at that rate), `+shrinkheap` (the overload manager's shrink_heap,
always on), `+partitions<K>` (a control plane of its own with `--route-partitions K`), `+nostats`
(reject every stat: the floor), `+chunk<K>` (a control plane of its own sending Delta responses in
chunks of K resources, `MERIDIAN_XDS_DELTA_CHUNK`; `+chunk0`: whole responses), `+version<L>` (a
control plane of its own whose resource versions are L hex digits instead of 16), `+old` (a control
plane of its own running the checkout given with `--old-source`, e.g. `git archive <commit>` unpacked),
`+ondemand` (`meridian bootstrap --clusters on-demand`: only the pinned clusters up front, a Service's
cluster fetched on its first request).

With `--used U`, after (b) every variant gets one request to each of U hosts (their first: with
`+ondemand` each fetches its cluster, CDS then EDS, in it) and a second one, both timed, and RSS and
allocated bytes are read again once settled: what traffic to U of the N Services costs.

    .venv/bin/python -m bench.envoy_memory --n 10000 --variants gateway+eagerclusters,gateway --rounds 3 --trials 20
    .venv/bin/python -m bench.envoy_memory --n 10000 --variants gateway,gateway+ondemand --used 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ControlPlane,
    HostProbe,
    host_of,
    machine_facts,
    proc_status,
    summary_ms,
    wait_for,
    write_initial,
)
from bench.route_ready import new_route_trial, wait_settled
from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.devtools.echo import EchoFleet
from controlplane.devtools.envoy_proc import EnvoyProcess


@dataclass
class Sample:
    variant: str
    round: int
    cold_s: float = 0.0
    cold_cpu_s: float = 0.0
    cp_cold_cpu_s: float = 0.0
    peak_cold_mib: float = 0.0  # VmHWM once settled: the cold start's decoding
    rss_mib: float = 0.0
    allocated_mib: float = 0.0
    rss_after_mib: float = 0.0
    peak_mib: float = 0.0  # VmHWM: the most Envoy held at any time (the cold start's decoding included)
    stats: int = 0
    cpu_ms_per_update: float = 0.0
    clusters: int = 0  # clusters Envoy holds once settled (admin /clusters), before any --used request
    used_rss_mib: float = 0.0  # after one request to each of --used hosts
    used_allocated_mib: float = 0.0
    used_clusters: int = 0
    cp_used_cpu_ms: float = 0.0  # control plane CPU per --used host (both its requests, settling included)
    first_requests: list[float] = field(default_factory=list)  # each --used host's first request
    second_requests: list[float] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)  # admin /memory, MiB
    tcmalloc: list[str] = field(default_factory=list)  # admin /memory/tcmalloc, its MiB summary lines
    updates: list[float] = field(default_factory=list)


def bootstrap_for(cp: ControlPlane, variant: str, delta: bool, node_id: str) -> dict[str, Any]:
    stats, *extras = variant.split("+")
    group = "meridian-gateway"
    boot = render_bootstrap(xds_address=f"127.0.0.1:{cp.xds_port}", node_id=node_id, node_cluster=group,
                            delta=delta, tls=local_client_tls(cp.state_dir, group), envoy_stats=stats)  # fmt: skip
    for extra in sorted(extras, key=lambda e: e != "ondemand"):  # the bootstrap itself first
        if extra == "eager":  # gateway stats, but created with the cluster rather than on first use
            boot.pop("deferred_stat_options", None)
        elif extra == "eagerclusters":  # every worker builds every cluster up front
            boot.get("cluster_manager", {}).pop("enable_deferred_cluster_creation", None)
        elif extra == "lazyclusters":  # a worker builds its copy of a cluster when it first uses it
            boot["cluster_manager"] = {"enable_deferred_cluster_creation": True}
        elif extra.startswith("release"):  # release<MiB>: give freed heap back to the OS, per second
            mib = int(extra[len("release") :] or 100)
            boot["memory_allocator_manager"] = {"bytes_to_release": mib << 20, "memory_release_interval": "1s"}
        elif extra == "nostats":  # the floor: no stats at all
            boot["stats_config"] = {"stats_matcher": {"reject_all": True}}
        elif extra == "shrinkheap":  # overload manager: release free heap whenever the heap is in use
            boot["overload_manager"] = SHRINK_HEAP
        elif extra == "ondemand":  # `--clusters on-demand`
            boot = render_bootstrap(xds_address=f"127.0.0.1:{cp.xds_port}", node_id=node_id, node_cluster=group,
                                    delta=delta, tls=local_client_tls(cp.state_dir, group), envoy_stats=stats,
                                    clusters="on-demand")  # fmt: skip
        elif extra.startswith(("partitions", "chunk", "version", "old")):  # a control plane of its own (see main)
            continue
        else:
            raise ValueError(f"unknown variant option {extra!r}")
    return boot


# Envoy's shrink_heap action releases tcmalloc's free pages every 10 s while the fixed-heap monitor's
# pressure is over the threshold; a tiny threshold of a large heap keeps it always on.
SHRINK_HEAP = {
    "refresh_interval": "1s",
    "resource_monitors": [
        {
            "name": "envoy.resource_monitors.fixed_heap",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                "max_heap_size_bytes": 64 << 30,
            },
        }
    ],
    "actions": [
        {
            "name": "envoy.overload_actions.shrink_heap",
            "triggers": [{"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": 0.0001}}],
        }
    ],
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def option_of(variant: str, option: str) -> int | None:
    """K of `+<option>K` in a variant, if given."""
    for extra in variant.split("+")[1:]:
        if extra.startswith(option):
            return int(extra[len(option) :])
    return None


class ShortVersions(ControlPlane):
    """`meridian serve` whose resource versions are the first `chars` hex digits of the content hash
    (16 in Meridian): what shorter versions would save Envoy, which keeps one per resource."""

    def __init__(self, *args: Any, chars: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.chars = chars

    def argv(self) -> list[str]:
        python, m, module, *rest = super().argv()
        assert (m, module) == ("-m", "controlplane")
        code = ("import hashlib, sys; import controlplane.xds.cache as c; "
                f"c.content_version = lambda data: hashlib.sha256(data).hexdigest()[:{self.chars}]; "
                "from controlplane.cli import main; sys.exit(main())")  # fmt: skip
        return [python, "-c", code, *rest]


def own_control_plane(root: Path, variant: str, old_source: Path | None = None) -> ControlPlane | None:
    """A control plane of the variant's own (same directory) for `+partitions<K>`, `+chunk<K>`, `+version<L>`,
    `+old` (the checkout given with --old-source)."""
    k, chunk, chars = option_of(variant, "partitions"), option_of(variant, "chunk"), option_of(variant, "version")
    old = "old" in variant.split("+")[1:]
    if k is None and chunk is None and chars is None and not old:
        return None
    extra = ["--route-partitions", str(k)] if k else []
    log = root / f"meridian-{variant}.log"
    if old:
        assert old_source is not None, "+old needs --old-source"
        cp = ControlPlane(root / "c1", log, extra, source=old_source)
    else:
        cp = ShortVersions(root / "c1", log, extra, chars=chars) if chars else ControlPlane(root / "c1", log, extra)
    before = os.environ.get("MERIDIAN_XDS_DELTA_CHUNK")
    if chunk is not None:  # read by controlplane.xds.chunking; otherwise the control plane's default
        os.environ["MERIDIAN_XDS_DELTA_CHUNK"] = str(chunk)
    else:
        os.environ.pop("MERIDIAN_XDS_DELTA_CHUNK", None)
    try:
        return cp.start()
    finally:
        if before is None:
            os.environ.pop("MERIDIAN_XDS_DELTA_CHUNK", None)
        else:
            os.environ["MERIDIAN_XDS_DELTA_CHUNK"] = before


def measure(cp: ControlPlane, root: Path, variant: str, rnd: int, n: int, args: argparse.Namespace,
            next_index: int) -> Sample:  # fmt: skip
    sample = Sample(variant, rnd)
    workdir = root / f"envoy-{variant}-{rnd}"
    envoy = EnvoyProcess(bootstrap_for(cp, variant, args.mode == "delta", f"mem-{rnd}-{variant}"), workdir=workdir,
                         log_level="warning", ready_timeout=300, concurrency=args.concurrency)  # fmt: skip
    probe = HostProbe(cp.http_port)
    t0 = time.monotonic()
    cp_cpu0 = cpu_seconds(cp.proc.pid) if cp.proc is not None else 0.0
    envoy.start()
    try:
        for i in [n - 1, *range(0, n, max(1, n // 7))]:
            probe.wait_status(host_of(i), 200, timeout=600)
        sample.cold_s = round(time.monotonic() - t0, 2)
        wait_settled(cp)
        assert envoy.pid is not None
        sample.cold_cpu_s = round(cpu_seconds(envoy.pid), 2)  # Envoy's CPU from start to settled
        if cp.proc is not None:  # the control plane's, serving it meanwhile
            sample.cp_cold_cpu_s = round(cpu_seconds(cp.proc.pid) - cp_cpu0, 2)
        sample.peak_cold_mib = round(proc_status(envoy.pid)["VmHWM"] / 1024, 1)
        time.sleep(args.settle)  # what a variant gives back to the OS over time counts too
        sample.rss_mib = round(proc_status(envoy.pid)["VmRSS"] / 1024, 1)
        memory = json.loads(envoy.admin_get("/memory"))
        sample.allocated_mib = round(int(memory["allocated"]) / 2**20, 1)
        sample.memory = {k: round(int(v) / 2**20, 1) for k, v in memory.items() if str(v).isdigit()}
        # tcmalloc's own account (what the free pages are and why they stay): the summary lines.
        sample.clusters = cluster_count(envoy)
        tcmalloc = envoy.admin_get("/memory/tcmalloc", timeout=30).splitlines()
        summary = ("HugePageFiller: Overall", "pages free in", "Since startup", "hugepages cached")
        sample.tcmalloc = [line for line in tcmalloc if line.startswith("MALLOC:") and "MiB" in line]
        sample.tcmalloc += list(dict.fromkeys(line for line in tcmalloc if any(k in line for k in summary)))[:8]
        if args.used:
            cp_cpu1 = cpu_seconds(cp.proc.pid) if cp.proc is not None else 0.0
            used_requests(envoy, probe, sample, n, args)
            if cp.proc is not None:  # the control plane's CPU over the --used requests (fetches, for +ondemand)
                sample.cp_used_cpu_ms = round((cpu_seconds(cp.proc.pid) - cp_cpu1) * 1000 / args.used, 2)
        directory = root / "c1"
        cpu0 = cpu_seconds(envoy.pid)
        for t in range(args.trials):
            sample.updates.append(new_route_trial(directory, probe, next_index + t, args.backend_port))
            wait_settled(cp)
        # Envoy's own CPU per update (apply + the first request): steadier than wall time under load.
        sample.cpu_ms_per_update = round((cpu_seconds(envoy.pid) - cpu0) * 1000 / max(1, args.trials), 1)
        sample.rss_after_mib = round(proc_status(envoy.pid)["VmRSS"] / 1024, 1)
        sample.peak_mib = round(proc_status(envoy.pid)["VmHWM"] / 1024, 1)
        sample.stats = sum(1 for line in envoy.admin_get("/stats", timeout=120).splitlines() if ": " in line)
    finally:
        probe.close()
        envoy.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return sample


def cluster_count(envoy: EnvoyProcess) -> int:
    """Clusters Envoy holds (Meridian's xDS cluster left out), from admin /clusters."""
    text = envoy.admin_get("/clusters", timeout=120)
    return len({line.split("::", 1)[0] for line in text.splitlines() if "::" in line} - {"meridian_xds"})


def used_requests(envoy: EnvoyProcess, probe: HostProbe, sample: Sample, n: int, args: argparse.Namespace) -> None:
    """One request to each of --used hosts spread over the N (their first, timed), then a second each;
    memory once settled."""
    step = max(1, n // args.used)
    hosts = [host_of(i) for i in range(0, n, step)][: args.used]
    for into in (sample.first_requests, sample.second_requests):
        for host in hosts:
            t = time.monotonic()
            status = probe.status(host)
            into.append(time.monotonic() - t)
            assert status == 200, f"{host}: {status}"
    time.sleep(args.settle)
    assert envoy.pid is not None
    sample.used_rss_mib = round(proc_status(envoy.pid)["VmRSS"] / 1024, 1)
    sample.used_allocated_mib = round(int(json.loads(envoy.admin_get("/memory"))["allocated"]) / 2**20, 1)
    sample.used_clusters = cluster_count(envoy)


def markdown(samples: list[Sample]) -> str:
    lines = [
        "| variant | round | Envoy cold s | cold CPU s | RSS MiB | tcmalloc allocated MiB | pageheap_free MiB"
        " | RSS after trials MiB | peak RSS MiB | stats | update p50 ms | p99 | Envoy CPU ms/update |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in samples:
        u = summary_ms(s.updates) if s.updates else {"p50": 0.0, "p99": 0.0}
        lines.append(
            f"| {s.variant} | {s.round} | {s.cold_s:.1f} | {s.cold_cpu_s:.1f} | {s.rss_mib:.0f} | "
            f"{s.allocated_mib:.0f} | "
            f"{s.memory.get('pageheap_free', 0):.0f} | {s.rss_after_mib:.0f} | {s.peak_mib:.0f} | {s.stats:,} | "
            f"{u['p50']:.1f} | {u['p99']:.1f} | {s.cpu_ms_per_update:.1f} |"
        )
    if any(s.first_requests for s in samples):
        lines += ["", "| variant | round | clusters at start | RSS MiB | allocated MiB | used hosts | clusters after"
                  " | RSS after MiB | allocated after MiB | first request p50 / p99 ms | second p50 / p99 ms"
                  " | control plane CPU ms per used host |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in samples:
            f, sec = summary_ms(s.first_requests), summary_ms(s.second_requests)
            lines.append(
                f"| {s.variant} | {s.round} | {s.clusters:,} | {s.rss_mib:.0f} | {s.allocated_mib:.0f} | "
                f"{len(s.first_requests):,} | {s.used_clusters:,} | {s.used_rss_mib:.0f} | "
                f"{s.used_allocated_mib:.0f} | "
                f"{f['p50']:.1f} / {f['p99']:.1f} | {sec['p50']:.1f} / {sec['p99']:.1f} | {s.cp_used_cpu_ms:.2f} |"
            )
    variants = list(dict.fromkeys(s.variant for s in samples))
    lines += ["", "| variant | RSS MiB (rounds) | update p50 ms | p99 | trials | Envoy CPU ms/update (rounds) |"]
    lines += ["|---|---|---|---|---|---|"]
    for v in variants:
        mine = [s for s in samples if s.variant == v]
        updates = [u for s in mine for u in s.updates]
        u = summary_ms(updates) if updates else {"p50": 0.0, "p99": 0.0}
        rss = ", ".join(f"{s.rss_mib:.0f}" for s in mine)
        cpu = ", ".join(f"{s.cpu_ms_per_update:.1f}" for s in mine)
        lines.append(f"| {v} | {rss} | {u['p50']:.1f} | {u['p99']:.1f} | {len(updates)} | {cpu} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Envoy RSS and update time per --envoy-stats variant")
    p.add_argument("--n", type=int, default=10000, help="Ingresses, each with its own Service (= clusters)")
    p.add_argument("--variants", default="full,gateway", help="comma-separated, e.g. full,gateway,gateway+nostats")
    p.add_argument("--rounds", type=int, default=2, help="each round runs every variant once, in turn")
    p.add_argument("--trials", type=int, default=20, help="new Ingress+Service updates per Envoy")
    p.add_argument("--mode", choices=["delta", "sotw"], default="delta")
    p.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (production: one per core)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds between settled and reading RSS")
    p.add_argument("--used", type=int, default=0, help="hosts requested once each after start (see the docstring)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--old-source", type=Path, help="a checkout whose control plane `+old` variants run (A/B runs)")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    root = Path(tempfile.mkdtemp(prefix=f"envoy-memory-{args.n}-"))
    fleet = EchoFleet()
    backend = fleet.add("shared", "shared-0")
    args.backend_port = backend.port
    samples: list[Sample] = []
    cp = None
    try:
        write_initial(root / "c1", args.n, backend.port, style="bulk")
        cp = ControlPlane(root / "c1", root / "meridian.log").start()
        wait_for(cp.ready, timeout=600, interval=0.05, what="/readyz")
        next_index = args.n
        for rnd in range(1, args.rounds + 1):
            for variant in variants:
                # Another partition count or chunk size needs its own control plane (same directory);
                # it runs only while its Envoy is measured, so it does not load the others' updates.
                own = own_control_plane(root, variant, args.old_source)
                try:
                    if own is not None:
                        wait_for(own.ready, timeout=600, interval=0.05, what="/readyz")
                    samples.append(measure(own or cp, root, variant, rnd, args.n, args, next_index))
                finally:
                    if own is not None:
                        nacks = own.metric("meridian_xds_nacks_total")
                        own.stop()
                        if nacks:
                            raise RuntimeError(f"Envoy NACKed {nacks} responses; see {root}")
                next_index += args.trials
                last = samples[-1]
                print(json.dumps(last.__dict__ | {"updates": summary_ms(last.updates),
                                                  "first_requests": summary_ms(last.first_requests or [0.0]),
                                                  "second_requests": summary_ms(last.second_requests or [0.0])}),
                      flush=True)  # fmt: skip
        nacks = cp.metric("meridian_xds_nacks_total")
        if nacks:
            raise RuntimeError(f"Envoy NACKed {nacks} responses; see {root}")
    finally:
        if cp is not None:
            cp.stop()
        fleet.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    facts = machine_facts() | {"load_avg": os.getloadavg(), "n": args.n, "mode": args.mode,
                               "concurrency": args.concurrency}  # fmt: skip
    print(json.dumps(facts))
    print(markdown(samples))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "samples": [s.__dict__ for s in samples]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
