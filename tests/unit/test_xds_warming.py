"""Routes wait for the new EDS clusters they may name to get their endpoints (make-before-break).

Envoy ACKs CDS while new EDS clusters still warm; a route naming one then answers 503 no_cluster
until its ClusterLoadAssignment arrives (envoyproxy/envoy#5174). These drive the ADS server as
Envoy does and check that listeners/routes go out only after the endpoints are ACKed, and that
nothing waits forever.
"""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2

from controlplane.xds import warming
from controlplane.xds.cache import make_resource
from controlplane.xds.resources import CLUSTER, ENDPOINT, ROUTE
from tests.unit import test_xds_server
from tests.unit.test_xds_server import (
    Delta,
    Env,
    Sotw,
    acked,
    cla,
    cluster,
    delta_names,
    delta_subscribe_all,
    names_of,
    route,
)

env = test_xds_server.env  # the fixture: an ADS server over a snapshot cache


async def next_response_held(client: Sotw | Delta, timeout: float = 0.3) -> asyncio.Future:
    """The next response, asserted not to arrive within `timeout` (a due type goes out in the same
    push as the one just received); awaited later. The read is not cancelled (that ends the RPC)."""
    nxt = asyncio.ensure_future(client.recv(timeout=10))
    done, _ = await asyncio.wait({nxt}, timeout=timeout)
    assert not done, f"sent while it should be held: {nxt.result().type_url}"
    return nxt


def _new_service(body: str) -> dict:
    return {
        CLUSTER: {"new": cluster("new")},
        ENDPOINT: {"new": cla("new", 9020)},
        ROUTE: {"local": route("local", body)},
    }


async def test_sotw_route_to_a_new_cluster_waits_for_its_endpoints_ack(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    assert cds.type_url == CLUSTER and "new" in names_of(cds)
    # As Envoy: the new cluster subscribes to its endpoints, then CDS is ACKed (the cluster warms).
    eds = env.stream("envoy-1")["types"]["EDS"]
    await client.send(ENDPOINT, ["backend", "new"], eds["acked_version"], eds["nonce"])
    await client.ack(cds)
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and "new" in names_of(resp)
    nxt = await next_response_held(client)  # the route naming "new" waits: its endpoints are not ACKed
    await client.ack(resp, ["backend", "new"])
    rds = await nxt
    assert rds.type_url == ROUTE and rds.version_info == env.cache.get(ROUTE).digest


async def test_delta_route_to_a_new_cluster_waits_for_its_endpoints_ack(env: Env) -> None:
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    assert cds.type_url == CLUSTER and "new" in delta_names(cds)
    await client.send(ENDPOINT, ["new"])
    await client.ack(cds)
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and "new" in delta_names(resp)
    nxt = await next_response_held(client)
    await client.ack(resp)
    rds = await nxt
    assert rds.type_url == ROUTE


async def test_routes_are_not_held_when_envoy_never_subscribes_to_the_endpoints(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    await client.ack(cds)  # no EDS subscription for "new": it will never warm through us
    rds = await client.recv()
    assert rds.type_url == ROUTE


async def test_routes_are_not_held_for_clusters_without_eds(env: Env) -> None:
    dns = cluster_pb2.Cluster(name="external", type=cluster_pb2.Cluster.STRICT_DNS,
                              connect_timeout=duration_pb2.Duration(seconds=1))  # fmt: skip
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(
        {CLUSTER: {"external": make_resource("external", CLUSTER, dns)}, ROUTE: {"local": route("local", "x")}}
    )
    assert [(await client.recv()).type_url for _ in range(2)] == [CLUSTER, ROUTE]  # CDS not even ACKed


async def test_routes_stop_waiting_after_the_warming_timeout(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "WARMING_TIMEOUT", 0.5)
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    eds = env.stream("envoy-1")["types"]["EDS"]
    await client.send(ENDPOINT, ["backend", "new"], eds["acked_version"], eds["nonce"])
    await client.ack(cds)
    assert (await client.recv()).type_url == ENDPOINT  # never ACKed
    loop = asyncio.get_running_loop()
    started = loop.time()
    rds = await client.recv(timeout=5)
    assert rds.type_url == ROUTE and loop.time() - started >= 0.3
