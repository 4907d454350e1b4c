"""Delta responses in chunks (`controlplane.xds.chunking`), driven by an ADS client that acts as Envoy.

A large Delta response goes out `limit` resources at a time, the next chunk after the previous
one's ACK; the union is exactly what one response would have carried, listeners and routes wait
for the last CDS chunk, and the stream is current only once the last chunk is ACKed. SotW is
never chunked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2

from controlplane.metrics import Metrics
from controlplane.xds import chunking
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import Resource, SnapshotCache, make_resource
from controlplane.xds.resources import CLUSTER, LISTENER, ROUTE
from controlplane.xds.server import XdsServer
from controlplane.xds.tracking import TypeState
from tests.unit.test_xds_server import SUBS, Delta, Env, Sotw, initial_snapshot, names_of, until

LIMIT = 2


def static_cluster(name: str) -> Resource:
    """A cluster without EDS: nothing warms, so only chunking can hold routes back."""
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC,
                              connect_timeout=duration_pb2.Duration(seconds=1))  # fmt: skip
    return make_resource(name, CLUSTER, msg)


EXTRA = {f"s{i}": static_cluster(f"s{i}") for i in range(4)}  # with "backend": five clusters


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv("MERIDIAN_XDS_DELTA_CHUNK", str(LIMIT))
    cache = SnapshotCache()
    cache.apply(initial_snapshot())
    cache.apply({CLUSTER: dict(EXTRA)})
    cache.ready = True
    metrics = Metrics()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=True))
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(cache, metrics, server, channel, port)
    finally:
        await channel.close()
        await server.stop()


async def nothing_more(client: Delta, timeout: float = 0.3) -> asyncio.Future:
    """Asserts no response arrives within `timeout`; the pending read is returned to await later."""
    nxt = asyncio.ensure_future(client.recv(timeout=10))
    done, _ = await asyncio.wait({nxt}, timeout=timeout)
    assert not done, f"sent while it should wait for an ACK: {nxt.result().type_url}"
    return nxt


def test_split_owes_the_rest_and_next_names_takes_the_next_that_still_differ() -> None:
    rs = [static_cluster(f"c{i}") for i in range(5)]
    st = TypeState(CLUSTER)
    assert chunking.split(st, rs, 0, 0) == (rs, False) and chunking.split(st, rs, 5, 5) == (rs, False)
    assert chunking.split(st, rs, 2, 5) == (rs, False)  # not more than `above`: whole
    chunk, more = chunking.split(st, rs, 2, 4)
    assert list(chunk) == rs[:2] and more and st.owed == ("c2", "c3", "c4")
    for r in chunk:
        st.known[r.name] = r.version
    st.known["c3"] = rs[3].version  # the client got c3 meanwhile: no longer owed
    resources = {r.name: r for r in rs}
    assert chunking.next_names(st, {"x"}, resources, 2) == {"x", "c2", "c4"} and st.owed == ()
    st.owed = ("c2",)
    assert chunking.next_names(st, None, resources, 2) is None and st.owed == ()  # a full comparison


def test_limit_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERIDIAN_XDS_DELTA_CHUNK", raising=False)
    assert chunking.limit_from_env() == (100, 1000)  # by default only responses of over 1,000 resources
    monkeypatch.setenv("MERIDIAN_XDS_DELTA_CHUNK", "0")
    assert chunking.limit_from_env() == (0, 0)
    monkeypatch.setenv("MERIDIAN_XDS_DELTA_CHUNK", "-1")
    with pytest.raises(ValueError, match="MERIDIAN_XDS_DELTA_CHUNK"):
        chunking.limit_from_env()


async def test_initial_clusters_go_in_chunks_one_per_ack_and_routes_wait_for_the_last(env: Env) -> None:
    client = Delta(env, "chunked")
    for type_url in (CLUSTER, LISTENER, ROUTE):  # no EDS: nothing warms, only chunking holds routes
        await client.send(type_url, SUBS[type_url])
    clusters: dict[str, str] = {}
    order: list[str] = []
    while not {LISTENER, ROUTE} <= set(order):
        r = await client.recv()
        order.append(r.type_url)
        if r.type_url == CLUSTER:
            assert 0 < len(r.resources) <= LIMIT
            assert not set(clusters) & {x.name for x in r.resources}, "a cluster sent twice"
            clusters.update({x.name: x.version for x in r.resources})
            digest = env.cache.get(CLUSTER).digest
            last = len(clusters) == len(EXTRA) + 1
            assert r.system_version_info == (digest if last else digest + chunking.PART)
            if not last:  # not current yet: an ACK of this chunk does not stand for the snapshot
                assert env.stream("chunked")["types"]["CDS"]["current_version"] < env.cache.get(CLUSTER).version
            if order.count(CLUSTER) == 1:  # one chunk in flight: the next waits for this one's ACK
                pending = await nothing_more(client)
                await client.ack(r)
                r = await pending
                order.append(r.type_url)
                assert r.type_url == CLUSTER, f"{r.type_url} before the last CDS chunk"
                if r.type_url == CLUSTER:
                    clusters.update({x.name: x.version for x in r.resources})
        await client.ack(r)
    assert clusters == {n: res.version for n, res in env.cache.get(CLUSTER).resources.items()}
    assert order.count(CLUSTER) == 3  # 5 clusters, 2 at a time
    last_cds = max(i for i, t in enumerate(order) if t == CLUSTER)
    assert min(order.index(LISTENER), order.index(ROUTE)) > last_cds, order
    await until(lambda: env.stream("chunked")["types"]["CDS"]["current_version"] == env.cache.get(CLUSTER).version,
                what="CDS current after the last chunk's ACK")  # fmt: skip


async def recv_clusters(client: Delta, until_names: set[str]) -> list[tuple[dict[str, str], list[str]]]:
    """CDS responses (ACKing everything) until every name in `until_names` was added or removed."""
    got: list[tuple[dict[str, str], list[str]]] = []
    seen: set[str] = set()
    while not until_names <= seen:
        r = await client.recv()
        await client.ack(r)
        if r.type_url == CLUSTER:
            added = {x.name: x.version for x in r.resources}
            got.append((added, list(r.removed_resources)))
            seen |= set(added) | set(r.removed_resources)
    return got


async def test_changes_while_chunks_are_in_flight_are_sent_as_they_are_at_the_time(env: Env) -> None:
    """A cluster changed or removed before its chunk went out is sent as it is then (or not at all)."""
    client = Delta(env, "moving")
    await client.send(CLUSTER)
    first = await client.recv()
    assert first.type_url == CLUSTER and len(first.resources) == LIMIT
    sent = {x.name for x in first.resources}
    unsent = sorted(set(EXTRA) - sent)
    changed, removed = unsent[0], unsent[1]
    msg = cluster_pb2.Cluster(name=changed, type=cluster_pb2.Cluster.STATIC,
                              connect_timeout=duration_pb2.Duration(seconds=7))  # fmt: skip
    newer = make_resource(changed, CLUSTER, msg)
    env.cache.apply({CLUSTER: {changed: newer, removed: None}})
    await client.ack(first)
    rest = await recv_clusters(client, (set(EXTRA) | {"backend"}) - sent - {removed})
    added = {n: v for a, _ in rest for n, v in a.items()}
    assert added[changed] == newer.version
    assert removed not in added and not any(r for _, r in rest), "a never-sent cluster is not removed"
    assert sent | set(added) == set(env.cache.get(CLUSTER).resources)


async def test_reconnecting_client_gets_only_differences_in_chunks(env: Env) -> None:
    resources = env.cache.get(CLUSTER).resources
    have = {n: r.version for n, r in resources.items() if n in ("backend", "s0")}
    client = Delta(env, "back")
    await client.send(CLUSTER, initial=have | {"gone": "x"})
    got = await recv_clusters(client, {"s1", "s2", "s3", "gone"})
    added = {n for a, _ in got for n in a}
    assert added == {"s1", "s2", "s3"} and [r for _, r in got if r] == [["gone"]]
    assert len(got) == 2 and all(len(a) <= LIMIT for a, _ in got)


async def test_sotw_is_never_chunked(env: Env) -> None:
    client = Sotw(env, "sotw")
    await client.send(CLUSTER)
    r = await client.recv()
    assert sorted(names_of(r)) == sorted(env.cache.get(CLUSTER).resources)


async def test_a_small_change_is_one_response(env: Env) -> None:
    client = Delta(env, "small")
    await client.send(CLUSTER)
    await recv_clusters(client, set(env.cache.get(CLUSTER).resources))
    more = {f"n{i}": static_cluster(f"n{i}") for i in range(LIMIT)}
    env.cache.apply({CLUSTER: more})
    r = await client.recv()
    assert r.type_url == CLUSTER and {x.name for x in r.resources} == set(more)
    assert r.system_version_info == env.cache.get(CLUSTER).digest


async def test_by_default_only_responses_of_over_1000_resources_are_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERIDIAN_XDS_DELTA_CHUNK", raising=False)
    cache = SnapshotCache()
    cache.apply({CLUSTER: {f"c{i:04}": static_cluster(f"c{i:04}") for i in range(1000)}})
    cache.ready = True
    metrics = Metrics()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=True))
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        env = Env(cache, metrics, server, channel, port)
        small = Delta(env, "thousand")
        await small.send(CLUSTER)
        r = await small.recv()
        assert len(r.resources) == 1000 and r.system_version_info == cache.get(CLUSTER).digest
        cache.apply({CLUSTER: {f"d{i}": static_cluster(f"d{i}") for i in range(250)}})
        big = Delta(env, "1250")
        await big.send(CLUSTER)
        sizes = [len(x) for x, _ in await recv_clusters(big, set(cache.get(CLUSTER).resources))]
        assert sizes == [100] * 12 + [50]
    finally:
        await channel.close()
        await server.stop()


async def test_a_large_change_on_a_stream_in_sync_is_one_response(env: Env) -> None:
    """Chunks are for a stream's first sync; a mass change later (a failover moving thousands of
    assignments) must not wait one round trip per chunk."""
    client = Delta(env, "in-sync")
    await client.send(CLUSTER)
    await recv_clusters(client, set(env.cache.get(CLUSTER).resources))
    more = {f"m{i}": static_cluster(f"m{i}") for i in range(3 * LIMIT)}
    env.cache.apply({CLUSTER: more})
    r = await client.recv()
    assert r.type_url == CLUSTER and {x.name for x in r.resources} == set(more)
    assert r.system_version_info == env.cache.get(CLUSTER).digest
