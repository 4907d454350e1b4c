"""KIngress status with two control plane replicas (fake API server, `meridian serve --kubeconfig`
twice, one real Envoy on each): only the lease holder writes it, and after the leader is killed the
other replica writes the next generation's status, counting the Envoy connected to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.devtools.envoy_proc import EnvoyProcess
from controlplane.leader import LEASE_NAME
from tests.e2e.test_knative_kube import kingress, status, wait_condition
from tests.support.kubegateway import NAMESPACE, PRIMARY, KubeGateway
from tests.support.wait import wait_until

LEASE_S = 3
RENEW_S = 0.25


def holder(g: KubeGateway) -> str | None:
    return ((g.kubes[PRIMARY].get("Lease", NAMESPACE, LEASE_NAME) or {}).get("spec") or {}).get("holderIdentity")


def status_writers(g: KubeGateway) -> list[tuple[str, str | None]]:
    """(writer, lease holder at that time) of every KIngress status write, from the API server's log."""
    current: str | None = None
    out = []
    for w in g.kubes[PRIMARY].writes():
        if w.kind == "Lease" and w.name == LEASE_NAME and w.code < 300:
            current = w.holder
        elif (w.kind, w.subresource) == ("KIngress", "status") and w.code < 300:
            out.append((w.user, current))
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeGateway, KubeGateway]]:
    root = Path(tmp_path_factory.mktemp("knative-replicas"))
    args = ("--lease-duration", str(LEASE_S), "--lease-renew-interval", str(RENEW_S),
            "--knative-public-service", "meridian-system/meridian-gateway")  # fmt: skip
    a = KubeGateway(root, serve_args=args, identity="replica-a")
    b = a.replica("replica-b")
    envoy_b: EnvoyProcess | None = None
    try:
        a.start()  # with its Envoy gw-1
        b.start()  # its own kubeconfig (user replica-b), no Envoy of its own here
        envoy_b = EnvoyProcess(b.bootstrap("gw-2"), workdir=root / "gw-2", drain_time_s=1)
        envoy_b.start().wait_ready(30)
        a.backend("hello-00001")
        yield a, b
    finally:
        if envoy_b is not None:
            envoy_b.stop()
        b.stop_control_plane()
        a.stop()


def test_only_the_leader_writes_and_the_next_leader_takes_over(pair: tuple[KubeGateway, KubeGateway]) -> None:
    a, b = pair
    a.apply(kingress(1))
    # Each replica sees one Envoy, its own: the leader reports on the one connected to it.
    wait_condition(a, 1, "True", "acknowledged by 1 gateway(s)")
    leader = holder(a)
    assert leader in ("replica-a", "replica-b")
    writes = status_writers(a)
    assert writes and all(user == lease for user, lease in writes), writes
    assert {user for user, _ in writes} == {leader}

    victim = a if leader == "replica-a" else b
    victim.kill_control_plane()
    other = "replica-b" if leader == "replica-a" else "replica-a"
    wait_until(lambda: holder(a) == other, timeout=LEASE_S * 4, message=f"{other} never took the lease")
    a.apply(kingress(2, path="/v2"))  # the fake API server outlives either replica
    st: dict[str, Any] = wait_condition(a, 2, "True", "acknowledged by 1 gateway(s)")
    public = "meridian-gateway.meridian-system.svc.cluster.local"
    assert st["publicLoadBalancer"]["ingress"][0]["domainInternal"] == public
    later = status_writers(a)[len(writes):]
    assert later and all(user == lease == other for user, lease in later), later
    assert status(a)["observedGeneration"] == 2
