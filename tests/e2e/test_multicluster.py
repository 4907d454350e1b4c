"""Multi-cluster Kubernetes mode through a real Envoy: fake API servers, remote-cluster Secrets,
outages, 410 relists, failover and locality weighting (issue 3, "Merging clusters" tests).

One gateway for the module (primary + east + west registered by Secrets); each test uses its
own Services and hosts so the tests stay independent of one another's leftovers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import ingress, rule
from tests.support.http import request
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.wait import wait_until

EAST, WEST = "east", "west"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeGateway]:
    g = KubeGateway(Path(tmp_path_factory.mktemp("kubegw")), remotes=(EAST, WEST))
    try:
        g.start()
        g.register(EAST)
        g.register(WEST)
        yield g
    finally:
        g.stop()


def route(gw: KubeGateway, name: str, *, cluster: str = PRIMARY, service: str | None = None) -> str:
    """An Ingress `name` in `cluster` sending host `<name>.example.com` to Service `service` (default name)."""
    host = f"{name}.example.com"
    gw.apply(ingress(name, [rule(host, ("/", "Prefix", service or name, 80))]), cluster)
    return host


def assert_no_nacks(gw: KubeGateway) -> None:
    gw.wait_converged()
    assert gw.nacks() == []


def test_primary_and_two_remotes_all_serve(gw: KubeGateway) -> None:
    for cid in (PRIMARY, EAST, WEST):
        gw.backend("spread", cluster=cid)
    host = route(gw, "spread")
    gw.wait_clusters_served(host, {PRIMARY, EAST, WEST}, n=45)
    clusters = {c["cluster"]: c for c in gw.admin("/debug/clusters")}
    assert {cid: clusters[cid]["state"] for cid in (PRIMARY, EAST, WEST)} == dict.fromkeys((PRIMARY, EAST, WEST),
                                                                                          "synced")
    assert clusters[PRIMARY]["primary"] and not clusters[EAST]["primary"]
    assert clusters[EAST]["objects"]["Service"] >= 1
    for cid in (PRIMARY, EAST, WEST):
        assert gw.metric("meridian_source_cluster_up", {"cluster": cid}) == 1
    assert_no_nacks(gw)


def test_traffic_proportional_to_ready_endpoints(gw: KubeGateway) -> None:
    """1, 2 and 3 ready endpoints -> 1/6, 2/6, 3/6 of the traffic (an equal split per cluster would be 1/3)."""
    gw.backend("weighted", cluster=EAST, replicas=2)
    gw.backend("weighted", cluster=WEST, replicas=3)
    # The primary has one ready pod and one alive but not-ready pod, which must get nothing.
    primary_pods = gw.backend("weighted", cluster=PRIMARY, replicas=2, ready=[True, False])
    host = route(gw, "weighted")
    gw.wait_clusters_served(host, {PRIMARY, EAST, WEST}, n=45)
    gw.wait_converged()
    assert gw.envoy is not None
    # Envoy is told to weight localities, with weights = ready endpoint counts.
    dump = gw.envoy.config_dump("dynamic_active_clusters")
    cluster = next(c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == "default/weighted:80")
    assert "locality_weighted_lb_config" in cluster.get("common_lb_config", {}), cluster
    eds = gw.envoy.config_dump("dynamic_endpoint_configs", include_eds=True)
    cla = next(c["endpoint_config"] for c in eds["configs"]
               if c["endpoint_config"]["cluster_name"].startswith("default/weighted"))  # fmt: skip
    factor = cla.get("policy", {}).get("overprovisioning_factor", 140) / 100
    effective = {}
    for group in cla["endpoints"]:
        hosts = group["lb_endpoints"]
        healthy = sum(1 for h in hosts if h.get("health_status", "HEALTHY") == "HEALTHY")
        # Envoy's effective locality weight: weight x min(1, overprovisioning x healthy / hosts).
        effective[group["locality"]["region"]] = group["load_balancing_weight"] * min(1, factor * healthy / len(hosts))
    unit = effective[PRIMARY]
    assert {k: round(v / unit, 2) for k, v in effective.items()} == {PRIMARY: 1, EAST: 2, WEST: 3}, cla
    primary_pods[1].reset()

    n = 600
    counts = gw.clusters_served(host, n)
    expected = {PRIMARY: n / 6, EAST: 2 * n / 6, WEST: 3 * n / 6}
    assert set(counts) == set(expected), counts
    # Envoy picks localities with a deterministic weighted scheduler, so the split is tight. An equal
    # split per cluster (200 each) or weights discounted for the primary's not-ready pod (~74) fail this.
    for cid, want in expected.items():
        assert abs(counts[cid] - want) <= 0.025 * n, (counts, expected)
    assert primary_pods[1].request_count == 0, "a not-ready endpoint received traffic"
    assert_no_nacks(gw)


def test_only_ready_endpoints_get_traffic_even_when_most_are_not_ready(gw: KubeGateway) -> None:
    """No panic routing: with 1 of 3 endpoints ready, the 2 not-ready (but alive) pods get nothing."""
    pods = gw.backend("mostlydown", cluster=EAST, replicas=3, ready=[True, False, False])
    host = route(gw, "mostlydown")
    gw.wait_clusters_served(host, {EAST}, n=5)
    gw.wait_converged()
    for p in pods:
        p.reset()
    assert gw.clusters_served(host, 30) == {EAST: 30}
    assert [p.request_count for p in pods] == [30, 0, 0]


def test_failover_to_remote_when_local_endpoints_not_ready(gw: KubeGateway) -> None:
    failover = {"meridian.io/failover": "true"}
    local = gw.backend("fo", cluster=PRIMARY, replicas=2, annotations=failover)
    gw.backend("fo", cluster=EAST, replicas=2, annotations=failover)
    host = route(gw, "fo")
    # Local endpoints are priority 0: the remote gets nothing while they are ready.
    gw.wait_clusters_served(host, {PRIMARY}, n=20)
    assert gw.clusters_served(host, 40) == {PRIMARY: 40}

    gw.publish("fo", local, cluster=PRIMARY, ready=[False, False], annotations=failover)
    gw.wait_clusters_served(host, {EAST}, n=20)
    for srv in local:
        srv.reset()
    assert gw.clusters_served(host, 40) == {EAST: 40}
    assert sum(s.request_count for s in local) == 0

    gw.publish("fo", local, cluster=PRIMARY, annotations=failover)
    gw.wait_clusters_served(host, {PRIMARY}, n=20)
    assert gw.clusters_served(host, 40) == {PRIMARY: 40}
    assert_no_nacks(gw)


class Load:
    """A client thread sending requests back to back; every non-200 or error is a failure."""

    def __init__(self, gw: KubeGateway, host: str) -> None:
        self.gw, self.host = gw, host
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = request("GET", self.gw.http_port, "/", host=self.host, timeout=5)
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {r.status}: {r.text[:100]}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_remote_secret_added_and_deleted_at_runtime(gw: KubeGateway) -> None:
    gw.add_cluster("north")
    gw.backend("live", cluster=PRIMARY)
    gw.backend("live", cluster=EAST)
    (north_pod,) = gw.backend("live", cluster="north")
    host = route(gw, "live")
    gw.wait_clusters_served(host, {PRIMARY, EAST}, n=20)
    assert north_pod.request_count == 0
    with Load(gw, host) as load:
        gw.register("north")
        gw.wait_clusters_served(host, {PRIMARY, EAST, "north"}, n=45)
        assert "north" in gw.cluster_states()
        gw.unregister("north")
        gw.wait_clusters_served(host, {PRIMARY, EAST}, n=45)
        before = load.ok
        wait_until(lambda: load.ok >= before + 20, timeout=10, message="load stopped")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    seen = north_pod.request_count
    gw.clusters_served(host, 30)
    assert north_pod.request_count == seen, "the removed cluster's endpoint still gets traffic"
    assert gw.metric("meridian_source_cluster_up", {"cluster": "north"}) in (None, 0)
    assert_no_nacks(gw)


def test_remote_api_outage_keeps_last_known_endpoints_then_resyncs(gw: KubeGateway) -> None:
    (old,) = gw.backend("outage", cluster=WEST)
    host = route(gw, "outage")
    gw.wait_clusters_served(host, {WEST}, n=5)
    west = gw.kubes[WEST]
    west.stop()
    try:
        gw.wait_cluster_state(WEST, "stale")
        wait_until(lambda: gw.metric("meridian_source_cluster_stale", {"cluster": WEST}) == 1, timeout=10,
                   message="stale metric never 1")  # fmt: skip
        old.reset()
        assert gw.clusters_served(host, 20) == {WEST: 20}
        assert old.request_count == 20
        # While the API server is down its endpoints change: a new pod replaces the old one.
        new = gw.fleet.add(service="outage", pod="outage-west-new", cluster=WEST)
        gw.publish("outage", [new], cluster=WEST)
    finally:
        west.start()
    gw.wait_cluster_state(WEST, "synced")
    wait_until(lambda: gw.get(host, "/").json().get("pod") == "outage-west-new", timeout=20,
               message="traffic never moved to the new endpoint")  # fmt: skip
    old.reset()
    gw.wait_converged()
    assert {gw.get(host, "/").json()["pod"] for _ in range(20)} == {"outage-west-new"}
    assert old.request_count == 0
    assert gw.metric("meridian_source_cluster_stale", {"cluster": WEST}) == 0
    assert_no_nacks(gw)


def test_watch_expired_with_deletions_in_the_gap_ends_exact(gw: KubeGateway) -> None:
    gw.backend("doomed", cluster=EAST)
    (kept_old,) = gw.backend("kept", cluster=EAST)
    doomed_host = route(gw, "doomed", cluster=EAST)
    kept_host = route(gw, "kept", cluster=EAST)
    gw.wait_clusters_served(doomed_host, {EAST}, n=3)
    gw.wait_clusters_served(kept_host, {EAST}, n=3)
    snap = gw.admin("/debug/snapshot")
    assert "default/doomed:80" in snap["types"]["CDS"]["resources"]

    east = gw.kubes[EAST]
    east.stop()
    try:
        gw.wait_cluster_state(EAST, "stale")
        # In the gap: the Service, its slices and its Ingress go away, another Service moves, one appears...
        gw.unpublish("doomed", cluster=EAST)
        assert gw.delete("Ingress", "doomed", cluster=EAST)
        kept_new = gw.fleet.add(service="kept", pod="kept-east-new", cluster=EAST)
        gw.publish("kept", [kept_new], cluster=EAST)
        gw.backend("fresh", cluster=EAST)
        fresh_host = route(gw, "fresh", cluster=EAST)
        # ... and the history is compacted, so resuming the watch gets 410 Gone and must relist.
        east.compact()
        floor = east.resource_version
        seen = len(east.watch_requests())
    finally:
        east.start()
    gw.wait_cluster_state(EAST, "synced")
    gw.wait_status(doomed_host, "/", 404, timeout=20)
    gw.wait_clusters_served(fresh_host, {EAST}, n=3)
    wait_until(lambda: gw.get(kept_host, "/").json().get("pod") == "kept-east-new", timeout=20,
               message="kept never moved to its new endpoint")  # fmt: skip
    gw.wait_converged()
    snap = gw.admin("/debug/snapshot")["types"]
    assert not [n for n in snap["CDS"]["resources"] if "doomed" in n]
    assert not [n for n in snap["EDS"]["resources"] if "doomed" in n]
    assert "default/kept:80" in snap["CDS"]["resources"]
    reports = {(r["cluster"], r["name"]) for r in gw.admin("/debug/ingresses")}
    assert (EAST, "doomed") not in reports and (EAST, "fresh") in reports and (EAST, "kept") in reports
    kept_old.reset()
    assert {gw.get(kept_host, "/").json()["pod"] for _ in range(10)} == {"kept-east-new"}
    assert kept_old.request_count == 0
    assert gw.get(doomed_host, "/").status == 404
    # The watch really expired: it resumed below the compaction floor (410), relisted, and watches on.
    after = [w for w in east.watch_requests()[seen:] if w["kind"] == "Ingress"]
    versions = [int(w.get("resourceVersion") or 0) for w in after]
    assert versions and versions[0] < floor and max(versions) >= floor, versions
    assert_no_nacks(gw)
