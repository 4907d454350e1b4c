"""Two `meridian serve` replicas on one fake API server (plus a remote cluster), Envoys spread over both.

Issue 8, part 4. Replica A (pod and API user `replica-a`) and replica B (`replica-b`) are real
subprocesses, so they can be killed with SIGKILL. Envoy E1 speaks Delta ADS, E2 State-of-the-World;
both bootstraps list both replicas' xDS addresses (`meridian bootstrap --xds-address` twice). Both
Envoys bind the same gateway port (SO_REUSEPORT, as two gateway pods behind one Service), so the
traffic loop goes through both of them.

1. The replicas give byte-identical resources with identical per-resource versions (/debug/snapshot
   and each replica's own ADS answers).
2. The leader (A, hosting E1) is killed under load: zero failed requests; E1 moves to B and, under
   Delta, is sent nothing it already has; B takes over the lease within the lease duration; a new
   Ingress is then served through both Envoys.
3. A comes back (a cold build that must equal B's incremental state). B, now leader and hosting both
   Envoys, is killed under load: the same again, towards A.
Throughout, the API server's log shows status patches and Events from the lease holder only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.devtools.envoy_proc import EnvoyProcess
from controlplane.leader import LEASE_NAME
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT_NAMES
from tests.fakekube import FakeKube
from tests.support.gateway import ingress, rule
from tests.support.http import request
from tests.support.kubegateway import NAMESPACE, PRIMARY, KubeGateway
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

EAST = "east"
LEASE_S = 4  # short, so a takeover after a kill is quick; a whole number (leaseDurationSeconds)
RENEW_S = 0.25
NODE_CLUSTER = "meridian-gateway"  # render_bootstrap's default group
WEB = "web.example.com"


# -- helpers -------------------------------------------------------------------------------------


def streams_of(cp: KubeGateway) -> dict[str, dict[str, Any]]:
    """Envoy streams on a replica, by node id (raw ADS clients of this test have other ids)."""
    return {s["node_id"]: s for s in cp.admin("/debug/syncz") if s["node_id"].startswith("gw-")}


def converged_stream(cp: KubeGateway, node_id: str) -> dict[str, Any] | None:
    """The node's stream on `cp` once every type it asked for is ACKed at what was last sent."""
    s = streams_of(cp).get(node_id)
    if s is None or not {"CDS", "EDS", "LDS", "RDS"} <= s["types"].keys():
        return None
    for t in s["types"].values():
        if t["pending"] or t["last_nack"] or t["acked_version"] != t["sent_version"]:
            return None
    return s


def snapshot_resources(cp: KubeGateway) -> dict[str, dict[str, str]]:
    """name -> per-resource version (a hash of the resource's bytes), per type, from /debug/snapshot."""
    return {t: v["resources"] for t, v in cp.admin("/debug/snapshot")["types"].items()}


def snapshot_versions(cp: KubeGateway) -> dict[str, Any]:
    """/debug/snapshot without this process's change counters ("generation"): what Envoys are sent."""
    return {t: {"version": v["version"], "resources": v["resources"]}
            for t, v in cp.admin("/debug/snapshot")["types"].items()}  # fmt: skip


def ads_resources(cp: KubeGateway, names: dict[str, dict[str, str]]) -> dict[str, dict[str, tuple[str, bytes]]]:
    """Ask a replica's ADS directly (Delta, like an Envoy with nothing): name -> (version, Any bytes)."""
    subscribe = {CLUSTER: [], LISTENER: [], ENDPOINT: sorted(names["EDS"]), ROUTE: sorted(names["RDS"])}
    outbox: queue.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = queue.Queue()
    for i, (type_url, subs) in enumerate(subscribe.items()):
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=subs)
        if i == 0:
            req.node.id, req.node.cluster = "raw-client", NODE_CLUSTER
        outbox.put(req)

    def requests() -> Iterator[discovery_pb2.DeltaDiscoveryRequest]:
        while (req := outbox.get()) is not None:
            yield req

    got: dict[str, dict[str, tuple[str, bytes]]] = {}
    with cp.xds_channel() as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(requests(), timeout=20)
        try:
            for resp in call:
                have = got.setdefault(SHORT_NAMES[resp.type_url], {})
                for r in resp.resources:
                    have[r.name] = (r.version, r.resource.type_url.encode() + b"\0" + r.resource.value)
                if len(got) == len(subscribe):
                    break
        finally:
            outbox.put(None)
            call.cancel()
    return got


