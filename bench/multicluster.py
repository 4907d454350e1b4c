"""Kubernetes mode at scale: three fake API servers, time to ready, peak RSS, endpoint-change latency.

Three FakeKube clusters (the primary plus two remotes registered by kubeconfig Secrets) hold
N Ingresses, N Services and E endpoints in total (Service i, its Ingress and one EndpointSlice of
E/N endpoints live in cluster i % 3). `meridian serve --kubeconfig` runs as a subprocess; this
measures start -> `/readyz`, start -> every cluster synced and every Service's endpoints in the
snapshot, the control plane's peak RSS (VmHWM), and then, with 1 and with K Envoys connected,
EndpointSlice change (written to the fake API server) -> every Envoy ACKed the new EDS version
(seen in `/debug/syncz`, polled every ~1 ms).

`--compare-with DIR` starts another checkout (e.g. `git archive` of an older commit) against the
same API servers, alternating with this one for `--rounds` rounds: before/after in one run.
`--envoys 0` measures the cold starts only; `--build-only ROUNDS` times just the controller's cold build
of the same objects in-process (run it from each checkout, alternating, for a before/after).

    .venv/bin/python -m bench.multicluster --services 10000 --endpoints 100000 --envoys 1,10 --trials 30
    .venv/bin/python -m bench.multicluster --envoys 0 --rounds 3 --compare-with /tmp/before
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, ControlPlane, machine_facts, proc_status, start_envoy, summary_ms, wait_for
from controlplane.devtools.envoy_proc import EnvoyProcess
from controlplane.remote_secret import create_remote_secret
from tests.fakekube import FakeKube

NS = "bench"
MERIDIAN_NS = "meridian-system"
CLUSTERS = ("c1", "c2", "c3")  # c1 is the primary


class KubeControlPlane(ControlPlane):
    """`meridian serve --kubeconfig primary.kubeconfig` instead of a manifest directory."""

    def __init__(self, kubeconfig: Path, log_path: Path, source: Path = REPO) -> None:
        super().__init__(kubeconfig.parent, log_path, ["--namespace", MERIDIAN_NS, "--cluster-id", CLUSTERS[0]],
                         source=source)  # fmt: skip
        self.kubeconfig = kubeconfig

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("--cluster")
        argv[i : i + 2] = ["--kubeconfig", str(self.kubeconfig)]
        return [argv[0], "-m", "controlplane", "--log-level", "warning", *argv[3:]]


def slice_for(i: int, per: int, generation: int = 0) -> dict[str, Any]:
    """EndpointSlice of Service i: `per` endpoints at fake addresses (nothing needs to listen)."""
    eps = [
        {"addresses": [f"10.{(i >> 8) & 255}.{i & 255}.{(j + generation) % 250 + 1}"], "conditions": {"ready": True}}
        for j in range(per)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"svc-{i}-abc", "namespace": NS, "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }


def objects_for(i: int, per: int) -> list[dict[str, Any]]:
    svc = f"svc-{i}"
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": NS},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        slice_for(i, per),
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": f"ing-{i}", "namespace": NS},
         "spec": {"rules": [{"host": f"h{i}.bench.example.com", "http": {"paths": [
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}},
    ]  # fmt: skip


def streams_acked_eds(cp: ControlPlane) -> list[str | None]:
    """Each stream's ACKed EDS version, or None while that stream has something in flight."""
    out: list[str | None] = []
    for s in cp.admin_json("/debug/syncz"):
        t = s["types"].get("EDS") or {}
        pending = t.get("pending") or t.get("acked_version") != t.get("sent_version")
        out.append(None if pending else t.get("acked_version"))
    return out


