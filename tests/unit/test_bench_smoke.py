"""The route-readiness benchmark's building blocks at N=5, so bench/route_ready.py cannot rot.

Asserts results (routes served, 404 for unknown hosts, the breakdown ordering, RSS read), never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import percentile, proc_status, summary_ms, write_initial
from bench.controller_micro import build, one_change
from bench.route_ready import breakdown_trial, cold_start, new_route_trial, rds_acked, settled, wait_settled
from controlplane.devtools.echo import EchoFleet
from controlplane.xds import resources as rt


def test_percentiles_are_nearest_rank() -> None:
    values = [0.001 * i for i in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(0.050)
    assert percentile(values, 99) == pytest.approx(0.099)
    assert percentile([0.003, 0.001, 0.002], 100) == pytest.approx(0.003)
    assert summary_ms([0.010, 0.020]) == {"p50": 10.0, "p90": 20.0, "p99": 20.0, "max": 20.0}


def test_manifest_styles_define_the_same_objects(tmp_path: Path) -> None:
    write_initial(tmp_path / "a", 5, 9, style="per-file")
    write_initial(tmp_path / "b", 5, 9, style="bulk", chunk=2)
    assert len(list((tmp_path / "a").glob("*.yaml"))) == 5
    assert len(list((tmp_path / "b").glob("*.yaml"))) == 3
    text_a = "".join(p.read_text() for p in sorted((tmp_path / "a").glob("*.yaml")))
    text_b = "".join(p.read_text() for p in sorted((tmp_path / "b").glob("*.yaml")))
    assert text_a.count("kind: Ingress") == text_b.count("kind: Ingress") == 5


def test_controller_micro_one_change_adds_a_host() -> None:
    ctl, store, _ = build(5)
    before = ctl.cache.get(rt.ROUTE).resources
    one_change(ctl, store, 5)
    after = ctl.cache.get(rt.ROUTE).resources
    assert set(ctl.routes.https.keys()) == {f"h{i}.bench.example.com" for i in range(6)}
    assert b"h5.bench.example.com" in next(r.any_bytes for n, r in after.items() if "https" in n or "http" in n)
    assert any(after[n].version != before[n].version for n in after)


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_route_ready_blocks_serve_real_traffic(tmp_path: Path, mode: str) -> None:
    with EchoFleet() as fleet:
        backend = fleet.add("shared", "shared-0")
        cp, envoy, probe, cold = cold_start(tmp_path, 5, mode, "bulk", backend.port)
        try:
            assert cold["readyz"] <= cold["all_served"]
            assert [probe.status(f"h{i}.bench.example.com") for i in range(5)] == [200] * 5
            assert probe.status("h5.bench.example.com") == 404  # not written yet
            assert backend.request_count >= 5

            elapsed = new_route_trial(tmp_path / "c1", probe, 5, backend.port)
            assert elapsed > 0
            assert probe.status("h5.bench.example.com") == 200
            wait_settled(cp, timeout=30)
            assert settled(cp)

            parts = breakdown_trial(cp, tmp_path / "c1", probe, 6, backend.port)
            assert probe.status("h6.bench.example.com") == 200
            assert 0 < parts["to_snapshot"] <= parts["to_ack"]
            assert parts["total"] > 0
            assert rds_acked(cp) >= 1
            assert cp.metric("meridian_xds_nacks_total") == 0
            assert cp.peak_rss_kib() > 10_000
            assert envoy.pid is not None and proc_status(envoy.pid)["VmRSS"] > 0
        finally:
            probe.close()
            envoy.stop()
            cp.stop()


def test_envoy_memory_bench_compares_stats_variants(tmp_path: Path) -> None:
    """bench/envoy_memory.py at N=5: each variant's Envoy serves every update; gateway holds fewer stats."""
    from bench import envoy_memory

    out = tmp_path / "mem.json"
    assert envoy_memory.main(["--n", "5", "--variants", "full,gateway", "--rounds", "1", "--trials", "2",
                              "--settle", "0", "--json", str(out)]) == 0  # fmt: skip
    samples = {s["variant"]: s for s in json.loads(out.read_text())["samples"]}
    assert set(samples) == {"full", "gateway"}
    for s in samples.values():
        assert len(s["updates"]) == 2 and all(u > 0 for u in s["updates"])
        assert s["rss_mib"] > 0 and s["memory"]["allocated"] > 0
    # Per Service cluster the gateway set drops most of Envoy's ~115 stats; the fixed ones (server,
    # listeners incl. HTTPS with the default certificate, xDS) are kept by both, so compare the drop.
    assert samples["full"]["stats"] - samples["gateway"]["stats"] > 100 * 5