def assert_replicas_agree(x: KubeGateway, y: KubeGateway) -> None:
    """Same objects, same resources: type versions, names, per-resource versions and the bytes each ADS sends."""
    versions = wait_until(lambda: (a := snapshot_versions(x)) == snapshot_versions(y) and a, timeout=20,
                          message="replicas' snapshots never agreed")  # fmt: skip
    snap = {t: v["resources"] for t, v in versions.items()}
    assert snap["CDS"] and snap["EDS"] and snap["LDS"] and snap["RDS"], snap
    from_x, from_y = ads_resources(x, snap), ads_resources(y, snap)
    assert from_x == from_y
    for short in ("CDS", "EDS", "LDS", "RDS"):
        assert {n: v for n, (v, _) in from_x[short].items()} == snap[short], short


def served_by(envoy: EnvoyProcess, service: str) -> int:
    """Requests this Envoy proxied to `service` (its cluster's upstream_rq_completed, all ports/variants)."""
    stats = envoy.stats(filter=f"^cluster\\.default/{service}[:~_][^.]*\\.upstream_rq_completed$")
    return sum(stats.values())


def writes_by_non_holders(fake: FakeKube) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Replay the API server's write log: (writers of status/Events in order, writes not by the holder)."""
    holder: str | None = None
    writers: list[str] = []
    wrong: list[tuple[str, str, str]] = []
    for w in fake.writes():
        if w.kind == "Lease" and w.name == LEASE_NAME and w.code < 300:
            holder = w.holder
        elif (w.kind, w.subresource) == ("Ingress", "status") or w.kind == "Event":
            if not writers or writers[-1] != w.user:
                writers.append(w.user)
            if w.user != holder:
                wrong.append((w.user, w.kind, w.name))
    return writers, wrong


def lease_holder(fake: FakeKube) -> str | None:
    return ((fake.get("Lease", NAMESPACE, LEASE_NAME) or {}).get("spec") or {}).get("holderIdentity")


class Traffic:
    """Back-to-back GETs through the gateway port (so through both Envoys), bounded in count and time."""

    def __init__(self, port: int, host: str, *, max_requests: int = 20000, max_seconds: float = 120) -> None:
        self.port, self.host = port, host
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = request("GET", self.port, "/", host=self.host, timeout=3)
                if r.status == 200 and r.json().get("service") == "web":
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status} {r.text[:80]}")
            except Exception as exc:  # a failed request is what this test looks for
                self.failures.append(repr(exc))
            self._stop.wait(0.002)  # leave CPU for the replicas and Envoys beside us

    def count_after(self, n: int, timeout: float = 20) -> None:
        """Wait (bounded) until `n` more requests succeeded; fail at once on any failure."""
        want = self.ok + n
        wait_until(lambda: self.failures or self.ok >= want or not self._thread.is_alive(), timeout=timeout,
                   message=f"traffic stalled at {self.ok}/{want}")  # fmt: skip
        assert not self.failures, f"{len(self.failures)} failed requests: {self.failures[:5]}"
        assert self.ok >= want, f"traffic loop ended at {self.ok}/{want}"

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# -- fixture ---------------------------------------------------------------------------------------


class Fleet:
    """Two replicas of one gateway and two Envoys, each bootstrapped with both replicas' xDS addresses."""

    def __init__(self, root: Path) -> None:
        args = ("--watch-ingress-without-class", "--lease-duration", str(LEASE_S),
                "--lease-renew-interval", str(RENEW_S))  # fmt: skip
        self.a = KubeGateway(root, remotes=(EAST,), envoy=False, serve_args=args, identity="replica-a")
        self.b = self.a.replica("replica-b")
        self.envoys: dict[str, EnvoyProcess] = {}
        self.root = root

    @property
    def fake(self) -> FakeKube:
        return self.a.kubes[PRIMARY]

    def start_envoy(self, node_id: str, *, delta: bool) -> EnvoyProcess:
        old = self.envoys.pop(node_id, None)
        if old is not None:
            old.stop()
        boot = self.a.bootstrap(node_id, xds_addresses=[self.a.xds_address, self.b.xds_address], delta=delta)
        envoy = EnvoyProcess(boot, workdir=self.root / node_id, drain_time_s=1)
        self.envoys[node_id] = envoy
        envoy.start().wait_ready(30)
        return envoy

    def home(self, node_id: str) -> KubeGateway | None:
        """The replica this Envoy's ADS stream is on."""
        for cp in (self.a, self.b):
            if cp.proc is not None and node_id in streams_of(cp):
                return cp
        return None

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.b.stop_control_plane()
        self.a.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.stop()


