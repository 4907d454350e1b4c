"""Where a route update's time goes, SotW against Delta, at N Ingresses (one real Envoy).

Two kinds of change, each timed from the file's rename to the first 200 through Envoy:
  route    a new Ingress for a new host, to an existing Service (only a route table changes);
  service  a new Ingress with its own new Service + EndpointSlice (clusters, endpoints, routes).
Each trial is then taken apart after the fact, from the control plane's admin API (its
`*_monotonic` fields share the benchmark's clock on one host), so nothing polls it while the
clock runs:
  write -> seen     the file watcher noticed the change;
  seen -> built     the controller built it into the snapshot cache (RDS's version);
  built -> sent     the xDS server wrote the RouteConfiguration to this Envoy's stream;
  sent -> ACK       Envoy applied it and said so;
  sent -> 200       Envoy applied it and the first request for the new host was answered.
`--probe-intervals 0,1` alternates, trial by trial, a probe polling back to back (which keeps a core
busy while the change is applied) with one pausing 1 ms between requests.
`--compare-with DIR` runs a second control plane checkout (e.g. `git archive` of another commit)
interleaved with this one, for before/after in one run. `--also LABEL="ARGS"` adds this checkout
again with more `meridian serve` arguments, e.g. `--also plaintext=--xds-insecure` (no TLS relay:
Envoy dials the gRPC port in plaintext) or `--also p2048="--route-partitions 2048"`.

    .venv/bin/python -m bench.route_breakdown --n 10000 --trials 20 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    ControlPlane,
    HostProbe,
    dump,
    host_of,
    machine_facts,
    objects_for,
    start_envoy,
    summary_ms,
    wait_for,
    write_initial,
)
from bench.route_ready import wait_settled
from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.devtools.echo import EchoFleet
from controlplane.devtools.envoy_proc import EnvoyProcess

PARTS = ("to_seen", "seen_to_built", "built_to_sent", "sent_to_ack", "sent_to_200")
# A new Service's built -> sent, taken apart: the new cluster written; its endpoints written (after
# Envoy applied the cluster and subscribed to them); the route written.
SERVICE_PARTS = ("built_to_cds", "cds_to_eds", "eds_to_rds")


CPU_COLUMNS = (
    "meridian_main",
    "meridian_other",
    "envoy_main",
    "envoy_workers",
    "envoy_other",
    "bench_main",
    "bench_other",
)


def change_objects(kind: str, i: int, backend_port: int) -> list[dict[str, Any]]:
    objs = objects_for(i, backend_port)
    if kind == "service":
        return objs
    (ing,) = [o for o in objs if o["kind"] == "Ingress"]
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "svc-0"  # exists since the start
    return [ing]


def thread_times(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread kind of a process: (ns on a CPU, ns runnable but waiting for one), from the
    scheduler's own accounting (/proc/PID/task/TID/schedstat), so a slow trial tells work from load.
    Kinds: "main" (the event loop, Envoy's main thread), "workers" (Envoy's wrk:*), "other"."""
    out: dict[str, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, wait = (int(x) for x in (task / "schedstat").read_text().split()[:2])
            kind = "main" if task.name == str(pid) else "other"
            if kind == "other" and (task / "comm").read_text().startswith("wrk:"):
                kind = "workers"
        except (OSError, ValueError):
            continue  # a thread that just ended
        was = out.get(kind, (0, 0))
        out[kind] = (was[0] + run, was[1] + wait)
    return out


def tid_times(pid: int) -> dict[str, int]:
    """Thread id -> ns it has run."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            out[task.name] = int((task / "schedstat").read_text().split()[0])
    return out


def cpu_legs(
    before: dict[str, dict[str, tuple[int, int]]], after: dict[str, dict[str, tuple[int, int]]]
) -> dict[str, float]:
    """Seconds of CPU (`*_cpu`) and of waiting for a CPU (`*_wait`) per process and thread kind."""
    out = {}
    for proc, kinds in after.items():
        for kind, (run, wait) in kinds.items():
            run0, wait0 = before.get(proc, {}).get(kind, (0, 0))
            out[f"{proc}_{kind}_cpu"] = (run - run0) / 1e9
            out[f"{proc}_{kind}_wait"] = (wait - wait0) / 1e9
    return out


def trial(cp: ControlPlane, probe: HostProbe, directory: Path, kind: str, i: int, port: int,
          pids: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    path = directory / f"change-{i}.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump(change_objects(kind, i, port)))
    before = {name: thread_times(pid) for name, pid in pids.items()}
    before_threads = tid_times(pids["meridian"])
    t0 = time.monotonic()
    os.replace(tmp, path)
    t200 = probe.wait_status(host_of(i), 200, timeout=60)
    out: dict[str, Any] = {"total": t200 - t0}
    out["cpu"] = cpu_legs(before, {name: thread_times(pid) for name, pid in pids.items()})
    # Which of Meridian's threads ran (by thread id, over 0.5 ms of CPU): to match with a trace.
    after_threads = tid_times(pids["meridian"])
    out["meridian_threads"] = {tid: (run - before_threads.get(tid, 0)) / 1e9 for tid, run in after_threads.items()
                               if run - before_threads.get(tid, 0) > 500_000}  # fmt: skip
    wait_settled(cp)
    rds = cp.admin_json("/debug/snapshot")["types"]["RDS"]
    (stream,) = cp.admin_json("/debug/syncz")
    st = stream["types"]["RDS"]
    if "built_monotonic" in rds and "sent_monotonic" in st:  # a checkout without them: totals only
        seen, built = rds["seen_monotonic"], rds["built_monotonic"]
        sent, acked = st["sent_monotonic"], st["acked_monotonic"]
        out |= {"to_seen": seen - t0, "seen_to_built": built - seen, "built_to_sent": sent - built,
                "sent_to_ack": acked - sent, "sent_to_200": t200 - sent}  # fmt: skip
        # Every stamp, relative to the write: one trial's timeline, to line up with traces.
        out["at"] = {
            "wall": time.time() - time.monotonic() + t0,
            "write": t0,
            "seen": seen,
            "built": built,
            "rds_sent": sent,
            "rds_acked": acked,
            "ok": t200,
        }
        if kind == "service":
            cds_st, eds_st = stream["types"]["CDS"], stream["types"]["EDS"]
            cds, eds = cds_st["sent_monotonic"], eds_st["sent_monotonic"]
            out |= {"built_to_cds": cds - built, "cds_to_eds": eds - cds, "eds_to_rds": sent - eds}
            out["at"] |= {"cds_sent": cds, "cds_acked": cds_st["acked_monotonic"], "eds_sent": eds,
                          "eds_acked": eds_st["acked_monotonic"]}  # fmt: skip
    return out


def plaintext_envoy(cp: ControlPlane, workdir: Path, *, delta: bool, extra: list[str]) -> EnvoyProcess:
    """For a control plane run with --xds-insecure: Envoy dials the gRPC port directly."""
    boot = render_bootstrap(xds_address=f"127.0.0.1:{cp.xds_port}", node_id="bench-gw", delta=delta)
    envoy = EnvoyProcess(boot, workdir=workdir, log_level="warning", ready_timeout=120, extra_args=extra)
    envoy.start()
    return envoy


def tls_envoy(cp: ControlPlane, workdir: Path, *, delta: bool, extra: list[str]) -> EnvoyProcess:
    """As `start_envoy`, with more Envoy arguments (`--envoy-log`)."""
    if not extra:
        return start_envoy(cp, workdir, delta=delta)
    group = "meridian-gateway"
    boot = render_bootstrap(xds_address=f"127.0.0.1:{cp.xds_port}", node_id="bench-gw", node_cluster=group,
                            delta=delta, tls=local_client_tls(cp.state_dir, group))  # fmt: skip
    envoy = EnvoyProcess(boot, workdir=workdir, log_level="warning", ready_timeout=120, extra_args=extra)
    envoy.start()
    return envoy


def envoy_log_args(components: str) -> list[str]:
    """Debug logs of some components, stamped to the microsecond (a diagnostic run: keep it with --keep)."""
    if not components:
        return []
    levels = ",".join(f"{c}:debug" for c in components.split(","))
    return ["--component-log-level", levels, "--log-format", "[%Y-%m-%d %T.%f][%t][%n][%l] %v"]


def run(
    source: Path, label: str, mode: str, args: argparse.Namespace, backend_port: int, serve_args: list[str]
) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix=f"route-breakdown-{label}-{mode}-"))
    directory = root / "c1"
    write_initial(directory, args.n, backend_port, style="bulk")
    cp = ControlPlane(directory, root / "meridian.log", serve_args, source=source).start()
    envoy = probe = None
    rows = []
    try:
        dial = plaintext_envoy if "--xds-insecure" in serve_args else tls_envoy
        envoy = dial(cp, root / "envoy", delta=mode == "delta", extra=envoy_log_args(args.envoy_log))
        wait_for(cp.ready, timeout=600, interval=0.05, what="/readyz")
        probe = HostProbe(cp.http_port)
        probe.wait_status(host_of(args.n - 1), 200, timeout=600)
        wait_settled(cp)
        index = args.n
        assert cp.proc is not None and envoy.proc is not None
        pids = {"meridian": cp.proc.pid, "envoy": envoy.proc.pid, "bench": os.getpid()}
        intervals = [float(x) for x in args.probe_intervals.split(",")]
        for kind in args.changes.split(","):
            per_interval: dict[float, list[dict[str, float]]] = {x: [] for x in intervals}
            for t in range(args.trials * len(intervals)):
                time.sleep(args.gap)  # isolated changes: the file watcher holds a burst's later writes (20 ms quiet)
                interval = intervals[t % len(intervals)]  # alternating, so load hits each alike
                probe.interval = interval / 1000
                per_interval[interval].append(trial(cp, probe, directory, kind, index, backend_port, pids))
                index += 1
            for interval, samples in per_interval.items():
                source = label if len(intervals) == 1 else f"{label}, probe every {interval:g} ms"
                rows.append({"source": source, "mode": mode, "change": kind, "samples": samples})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "samples"}
                                 | {"total_ms": summary_ms([s["total"] for s in samples])}), flush=True)  # fmt: skip
            probe.interval = 0.0
        if cp.metric("meridian_xds_nacks_total"):
            raise RuntimeError(f"Envoy NACKed; see {root}")
    finally:
        if probe is not None:
            probe.close()
        if envoy is not None:
            envoy.stop()
        cp.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| control plane | xDS | change | trials | total p50 / p99 ms | write->seen | seen->built | built->sent |"
        " sent->ACK | sent->200 | built->CDS | CDS->EDS | EDS->RDS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["mode"], r["change"]), []).extend(r["samples"])
    for (source, mode, change), samples in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        total = summary_ms([s["total"] for s in samples])
        cells = []
        for part in PARTS + SERVICE_PARTS:
            values = [s[part] for s in samples if part in s]
            cells.append(f"{summary_ms(values)['p50']:.1f}" if values else "-")
        lines.append(f"| {source} | {mode} | {change} | {len(samples)} | {total['p50']:.1f} / {total['p99']:.1f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def tail_markdown(rows: list[dict[str, Any]], share: float = 0.1) -> str:
    """Per leg, the mean of the slowest `share` of each row's trials against the middle fifth's:
    which leg a slow trial lost its time in."""
    lines = [
        "| control plane | xDS | change | trials | total ms | write->seen | seen->built | built->sent |"
        " sent->ACK | sent->200 | built->CDS | CDS->EDS | EDS->RDS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["mode"], r["change"]), []).extend(r["samples"])
    for (source, mode, change), samples in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        ranked = sorted(samples, key=lambda s: s["total"])
        n = len(ranked)
        slow = ranked[n - max(1, round(n * share)) :]
        middle = ranked[int(n * 0.4) : max(int(n * 0.4) + 1, int(n * 0.6))]
        for what, band in ((f"middle {len(middle)}", middle), (f"slowest {len(slow)}", slow)):
            cells = [f"{1000 * sum(s['total'] for s in band) / len(band):.1f}"]
            for part in PARTS + SERVICE_PARTS:
                values = [s[part] for s in band if part in s]
                cells.append(f"{1000 * sum(values) / len(values):.1f}" if values else "-")
            lines.append(f"| {source} | {mode} | {change} | {what} | " + " | ".join(cells) + " |")
    lines += ["", "CPU ms / ms waiting for a CPU during the trial (write -> 200), mean per trial:", "",
              "| control plane | xDS | change | trials | " + " | ".join(CPU_COLUMNS) + " |",
              "|---|---|---|---|" + "---|" * len(CPU_COLUMNS)]  # fmt: skip
    for (source, mode, change), samples in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        ranked = sorted(samples, key=lambda s: s["total"])
        n = len(ranked)
        bands = (("middle", ranked[int(n * 0.4) : max(int(n * 0.4) + 1, int(n * 0.6))]),
                 ("slowest", ranked[n - max(1, round(n * share)) :]))  # fmt: skip
        for what, band in bands:
            cells = []
            for col in CPU_COLUMNS:
                cpu = [s["cpu"].get(f"{col}_cpu", 0.0) for s in band if "cpu" in s]
                wait = [s["cpu"].get(f"{col}_wait", 0.0) for s in band if "cpu" in s]
                cells.append(f"{1000 * sum(cpu) / len(cpu):.1f} / {1000 * sum(wait) / len(wait):.1f}" if cpu else "-")
            lines.append(f"| {source} | {mode} | {change} | {what} {len(band)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Route update breakdown, SotW vs Delta, optionally before/after")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--modes", default="sotw,delta")
    p.add_argument("--changes", default="route,service")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--gap", type=float, default=0.05, help="seconds between one trial's end and the next write")
    p.add_argument("--rounds", type=int, default=1, help="each round runs every control plane and mode once")
    p.add_argument("--compare-with", metavar="DIR", type=Path, help="another checkout, run interleaved as 'before'")
    p.add_argument("--also", metavar='LABEL="ARGS"', action="append", default=[],
                   help="this checkout again with more serve arguments, run interleaved")  # fmt: skip
    p.add_argument("--probe-intervals", default="0", metavar="MS,...",
                   help="ms between the probe's requests while it waits for the 200 (0: back to back); "
                        "several alternate trial by trial, e.g. 0,1: what the busy probe costs")  # fmt: skip
    p.add_argument("--envoy-log", default="", metavar="COMPONENT,...",
                   help="Envoy debug logs of these components (upstream,config,...); see --keep")  # fmt: skip
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    sources: list[tuple[str, Path, list[str]]] = [("this", REPO, [])]
    for also in args.also:
        label, _, extra = also.partition("=")
        sources.append((label, REPO, shlex.split(extra)))
    if args.compare_with:
        sources.append(("before", args.compare_with.resolve(), []))
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()]
    with EchoFleet() as fleet:
        backend = fleet.add("shared", "shared-0")
        for _ in range(args.rounds):
            for mode in args.modes.split(","):
                for label, source, serve_args in sources:
                    rows += run(source, label, mode, args, backend.port, serve_args)
                    load.append(os.getloadavg())
    facts = machine_facts() | {"load_avg_during": [round(x[0], 2) for x in load], "n": args.n}
    print(json.dumps(facts))
    print(markdown(rows))
    print("\nMean ms per leg, the middle trials against the slowest tenth:")
    print(tail_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
