"""Rollback ready at scale: N Ingresses served to one real Envoy (Delta) by `meridian serve` (file mode).

Each trial publishes a good Ingress for a new host (200 through Envoy), then a bad change to it (a
typo'd Service: 503), then times
  rollback ready: POST /history/rollback to the good version -> first 200 through Envoy for that host,
  resume ready:   POST /history/resume -> the bad version is served again (503),
polled back to back over a keep-alive connection. The rollback replaces the served view with the
old version's resources, so Envoy is sent only what differs from what it has.

    .venv/bin/python -m bench.rollback_ready --sizes 10000 --trials 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ControlPlane, HostProbe, atomic_write, dump, host_of, machine_facts, objects_for, summary_ms
from bench.route_ready import cold_start, wait_settled
from controlplane.devtools.echo import EchoFleet


def _post(cp: ControlPlane, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cp.admin_port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _latest(cp: ControlPlane) -> int:
    return int(cp.admin_json("/debug/history?limit=1")["latest"])


def _wait_recorded(cp: ControlPlane, after: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (v := _latest(cp)) <= after:
        if time.monotonic() > deadline:
            raise TimeoutError("change not recorded")
        time.sleep(0.005)
    return v


def trial(cp: ControlPlane, directory: Path, probe: HostProbe, token: str, i: int, port: int) -> tuple[float, float]:
    good_objs = objects_for(i, port)
    path = directory / f"app-{i}.yaml"
    before = _latest(cp)
    atomic_write(path, dump(good_objs))
    probe.wait_status(host_of(i), 200, timeout=60)
    good = _wait_recorded(cp, before)
    wait_settled(cp)
    bad_objs = [dict(o) for o in good_objs]
    ing = json.loads(json.dumps(bad_objs[2]))
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = f"svc-{i}-typo"
    bad_objs[2] = ing
    atomic_write(path, dump(bad_objs))
    probe.wait_status(host_of(i), 503, timeout=60)
    _wait_recorded(cp, good)
    wait_settled(cp)

    t0 = time.monotonic()
    _post(cp, token, "/history/rollback", {"version": good, "reason": "bench"})
    rollback = probe.wait_status(host_of(i), 200, timeout=60) - t0
    wait_settled(cp)
    t1 = time.monotonic()
    _post(cp, token, "/history/resume", {})
    resume = probe.wait_status(host_of(i), 503, timeout=60) - t1
    wait_settled(cp)
    atomic_write(path, dump(good_objs))  # leave it fixed
    probe.wait_status(host_of(i), 200, timeout=60)
    wait_settled(cp)
    return rollback, resume


def run_one(n: int, trials: int, port: int, keep: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"rollback-ready-{n}-"))
    cp = envoy = probe = None
    try:
        cp, envoy, probe, cold = cold_start(root, n, "delta", "bulk", port)
        token = (cp.state_dir / "admin-token").read_text().strip()
        rollbacks, resumes = [], []
        for t in range(trials):
            rb, rs = trial(cp, root / "c1", probe, token, n + t, port)
            rollbacks.append(rb)
            resumes.append(rs)
        nacks = cp.metric("meridian_xds_nacks_total")
        if nacks:
            raise RuntimeError(f"Envoy NACKed {nacks} responses; see {root}")
        return {
            "n": n, "mode": "delta", "trials": trials, "cold_s": cold,
            "rollback_ready_ms": summary_ms(rollbacks), "resume_ready_ms": summary_ms(resumes),
            "cp_peak_rss_mib": round(cp.peak_rss_kib() / 1024, 1),
        }  # fmt: skip
    finally:
        if probe is not None:
            probe.close()
        if envoy is not None:
            envoy.stop()
        if cp is not None:
            cp.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Rollback ready at N Ingresses through a real Envoy")
    p.add_argument("--sizes", default="10000")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    runs = []
    with EchoFleet() as fleet:
        backend = fleet.add("shared", "shared-0")
        for n in [int(s) for s in args.sizes.split(",")]:
            run = run_one(n, args.trials, backend.port, args.keep)
            print(json.dumps(run), flush=True)
            runs.append(run)
    print()
    print("| Ingresses | xDS | rollback ready p50 / p99 (ms) | resume ready p50 / p99 (ms) | trials |")
    print("|---|---|---|---|---|")
    for r in runs:
        rb, rs = r["rollback_ready_ms"], r["resume_ready_ms"]
        print(f"| {r['n']:,} | Delta | {rb['p50']} / {rb['p99']} | {rs['p50']} / {rs['p99']} | {r['trials']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_facts(), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
