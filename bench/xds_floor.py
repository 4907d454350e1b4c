"""The transport's floor: 1,000 Delta ADS clients against Meridian and against a bare server, in one run.

`bench/fanout.py` measures Meridian with N lightweight gateway-like clients. This asks how much of
what it measures is Meridian's own: it first captures, from a real `meridian serve` with S
Services, the exact DeltaDiscoveryResponses one client subscribing like a gateway is sent (the
initial ones of every type, in order, and two EndpointSlice change pushes), then runs, interleaved
row by row with fresh processes:

  meridian  the real `meridian serve` (plaintext with `--xds-insecure`, or TLS by its local CA), as
            `bench/fanout.py` measures it;
  floor     `bench/xds_floor_server.py`: a bare grpc.aio Delta ADS server with Meridian's gRPC
            options that replays those same bytes to every stream (one in flight per type, the next
            after the ACK) and, for a change, writes the captured EDS change response to every
            stream and reads the ACKs. No snapshot, no differences, no versions, no history, no
            admin API. Security variants: `plaintext`; `front`, TLS through Meridian's own `TlsFront`
            in-process with the same local CA, as `meridian serve` uses it; `native`, gRPC's own TLS
            requiring a client certificate from the same CA (tells whether the Python front is the gap).

Per row, as `bench/fanout.py` reports them: connect all N (first response of every type), the
server's CPU ms per stream connecting and the clients' (this process), RSS per stream, change ->
all N ACKed p50 / p99 (for Meridian: a rewritten EndpointSlice file; for the floor: a SIGUSR1 that
makes it push), the server's CPU ms per change (from /proc, ACKs included, a mean) and the
clients'. The difference between a `meridian` row and its `floor` row is what Meridian's own
bookkeeping (and, per change, its file watch and snapshot build) costs on top of the transport.
`--profile DIR` also records py-spy (`$PY_SPY`, else `py-spy` on PATH; `--native`, 100 Hz) of the
server while connecting and while changing, as collapsed stacks per row (a profiled run's
timings are not the figures to quote).

    .venv/bin/python -m bench.xds_floor --services 1000 --clients 1000 --trials 12 \
        --rows meridian:plaintext,floor:plaintext,meridian:tls,floor:front,floor:native
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

# N channels each log every GOAWAY when a server stops; keep the report readable (as bench.fanout).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from envoy.service.discovery.v3 import discovery_pb2

from bench import fanout
from bench.common import ControlPlane, machine_facts, percentile, proc_status, wait_for, write_initial
from bench.fanout import TYPES, Client, channel_for, cpu_seconds, endpoint_change, quiet_cpu
from bench.xds_floor_server import SECURITIES, Replay
from controlplane.xds.resources import ENDPOINT, ROUTE
from controlplane.xds.server import SERVICE

DEFAULT_ROWS = "meridian:plaintext,floor:plaintext,meridian:tls,floor:front,floor:native"


class FloorProcess(ControlPlane):
    """`python -m bench.xds_floor_server` as a subprocess, on the same kind of ports and local CA."""

    def __init__(self, root: Path, responses: Path, security: str) -> None:
        super().__init__(root / "unused", root / "floor.log")
        self.responses = responses
        self.security = security

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.xds_floor_server", "--responses", str(self.responses),
                "--address", f"127.0.0.1:{self.xds_port}", "--security", self.security,
                "--state-dir", str(self.state_dir)]  # fmt: skip

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {self.proc.returncode}; see {self.log_path}")
        return self.log_path.exists() and "listening" in self.log_path.read_text()


def _identity(data: bytes) -> bytes:
    return data


async def capture(cp: ControlPlane, names: dict[str, list[str]], backend_port: int, changes: int = 2,
                  timeout: float = 120.0) -> Replay:  # fmt: skip
    """The bytes one Delta client subscribing like a gateway is sent by `cp`: its initial responses in
    order until Meridian has it settled, then one EDS push per EndpointSlice change."""
    client = Client(0, True, names)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for k, type_url in enumerate(TYPES):
        queue.put_nowait(client.initial(type_url, node=k == 0))
    channel = channel_for(cp, insecure=True)
    rpc = channel.stream_stream(f"/{SERVICE}/DeltaAggregatedResources",
                                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                                response_deserializer=_identity)  # fmt: skip
    received: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def read() -> None:
        async for raw in rpc(client.requests(queue)):
            resp = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
            received.append((resp.type_url, raw))
            queue.put_nowait(client.ack(resp))
            arrived.set()

    reader = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + timeout
        while {t for t, _ in received} != set(TYPES):
            if reader.done():
                reader.result()
            if time.monotonic() > deadline:
                raise TimeoutError("no initial response of every type")
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), timeout)
        await asyncio.to_thread(wait_for, lambda: fanout.settled(cp, 1), timeout, 0.05, "capture settled")
        initial = tuple(received)
        pushes = []
        for flip in range(1, changes + 1):
            before = len(received)
            endpoint_change(cp.directory, backend_port, flip)
            await asyncio.to_thread(wait_for, lambda b=before: len(received) > b and fanout.settled(cp, 1),  # type: ignore[misc]
                                    timeout, 0.02, "change captured")  # fmt: skip
            pushed = received[before:]
            if [t for t, _ in pushed] != [ENDPOINT]:
                raise RuntimeError(f"an EndpointSlice change pushed {[t for t, _ in pushed]}, not one EDS response")
            pushes.append(pushed[0][1])
        return Replay(initial, tuple(pushes))
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await channel.close()


@contextlib.contextmanager
def profiled(pid: int, out: Path | None, rate: int = 100) -> Iterator[None]:
    """py-spy (native frames too) of `pid` while the block runs, as collapsed stacks in `out`."""
    if out is None:
        yield
        return
    spy = subprocess.Popen([os.environ.get("PY_SPY", "py-spy"), "record", "--native", "-r", str(rate),
                            "--pid", str(pid), "--format", "raw",
                            "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)  # attached before the work starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


async def measure(server: ControlPlane, n: int, insecure: bool, args: argparse.Namespace,
                  names: dict[str, list[str]], profile: Path | None, push: Callable[[int], None],
                  settle: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:  # fmt: skip
    """`bench.fanout.measure`'s figures, taken the same way for both servers: `push(k)` makes the
    k-th change (Meridian: an EndpointSlice file rewritten; the floor: a SIGUSR1), the server's CPU
    is read once it has been quiet for 50 ms (ACKs included), and `settle` (Meridian's admin API:
    every stream has ACKed) is awaited only after that reading, so its polls are not counted."""
    rss_before = proc_status(server.pid)["VmRSS"]
    out: dict[str, Any] = {"clients": n, "xds": "delta", "tls": not insecure}
    clients = [Client(i, True, names) for i in range(n)]
    channels = [channel_for(server, insecure) for _ in range(n)]
    tasks: list[asyncio.Task[None]] = []
    try:
        with profiled(server.pid, profile and profile.with_name(profile.name + "-connect.txt")):
            cpu_before = cpu_seconds(server.pid)
            clients_before = time.process_time()
            t0 = time.monotonic()
            tasks = [asyncio.create_task(c.run(ch)) for c, ch in zip(clients, channels, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), timeout=args.timeout)
            failed = [c.failed for c in clients if c.failed]
            if failed:
                raise RuntimeError(f"{len(failed)} streams failed, e.g. {failed[0]!r}")
            out["connect_s"] = round(time.monotonic() - t0, 2)
            out["client_cpu_ms_per_connect"] = round((time.process_time() - clients_before) * 1000 / n, 2)
            out["initial_kib_per_stream"] = round(sum(c.initial_bytes for c in clients) / n / 1024, 1)
            cpu_connected = await quiet_cpu(server.pid, limit=30.0)
        if settle is not None:
            await settle()
        out["rss_per_stream_kib"] = round((proc_status(server.pid)["VmRSS"] - rss_before) / n, 1)
        out["cp_cpu_ms_per_connect"] = round((cpu_connected - cpu_before) * 1000 / n, 2)
        latencies, cpu_ms, client_ms = [], [], []
        with profiled(server.pid, profile and profile.with_name(profile.name + "-change.txt")):
            for k in range(1, args.trials + 1):
                await quiet_cpu(server.pid)
                before = [c.eds_responses for c in clients]
                cpu0 = cpu_seconds(server.pid)
                client0 = time.process_time()
                start = time.monotonic()
                push(k)
                deadline = start + args.timeout
                while any(c.eds_responses == b for c, b in zip(clients, before, strict=True)):
                    if time.monotonic() > deadline:
                        raise TimeoutError("not every client got the change")
                    await asyncio.sleep(0.002)
                latencies.append(max(c.eds_at for c in clients) - start)
                client_ms.append((time.process_time() - client0) * 1000)
                cpu_ms.append((await quiet_cpu(server.pid) - cpu0) * 1000)
                if settle is not None:
                    await settle()
        out["all_acked_ms"] = {"p50": round(percentile(latencies, 50) * 1000, 1),
                               "p99": round(percentile(latencies, 99) * 1000, 1)}  # fmt: skip
        out["cp_cpu_ms_per_change"] = round(sum(cpu_ms) / len(cpu_ms), 1)
        out["rss_steady_per_stream_kib"] = round((proc_status(server.pid)["VmRSS"] - rss_before) / n, 1)
        out["client_cpu_ms_per_change"] = round(sum(client_ms) / len(client_ms), 1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    return out


async def measure_floor(fp: FloorProcess, n: int, args: argparse.Namespace, names: dict[str, list[str]],
                        profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    return await measure(fp, n, fp.security == "plaintext", args, names, profile,
                         lambda _: os.kill(fp.pid, signal.SIGUSR1))  # fmt: skip


async def measure_meridian(cp: ControlPlane, n: int, insecure: bool, args: argparse.Namespace,
                           names: dict[str, list[str]], profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Meridian's CPU per change with no stream connected first (reading the file, building the
    snapshot: what the floor has no counterpart for), then `measure`."""
    cpu_ms = []
    for k in range(1, args.trials + 1):
        built = cp.admin_json("/debug/snapshot")["types"]["EDS"]["built_monotonic"]
        await quiet_cpu(cp.pid)
        cpu0 = cpu_seconds(cp.pid)
        endpoint_change(cp.directory, args.backend_port, k)
        await asyncio.sleep(0.02)  # the watcher's wake-up: quiet until it reads the file otherwise
        cpu_ms.append((await quiet_cpu(cp.pid) - cpu0) * 1000)
        if cp.admin_json("/debug/snapshot")["types"]["EDS"]["built_monotonic"] == built:
            raise RuntimeError("the change was not built while measuring its CPU")

    def settle() -> Awaitable[None]:
        return asyncio.to_thread(wait_for, lambda: fanout.settled(cp, n), 120, 0.05, "every stream ACKed")

    def push(k: int) -> None:
        endpoint_change(cp.directory, args.backend_port, args.trials + k)

    row = await measure(cp, n, insecure, args, names, profile, push, settle)
    row["cp_cpu_ms_per_change_no_streams"] = round(sum(cpu_ms) / len(cpu_ms), 1)
    return row


