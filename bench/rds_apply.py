"""How long Envoy takes to apply one RouteConfiguration of N virtual hosts, by route-table shape.

Pushes a table over ADS (in-process SnapshotCache + XdsServer, one real Envoy) and times
cache.apply -> Envoy's ACK of that RDS version. Variants differ only in the shape and place of
the default retry policy (none, per virtual host with various matchers, per route with a regex),
so the ratios show what each costs Envoy; `vhost-default` is what Meridian emits:

    .venv/bin/python -m bench.rds_apply --hosts 10000 --trials 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.bootstrap import render_bootstrap
from controlplane.devtools.envoy_proc import EnvoyProcess, free_port
from controlplane.ir.policies import DEFAULT_RETRIES
from controlplane.metrics import Metrics
from controlplane.translate.listeners import http_listener
from controlplane.translate.policies.timeouts import default_policy, retry_policy
from controlplane.xds import resources as rt
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache, make_resource
from controlplane.xds.server import XdsServer


def _regex_policy() -> rc_pb2.RetryPolicy:
    """The per-route policy Meridian used to emit: a regex method exclusion on every route."""
    rp = retry_policy(DEFAULT_RETRIES, None)
    del rp.retriable_request_headers[:]
    h = rp.retriable_request_headers.add(name=":method", invert_match=True)
    h.string_match.safe_regex.regex = "POST|LOCK|PATCH"
    return rp


def table(n: int, variant: str, generation: int) -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name="http", ignore_port_in_host_matching=True)
    vhost_policy = retry_policy(DEFAULT_RETRIES, None)
    route_policy = _regex_policy()
    meridian_default = default_policy()
    for i in range(n):
        vh = rc.virtual_hosts.add(name=f"h{i}", domains=[f"h{i}.g{generation}.bench.example.com"])
        r = vh.routes.add(name=f"r{i}")
        r.match.prefix = "/"
        r.route.cluster = "none"  # forwarding routes, as Meridian emits (the cluster need not exist)
        if variant == "route-regex":
            r.route.retry_policy.CopyFrom(route_policy)
        elif variant == "vhost-exact":
            vh.retry_policy.CopyFrom(vhost_policy)
        elif variant == "vhost-no-methods":
            vh.retry_policy.CopyFrom(vhost_policy)
            del vh.retry_policy.retriable_request_headers[:]
        elif variant == "vhost-default":  # what Meridian emits today
            vh.retry_policy.CopyFrom(meridian_default)
        elif variant == "vhost-bare":
            vh.retry_policy.retry_on = "connect-failure,refused-stream"
            vh.retry_policy.num_retries.value = 2
    return rc


async def run(n: int, trials: int) -> dict[str, list[float]]:
    cache, metrics = SnapshotCache(), Metrics()
    port = free_port()
    cache.apply(
        {
            rt.LISTENER: {
                "http": make_resource("http", rt.LISTENER, http_listener("http", "127.0.0.1", port, "http", []))
            },
            rt.ROUTE: {"http": make_resource("http", rt.ROUTE, table(1, "plain", 0))},
            rt.CLUSTER: {},
        }
    )
    cache.ready = True
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=True))  # in-process loopback bench
    xds_port = await server.start("127.0.0.1:0")
    variants = ("plain", "vhost-bare", "vhost-default", "vhost-no-methods", "vhost-exact", "route-regex")
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        boot = render_bootstrap(xds_address=f"127.0.0.1:{xds_port}", node_id="rds-bench", delta=False)
        envoy = EnvoyProcess(boot, workdir=Path(tmp))
        envoy.start()
        await asyncio.to_thread(envoy.wait_ready, 60)
        generation = 0
        for _ in range(trials):
            for variant in results:  # interleaved, so machine load hits every variant alike
                generation += 1
                res = make_resource("http", rt.ROUTE, table(n, variant, generation))
                started = time.perf_counter()
                version = cache.apply({rt.ROUTE: {"http": res}})
                want = cache.get(rt.ROUTE).digest  # what Envoy is told, and ACKs
                while True:
                    streams = server.syncz()
                    acked = streams and streams[0]["types"].get("RDS", {}).get("acked_version")
                    if acked == want:
                        break
                    if time.perf_counter() - started > 120:
                        raise TimeoutError(f"RDS {version} never ACKed")
                    await asyncio.sleep(0.001)
                results[variant].append((time.perf_counter() - started) * 1000)
        envoy.stop()
    await server.stop()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=10000)
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    results = asyncio.run(run(args.hosts, args.trials))
    base = statistics.median(results["vhost-default"])
    print(f"{args.hosts} virtual hosts, {args.trials} trials, push -> Envoy ACK (ms):")
    for variant, times in results.items():
        med = statistics.median(times)
        print(f"  {variant:12s} median {med:8.1f}  max {max(times):8.1f}  ratio to vhost-default {med / base:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
