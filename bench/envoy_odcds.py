"""Envoy's on-demand CDS in isolation: Envoy holding only the clusters its traffic asked for.

The prototype behind `meridian bootstrap --clusters on-demand` (bench/envoy_memory.py `+ondemand`
measures the feature itself), kept to measure Envoy's side alone. Meridian's own xDS server (in
process, plaintext, ADS) serves N EDS clusters and their assignments. One Envoy, two workers, has a
static route table of N hosts (host i -> cluster i) plus one host whose route names a cluster that
does not exist, and is one of
  `wildcard`: a wildcard CDS subscription, no on_demand filter (Meridian's listeners before it);
  `wildcard+filter`: the same with Envoy's `on_demand` filter before the router (what an eager gateway
  runs now: every cluster is there, so the filter only looks the route's cluster up);
  `odcds`: no CDS subscription; the `on_demand` filter fetches a route's cluster over ADS (named Delta
  CDS, then its EDS) when a request first needs it.
`+sotw` on a wildcard variant: State-of-the-World ADS instead of Delta.
Reported: RSS and tcmalloc's allocated bytes once settled, then after requests to `--used` hosts
(their first request each, timed: the on-demand fetch is in it), a second request to each, Envoy's
CPU per request, the time a request to the missing cluster takes to fail, and what Meridian then
holds as the stream's CDS subscription (wildcard still, the missing name added) and how many
clusters Envoy holds after it.

    .venv/bin/python -m bench.envoy_odcds --n 10000 --used 1000
    .venv/bin/python -m bench.envoy_odcds --n 2000 --used 2000 --variants wildcard,wildcard+filter --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import duration_pb2

from bench.common import HostProbe, machine_facts, proc_status, summary_ms
from controlplane.devtools.echo import EchoFleet
from controlplane.devtools.envoy_proc import EnvoyProcess, free_port
from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache, make_resource
from controlplane.xds.resources import CLUSTER, ENDPOINT
from controlplane.xds.server import XdsServer

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def name(i: int) -> str:
    return f"bench/svc-{i}:80"


def snapshot(n: int, port: int) -> dict[str, dict[str, Any]]:
    ads = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                         resource_api_version=config_source_pb2.V3)  # fmt: skip
    clusters, assignments = {}, {}
    for i in range(n):
        c = cluster_pb2.Cluster(name=name(i), type=cluster_pb2.Cluster.EDS,
                                connect_timeout=duration_pb2.Duration(seconds=5),
                                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads))  # fmt: skip
        addr = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))
        ep = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=addr))
        cla = endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name(i), endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[ep])])
        clusters[name(i)] = make_resource(name(i), CLUSTER, c)
        assignments[name(i)] = make_resource(name(i), ENDPOINT, cla)
    return {CLUSTER: clusters, ENDPOINT: assignments}


MISSING_HOST = "missing.bench.example.com"


def bootstrap(variant: str, n: int, xds_port: int, http_port: int) -> dict[str, Any]:
    ads = {"resource_api_version": "V3", "ads": {}}
    filters: list[dict[str, Any]] = []
    if variant.startswith(("odcds", "wildcard+filter")):
        filters.append({"name": "envoy.filters.http.on_demand", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand",
            "odcds": {"source": ads, "timeout": "5s"}}})  # fmt: skip
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})  # fmt: skip
    vhosts = [{"name": f"h{i}", "domains": [f"h{i}.bench.example.com"],
               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name(i)}}]} for i in range(n)]  # fmt: skip
    vhosts.append({"name": "missing", "domains": [MISSING_HOST],
                   "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "bench/none:80"}}]})  # fmt: skip
    hcm = {"@type": HCM, "stat_prefix": "http", "http_filters": filters,
           "route_config": {"name": "local", "validate_clusters": False, "virtual_hosts": vhosts}}  # fmt: skip
    api_type = "GRPC" if variant.endswith("+sotw") else "DELTA_GRPC"
    dynamic: dict[str, Any] = {"ads_config": {"api_type": api_type, "transport_api_version": "V3",
                                              "set_node_on_first_message_only": True,
                                              "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}}  # fmt: skip
    if variant.startswith("wildcard"):
        dynamic["cds_config"] = ads
    xds = {"name": "xds", "type": "STATIC", "connect_timeout": "1s",
           "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
               "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
               "explicit_http_config": {"http2_protocol_options": {}}}},
           "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
               "socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}]}}  # fmt: skip
    return {
        "node": {"id": f"odcds-{variant}", "cluster": "meridian-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": dynamic,
        "static_resources": {"clusters": [xds], "listeners": [{
            "name": "http", "address": {"socket_address": {"address": "127.0.0.1", "port_value": http_port}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}]},
        "stats_config": {"stats_matcher": {"reject_all": True}},
        "cluster_manager": {"enable_deferred_cluster_creation": True},
    }


class Server:
    """Meridian's XdsServer on a loop of its own thread."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.loop = asyncio.new_event_loop()
        metrics = Metrics()
        self.server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=True))
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1:0"), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def memory(envoy: EnvoyProcess) -> dict[str, float]:
    assert envoy.pid is not None
    allocated = int(json.loads(envoy.admin_get("/memory"))["allocated"]) / 2**20
    return {"rss_mib": round(proc_status(envoy.pid)["VmRSS"] / 1024, 1), "allocated_mib": round(allocated, 1)}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(variant: str, n: int, used: int, server: Server, settle: float) -> dict[str, Any]:
    xds_port = server.port
    http_port = free_port()
    envoy = EnvoyProcess(bootstrap(variant, n, xds_port, http_port), log_level="error", concurrency=2,
                         ready_timeout=300)  # fmt: skip
    probe = HostProbe(http_port, timeout=15)
    out: dict[str, Any] = {"variant": variant}
    try:
        t0 = time.monotonic()
        envoy.start()
        if variant.startswith("wildcard"):  # every cluster up front: wait for all of them (stats are off)
            deadline = time.monotonic() + 300
            while envoy.admin_get("/clusters", timeout=60).count("::added_via_api::true") < n:
                assert time.monotonic() < deadline, "clusters never all arrived"
                time.sleep(0.5)
        out["ready_s"] = round(time.monotonic() - t0, 2)
        time.sleep(settle)
        out["start"] = memory(envoy)
        first, second = [], []
        assert envoy.pid is not None
        cpu0 = cpu_seconds(envoy.pid)
        for i in range(used):
            for into in (first, second):
                t = time.monotonic()
                status = probe.status(f"h{i}.bench.example.com")
                into.append(time.monotonic() - t)
                assert status == 200, f"h{i}: {status}"
        out["envoy_cpu_us_per_request"] = round((cpu_seconds(envoy.pid) - cpu0) * 1e6 / (2 * used), 1)
        time.sleep(settle)
        out["after_used"] = memory(envoy)
        out["first_request"], out["second_request"] = summary_ms(first), summary_ms(second)
        t = time.monotonic()
        out["missing_status"] = probe.status(MISSING_HOST)
        out["missing_ms"] = round((time.monotonic() - t) * 1000, 1)
        time.sleep(settle)  # what Meridian answered the new subscription with has been applied
        out["clusters_after_missing"] = envoy.admin_get("/clusters", timeout=60).count("::added_via_api::true")
        streams = [s for s in server.server.syncz() if s["node_id"] == f"odcds-{variant}"]
        if streams:
            cds = streams[0]["types"].get("CDS", {})
            out["cds_subscription"] = {"wildcard": cds.get("wildcard"), "names": cds.get("subscribed")}
    finally:
        probe.close()
        envoy.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Envoy memory with on-demand CDS against every cluster up front")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--used", type=int, default=1000, help="hosts requested (their clusters fetched)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--variants", default="wildcard,odcds", help="of wildcard, wildcard+filter, odcds (+sotw)")
    args = p.parse_args(argv)
    fleet = EchoFleet()
    backend = fleet.add("shared", "shared-0")
    cache = SnapshotCache()
    cache.apply(snapshot(args.n, backend.port))
    cache.ready = True
    server = Server(cache)
    results = []
    try:
        for _ in range(args.rounds):
            for variant in args.variants.split(","):
                results.append(measure(variant, args.n, args.used, server, args.settle))
                print(json.dumps(results[-1]), flush=True)
    finally:
        server.close()
        fleet.close()
    print(json.dumps(machine_facts() | {"load_avg": os.getloadavg(), "n": args.n, "used": args.used}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
