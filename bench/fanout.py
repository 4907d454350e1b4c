"""Fleet fan-out: N lightweight ADS clients against one Meridian, one EndpointSlice change at a time.

Instead of N Envoys, one Python process opens N gRPC channels (each its own HTTP/2 connection,
TLS with the local CA's client certificate unless `--xds-insecure`) and subscribes like a gateway:
CDS and LDS and SRDS as wildcards, EDS for every cluster, RDS for every route table (names read
once from /debug/snapshot), ACKing every response at once. With S Services behind them it
measures, per (N, SotW|Delta, TLS|plaintext):
  connect    start -> all N clients hold and have ACKed their first response of every type;
  RSS/stream the control plane's VmRSS after connecting minus before, / N; and the same after
             the changes ("steady": seconds after the connecting burst);
  change     rewrite one Service's EndpointSlice file -> the last client has the new assignment
             (and has ACKed it), p50/p99 over `--trials` changes;
  CPU        the control plane's user+system CPU per change, ACKs included (from /proc, so the
             clients' own CPU, which shares the two cores, is not counted; a mean over the
             trials, since /proc counts in 10 ms ticks); and the same for connecting, per stream;
  client CPU this process's (the N clients') CPU per change, and per stream connecting: what
             the load itself costs the two cores the control plane runs on;
  send       the control plane's side: the change built into the cache -> its last EDS send.

`--compare-with DIR` also runs another checkout's control plane (e.g. `git archive` of an older
commit), interleaved row by row, for before/after in one run.

    .venv/bin/python -m bench.fanout --services 1000 --clients 100,300 --trials 20
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# N channels each log every GOAWAY when a control plane stops; keep the report readable.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.common import (
    REPO,
    ControlPlane,
    dump,
    machine_facts,
    objects_for,
    percentile,
    proc_status,
    wait_for,
    write_initial,
)
from controlplane.bootstrap import local_client_tls
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

GROUP = "meridian-gateway"
TYPES = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)
WILDCARD_TYPES = (CLUSTER, LISTENER, SCOPED_ROUTE)
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Client:
    """One ADS stream that subscribes like a gateway and ACKs everything."""

    index: int
    delta: bool
    names: dict[str, list[str]]
    first: dict[str, bool] = field(default_factory=dict)  # type -> first response received
    eds_responses: int = 0
    initial_bytes: int = 0  # the first response of every type, as serialized on the wire
    eds_at: float = 0.0  # monotonic time the last EDS response was ACKed
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    failed: BaseException | None = None

    def requests(self, queue: asyncio.Queue[Any]) -> Any:
        async def gen() -> Any:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        return gen()

    def initial(self, type_url: str, node: bool) -> Any:
        names = [] if type_url in WILDCARD_TYPES else self.names[type_url]
        if self.delta:
            req = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=["*"] if type_url in WILDCARD_TYPES else names
            )
        else:
            req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
        if node:
            req.node.id, req.node.cluster = f"fanout-{self.index}", GROUP
        return req

    def ack(self, resp: Any) -> Any:
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
        names = [] if resp.type_url in WILDCARD_TYPES else self.names[resp.type_url]
        return discovery_pb2.DiscoveryRequest(type_url=resp.type_url, version_info=resp.version_info,
                                              response_nonce=resp.nonce, resource_names=names)  # fmt: skip

    async def run(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for k, type_url in enumerate(TYPES):
            queue.put_nowait(self.initial(type_url, node=k == 0))
        rpc = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        call = rpc(self.requests(queue))
        try:
            async for resp in call:
                queue.put_nowait(self.ack(resp))
                if resp.type_url == ENDPOINT:
                    self.eds_responses += 1
                    self.eds_at = time.monotonic()
                if not self.synced.is_set():
                    if resp.type_url not in self.first:
                        self.initial_bytes += resp.ByteSize()
                    self.first[resp.type_url] = True
                    if len(self.first) == len(TYPES):
                        self.synced.set()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            self.failed = exc
            self.synced.set()


def channel_for(cp: ControlPlane, insecure: bool) -> grpc.aio.Channel:
    # A local subchannel pool: every client gets its own connection, as N Envoys would. HTTP/2 flow
    # control as Envoy's: no BDP probing (with it each response brought the control plane a PING to
    # read and answer, doubling its syscalls per stream and change) and a window larger than the
    # initial push (Envoy's default is 256 MiB; gRPC's 64 KiB made the control plane hold every
    # stream's unsent MiB at once while connecting, and answer a window update per 64 KiB).
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1),
               ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8 * 1024 * 1024)]  # fmt: skip
    target = f"127.0.0.1:{cp.xds_port}"
    if insecure:
        return grpc.aio.insecure_channel(target, options=options)
    tls = local_client_tls(cp.state_dir, GROUP)
    creds = grpc.ssl_channel_credentials(
        Path(tls.ca).read_bytes(), Path(tls.key).read_bytes(), Path(tls.cert).read_bytes()  # type: ignore[arg-type]
    )
    return grpc.aio.secure_channel(target, creds, options=options)


def endpoint_change(directory: Path, backend_port: int, flip: int) -> None:
    """Rewrite Service 0's file with its EndpointSlice pointing at one or two addresses."""
    objs = objects_for(0, backend_port)
    if flip % 2:
        slice_ = next(o for o in objs if o["kind"] == "EndpointSlice")
        slice_["endpoints"].append({"addresses": ["127.0.0.2"], "conditions": {"ready": True}})
    path = directory / "app-0.yaml"
    tmp = path.with_name(".app-0.yaml.tmp")
    tmp.write_text(dump(objs))
    os.replace(tmp, path)