def converged(cp: ControlPlane, n_envoys: int) -> bool:
    """All Envoys connected and every stream ACKed everything it was sent."""
    streams = cp.admin_json("/debug/syncz")
    if len(streams) != n_envoys:
        return False
    return all(not t.get("pending") and t.get("acked_version") == t.get("sent_version")
               for s in streams for t in s["types"].values())  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """user + system CPU time a process has used (load-independent, unlike wall time)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def cold_start(cp: KubeControlPlane, n: int, profile: str | None = None) -> dict[str, Any]:
    """Start -> `/readyz`, every cluster synced, every Service's endpoints in the snapshot; CPU and RSS."""
    out: dict[str, Any] = {"loadavg_before": round(os.getloadavg()[0], 2)}
    cp.start()
    spy = None
    if profile:  # sample every thread of the control plane until it is ready (py-spy on PATH)
        # A .json file: speedscope with idle samples too, so each thread's samples form a timeline.
        fmt = ["--format", "speedscope", "--idle"] if profile.endswith(".json") else ["--format", "raw"]
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(cp.pid), *fmt, "--threads",
                                "--nonblocking", "--rate", "200", "-o", profile],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(cp.ready, timeout=300, interval=0.02, what="/readyz")
    out["ready_s"] = round(time.monotonic() - cp.started_at, 2)
    out["ready_cpu_s"] = cpu_seconds(cp.pid)
    out["builds"] = int(cp.metric("meridian_build_duration_seconds_count"))  # batches built until ready
    out["build_s"] = round(cp.metric("meridian_build_duration_seconds_sum"), 2)

    def all_synced() -> bool:
        states = {c["cluster"]: c.get("state") for c in cp.admin_json("/debug/clusters")}
        return all(states.get(cid) == "synced" for cid in CLUSTERS)

    wait_for(all_synced, timeout=300, interval=0.05, what="all clusters synced")
    out["all_clusters_synced_s"] = round(time.monotonic() - cp.started_at, 2)
    wait_for(lambda: len(cp.admin_json("/debug/snapshot")["types"]["EDS"]["resources"]) >= n,
             timeout=300, interval=1.0, what="every Service's endpoints in the snapshot")  # fmt: skip
    out["all_endpoints_in_snapshot_s"] = round(time.monotonic() - cp.started_at, 2)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    out["rss_after_sync_mib"] = round(proc_status(cp.pid)["VmRSS"] / 1024, 1)
    out["peak_rss_mib"] = round(cp.peak_rss_kib() / 1024, 1)
    out["loadavg_after"] = round(os.getloadavg()[0], 2)
    return out


def in_process_builds(n: int, per: int, rounds: int) -> list[float]:
    """CPU seconds of the controller's cold build of the same objects, in this process (no API servers,
    no sockets): three stores filled as the sources would, then one flush. Isolates the build."""
    import gc

    import orjson

    from controlplane.controller import Controller, GatewayConfig
    from controlplane.ingress.classes import ClassPolicy
    from controlplane.metrics import Metrics
    from controlplane.store import ClusterRegistry, ClusterStore
    from controlplane.xds.cache import SnapshotCache

    per_cluster: dict[str, dict[str, list[dict[str, Any]]]] = {cid: {} for cid in CLUSTERS}
    for i in range(n):
        for obj in objects_for(i, per):  # as parsed from a list page: fresh dicts, no shared parts
            per_cluster[CLUSTERS[i % len(CLUSTERS)]].setdefault(obj["kind"], []).append(orjson.loads(orjson.dumps(obj)))
    seconds = []
    for _ in range(rounds):
        registry = ClusterRegistry()
        ctl = Controller(registry, SnapshotCache(), Metrics(), GatewayConfig(classes=ClassPolicy(frozenset(), True)))
        registry.subscribe(ctl._on_event)  # no event loop: flushed by hand
        for cid, kinds in per_cluster.items():
            store = registry.add(ClusterStore(cid, primary=cid == CLUSTERS[0]))
            for kind, items in kinds.items():
                store.replace(kind, items)
            store.mark_synced()
        gc.disable()  # as during the real cold build
        started = time.process_time()
        ctl.flush()
        seconds.append(round(time.process_time() - started, 3))
        gc.enable()
        del ctl, registry
        gc.collect()
    return seconds


def populate(kubes: dict[str, FakeKube], n: int, per: int) -> None:
    for i in range(n):
        fk = kubes[CLUSTERS[i % len(CLUSTERS)]]
        for obj in objects_for(i, per):
            fk.apply(obj)
    for cid in CLUSTERS[1:]:
        kubes[CLUSTERS[0]].apply(yaml.safe_load(create_remote_secret(kubes[cid].kubeconfig(), cid, MERIDIAN_NS)))


