"""`make bench`: the benchmarks that fit in about 10 minutes on a 2-core machine, one after another.

Each step's JSON and output go to `bench/results/<UTC time>/`, with `summary.md`: the machine, and per
step its command, exit status, duration and the load average before and after (other jobs on the
machine slow every wall-clock number down). `--compare-with DIR` (another checkout, e.g. `git archive`
of an older commit) is passed to the steps that can run it interleaved, for before/after in one run;
that roughly doubles their time.

    .venv/bin/python -m bench.suite [--compare-with /tmp/before] [--only multicluster,fanout] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, machine_facts


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    args: tuple[str, ...]
    timeout_s: float  # a step past this is stopped and reported, so the suite stays bounded
    compares: bool = False  # accepts --compare-with
    writes_json: bool = True  # accepts --json PATH

    def argv(self, out: Path, compare_with: Path | None) -> list[str]:
        argv = [sys.executable, "-m", self.module, *self.args]
        if self.writes_json:
            argv += ["--json", str(out / f"{self.name}.json")]
        if compare_with is not None and self.compares:
            argv += ["--compare-with", str(compare_with)]
        return argv


# Sizes as in BENCHMARKS.md, trials cut so the whole set fits in 10 minutes on a 2-core machine.
STEPS: tuple[Step, ...] = (
    Step("controller_micro", "bench.controller_micro", ("--sizes", "10000", "--trials", "30"), 180,
         writes_json=False),
    Step("multicluster", "bench.multicluster",
         ("--services", "10000", "--endpoints", "100000", "--envoys", "1", "--trials", "20", "--rounds", "1"), 300,
         compares=True),
    Step("route_breakdown", "bench.route_breakdown",
         ("--n", "10000", "--modes", "delta,sotw", "--changes", "route,service", "--trials", "10"), 420, compares=True),
    Step("fanout", "bench.fanout",
         ("--services", "1000", "--clients", "100,300", "--modes", "delta", "--security", "tls", "--trials", "10"),
         300, compares=True),
    Step("route_ready", "bench.route_ready",
         ("--sizes", "10000", "--modes", "delta", "--trials", "10", "--breakdown-trials", "0", "--styles", "bulk"),
         300),
    Step("envoy_memory", "bench.envoy_memory",
         ("--n", "10000", "--variants", "full,gateway", "--rounds", "1", "--trials", "5"), 300),
)  # fmt: skip


def run(steps: list[Step], out: Path, compare_with: Path | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for step in steps:
        argv = step.argv(out, compare_with)
        load_before = round(os.getloadavg()[0], 2)
        started = time.monotonic()
        print(f"== {step.name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        with open(out / f"{step.name}.txt", "wb") as log:
            try:
                code: int | str = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                 timeout=step.timeout_s).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                code = f"stopped after {step.timeout_s:.0f} s"
        rows.append({"step": step.name, "command": " ".join(argv[1:]), "exit": code,
                     "seconds": round(time.monotonic() - started, 1), "load_before": load_before,
                     "load_after": round(os.getloadavg()[0], 2)})  # fmt: skip
        print(f"   {rows[-1]['exit']} in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    return rows


def summary(facts: dict[str, object], rows: list[dict[str, object]]) -> str:
    lines = ["# make bench", "", f"Machine: `{json.dumps(facts)}`", "",
             "| step | exit | seconds | load before -> after | output |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['step']} | {r['exit']} | {r['seconds']} | {r['load_before']} -> {r['load_after']} "
                     f"| {r['step']}.txt |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare-with", metavar="DIR", type=Path, help="another checkout, run interleaved as 'before'")
    p.add_argument("--only", help="comma-separated step names: " + ",".join(s.name for s in STEPS))
    p.add_argument("--out", type=Path, help="result directory (default bench/results/<UTC time>)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {s.name for s in STEPS}
    unknown = wanted - {s.name for s in STEPS}
    if unknown:
        p.error(f"unknown step(s): {', '.join(sorted(unknown))}")
    steps = [s for s in STEPS if s.name in wanted]
    out = args.out or REPO / "bench" / "results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    compare_with = args.compare_with.resolve() if args.compare_with else None
    if args.dry_run:
        for s in steps:
            print(" ".join(s.argv(out, compare_with)[1:]))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    rows = run(steps, out, compare_with)
    (out / "summary.md").write_text(summary(facts, rows))
    print(f"results in {out}", file=sys.stderr)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