def test_envoy_memory_bench_experiments_are_configs_envoy_accepts(tmp_path: Path) -> None:
    """The memory experiments (`+option`) start an Envoy that serves; with their own partition count,
    chunk size and version length."""
    from bench import envoy_memory

    out = tmp_path / "mem.json"
    variants = "gateway+eagerclusters+shrinkheap+release16,gateway+nostats+partitions2,gateway+chunk2+version8"
    assert envoy_memory.main(["--n", "5", "--variants", variants, "--rounds", "1", "--trials", "1",
                              "--settle", "0", "--json", str(out)]) == 0  # fmt: skip
    samples = json.loads(out.read_text())["samples"]
    assert [len(s["updates"]) for s in samples] == [1, 1, 1]
    assert samples[1]["stats"] == 0 and samples[0]["stats"] > 0
    assert any("Bytes in use by application" in line for line in samples[0]["tcmalloc"])


def test_envoy_static_memory_bench_measures_each_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/envoy_static_memory.py at N=5: every shape is a bootstrap Envoy starts with."""
    from bench import envoy_static_memory

    assert envoy_static_memory.main(["--n", "5", "--settle", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| clusters", "| vhosts"))]
    assert len(rows) == len(envoy_static_memory.SHAPES) - 1


def test_route_breakdown_bench_takes_each_update_apart(tmp_path: Path) -> None:
    """bench/route_breakdown.py at N=5: both kinds of change are served, and the parts of each trial
    (from the admin API's monotonic timestamps) are in order and add up to no more than the total."""
    from bench import route_breakdown

    out = tmp_path / "bd.json"
    argv = ["--n", "5", "--modes", "delta", "--trials", "2", "--probe-intervals", "0,1", "--json", str(out)]
    assert route_breakdown.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    probes = ["this, probe every 0 ms", "this, probe every 1 ms"]  # alternating trials, one row each
    assert [(r["source"], r["change"]) for r in rows] == [(p, c) for c in ("route", "service") for p in probes]
    assert all(len(r["samples"]) == 2 for r in rows)
    for r in rows:
        for s in r["samples"]:
            assert all(s[p] >= 0 for p in route_breakdown.PARTS), s
            parts = s["to_seen"] + s["seen_to_built"] + s["built_to_sent"] + s["sent_to_200"]
            assert parts == pytest.approx(s["total"])
            at = s["at"]  # the trial's timeline, in order
            path = ["write", "seen", "built", *(["cds_sent", "eds_sent"] if r["change"] == "service" else []),
                    "rds_sent", "ok"]  # fmt: skip
            assert [at[k] for k in path] == sorted(at[k] for k in path), at
            assert s["cpu"]["meridian_main_cpu"] > 0 and s["cpu"]["envoy_main_cpu"] >= 0, s["cpu"]


def test_fanout_bench_clients_follow_every_change(tmp_path: Path) -> None:
    """bench/fanout.py at 3 clients and 5 Services: TLS and plaintext, SotW and Delta clients
    subscribe like gateways, every one gets every EndpointSlice change, the numbers are read."""
    from bench import fanout

    out = tmp_path / "fanout.json"
    assert fanout.main(["--services", "5", "--clients", "3", "--trials", "2", "--timeout", "30",
                        "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert {(r["xds"], r["tls"]) for r in rows} == {("sotw", True), ("delta", True), ("sotw", False), ("delta", False)}
    for r in rows:
        assert r["clients"] == 3 and r["connect_s"] > 0
        assert 0 < r["all_acked_ms"]["p50"] <= r["all_acked_ms"]["p99"]
        assert r["cp_cpu_ms_per_change"] >= 0  # /proc counts 10 ms ticks: a tiny push may read 0


def test_multicluster_cold_starts_alternate_with_another_checkout(tmp_path: Path) -> None:
    """Three fake API servers, two control planes (here both this checkout) started in turn against them."""
    from bench.common import REPO
    from bench.multicluster import main as multicluster

    out = tmp_path / "mc.json"
    multicluster(["--services", "12", "--endpoints", "24", "--envoys", "0", "--rounds", "2",
                  "--compare-with", str(REPO), "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    order = [(c["control_plane"], c["round"]) for c in result["cold_starts"]]
    assert order == [("this", 1), ("before", 1), ("before", 2), ("this", 2)]
    for c in result["cold_starts"]:
        assert c["builds"] >= 1 and c["ready_cpu_s"] > 0 and c["peak_rss_mib"] > 0
    assert result["endpoints"] == 24 and result["per_envoys"] == {}


def test_bench_suite_lists_runnable_steps(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from bench.suite import STEPS
    from bench.suite import main as suite

    assert suite(["--dry-run", "--only", "multicluster,fanout", "--compare-with", "/tmp/x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("--compare-with /tmp/x" in line for line in lines)
    for step in STEPS:
        assert hasattr(importlib.import_module(step.module), "main"), step.module
    with pytest.raises(SystemExit):
        suite(["--dry-run", "--only", "no-such-step"])


def test_envoy_odcds_bench_serves_from_on_demand_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/envoy_odcds.py at N=20: with on-demand CDS Envoy starts with no cluster and serves each used host."""
    from bench import envoy_odcds

    assert envoy_odcds.main(["--n", "20", "--used", "5", "--settle", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"variant"')]
    assert [r["variant"] for r in rows] == ["wildcard", "odcds"]
    assert all(r["first_request"]["p50"] > 0 and r["after_used"]["allocated_mib"] > 0 for r in rows)