async def measure(cp: ControlPlane, n: int, delta: bool, insecure: bool, args: argparse.Namespace,
                  names: dict[str, list[str]], flip: list[int]) -> dict[str, Any]:  # fmt: skip
    rss_before = proc_status(cp.pid)["VmRSS"]
    cpu_before = cpu_seconds(cp.pid)
    clients_before = time.process_time()
    clients = [Client(i, delta, names) for i in range(n)]
    channels = [channel_for(cp, insecure) for _ in range(n)]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(c.run(ch)) for c, ch in zip(clients, channels, strict=True)]
    out: dict[str, Any] = {"clients": n, "xds": "delta" if delta else "sotw", "tls": not insecure}
    try:
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in clients)), timeout=args.timeout)
        failed = [c.failed for c in clients if c.failed]
        if failed:
            raise RuntimeError(f"{len(failed)} streams failed, e.g. {failed[0]!r}")
        out["connect_s"] = round(time.monotonic() - t0, 2)
        # What the load itself costs the two cores while connecting (TLS, HTTP/2, parsing each client's
        # initial config): with Meridian's CPU, the floor under "connect all" on this machine.
        out["client_cpu_ms_per_connect"] = round((time.process_time() - clients_before) * 1000 / n, 2)
        out["initial_kib_per_stream"] = round(sum(c.initial_bytes for c in clients) / n / 1024, 1)
        await asyncio.to_thread(wait_for, lambda: settled(cp, n), 120, 0.05, "initial responses ACKed")
        out["rss_per_stream_kib"] = round((proc_status(cp.pid)["VmRSS"] - rss_before) / n, 1)
        out["cp_cpu_ms_per_connect"] = round((cpu_seconds(cp.pid) - cpu_before) * 1000 / n, 2)
        latencies, cpu_ms, sends, client_ms = [], [], [], []
        for _ in range(args.trials):
            before = [c.eds_responses for c in clients]
            cpu0 = cpu_seconds(cp.pid)
            client0 = time.process_time()
            flip[0] += 1
            start = time.monotonic()
            endpoint_change(cp.directory, args.backend_port, flip[0])
            deadline = start + args.timeout
            while any(c.eds_responses == b for c, b in zip(clients, before, strict=True)):
                if time.monotonic() > deadline:
                    raise TimeoutError("not every client got the change")
                await asyncio.sleep(0.002)
            latencies.append(max(c.eds_at for c in clients) - start)
            client_ms.append((time.process_time() - client0) * 1000)
            # The ACKs are part of a push's cost: count CPU until the control plane goes quiet
            # (read from /proc, which costs it nothing), then ask its admin API for the rest.
            cpu_ms.append((await quiet_cpu(cp.pid) - cpu0) * 1000)
            await asyncio.to_thread(wait_for, lambda: settled(cp, n), 120, 0.05, "change ACKed")
            built = cp.admin_json("/debug/snapshot")["types"]["EDS"]["built_monotonic"]
            last_send = max(s["types"]["EDS"]["sent_monotonic"] for s in cp.admin_json("/debug/syncz"))
            sends.append(last_send - built)
        out["all_acked_ms"] = {"p50": round(percentile(latencies, 50) * 1000, 1),
                               "p99": round(percentile(latencies, 99) * 1000, 1)}  # fmt: skip
        out["built_to_last_send_ms"] = {"p50": round(percentile(sends, 50) * 1000, 1),
                                        "p99": round(percentile(sends, 99) * 1000, 1)}  # fmt: skip
        out["cp_cpu_ms_per_change"] = round(sum(cpu_ms) / len(cpu_ms), 1)  # a mean: /proc counts 10 ms ticks
        # Memory freed after connecting may be given back to the OS only later (the heap trim):
        # the RSS that stays, seconds after the burst.
        out["rss_steady_per_stream_kib"] = round((proc_status(cp.pid)["VmRSS"] - rss_before) / n, 1)
        out["client_cpu_ms_per_change"] = round(sum(client_ms) / len(client_ms), 1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    await asyncio.to_thread(wait_for, lambda: not cp.admin_json("/debug/syncz"), 60, 0.1, "streams closed")
    return out


async def quiet_cpu(pid: int, quiet: float = 0.05, limit: float = 2.0) -> float:
    """The process's CPU seconds once it has used none for `quiet` seconds (or after `limit`)."""
    last, since, deadline = cpu_seconds(pid), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        now = cpu_seconds(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def settled(cp: ControlPlane, n: int) -> bool:
    streams = cp.admin_json("/debug/syncz")
    return len(streams) == n and all(
        not t["pending"] and not t["last_nack"] for s in streams for t in s["types"].values()
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| control plane | clients | xDS | TLS | connect all s | CP / clients' CPU ms per stream connecting |"
        " RSS per stream KiB (connected / steady) |"
        " change -> all ACKed p50 / p99 ms | built -> last send p50 / p99 ms | CP CPU ms per change |"
        " clients' CPU ms per change |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, s = r["all_acked_ms"], r["built_to_last_send_ms"]
        tls = "yes" if r["tls"] else "no"
        lines.append(f"| {r.get('source', 'this')} | {r['clients']:,} | {r['xds']} | {tls} | {r['connect_s']:.2f} | "
                     f"{r['cp_cpu_ms_per_connect']:.1f} / {r.get('client_cpu_ms_per_connect', 0):.1f} | "
                     f"{r['rss_per_stream_kib']:.0f} / "
                     f"{r.get('rss_steady_per_stream_kib', 0):.0f} | "
                     f"{a['p50']:.1f} / {a['p99']:.1f} | {s['p50']:.1f} / {s['p99']:.1f} | "
                     f"{r['cp_cpu_ms_per_change']:.1f} | {r['client_cpu_ms_per_change']:.1f} |")  # fmt: skip
    return "\n".join(lines)


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A fresh control plane for every (security, N, mode): RSS per stream is then not blurred by
    memory the previous run freed and this one reuses."""
    rows = []
    sources = [("this", REPO)] + ([("before", args.compare_with.resolve())] if args.compare_with else [])
    for security in args.security.split(","):
        insecure = security == "plaintext"
        for n in (int(x) for x in args.clients.split(",")):
            for mode, (label, source) in itertools.product(args.modes.split(","), sources):
                root = Path(tempfile.mkdtemp(prefix=f"fanout-{security}-{n}-{mode}-"))
                write_initial(root / "c1", args.services, args.backend_port, style="per-file")
                cp = ControlPlane(root / "c1", root / "meridian.log", ["--xds-insecure"] if insecure else [],
                                  source=source).start()  # fmt: skip
                try:
                    await asyncio.to_thread(wait_for, cp.ready, 600, 0.05, "/readyz")
                    snap = cp.admin_json("/debug/snapshot")["types"]
                    names = {ENDPOINT: sorted(snap["EDS"]["resources"]), ROUTE: sorted(snap["RDS"]["resources"])}
                    row = await measure(cp, n, mode == "delta", insecure, args, names, [0])
                    row["load_avg"] = round(os.getloadavg()[0], 2)
                    row["source"] = label
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                finally:
                    cp.stop()
                    if not args.keep:
                        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="N lightweight ADS clients against one Meridian")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--clients", default="100,300")
    p.add_argument("--modes", default="sotw,delta")
    p.add_argument("--security", default="tls,plaintext", help="tls (the default server) and/or plaintext")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--backend-port", type=int, default=9)  # nothing is proxied: the clients are not Envoys
    p.add_argument("--compare-with", metavar="DIR", type=Path, help="another checkout, run interleaved as 'before'")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--client-gc", choices=("fleet", "default"), default="fleet",
                   help="the clients' cyclic GC: 'fleet' collects the young generation every 50,000 objects, "
                   "as Meridian does (at Python's default of 700, 1,000 clients spent 13-22%% more CPU per "
                   "change, collecting no garbage; Envoys have no such cost); 'default' keeps Python's")  # fmt: skip
    args = p.parse_args(argv)
    if args.client_gc == "fleet":
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
    rows = asyncio.run(run_all(args))
    facts = machine_facts() | {"services": args.services}
    print(json.dumps(facts))
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
