"""Route readiness at scale: N Ingresses served to one real Envoy by `meridian serve` (file mode).

Each Ingress has its own host and Service (with an EndpointSlice pointing at one shared echo backend).
For every size and xDS flavour (SotW, Delta) it measures
  (a) cold start: control plane start -> /readyz, and -> a sample of hosts (incl. the last) answer 200
      through Envoy;
  (b) new route ready: atomically writing one new Ingress+Service file (temp + os.replace) -> first 200
      through Envoy for its host, polled back to back over a keep-alive connection, p50/p90/p99/max;
      then a second set of trials with a breakdown (file write -> snapshot built -> Envoy ACKed RDS
      -> 200), taken apart from the headline trials because polling the admin API costs the control
      plane CPU;
  (c) the control plane's peak RSS (VmHWM).

    .venv/bin/python -m bench.route_ready --sizes 100,1000,10000 --trials 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ControlPlane,
    HostProbe,
    atomic_write,
    dump,
    host_of,
    machine_facts,
    objects_for,
    start_envoy,
    summary_ms,
    wait_for,
    write_initial,
)
from controlplane.devtools.echo import EchoFleet


@dataclass
class Run:
    n: int
    mode: str  # sotw | delta
    style: str  # bulk | per-file
    partitions: str = "auto"  # serve --route-partitions
    cold: dict[str, float] = field(default_factory=dict)
    ready: list[float] = field(default_factory=list)
    breakdown: list[dict[str, float]] = field(default_factory=list)
    rss_mib: float = 0.0
    envoy_rss_mib: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n, "mode": self.mode, "style": self.style, "partitions": self.partitions, "cold_s": self.cold
        }
        if self.ready:
            out["new_route_ms"] = summary_ms(self.ready)
            out["trials"] = len(self.ready)
        if self.breakdown:
            out["breakdown_ms"] = {
                k: summary_ms([b[k] for b in self.breakdown]) for k in ("to_snapshot", "to_ack", "after_ack", "total")
            }
        out["cp_peak_rss_mib"] = self.rss_mib
        out["envoy_rss_mib"] = self.envoy_rss_mib
        return out


def rds_acked(cp: ControlPlane) -> int:
    """Highest cache version (generation) whose RouteConfigurations the (single) Envoy has ACKed.

    Envoy ACKs content digests; `current_version` is the generation they correspond to.
    """
    streams = cp.admin_json("/debug/syncz")
    best = 0
    for s in streams:
        rds = s.get("types", {}).get("RDS")
        if rds:
            best = max(best, int(rds.get("current_version") or 0))
    return best


def settled(cp: ControlPlane) -> bool:
    """Every requested type of every stream has no response in flight and no NACK."""
    streams = cp.admin_json("/debug/syncz")
    if not streams:
        return False
    for s in streams:
        for st in s.get("types", {}).values():
            if st.get("pending") or st.get("last_nack"):
                return False
    return True


def wait_settled(cp: ControlPlane, timeout: float = 120) -> None:
    wait_for(lambda: settled(cp) and settled(cp), timeout, interval=0.005, what="xDS settled")


def cold_start(
    root: Path, n: int, mode: str, style: str, backend_port: int, partitions: str = "auto"
) -> tuple[ControlPlane, Any, HostProbe, dict[str, float]]:
    directory = root / "c1"
    write_initial(directory, n, backend_port, style=style)
    cp = ControlPlane(directory, root / "meridian.log", ["--route-partitions", partitions]).start()
    envoy = start_envoy(cp, root / "envoy", delta=mode == "delta")
    t0 = cp.started_at
    out: dict[str, float] = {}
    wait_for(cp.ready, timeout=600, interval=0.01, what="/readyz")
    out["readyz"] = round(time.monotonic() - t0, 3)
    probe = HostProbe(cp.http_port)
    sample = sorted({0, n // 2, n - 1, *range(1, n, max(1, n // 7))})
    for i in [n - 1, *sample]:  # the last one first: it is the one most likely to lag
        probe.wait_status(host_of(i), 200, timeout=600)
    out["all_served"] = round(time.monotonic() - t0, 3)
    wait_settled(cp)
    return cp, envoy, probe, out


def new_route_trial(directory: Path, probe: HostProbe, i: int, backend_port: int) -> float:
    text = dump(objects_for(i, backend_port))
    path = directory / f"app-{i}.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)  # written before the clock starts: only the rename publishes it
    t0 = time.monotonic()
    import os

    os.replace(tmp, path)
    return probe.wait_status(host_of(i), 200, timeout=60) - t0


def breakdown_trial(cp: ControlPlane, directory: Path, probe: HostProbe, i: int, backend_port: int) -> dict[str, float]:
    """Like new_route_trial, with a watcher thread timing snapshot and RDS ACK from the admin API."""
    base_version = int(cp.metric("meridian_snapshot_version"))
    marks: dict[str, float] = {}
    stop = threading.Event()
    started = threading.Event()

    def watch() -> None:
        started.set()
        while not stop.is_set() and "snapshot" not in marks:
            v = int(cp.metric("meridian_snapshot_version"))
            if v > base_version:
                marks["snapshot"] = time.monotonic()
                marks["version"] = v
        while not stop.is_set() and "ack" not in marks:
            if rds_acked(cp) >= marks.get("version", 1 << 62):
                marks["ack"] = time.monotonic()

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    started.wait()
    text = dump(objects_for(i, backend_port))
    path = directory / f"app-{i}.yaml"
    t0 = time.monotonic()
    atomic_write(path, text)
    t200 = probe.wait_status(host_of(i), 200, timeout=60)
    th.join(30)
    stop.set()
    snap, ack = marks.get("snapshot", t200), marks.get("ack", t200)
    return {
        "to_snapshot": snap - t0,
        "to_ack": ack - t0,
        "after_ack": max(0.0, t200 - ack),
        "total": t200 - t0,
    }


def run_one(
    n: int, mode: str, style: str, trials: int, breakdown: int, backend_port: int, keep: bool, partitions: str = "auto"
) -> Run:
    root = Path(tempfile.mkdtemp(prefix=f"route-ready-{n}-{mode}-"))
    run = Run(n, mode, style, partitions)
    cp = envoy = probe = None
    try:
        cp, envoy, probe, run.cold = cold_start(root, n, mode, style, backend_port, partitions)
        directory = root / "c1"
        for t in range(trials):
            run.ready.append(new_route_trial(directory, probe, n + t, backend_port))
            wait_settled(cp)
        for t in range(breakdown):
            run.breakdown.append(breakdown_trial(cp, directory, probe, n + trials + t, backend_port))
            wait_settled(cp)
        run.rss_mib = round(cp.peak_rss_kib() / 1024, 1)
        from bench.common import proc_status

        if envoy.pid:
            run.envoy_rss_mib = round(proc_status(envoy.pid)["VmRSS"] / 1024, 1)
        nacks = cp.metric("meridian_xds_nacks_total")
        if nacks:
            raise RuntimeError(f"Envoy NACKed {nacks} responses; see {root}")
    finally:
        if probe is not None:
            probe.close()
        if envoy is not None:
            envoy.stop()
        if cp is not None:
            cp.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return run


def markdown(runs: list[Run]) -> str:
    lines = [
        "| N | xDS | route partitions | initial files | /readyz s | all served s | new route p50 ms | p90 | p99 | max |"
        " CP peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = summary_ms(r.ready) if r.ready else {}
        cells = [f"{s[k]:.1f}" if s else "-" for k in ("p50", "p90", "p99", "max")]
        lines.append(
            f"| {r.n:,} | {r.mode} | {r.partitions} | {r.style} | "
            f"{r.cold.get('readyz', 0):.2f} | {r.cold.get('all_served', 0):.2f} | "
            + " | ".join(cells)
            + f" | {r.rss_mib:.0f} |"
        )
    if any(r.breakdown for r in runs):
        lines += [
            "",
            "| N | xDS | route partitions | write->snapshot p50/p99 | write->RDS ACK p50/p99 | ACK->200 p50/p99 |"
            " total p50/p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            if not r.breakdown:
                continue
            cells = []
            for k in ("to_snapshot", "to_ack", "after_ack", "total"):
                s = summary_ms([b[k] for b in r.breakdown])
                cells.append(f"{s['p50']:.1f} / {s['p99']:.1f}")
            lines.append(f"| {r.n:,} | {r.mode} | {r.partitions} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Route readiness at N Ingresses through a real Envoy")
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--breakdown-trials", type=int, default=10)
    p.add_argument("--modes", default="sotw,delta", help="xDS flavours: sotw, delta")
    p.add_argument(
        "--styles",
        default="bulk,per-file",
        help="initial manifest layout; trials run on the first, the others measure cold start only",
    )
    p.add_argument(
        "--partitions",
        default="auto",
        help="serve --route-partitions values to compare in one run, e.g. 1,auto",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    styles = args.styles.split(",")
    runs: list[Run] = []
    with EchoFleet() as fleet:
        backend = fleet.add("shared", "shared-0")
        for n in sizes:
            for mode in modes:
                for partitions in args.partitions.split(","):
                    for k, style in enumerate(styles):
                        trials, bd = (args.trials, args.breakdown_trials) if k == 0 else (0, 0)
                        run = run_one(n, mode, style, trials, bd, backend.port, args.keep, partitions)
                        print(json.dumps(run.as_dict()), flush=True)
                        runs.append(run)
    print()
    print(markdown(runs))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine_facts(), "argv": argv, "runs": [r.as_dict() for r in runs]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
