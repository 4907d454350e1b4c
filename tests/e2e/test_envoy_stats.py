"""`meridian bootstrap --envoy-stats`: the gateway set keeps what dashboards read, drops the rest.

A real Envoy gets the default (gateway) bootstrap and serves a request; its admin API and its
Prometheus endpoint still show request, latency, endpoint-health and xDS stats, while the per-cluster
families nobody charts (load balancer internals, byte counters, circuit-breaker states) are not
created. A second Envoy on the same control plane with `full` has them, so the assertions can fail.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

CLUSTER = "cluster.default/web_80."  # Envoy writes the cluster `default/web:80` with ':' as '_'
DROPPED = ("lb_healthy_panic", "upstream_cx_rx_bytes_total", "circuit_breakers.default.rq_open", "update_attempt")
KEPT_GLOBAL = (
    "server.state",
    "control_plane.connected_state",
    "cluster_manager.active_clusters",
    "cluster_manager.cds.update_success",
    "listener_manager.lds.update_success",
    "listener_manager.total_listeners_active",
)


def cluster_stats(envoy: EnvoyProcess) -> dict[str, int]:
    return {k[len(CLUSTER):]: v for k, v in envoy.stats(filter="^cluster\\.default/web_80\\.").items()}


def test_gateway_stats_keep_what_dashboards_read_and_drop_the_rest(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway().start()  # the bootstrap `meridian bootstrap` prints by default
    gw.backend("web")
    gw.write("ing.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    gw.wait_served_by("web.example.com", "/", "web")
    assert gw.envoy is not None
    envoy = gw.envoy
    for _ in range(3):
        assert gw.get("web.example.com", "/").status == 200

    wait_until(lambda: cluster_stats(envoy).get("upstream_rq_completed", 0) >= 4, timeout=10,
               message="per-Service request count not kept")  # fmt: skip
    stats = cluster_stats(envoy)
    assert stats["membership_healthy"] == 1 and stats["upstream_rq_2xx"] >= 4, stats
    assert stats["update_success"] >= 1  # its EDS updates
    assert not [s for s in DROPPED if s in stats], stats
    everything = envoy.stats()
    for name in KEPT_GLOBAL:
        assert name in everything, name
    assert everything["control_plane.connected_state"] == 1
    assert any(k.startswith("http.http.downstream_rq_2xx") for k in everything)
    assert any(k.startswith(f"listener.127.0.0.1_{gw.http_port}.downstream_cx_total") for k in everything)

    prometheus = envoy.admin_get("/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_completed{envoy_cluster_name="default/web_80"}' in prometheus
    assert 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="default/web_80"' in prometheus
    assert "envoy_http_downstream_rq_xx" in prometheus
    assert 'envoy_cluster_lb_healthy_panic{envoy_cluster_name="default/web_80"}' not in prometheus

    # The same control plane, an Envoy asking for every stat: the dropped families exist there.
    full = EnvoyProcess(gw.bootstrap("gw-full", envoy_stats="full"), workdir=gw.root / "envoy-full")
    try:
        full.start().wait_ready(30)
        wait_until(lambda: "membership_healthy" in cluster_stats(full), timeout=20, message="full Envoy not fed")
        stats_full = cluster_stats(full)
        assert all(s in stats_full for s in DROPPED), sorted(stats_full)
        assert len(stats_full) > 5 * len(stats)
    finally:
        full.stop()