# -- the test --------------------------------------------------------------------------------------


def kill_under_load(fleet: Fleet, victim: KubeGateway, survivor: KubeGateway, moving: list[str]) -> float:
    """SIGKILL `victim` while traffic flows; Envoys in `moving` reconnect to `survivor`. Returns the kill time."""
    with Traffic(fleet.a.http_port, WEB) as traffic:
        traffic.count_after(50)
        served = {n: served_by(e, "web") for n, e in fleet.envoys.items()}
        killed_at = time.monotonic()
        victim.kill_control_plane()
        assert victim.admin_status("/healthz") is None  # really gone
        for node_id in moving:
            wait_until(lambda n=node_id: converged_stream(survivor, n), timeout=30,
                       message=f"{node_id} never reconnected to the survivor")  # fmt: skip
        traffic.count_after(200)
    # Both Envoys carried part of the loop (the kernel spreads connections over the shared port).
    assert all(served_by(e, "web") > served[n] for n, e in fleet.envoys.items()), served
    return killed_at


def assert_delta_sent_nothing_it_had(survivor: KubeGateway, node_id: str) -> None:
    """Under Delta, the moved Envoy's initial_resource_versions matched: every type answered, none re-sent."""
    s = converged_stream(survivor, node_id)
    assert s is not None and s["protocol"] == "delta"
    snap = snapshot_resources(survivor)
    for short in ("CDS", "EDS", "LDS", "RDS"):
        t = s["types"][short]
        assert t["sent_resources"] == 0, (short, t)
        assert t["sent_version"] and t["acked_version"] == t["sent_version"], (short, t)
    assert s["types"]["CDS"]["resources"] == len(snap["CDS"])  # it holds them all: they were not needed
    assert s["types"]["LDS"]["resources"] == len(snap["LDS"])


def assert_takeover(fleet: Fleet, killed_at: float, old: str, new: str) -> None:
    """The survivor took the lease once it had expired, and no later than a lease plus two renew periods."""
    wait_until(lambda: lease_holder(fleet.fake) == new, timeout=LEASE_S * 3, message=f"{new} never took over")

    def logged() -> list[Any] | None:
        """The fake API server logs a write after storing it: the holder can be read before its write is."""
        writes = [w for w in fleet.fake.writes() if w.kind == "Lease" and w.code < 300]
        return writes if any(w.holder == new and w.at > killed_at for w in writes) else None

    lease_writes = wait_until(logged, timeout=5, message=f"{new}'s lease write never logged")
    before = [(round(w.at - killed_at, 2), w.holder) for w in lease_writes if w.at <= killed_at][-8:]
    # A healthy leader keeps its lease however busy it is (renewals run on their own thread): a handover
    # before the kill is a failure of the product, said as such.
    assert before and before[-1][1] == old, f"the lease left {old} before the kill: {before}"
    last_renewal = max(w.at for w in lease_writes if w.holder == old and w.at <= killed_at)
    taken = min(w.at for w in lease_writes if w.holder == new and w.at > killed_at)
    assert taken - last_renewal >= LEASE_S, "took the lease before it expired"
    # Expiry is LEASE_S after the last renewal (<= the kill); the survivor notices it within a renew
    # period of observing the lease and retries every renew period. 1 s covers the API round trips.
    assert taken - killed_at <= LEASE_S + 2 * RENEW_S + 1.0, f"takeover took {taken - killed_at:.2f} s"


