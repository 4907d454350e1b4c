"""`meridian bootstrap`'s memory settings: workers build their copy of a cluster on first use.

With `cluster_manager.enable_deferred_cluster_creation` a worker thread creates its copy of a
cluster (load balancer, host sets) only when a request there first needs it. What could break:
a worker that built a cluster must still follow its endpoint changes, one that never built it must
build it from the current endpoints, and a brand-new Service must be served by every worker. A real
Envoy with two workers (as a 2-core production gateway runs) gets the bootstrap `meridian bootstrap`
prints and is checked on each of those, on both workers.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

WORKERS = 2


def served_on_every_worker(gw: Gateway, envoy: EnvoyProcess, host: str, pod: str) -> bool:
    """Fresh connections until each worker has accepted one since now; all of them answered by `pod`."""
    listener = f"listener.127.0.0.1_{gw.http_port}"
    before = [envoy.stat(f"{listener}.worker_{w}.downstream_cx_total") for w in range(WORKERS)]
    for _ in range(200):
        r = gw.get(host, "/")
        if r.status != 200 or r.json().get("pod") != pod:
            return False
        now = [envoy.stat(f"{listener}.worker_{w}.downstream_cx_total") for w in range(WORKERS)]
        if all(n > b for n, b in zip(now, before, strict=True)):
            return True
    raise AssertionError(f"the kernel never gave worker connections to both workers: {before} -> {now}")


def test_lazily_built_clusters_follow_endpoints_on_every_worker(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(envoy=False).start()
    used, idle = gw.backend("used"), gw.backend("idle")
    gw.write("ing.yaml", [ingress("apps", [rule("used.example.com", ("/", "Prefix", "used", 80)),
                                           rule("idle.example.com", ("/", "Prefix", "idle", 80))])])  # fmt: skip
    envoy = EnvoyProcess(gw.bootstrap("gw-lazy"), workdir=gw.root / "envoy-lazy", concurrency=WORKERS)
    try:
        envoy.start().wait_ready(30)
        dumps = envoy.config_dump()["configs"]
        got = next(c["bootstrap"] for c in dumps if c["@type"].endswith(".BootstrapConfigDump"))
        assert got["cluster_manager"]["enable_deferred_cluster_creation"] is True

        # `used` is built on both workers; `idle` on none.
        wait_until(lambda: served_on_every_worker(gw, envoy, "used.example.com", used[0].pod), timeout=20,
                   message="used not served on both workers")  # fmt: skip

        # New endpoints for both: the built copies must follow, the unbuilt one must start from them.
        used2 = gw.fleet.add(service="used", pod="used-c1-new")
        idle2 = gw.fleet.add(service="idle", pod="idle-c1-new")
        gw.publish("used", [used2])
        gw.publish("idle", [idle2])
        wait_until(lambda: served_on_every_worker(gw, envoy, "used.example.com", used2.pod), timeout=20,
                   message="a worker's built cluster kept its old endpoint")  # fmt: skip
        wait_until(lambda: served_on_every_worker(gw, envoy, "idle.example.com", idle2.pod), timeout=20,
                   message="a cluster first built after its endpoints changed has the old ones")  # fmt: skip
        assert idle[0].pod != idle2.pod

        # A brand-new Service with its route: every worker builds it on its first request.
        fresh = gw.backend("fresh")
        gw.write("fresh.yaml", [ingress("fresh", [rule("fresh.example.com", ("/", "Prefix", "fresh", 80))])])
        wait_until(lambda: served_on_every_worker(gw, envoy, "fresh.example.com", fresh[0].pod), timeout=20,
                   message="a new Service not served on both workers")  # fmt: skip
    finally:
        envoy.stop()