def snapshot_names(cp: ControlPlane) -> dict[str, list[str]]:
    snap = cp.admin_json("/debug/snapshot")["types"]
    return {ENDPOINT: sorted(snap["EDS"]["resources"]), ROUTE: sorted(snap["RDS"]["resources"])}


@contextlib.asynccontextmanager
async def meridian(root: Path, args: argparse.Namespace, insecure: bool) -> AsyncIterator[ControlPlane]:
    write_initial(root / "c1", args.services, args.backend_port, style="per-file")
    cp = ControlPlane(root / "c1", root / "meridian.log", ["--xds-insecure"] if insecure else []).start()
    try:
        await asyncio.to_thread(wait_for, cp.ready, 600, 0.05, "/readyz")
        yield cp
    finally:
        cp.stop()


async def run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="xds-floor-"))
    rows: list[dict[str, Any]] = []
    try:
        async with meridian(work / "capture", args, insecure=True) as cp:
            names = snapshot_names(cp)
            replay = await capture(cp, names, args.backend_port, timeout=args.timeout)
        responses = work / "responses.json"
        replay.dump(responses)
        captured = {"initial_responses": [[t.rsplit(".", 1)[-1], len(b)] for t, b in replay.initial],
                    "initial_bytes": sum(len(b) for _, b in replay.initial),
                    "change_bytes": [len(b) for b in replay.changes]}  # fmt: skip
        print(json.dumps({"captured": captured}), flush=True)
        for n in (int(x) for x in args.clients.split(",")):
            for k, spec in enumerate(args.rows.split(",")):  # a row may repeat (alternating pairs)
                server, security = spec.split(":")
                label = f"{spec}-{n}" + (f"-{k}" if args.rows.split(",").count(spec) > 1 else "")
                root = work / label
                profile = args.profile / label if args.profile else None
                if server == "meridian":
                    async with meridian(root, args, insecure=security == "plaintext") as cp:
                        row = await measure_meridian(cp, n, security == "plaintext", args, names, profile)
                else:
                    fp = FloorProcess(root, responses, security)
                    root.mkdir(parents=True, exist_ok=True)
                    fp.start()
                    try:
                        await asyncio.to_thread(wait_for, fp.ready, 60, 0.05, "floor server listening")
                        row = await measure_floor(fp, n, args, names, profile)
                    finally:
                        fp.stop()
                row |= {"server": server, "security": security, "load_avg": round(os.getloadavg()[0], 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return rows, captured


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server | security | clients | connect all s | server / clients' CPU ms per stream connecting |"
        " RSS per stream KiB (connected / steady) | change -> all ACKed p50 / p99 ms |"
        " server CPU ms per change (with no stream) | clients' CPU ms per change | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["all_acked_ms"]
        alone = f" ({r['cp_cpu_ms_per_change_no_streams']:.1f})" if "cp_cpu_ms_per_change_no_streams" in r else ""
        lines.append(f"| {r['server']} | {r['security']} | {r['clients']:,} | {r['connect_s']:.2f} | "
                     f"{r['cp_cpu_ms_per_connect']:.1f} / {r['client_cpu_ms_per_connect']:.1f} | "
                     f"{r['rss_per_stream_kib']:.0f} / {r['rss_steady_per_stream_kib']:.0f} | "
                     f"{a['p50']:.1f} / {a['p99']:.1f} | {r['cp_cpu_ms_per_change']:.1f}{alone} | "
                     f"{r['client_cpu_ms_per_change']:.1f} | {r['load_avg']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Meridian against a bare ADS server replaying its bytes")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--clients", default="1000")
    p.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help="server:security in run order; meridian:plaintext|tls, floor:" + "|".join(SECURITIES),
    )
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--backend-port", type=int, default=9)
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each row's server into DIR")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    for spec in args.rows.split(","):
        server, _, security = spec.partition(":")
        if (server, security) not in {("meridian", "plaintext"), ("meridian", "tls")} | {
            ("floor", s) for s in SECURITIES
        }:
            p.error(f"unknown row {spec!r}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    import gc

    gc.set_threshold(50_000, *gc.get_threshold()[1:])  # as bench.fanout's --client-gc fleet (its default)
    rows, captured = asyncio.run(run_all(args))
    facts = machine_facts() | {"services": args.services}
    print(json.dumps(facts))
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "captured": captured, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
