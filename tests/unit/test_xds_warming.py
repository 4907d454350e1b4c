"""Routes wait for the new EDS clusters they may name to get their endpoints (make-before-break).

A route naming a warming cluster answers 503 no_cluster until the cluster's first
ClusterLoadAssignment is applied (envoyproxy/envoy#5174). Envoy applies one ADS stream's responses
in order and finishes warming the cluster as it applies that assignment, so routes go out right
after the assignment is written, not after it is ACKed; the ACK is still waited for where that
ordering does not hold. These drive the ADS server as Envoy does (it subscribes to the new
cluster's endpoints while applying CDS, and ACKs CDS only once the cluster is warm) and check what
goes out when, and that nothing waits forever. tests/e2e/test_warming_order.py checks the same
against a real Envoy.
"""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, health_check_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import duration_pb2

from controlplane.xds import warming
from controlplane.xds.cache import Resource, make_resource
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


def _new_service(body: str, new: Resource | None = None) -> dict:
    return {
        CLUSTER: {"new": new or cluster("new")},
        ENDPOINT: {"new": cla("new", 9020)},
        ROUTE: {"local": route("local", body)},
    }


def _eds_cluster(
    name: str,
    health_checks: tuple[health_check_pb2.HealthCheck, ...] = (),
    transport_socket: base_pb2.TransportSocket | None = None,
) -> cluster_pb2.Cluster:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=1),
                              health_checks=health_checks)  # fmt: skip
    msg.eds_cluster_config.eds_config.ads.SetInParent()
    msg.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    if transport_socket is not None:
        msg.transport_socket.CopyFrom(transport_socket)
    return msg


def _health_checked(name: str) -> Resource:
    hc = health_check_pb2.HealthCheck(
        timeout=duration_pb2.Duration(seconds=1), interval=duration_pb2.Duration(seconds=5)
    )
    hc.tcp_health_check.SetInParent()
    return make_resource(name, CLUSTER, _eds_cluster(name, health_checks=(hc,)))


def _tls_over_sds(name: str) -> Resource:
    ctx = tls_pb2.UpstreamTlsContext()
    sds = ctx.common_tls_context.validation_context_sds_secret_config
    sds.name = "backend-ca"
    sds.sds_config.ads.SetInParent()
    sock = base_pb2.TransportSocket(name="envoy.transport_sockets.tls")
    sock.typed_config.Pack(ctx)
    return make_resource(name, CLUSTER, _eds_cluster(name, transport_socket=sock))


def _tls_inline(name: str) -> Resource:
    ctx = tls_pb2.UpstreamTlsContext(sni="backend.example.com")
    ctx.common_tls_context.validation_context.trusted_ca.inline_bytes = b"-----BEGIN CERTIFICATE-----"
    sock = base_pb2.TransportSocket(name="envoy.transport_sockets.tls")
    sock.typed_config.Pack(ctx)
    return make_resource(name, CLUSTER, _eds_cluster(name, transport_socket=sock))


def test_which_clusters_are_warmed_by_their_endpoints_alone() -> None:
    names = warming.EdsNames()
    assert names.of(cluster("plain")) == ("plain", True)
    assert names.of(_tls_inline("inline")) == ("inline", True)  # Meridian's backend TLS: CA inline
    assert names.of(_health_checked("hc")) == ("hc", False)  # warm after the first health check round
    assert names.of(_tls_over_sds("sds")) == ("sds", False)  # warm once the secret arrives
    dns = cluster_pb2.Cluster(name="external", type=cluster_pb2.Cluster.STRICT_DNS)
    assert names.of(make_resource("external", CLUSTER, dns)) == (None, False)


async def test_sotw_route_to_a_new_cluster_goes_right_after_its_endpoints(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    assert cds.type_url == CLUSTER and "new" in names_of(cds)
    nxt = await next_response_held(client)  # the route naming "new": Envoy has not asked for its endpoints
    # As Envoy: applying CDS subscribes the new cluster to its endpoints; CDS is ACKed once it is warm.
    eds = env.stream("envoy-1")["types"]["EDS"]
    await client.send(ENDPOINT, ["backend", "new"], eds["acked_version"], eds["nonce"])
    resp = await nxt
    assert resp.type_url == ENDPOINT and "new" in names_of(resp)
    rds = await client.recv(timeout=5)  # no ACK needed: Envoy applies the endpoints before the route
    assert rds.type_url == ROUTE and rds.version_info == env.cache.get(ROUTE).digest


async def test_delta_route_to_a_new_cluster_goes_right_after_its_endpoints(env: Env) -> None:
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new"))
    cds = await client.recv()
    assert cds.type_url == CLUSTER and "new" in delta_names(cds)
    nxt = await next_response_held(client)
    await client.send(ENDPOINT, ["new"])
    resp = await nxt
    assert resp.type_url == ENDPOINT and "new" in delta_names(resp)
    assert (await client.recv(timeout=5)).type_url == ROUTE


@pytest.mark.parametrize("make", [_health_checked, _tls_over_sds], ids=["health-checks", "sds-secret"])
async def test_clusters_warmed_by_more_than_endpoints_hold_routes_until_the_endpoints_ack(env: Env, make) -> None:
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(_new_service("to new", make("new")))
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    await client.send(ENDPOINT, ["new"])
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and "new" in delta_names(resp)
    nxt = await next_response_held(client)  # written is not enough: its warming needs more
    await client.ack(resp)
    assert (await nxt).type_url == ROUTE


async def test_after_an_endpoints_nack_routes_wait_for_the_ack(env: Env) -> None:
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9021)}})
    rejected = await client.recv()
    await client.send(ENDPOINT, nonce=rejected.nonce, error="rejected")  # the stream's EDS is now NACKed
    env.cache.apply(_new_service("to new"))
    assert (await client.recv()).type_url == CLUSTER
    await client.send(ENDPOINT, ["new"])
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and "new" in delta_names(resp)
    nxt = await next_response_held(client)  # Envoy may reject this one too: only its ACK tells
    await client.ack(resp)
    assert (await nxt).type_url == ROUTE


async def test_an_assignment_in_flight_before_its_cluster_holds_routes_until_acked(env: Env) -> None:
    """A new cluster whose endpoints name ("backend", shared as variants share one) went out just
    before it, not yet ACKed: that response may be read before the cluster exists."""
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9021)}})
    in_flight = await client.recv()
    assert in_flight.type_url == ENDPOINT
    variant = _eds_cluster("variant")
    variant.eds_cluster_config.service_name = "backend"
    env.cache.apply({CLUSTER: {"variant": make_resource("variant", CLUSTER, variant)},
                     ROUTE: {"local": route("local", "to variant")}})  # fmt: skip
    assert (await client.recv()).type_url == CLUSTER
    nxt = await next_response_held(client)
    await client.ack(in_flight, ["backend"])
    assert (await nxt).type_url == ROUTE


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
    env.cache.apply(_new_service("to new", _health_checked("new")))
    cds = await client.recv()
    eds = env.stream("envoy-1")["types"]["EDS"]
    await client.send(ENDPOINT, ["backend", "new"], eds["acked_version"], eds["nonce"])
    assert (await client.recv()).type_url == ENDPOINT  # never ACKed (nor is CDS: the cluster never warms)
    assert cds.type_url == CLUSTER
    loop = asyncio.get_running_loop()
    started = loop.time()
    rds = await client.recv(timeout=5)
    assert rds.type_url == ROUTE and loop.time() - started >= 0.3
