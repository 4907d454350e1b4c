"""A fleet of Envoys spreads over the control plane's replicas, one ADS connection each.

Every Envoy's bootstrap lists both replicas (`meridian bootstrap --xds-address A --xds-address B`;
in the chart, the headless Service's DNS answer lists every ready replica). Envoy's round robin
over its xDS cluster starts at a random host, so each Envoy picks a replica for itself, connection
by connection, and the fleet spreads about evenly; each replica pushes to the Envoys it holds.

Envoys are started until both replicas hold at least one (each start is an independent fair pick,
so all of up to MAX_ENVOYS landing on one replica has a chance of 2**-(MAX_ENVOYS-1): it would
mean the spread does not happen). Then: every Envoy has exactly one stream, on one replica; both
replicas tell them the same versions; and one EndpointSlice change reaches every Envoy, through
whichever replica it is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

MIN_ENVOYS = 4
MAX_ENVOYS = 16
WEB = "web.example.com"


def streams(cp: Gateway) -> dict[str, dict[str, Any]]:
    return {s["node_id"]: s for s in cp.admin("/debug/syncz") if s["node_id"].startswith("gw-")}


def eds_acked(stream: dict[str, Any] | None, version: str) -> bool:
    eds = (stream or {}).get("types", {}).get("EDS")
    return bool(eds) and eds["acked_version"] == version and not eds["pending"]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    a = Gateway(tmp_path, envoy=False, delta=True)
    b = a.replica("b")
    try:
        yield a, b
    finally:
        b.stop_control_plane()
        a.stop()


def test_envoys_spread_over_two_replicas_and_each_replica_pushes_to_its_own(
    tmp_path: Path, replicas: tuple[Gateway, Gateway]
) -> None:
    a, b = replicas
    a.backend("web")
    a.write("ing.yaml", [ingress("web", [rule(WEB, ("/", "Prefix", "web", 80))])])
    a.start()
    b.start()
    envoys: list[EnvoyProcess] = []
    try:
        for i in range(MAX_ENVOYS):
            node = f"gw-{i}"
            boot = a.bootstrap(node, xds_addresses=[a.xds_address, b.xds_address])
            envoys.append(EnvoyProcess(boot, workdir=tmp_path / node, drain_time_s=1).start())
            wait_until(lambda node=node: node in streams(a) or node in streams(b), timeout=30,
                       message=f"{node} connected to a replica")  # fmt: skip
            if len(envoys) >= MIN_ENVOYS and streams(a) and streams(b):
                break
        on_a, on_b = set(streams(a)), set(streams(b))
        assert on_a and on_b, f"{len(envoys)} Envoys, all on one replica: {sorted(on_a)} / {sorted(on_b)}"
        # One stream per Envoy, on one replica: together they are the whole fleet, once.
        assert not on_a & on_b and on_a | on_b == {f"gw-{i}" for i in range(len(envoys))}

        # Both replicas tell their Envoys the same version; then one change reaches every Envoy.
        before = a.admin("/debug/snapshot")["types"]["EDS"]["version"]
        assert b.admin("/debug/snapshot")["types"]["EDS"]["version"] == before
        wait_until(lambda: all(eds_acked(streams(cp).get(n), before) for cp, names in ((a, on_a), (b, on_b))
                               for n in names), timeout=30, message="every Envoy ACKed the endpoints")  # fmt: skip
        a.backend("web", replicas=2)  # a second pod: a new EndpointSlice for the Service
        after = wait_until(lambda: (v := a.admin("/debug/snapshot")["types"]["EDS"]["version"]) != before and v,
                           timeout=30, message="the change built")  # fmt: skip
        wait_until(lambda: b.admin("/debug/snapshot")["types"]["EDS"]["version"] == after, timeout=30,
                   message="replica b built the same version")  # fmt: skip
        wait_until(lambda: all(eds_acked(streams(cp).get(n), after) for cp, names in ((a, on_a), (b, on_b))
                               for n in names), timeout=30, message="every Envoy ACKed the change")  # fmt: skip
    finally:
        for envoy in envoys:
            envoy.stop()