def forget_control_plane(primary: FakeKube) -> None:
    """Delete what a previous control plane wrote to the primary (its history ConfigMaps, its Lease), so
    every cold start in a run finds the cluster as the first one did."""
    for kind in ("ConfigMap", "Lease"):
        for obj in primary.objects(kind):
            meta = obj["metadata"]
            if meta.get("namespace") == MERIDIAN_NS and meta["name"].startswith("meridian-"):
                primary.delete(kind, MERIDIAN_NS, meta["name"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, total_eps = args.services, args.endpoints
    per = max(1, total_eps // n)
    work = Path(tempfile.mkdtemp(prefix="bench-multicluster-"))
    kubes = {cid: FakeKube(bookmark_interval=1.0, history_size=2000).start() for cid in CLUSTERS}
    result: dict[str, Any] = {"machine": machine_facts(), "loadavg_at_start": os.getloadavg(), "services": n,
                              "ingresses": n, "endpoints": per * n, "clusters": len(CLUSTERS),
                              "per_envoys": {}}  # fmt: skip
    t = time.perf_counter()
    populate(kubes, n, per)
    result["populate_s"] = round(time.perf_counter() - t, 2)
    print(f"populated {n} services / {per * n} endpoints in {result['populate_s']} s", file=sys.stderr)

    kubeconfig = work / "primary.kubeconfig"
    kubes[CLUSTERS[0]].kubeconfig(str(kubeconfig))
    sources = [("this", REPO)] + ([("before", args.compare_with.resolve())] if args.compare_with else [])
    for _label, source in sources:  # as installed (the image's pip install compiles it): no start compiles it
        compileall.compile_dir(source / "controlplane", quiet=1)
    cold: list[dict[str, Any]] = []
    cp: KubeControlPlane | None = None
    envoys: list[EnvoyProcess] = []
    try:
        for r in range(args.rounds):  # alternate which side starts first, so neither always meets the same load
            order = sources if r % 2 == 0 else sources[::-1]
            if r == args.rounds - 1 and args.envoys:
                order = sorted(order, key=lambda side: side[0] == "this")  # it stays up for the Envoys: last
            for label, source in order:
                forget_control_plane(kubes[CLUSTERS[0]])
                cp = KubeControlPlane(kubeconfig, work / f"meridian-{label}-{r}.log", source)
                profile = args.profile if (label, r) == ("this", 0) else None
                row = {"control_plane": label, "round": r + 1, **cold_start(cp, n, profile)}
                cold.append(row)
                print(f"{label} round {r + 1}: ready {row['ready_s']} s ({row['ready_cpu_s']} s CPU), "
                      f"all synced {row['all_clusters_synced_s']} s, peak RSS {row['peak_rss_mib']} MiB, "
                      f"load {row['loadavg_before']} -> {row['loadavg_after']}", file=sys.stderr)  # fmt: skip
                if label == "this" and r == args.rounds - 1 and args.envoys:
                    break  # this control plane goes on to the Envoy part below
                cp.stop()
                cp = None
        result["cold_starts"] = cold
        this = [c for c in cold if c["control_plane"] == "this"]
        for key in ("ready_s", "ready_cpu_s", "all_clusters_synced_s", "all_endpoints_in_snapshot_s",
                    "rss_after_sync_mib"):  # fmt: skip
            result[key] = sorted(c[key] for c in this)[len(this) // 2]  # the median of this side's rounds
        result["cp_peak_rss_mib"] = max(c["peak_rss_mib"] for c in this)
        if cp is None:
            result["loadavg_at_end"] = os.getloadavg()
            return result

        rng = random.Random(7)
        generation = 0
        for count in args.envoys:
            while len(envoys) < count:
                envoys.append(start_envoy(cp, work / f"envoy-{len(envoys)}", delta=args.delta,
                                          node_id=f"bench-{len(envoys)}"))  # fmt: skip
            t = time.monotonic()
            wait_for(lambda c=count: converged(cp, c), timeout=600, interval=0.5, what=f"{count} Envoys converged")
            initial = round(time.monotonic() - t, 2)
            lat: list[float] = []
            conv0 = (cp.metric("meridian_convergence_seconds_sum"),
                     cp.metric("meridian_convergence_seconds_count"))
            build0 = (cp.metric("meridian_build_duration_seconds_sum"),
                      cp.metric("meridian_build_duration_seconds_count"))  # fmt: skip
            for _ in range(args.warmup + args.trials):
                before = set(streams_acked_eds(cp))
                i = rng.randrange(n)
                generation += 1
                fk = kubes[CLUSTERS[i % len(CLUSTERS)]]
                t0 = time.perf_counter()
                fk.apply(slice_for(i, per, generation))

                def acked(b: set[str | None] = before, c: KubeControlPlane = cp) -> bool:
                    v = streams_acked_eds(c)
                    return None not in v and not (set(v) & b)

                try:
                    wait_for(acked, timeout=30, interval=0.001, what="EDS ACK")
                except TimeoutError:
                    eds = [s["types"].get("EDS") for s in cp.admin_json("/debug/syncz")]
                    version = cp.admin_json("/debug/snapshot")["types"]["EDS"]["version"]
                    msg = f"no EDS ACK for svc-{i}: before={before} cache={version} streams={eds}"
                    raise TimeoutError(msg) from None
                lat.append(time.perf_counter() - t0)
                time.sleep(0.05)  # let the last ACK's bookkeeping settle before the next trial
            lat = lat[args.warmup :]
            conv = (cp.metric("meridian_convergence_seconds_sum") - conv0[0],
                    cp.metric("meridian_convergence_seconds_count") - conv0[1])
            build = (cp.metric("meridian_build_duration_seconds_sum") - build0[0],
                     cp.metric("meridian_build_duration_seconds_count") - build0[1])  # fmt: skip
            nacks = [t["last_nack"] for s in cp.admin_json("/debug/syncz") for t in s["types"].values()
                     if t.get("last_nack")]  # fmt: skip
            result["per_envoys"][str(count)] = {
                "initial_convergence_s": initial,
                "endpoint_change_ack_ms": summary_ms(lat),
                "trials": len(lat),
                # The control plane's own view over all trials (incl. warm-up): store event seen -> all ACKed,
                # and the build (events -> new snapshot) part of it. The rest is watch delivery and polling.
                "cp_seen_to_all_acked_mean_ms": round(1000 * conv[0] / conv[1], 1) if conv[1] else None,
                "cp_build_mean_ms": round(1000 * build[0] / build[1], 1) if build[1] else None,
                "nacks": nacks,
                "envoy_rss_mib": [round(proc_status(e.pid)["VmRSS"] / 1024) for e in envoys if e.pid],
            }
            print(f"{count} envoys: initial convergence {initial} s, endpoint change -> all ACKed "
                  f"{summary_ms(lat)} ms", file=sys.stderr)  # fmt: skip
        result["cp_peak_rss_mib"] = max(result["cp_peak_rss_mib"], round(cp.peak_rss_kib() / 1024, 1))
        result["loadavg_at_end"] = os.getloadavg()
        lat_all = [v for v in (result["per_envoys"].get(str(c)) for c in args.envoys) if v]
        result["p99_max_ms"] = max((v["endpoint_change_ack_ms"]["p99"] for v in lat_all), default=None)
    finally:
        for e in envoys:
            e.stop()
        if cp is not None:
            cp.stop()
        for fk in kubes.values():
            fk.close()
    return result


def markdown(cold: list[dict[str, Any]]) -> str:
    """The cold starts as a table, in the order they ran."""
    head = ("| control plane | round | /readyz s | CPU s at ready | builds | build s | all synced s | peak RSS MiB "
            "| load before -> after |")  # fmt: skip
    lines = [head]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for c in cold:
        lines.append(f"| {c['control_plane']} | {c['round']} | {c['ready_s']} | {c['ready_cpu_s']} | {c['builds']} | "
                     f"{c['build_s']} | {c['all_clusters_synced_s']} | {c['peak_rss_mib']} | "
                     f"{c['loadavg_before']} -> {c['loadavg_after']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10000, help="Services and Ingresses in total")
    p.add_argument("--endpoints", type=int, default=100000, help="endpoints in total")
    p.add_argument("--envoys", type=lambda s: [int(x) for x in s.split(",") if x.strip() and int(x)], default=[1, 10],
                   help="Envoy counts to measure endpoint changes with (0: cold start only)")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--delta", action="store_true", help="Envoys use Delta ADS")
    p.add_argument("--rounds", type=int, default=1, help="cold starts per control plane, alternating")
    p.add_argument("--compare-with", metavar="DIR", type=Path, help="another checkout, its cold starts interleaved")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--profile", metavar="FILE", help="py-spy (collapsed stacks) of the control plane until synced")
    p.add_argument("--build-only", type=int, metavar="ROUNDS",
                   help="only time the controller's cold build of the same objects in-process, ROUNDS times")
    args = p.parse_args(argv)
    if args.build_only:
        seconds = in_process_builds(args.services, max(1, args.endpoints // args.services), args.build_only)
        print(json.dumps({"cold_build_cpu_s": seconds, "min": min(seconds), "source": str(REPO)}))
        return 0
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print(markdown(result.get("cold_starts", [])))
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = (result.get("ready_s", 1e9) <= 5 and result.get("cp_peak_rss_mib", 1e9) <= 1024
          and (not args.envoys or (result.get("p99_max_ms") or 1e9) <= 50))  # fmt: skip
    print("targets (ready <= 5 s, RSS <= 1 GiB, p99 <= 50 ms):", "met" if ok else "MISSED", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
