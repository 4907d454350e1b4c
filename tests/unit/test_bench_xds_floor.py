"""bench/xds_floor.py's floor server at 3 clients, so the transport-floor bench cannot rot.

The server replays given bytes: each client must get every initial response of every type (the
next of a type only after its ACK) and every change push, over plaintext, Meridian's TLS front
and gRPC's native TLS. Asserts what the clients received, never timings.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from bench.fanout import TYPES
from bench.xds_floor import FloorProcess, measure_floor
from bench.xds_floor_server import Replay
from controlplane.xds.resources import CLUSTER, ENDPOINT


def response(type_url: str, nonce: str, names: list[str]) -> bytes:
    r = discovery_pb2.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce, system_version_info=nonce)
    for name in names:
        r.resources.add(name=name, version=nonce)
    return r.SerializeToString()


@pytest.mark.parametrize("security", ["plaintext", "front", "native"])
def test_floor_server_replays_every_response_to_every_client(tmp_path: Path, security: str) -> None:
    # Two CDS responses (a chunked first response): the second goes out only after the first's ACK.
    initial = [(CLUSTER, response(CLUSTER, "c1", ["a"])), (CLUSTER, response(CLUSTER, "c2", ["b"]))]
    initial += [(t, response(t, f"{t[-8:]}-1", ["x"])) for t in TYPES if t != CLUSTER]
    replay = Replay(tuple(initial), (response(ENDPOINT, "e2", ["x"]), response(ENDPOINT, "e3", ["x"])))
    replay.dump(tmp_path / "r.json")
    assert Replay.load(tmp_path / "r.json") == replay

    fp = FloorProcess(tmp_path, tmp_path / "r.json", security).start()
    try:
        from bench.common import wait_for

        wait_for(fp.ready, 30, 0.05, "floor server listening")
        args = argparse.Namespace(trials=2, timeout=30.0)
        names = {ENDPOINT: ["x"], "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": ["x"]}
        row = asyncio.run(measure_floor(fp, 3, args, names, None))
    finally:
        fp.stop()
    assert row["clients"] == 3 and row["tls"] == (security != "plaintext")
    assert row["initial_kib_per_stream"] > 0
    assert row["connect_s"] > 0 and 0 < row["all_acked_ms"]["p50"] <= row["all_acked_ms"]["p99"]
    assert row["cp_cpu_ms_per_change"] >= 0  # /proc counts 10 ms ticks


def test_floor_stream_sends_in_order_one_in_flight_per_type() -> None:
    from bench.xds_floor_server import _Stream

    replay = Replay(((CLUSTER, b"c1"), (CLUSTER, b"c2"), (ENDPOINT, b"e1")), (b"e2",))
    s = _Stream(replay)
    assert s.due() is None  # nothing asked for yet
    s.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
    assert s.due() == b"c1" and s.due() is None  # c2 waits for c1's ACK
    s.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce="n"))
    assert s.due() == b"c2" and s.due() is None  # endpoints not asked for yet
    s.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT))
    assert s.due() == b"e1"
    s.changes_owed = 1
    assert s.due() is None  # the change waits for e1's ACK
    s.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce="n"))
    assert s.due() == b"e2" and s.changes_owed == 0


def test_floor_bench_runs_meridian_and_the_floor_interleaved(tmp_path: Path) -> None:
    """bench/xds_floor.py at 3 clients and 5 Services: the bytes are captured from a real Meridian
    and replayed; both servers' rows carry every figure."""
    import json

    from bench import xds_floor

    out = tmp_path / "floor.json"
    assert xds_floor.main(["--services", "5", "--clients", "3", "--trials", "2", "--timeout", "30",
                           "--rows", "meridian:plaintext,floor:plaintext", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    captured = result["captured"]
    assert [t for t, _ in captured["initial_responses"]] == [t.rsplit(".", 1)[-1] for t in TYPES]
    assert len(captured["change_bytes"]) == 2 and all(b > 0 for b in captured["change_bytes"])
    rows = result["rows"]
    assert [(r["server"], r["security"]) for r in rows] == [("meridian", "plaintext"), ("floor", "plaintext")]
    # Both servers sent every client the same initial bytes: the floor replays Meridian's.
    assert rows[0]["initial_kib_per_stream"] == rows[1]["initial_kib_per_stream"] > 0
    assert all(0 < r["all_acked_ms"]["p50"] <= r["all_acked_ms"]["p99"] for r in rows)
    assert rows[0]["cp_cpu_ms_per_change_no_streams"] >= 0


def test_profile_parts_follow_the_await_lines(tmp_path: Path) -> None:
    from bench.xds_floor_profile import _await_lines, split

    write = _await_lines(Path(__file__).resolve().parents[2] / "bench/xds_floor_server.py", "await context.write(")
    assert len(write) == 1
    loop = "main (bench/xds_floor_server.py:1);BaseEventLoop._run_once (asyncio/base_events.py:1)"
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        f"{loop};FloorServer._delta (bench/{write[0]});0x7f00 (cygrpc.so) 5\n"
        f"{loop};EpollSelector.select (selectors.py:468) 3\n"
        "Thread.run (threading.py:982);0x7f01 (cygrpc.so) 2\n"
        "Thread.run (threading.py:982);_worker (x.py:1);PyThread_acquire_lock_timed 4\n"
        f"{loop};XdsServer._read (controlplane/xds/server.py:1);_delta_request (controlplane/xds/server.py:2) 7\n"
        f"{loop};XdsServer._on_request (controlplane/xds/server.py:3);on_delta_request (x/tracking.py:1) 6\n"
    )
    counts = split(stacks)
    assert counts["gRPC write (Cython, core, kernel send)"] == 5
    assert counts["asyncio's loop (select, callbacks, task steps)"] == 3
    assert counts["gRPC's poller thread"] == 2 and counts["idle"] == 4
    assert counts["Meridian: request parsing"] == 7 and counts["Meridian: ACK and request handling"] == 6
