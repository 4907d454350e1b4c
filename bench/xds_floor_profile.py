"""Where a server's CPU goes in `bench/xds_floor.py --profile DIR`'s py-spy stacks, by part.

Each collapsed stack (py-spy `--format raw`) is put in the first part whose marker it contains;
the lines that await gRPC's write and read are found in the two servers' sources, so a stack is
"gRPC write" when it is inside the `await context.write(...)` of Meridian's `_push` or of the
floor's stream loop (gRPC's Cython and core are stripped: their frames are addresses). Threads
waiting on a lock (idle workers) and the bench's own admin polls (outside its CPU window) are
left out. Printed per file: samples, and each part's share of the rest; with `--cpu-ms` per file
(the row's measured CPU per stream or per change) also that share in ms.

    .venv/bin/python -m bench.xds_floor_profile /tmp/prof/meridian:plaintext-1000-change.txt=140.0 \
        /tmp/prof/floor:plaintext-1000-change.txt=109.2
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _await_lines(path: Path, needle: str) -> list[str]:
    """`file.py:N` of every line of `path` holding `needle` (how py-spy names a frame's line)."""
    lines = path.read_text().splitlines()
    return [f"{path.name}:{i}" for i, line in enumerate(lines, 1) if needle in line]


def parts() -> list[tuple[str, tuple[str, ...]]]:
    server, floor = REPO / "controlplane/xds/server.py", REPO / "bench/xds_floor_server.py"
    writes = tuple(_await_lines(server, "await context.write(") + _await_lines(floor, "await context.write("))
    reads = tuple(_await_lines(server, "await context.read()") + _await_lines(floor, "await context.read()"))
    return [
        ("idle", ("PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait")),
        ("admin", ("aiohttp/", "controlplane/admin.py")),
        ("Meridian: history", ("controlplane/history/",)),
        ("garbage collector", ("gc_collect",)),
        ("TLS front (Python ssl, OpenSSL, its relay)", ("tlsfront.py",)),
        ("Meridian: request parsing", (";_delta_request (", ";_sotw_request (")),
        ("gRPC write (Cython, core, kernel send)", writes),
        ("gRPC read (Cython, core, parse)", reads),
        ("Meridian: ACK and request handling", ("XdsServer._on_request", "_may_be_due")),
        ("Meridian: push besides the write", ("XdsServer._push",)),
        ("Meridian: auth, stream set-up, loop, convergence", ("XdsServer._serve", "Convergence", "watch_versions")),
        ("gRPC's poller thread", ("Thread.run",)),
        # The rest by its deepest Python frame (every stack of the loop's thread starts in either's main).
        (
            "other controlplane code (Meridian: the change's read and build; floor: the Waker it borrows)",
            (_DEEPEST + "controlplane/",),
        ),
        ("floor: its stream loop", (_DEEPEST + "xds_floor_server.py",)),
        ("asyncio's loop (select, callbacks, task steps)", ("",)),
    ]


_DEEPEST = "deepest:"


def _with_deepest(stack: str) -> str:
    """The stack, and its deepest Python frame's file marked `deepest:` (py-spy: `name (file:line)`)."""
    python = [f for f in stack.split(";") if ".py:" in f]
    return f"{stack};{_DEEPEST}{python[-1].rpartition('(')[2]}" if python else stack


def split(path: Path) -> collections.Counter[str]:
    table = parts()
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        marked = _with_deepest(stack)
        counts[next(label for label, markers in table if any(m in marked for m in markers))] += int(n)
    return counts


def report(path: Path, cpu_ms: float | None) -> str:
    counts = split(path)
    counted = sum(v for k, v in counts.items() if k not in ("idle", "admin"))
    out = [f"{path.name}: {sum(counts.values())} samples, {counted} counted"
           f" (idle {counts['idle']}, admin polls {counts['admin']})"]  # fmt: skip
    for label, _ in parts():
        if label in ("idle", "admin") or not counts[label]:
            continue
        share = counts[label] / counted
        ms = f"  {share * cpu_ms:6.1f} ms" if cpu_ms is not None else ""
        out.append(f"  {share * 100:5.1f}%{ms}  {label}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="py-spy stacks of bench/xds_floor.py --profile, by part")
    p.add_argument("files", nargs="+", help="FILE or FILE=CPU_MS (the row's measured CPU to share out)")
    args = p.parse_args(argv)
    for spec in args.files:
        name, _, cpu = spec.partition("=")
        print(report(Path(name), float(cpu) if cpu else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