def new_route(fleet: Fleet, name: str) -> str:
    """A new Service and Ingress (with an annotation that earns an Event); served through both Envoys."""
    fleet.a.backend(name)
    host = f"{name}.example.com"
    fleet.a.apply(ingress(name, [rule(host, ("/", "Prefix", name, 80))],
                          annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": f"{name}-abc"}))  # fmt: skip

    def both_served() -> bool:
        r = request("GET", fleet.a.http_port, "/", host=host, timeout=3)
        assert r.status in (200, 404), r.status
        return all(served_by(e, name) > 0 for e in fleet.envoys.values())

    wait_until(both_served, timeout=20, message=f"{host} never served through both Envoys")
    return host


def event_for(fake: FakeKube, ingress_name: str) -> dict[str, Any] | None:
    return next((e for e in fake.events() if e["involvedObject"]["name"] == ingress_name), None)


def test_two_replicas_agree_and_survive_each_other(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    # A starts alone and leads; E1 (Delta) can only reach A, so it lands there.
    a.start()
    a.register(EAST)
    wait_until(lambda: lease_holder(fleet.fake) == "replica-a", timeout=15, message="replica-a never led")
    fleet.start_envoy("gw-delta", delta=True)
    wait_until(lambda: fleet.home("gw-delta") is a, timeout=15, message="E1 never connected to A")
    # B joins. E2 (SotW) lists both: Envoy picks a replica at random; start it again until it is on B.
    b.start()
    b.wait_cluster_state(EAST, "synced")
    for _attempt in range(20):
        fleet.start_envoy("gw-sotw", delta=False)
        if wait_until(lambda: fleet.home("gw-sotw"), timeout=15, message="E2 never connected") is b:
            break
    assert fleet.home("gw-sotw") is b and fleet.home("gw-delta") is a

    # Objects in the primary and in the remote cluster.
    a.backend("web", replicas=2)
    a.backend("web", cluster=EAST)
    a.apply(ingress("web", [rule(WEB, ("/", "Prefix", "web", 80))]))
    a.wait_clusters_served(WEB, {PRIMARY, EAST}, n=30)
    new_route(fleet, "first")
    wait_until(lambda: event_for(fleet.fake, "first"), timeout=15, message="no Event for first")
    for node_id, cp in (("gw-delta", a), ("gw-sotw", b)):
        wait_until(lambda n=node_id, c=cp: converged_stream(c, n), timeout=20, message=f"{node_id} not converged")

    # 1. Both replicas serve the same resources and versions, and each Envoy ACKed the same versions.
    assert_replicas_agree(a, b)
    acked = [{k: t["acked_version"] for k, t in converged_stream(cp, n)["types"].items()}  # type: ignore[index]
             for n, cp in (("gw-delta", a), ("gw-sotw", b))]  # fmt: skip
    assert acked[0] == acked[1] and acked[0]["CDS"], acked
    assert b.metric("meridian_leader") == 0 and a.metric("meridian_leader") == 1

    # 2. Kill the leader A, which serves E1. E1 moves to B and is re-sent nothing.
    b_sent = sum(b.metric("meridian_xds_resources_sent_total", {"type": t}) or 0 for t in SHORT_NAMES.values())
    killed_at = kill_under_load(fleet, a, b, ["gw-delta"])
    assert_delta_sent_nothing_it_had(b, "gw-delta")
    after = sum(b.metric("meridian_xds_resources_sent_total", {"type": t}) or 0 for t in SHORT_NAMES.values())
    assert after == b_sent, "B put resources on the wire although nothing changed"
    assert_takeover(fleet, killed_at, "replica-a", "replica-b")
    new_route(fleet, "after-a")  # B keeps both Envoys up to date, and as leader writes status and Events
    wait_until(lambda: (e := event_for(fleet.fake, "after-a")) and e["reportingInstance"] == "replica-b",
               timeout=15, message="the new leader wrote no Event")  # fmt: skip
    wait_until(lambda: (fleet.fake.get("Ingress", "default", "after-a") or {}).get("status", {}).get("loadBalancer"),
               timeout=15, message="the new leader wrote no status")  # fmt: skip

    # 3. A comes back (a cold build from the same objects) and agrees with B's incremental state.
    a.start_control_plane()
    assert_replicas_agree(a, b)
    assert lease_holder(fleet.fake) == "replica-b" and a.metric("meridian_leader") == 0
    # Kill B, now the leader and serving both Envoys: both move to A.
    killed_at = kill_under_load(fleet, b, a, ["gw-delta", "gw-sotw"])
    assert_delta_sent_nothing_it_had(a, "gw-delta")
    assert_takeover(fleet, killed_at, "replica-b", "replica-a")
    new_route(fleet, "after-b")
    wait_until(lambda: (e := event_for(fleet.fake, "after-b")) and e["reportingInstance"] == "replica-a",
               timeout=15, message="the new leader wrote no Event")  # fmt: skip

    # Status and Events came from the lease holder only, one writer at a time: A, then B, then A.
    writers, wrong = writes_by_non_holders(fleet.fake)
    assert wrong == []
    assert writers == ["replica-a", "replica-b", "replica-a"]
    assert not any(s["types"][t]["last_nack"] for s in streams_of(a).values() for t in s["types"])
