"""New Services with their routes, many times over, while clients already ask for each new host:
Envoy must never answer 503 (a route naming a cluster that is still warming: `no_cluster`).

Meridian writes a route that names a new EDS cluster right after the cluster's endpoints, on the
same ADS stream, without waiting for Envoy's ACK: Envoy applies one stream's responses in order,
and applying the endpoints finishes the cluster's warming and hands it to the workers before the
route is applied (xds/warming.py). A route that overtakes the endpoints answers 503 for a few
milliseconds; 30 changes per protocol, each watched by two clients on an Envoy with two workers,
catch that (with the hold disabled altogether, every run had 503s in both protocols).
"""

from __future__ import annotations

import pytest

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.gateway import Gateway, ingress, rule, service_manifests
from tests.support.hammer import Hammer
from tests.support.wait import wait_until

CHANGES = 30


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_new_service_is_never_answered_503_while_its_route_arrives(make_gateway, delta: bool) -> None:
    gw = make_gateway(delta=delta, envoy=False).start()
    # Two workers, each with its own copy of the clusters (created when first used there).
    gw.envoy = EnvoyProcess(gw.bootstrap("gw-1"), workdir=gw.root / "envoy", drain_time_s=1, concurrency=2)
    gw.envoy.start()
    gw.envoy.wait_ready(30)
    gw.backend("base")
    gw.write("base.yaml", [ingress("base", [rule("base.example.com", ("/", "Prefix", "base", 80))])])
    gw.wait_served_by("base.example.com", "/", "base", timeout=30)
    envoy = gw.envoy

    def no_cluster() -> int:
        return sum(v for k, v in envoy.stats("no_cluster").items() if k.endswith(".no_cluster"))

    before = no_cluster()
    for i in range(CHANGES):
        for c in _new_service_watched(gw, i):
            first = c.statuses.index(200)
            # Unknown host (404) until the route and its cluster are both in place, then only 200s.
            assert set(c.statuses[:first]) == {404}, (i, c.statuses[:first])
            assert set(c.statuses[first:]) == {200}, (i, c.statuses[first:])
    assert no_cluster() == before


def _new_service_watched(gw: Gateway, i: int) -> tuple[Hammer, Hammer]:
    """Service `new<i>` and its Ingress written while two clients request its host; their answers."""
    host, service = f"new{i}.example.com", f"new{i}"
    pod = gw.fleet.add(service=service, pod=f"{service}-0", cluster="c1")
    with Hammer(gw.http_port, host) as one, Hammer(gw.http_port, host) as two:
        wait_until(lambda: len(one.statuses) > 3 and len(two.statuses) > 3, timeout=15, message="no answer yet")
        objs = [*service_manifests(service, [pod]), ingress(service, [rule(host, ("/", "Prefix", service, 80))])]
        gw.write(f"{service}.yaml", objs)
        wait_until(lambda: one.served(after_first_200=20) and two.served(after_first_200=20), timeout=20,
                   message=f"{host} never served")  # fmt: skip
    return one, two
