"""What one cluster or one virtual host costs Envoy, measured with static bootstraps.

`bench/envoy_memory.py` measures a whole gateway fed by Meridian; this isolates the pieces. Each
shape is one Envoy started with a static bootstrap of N copies of one thing (no control plane, no
stats: `reject_all`, so only the object itself is counted), read once it is LIVE and has settled:
tcmalloc's allocated bytes (admin /memory) minus those of an empty Envoy, divided by N.

Cluster shapes: `bare` (name, STATIC, one endpoint), `meridian` (the fields Meridian's clusters carry:
connect timeout, locality-weighted LB, panic threshold 0, ignore_health_on_host_removal, a
`ns/name:port` name), `nolb` and `shortname` (`meridian` without the LB config, with a short name),
`meridian+lazy` (with deferred cluster creation), `eds` (Meridian's real cluster: EDS over ADS; the
ADS server is absent, so the clusters come up without endpoints after the initial fetch timeout).
Virtual-host shapes (one listener's inline route table, every route to one cluster): `ns` (one
domain, no retry policy: a north-south host), `ew` (the east-west shape: six domains and the default retry policy),
`ew3` (three domains), `ewnoretry` (six domains, no retry policy).

    .venv/bin/python -m bench.envoy_static_memory --n 10000 --concurrency 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from google.protobuf.json_format import MessageToDict

from bench.common import machine_facts, proc_status
from controlplane.devtools.envoy_proc import EnvoyProcess, free_port
from controlplane.translate.policies.timeouts import default_policy

SHAPES = (
    "empty",
    "clusters:bare",
    "clusters:meridian",
    "clusters:nolb",
    "clusters:shortname",
    "clusters:eds",
    "clusters:meridian+lazy",
    "vhosts:ns",
    "vhosts:ew",
    "vhosts:ew3",
    "vhosts:ewnoretry",
)
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def endpoint(port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


def cluster(i: int, shape: str, port: int) -> dict[str, Any]:
    """`bare`, `meridian`, `eds`; `nolb` / `shortname`: `meridian` without its LB config / with `c<i>` as name."""
    if shape == "bare":
        assignment = {"cluster_name": f"c{i}", "endpoints": [{"lb_endpoints": [endpoint(port)]}]}
        return {"name": f"c{i}", "type": "STATIC", "load_assignment": assignment}
    name = f"c{i}" if shape == "shortname" else f"bench/svc-{i}:80"
    pb: dict[str, Any] = {"name": name, "connect_timeout": "5s", "ignore_health_on_host_removal": True}
    if shape != "nolb":
        pb["common_lb_config"] = {"healthy_panic_threshold": {}, "locality_weighted_lb_config": {}}
    if shape == "eds":
        pb["type"] = "EDS"
        eds_config = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "1s"}
        pb["eds_cluster_config"] = {"eds_config": eds_config, "service_name": name}
    else:
        pb["type"] = "STATIC"
        locality = {"locality": {"zone": "c1"}, "load_balancing_weight": 100, "lb_endpoints": [endpoint(port)]}
        pb["load_assignment"] = {"cluster_name": name, "endpoints": [locality]}
    return pb


def vhost(i: int, shape: str) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "c0", "timeout": "0s", "idle_timeout": "60s"},
             "name": f"bench/svc-{i}:80"}  # fmt: skip
    if shape == "ns":
        return {"name": f"h{i}", "domains": [f"h{i}.bench.example.com"], "routes": [route]}
    names = [f"svc-{i}.bench", f"svc-{i}.bench.svc", f"svc-{i}.bench.svc.cluster.local"]
    domains = names if shape == "ew3" else names + [f"{n}:80" for n in names]
    vh: dict[str, Any] = {"name": f"bench/svc-{i}:80", "domains": domains, "routes": [route]}
    if shape != "ewnoretry":
        vh["retry_policy"] = MessageToDict(default_policy(), preserving_proto_field_name=True)
    return vh


def bootstrap(shape: str, n: int, port: int) -> dict[str, Any]:
    kind, _, variant = shape.partition(":")
    variant, _, option = variant.partition("+")
    boot: dict[str, Any] = {
        "node": {"id": "probe", "cluster": "probe"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": {"stats_matcher": {"reject_all": True}},
        "static_resources": {"clusters": [cluster(0, "bare", port)]},
    }
    if kind == "clusters":
        boot["static_resources"]["clusters"] += [cluster(i, variant, port) for i in range(1, n + 1)]
        if variant == "eds":  # an ADS server that is not there: EDS clusters initialise empty
            boot["dynamic_resources"] = {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                         "grpc_services": [{"envoy_grpc": {"cluster_name": "c0"}}]}}  # fmt: skip
            boot["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        if option == "lazy":
            boot["cluster_manager"] = {"enable_deferred_cluster_creation": True}
    elif kind == "vhosts":
        routes = {"name": "probe", "validate_clusters": False, "virtual_hosts": [vhost(i, variant) for i in range(n)]}
        router = {"name": "router", "typed_config": {"@type": ROUTER}}
        hcm = {"@type": HCM, "stat_prefix": "probe", "http_filters": [router], "route_config": routes}
        boot["static_resources"]["listeners"] = [{
            "name": "probe",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
        }]  # fmt: skip
    return boot


def measure(shape: str, n: int, concurrency: int, settle: float) -> dict[str, float]:
    boot = bootstrap(shape, n, free_port())
    envoy = EnvoyProcess(boot, log_level="error", concurrency=concurrency, ready_timeout=300)
    t0 = time.monotonic()
    with envoy:
        ready_s = time.monotonic() - t0
        time.sleep(settle)
        assert envoy.pid is not None
        memory = json.loads(envoy.admin_get("/memory"))
        return {
            "ready_s": round(ready_s, 2),
            "rss_mib": round(proc_status(envoy.pid)["VmRSS"] / 1024, 1),
            "allocated_mib": round(int(memory["allocated"]) / 2**20, 1),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Envoy's memory per cluster and per virtual host (static bootstraps)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--settle", type=float, default=3.0)
    args = p.parse_args(argv)
    results = {shape: measure(shape, 0 if shape == "empty" else args.n, args.concurrency, args.settle)
               for shape in args.shapes.split(",")}  # fmt: skip
    base = results.get("empty", {"allocated_mib": 0.0})["allocated_mib"]
    print(json.dumps(machine_facts() | {"load_avg": os.getloadavg(), "n": args.n, "concurrency": args.concurrency}))
    print("| shape | ready s | RSS MiB | allocated MiB | per item KiB (allocated, over empty) |")
    print("|---|---|---|---|---|")
    for shape, r in results.items():
        per = 0.0 if shape == "empty" else (r["allocated_mib"] - base) * 1024 / args.n
        print(f"| {shape} | {r['ready_s']:.1f} | {r['rss_mib']:.0f} | {r['allocated_mib']:.1f} | {per:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
