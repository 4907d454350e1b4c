"""On-demand gateways: the pinned cluster set (xds/pinned.py) and the per-node CDS answer.

The pinned set is checked against every golden case by an independent walk of all resources: any
cluster named other than as a route's own cluster must be pinned, or an on-demand Envoy would miss it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, descriptor, symbol_database
from google.protobuf.message import Message

from controlplane.metrics import Metrics
from controlplane.translate.listeners import ON_DEMAND_FILTER, ROUTER
from controlplane.xds import pinned as pinned_mod
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import Resource, SnapshotCache, make_resource
from controlplane.xds.pinned import OnDemandListeners, PinnedClusters, wants_on_demand
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.xds.server import XdsServer, lineage_of
from tests.test_golden import CASES, CASES_DIR, compiled
from tests.unit.test_xds_server import Delta, Env, Sotw, cla, cluster, delta_names, listener, names_of, route, until

# --------------------------------------------------------------------------------------------------
# Resources


def static_cluster(name: str) -> Resource:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    msg.load_assignment.cluster_name = name
    return make_resource(name, CLUSTER, msg)


def aggregate(name: str, members: list[str]) -> Resource:
    msg = cluster_pb2.Cluster(name=name)
    msg.cluster_type.name = "envoy.clusters.aggregate"
    msg.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=members))
    return make_resource(name, CLUSTER, msg)


def passthrough_listener(name: str, target: str) -> Resource:
    msg = listener_pb2.Listener(name=name)
    msg.address.CopyFrom(address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1")))
    flt = msg.filter_chains.add().filters.add(name="envoy.filters.network.tcp_proxy")
    flt.typed_config.Pack(tcp_proxy_pb2.TcpProxy(stat_prefix="p", cluster=target))
    return make_resource(name, LISTENER, msg)


def mirroring_route(name: str, target: str, mirror: str | None) -> Resource:
    msg = route_pb2.RouteConfiguration(name=name)
    vh = msg.virtual_hosts.add(name="h", domains=["h.example.com"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = target
    if mirror:
        r.route.request_mirror_policies.add(cluster=mirror)
    return make_resource(name, ROUTE, msg)


def pinned_of(cache: SnapshotCache) -> PinnedClusters:
    return PinnedClusters(cache, lineage_of(cache))


# --------------------------------------------------------------------------------------------------
# The pinned set


def test_pinned_are_the_clusters_reached_other_than_as_a_route_cluster() -> None:
    cache = SnapshotCache()
    cache.apply({
        CLUSTER: {n: cluster(n) for n in ("web", "api", "own", "fallback", "pass", "shadow")}
        | {"extauth": static_cluster("extauth"), "agg": aggregate("agg", ["own", "fallback"])},
        LISTENER: {"https": passthrough_listener("https", "pass")},
        ROUTE: {"http": mirroring_route("http", "web", "shadow")},
    })  # fmt: skip
    pinned = pinned_of(cache)
    assert pinned.of("*") == {"extauth", "agg", "own", "fallback", "pass", "shadow"}
    assert pinned.of("gw") is pinned.of("*")  # a group reading the default snapshot: the same answer


def test_pinned_set_follows_changes_and_parses_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SnapshotCache()
    cache.apply({CLUSTER: {f"svc-{i}": cluster(f"svc-{i}") for i in range(50)},
                 ROUTE: {"http": mirroring_route("http", "svc-0", None)}})  # fmt: skip
    parsed: list[str] = []
    for type_url, parse in list(pinned_mod.REFERENCES.items()):

        def counting(res: Resource, parse=parse) -> frozenset[str]:  # type: ignore[no-untyped-def]
            parsed.append(res.name)
            return parse(res)

        monkeypatch.setitem(pinned_mod.REFERENCES, type_url, counting)
    pinned = pinned_of(cache)
    first = pinned.of("*")
    assert first == set() and len(parsed) == 51
    assert pinned.of("*") is first  # unchanged: the same object, nothing parsed
    assert len(parsed) == 51
    parsed.clear()
    cache.apply({ROUTE: {"http": mirroring_route("http", "svc-0", "svc-7")}})  # a mirror appears
    assert pinned.of("*") == {"svc-7"} and parsed == ["http"]
    parsed.clear()
    cache.apply({CLUSTER: {"svc-3": static_cluster("svc-3"), "svc-4": None}})
    assert pinned.of("*") == {"svc-7", "svc-3"} and parsed == ["svc-3"]
    cache.apply({ROUTE: {"http": mirroring_route("http", "svc-0", None)}, CLUSTER: {"svc-3": cluster("svc-3")}})
    assert pinned.of("*") == set()


def test_a_reference_counted_twice_stays_until_both_go() -> None:
    cache = SnapshotCache()
    cache.apply({CLUSTER: {"a": cluster("a"), "b": cluster("b"), "x": aggregate("x", ["a", "b"])},
                 ROUTE: {"r": mirroring_route("r", "b", "a")}})  # fmt: skip
    pinned = pinned_of(cache)
    assert pinned.of("*") == {"x", "a", "b"}
    cache.apply({CLUSTER: {"x": None}})
    assert pinned.of("*") == {"a"}  # still mirrored to


def _walk(msg: Message, path: str, out: set[tuple[str, str]]) -> None:
    """Every (field path, cluster name) a resource names, Any payloads unpacked."""
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            values = list(value.values())
        else:
            values = list(value) if fd.is_repeated else [value]
        for v in values:
            if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                if isinstance(v, any_pb2.Any):
                    name = v.type_url.rpartition("/")[2]
                    try:
                        inner = symbol_database.Default().GetSymbol(name)()
                    except KeyError:
                        continue
                    v.Unpack(inner)
                    _walk(inner, f"{path}.{name}", out)
                elif not isinstance(v, (str, bytes)) and hasattr(v, "ListFields"):
                    _walk(v, f"{path}.{fd.name}", out)
            elif fd.name in ("cluster", "clusters", "cluster_name") and isinstance(v, str):
                out.add((f"{path}.{fd.name}", v))


# A route's own cluster (fetched by the on_demand filter); an assignment's and a static cluster's own name.
_ROUTE_OWN = (".RouteAction.cluster", ".load_assignment.cluster_name", "ClusterLoadAssignment.cluster_name")


@pytest.mark.parametrize("case", CASES)
def test_every_cluster_named_other_than_by_a_route_is_pinned(case: str) -> None:
    resources = compiled(CASES_DIR / case).resources
    cache = SnapshotCache()
    cache.apply(resources)
    pinned = pinned_of(cache).of("*")
    named: set[tuple[str, str]] = set()
    for type_url in (CLUSTER, LISTENER, ROUTE):
        cls = symbol_database.Default().GetSymbol(type_url.rpartition("/")[2])
        for res in resources.get(type_url, {}).values():
            msg = cls.FromString(any_pb2.Any.FromString(res.any_bytes).value)
            _walk(msg, cls.DESCRIPTOR.name, named)
    # Route action fields are named `route.cluster` under a Route; weighted ones are `name`s (not collected).
    others = {name for where, name in named if not where.endswith(".route.cluster")
              and not where.endswith("load_assignment.cluster_name")}  # fmt: skip
    assert others <= pinned, sorted(others - pinned)
    for type_url, res in resources.get(CLUSTER, {}).items():
        msg = cluster_pb2.Cluster.FromString(any_pb2.Any.FromString(res.any_bytes).value)
        if msg.type != cluster_pb2.Cluster.EDS or msg.HasField("cluster_type"):
            assert type_url in pinned  # no endpoints to fetch: held up front


def test_on_demand_is_asked_for_in_the_node_metadata() -> None:
    node = discovery_pb2.DeltaDiscoveryRequest().node
    assert not wants_on_demand(node)
    node.metadata.update({"meridian.clusters": "all"})
    assert not wants_on_demand(node)
    node.metadata.update({"meridian.clusters": "on-demand"})
    assert wants_on_demand(node)


# --------------------------------------------------------------------------------------------------
# The per-node CDS answer, over real gRPC streams


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    import grpc

    cache = SnapshotCache()
    cache.apply({
        CLUSTER: {"web": cluster("web"), "api": cluster("api"), "extauth": static_cluster("extauth")},
        ENDPOINT: {"web": cla("web", 9001), "api": cla("api", 9002)},
        LISTENER: {"http": listener("http", 1, "local")},
        ROUTE: {"local": route("local", "hello")},
    })  # fmt: skip
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


class OnDemand(Delta):
    """A Delta client whose node asks for on-demand clusters, as `meridian bootstrap --clusters on-demand`."""

    async def send(self, type_url: str, subscribe=(), nonce: str = "", **kw):  # type: ignore[no-untyped-def]
        if self.first:
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(subscribe),
                                                      response_nonce=nonce)  # fmt: skip
            req.node.id, req.node.cluster = self.node_id, "gw"
            req.node.metadata.update({"meridian.clusters": "on-demand"})
            self.first = False
            await self.call.write(req)
            return
        await super().send(type_url, subscribe, nonce, **kw)


async def _next(client: Delta, type_url: str) -> discovery_pb2.DeltaDiscoveryResponse:
    while True:
        r = await client.recv()
        await client.ack(r)
        if r.type_url == type_url:
            return r


async def test_on_demand_node_gets_pinned_then_what_it_asks_for(env: Env) -> None:
    od = OnDemand(env, "od")
    await od.send(CLUSTER, ["*"])
    first = await _next(od, CLUSTER)
    assert delta_names(first) == {"extauth": env.cache.get(CLUSTER).resources["extauth"].version}
    # The on_demand filter asks for a route's cluster by name on the same stream.
    await od.send(CLUSTER, ["web"])
    got = await _next(od, CLUSTER)
    assert set(delta_names(got)) == {"web"} and not got.removed_resources
    # A name Meridian has no cluster for: answered at once as removed (Envoy: "missing").
    await od.send(CLUSTER, ["nothere"])
    missing = await _next(od, CLUSTER)
    assert not missing.resources and list(missing.removed_resources) == ["nothere"]
    # A change to a fetched cluster reaches it; one to a cluster it never asked for does not.
    changed = static_cluster("web")
    env.cache.apply({CLUSTER: {"web": changed, "api": static_cluster("api")}})
    upd = await _next(od, CLUSTER)
    # "api" became static (no endpoints to fetch): pinned, so it comes too.
    assert delta_names(upd) == {"web": changed.version, "api": env.cache.get(CLUSTER).resources["api"].version}
    # The asked-for name appears later: sent then.
    env.cache.apply({CLUSTER: {"nothere": cluster("nothere"), "unasked": cluster("unasked")}})
    late = await _next(od, CLUSTER)
    assert set(delta_names(late)) == {"nothere"}
    # A Service's cluster removed: removed from the Envoy that fetched it.
    env.cache.apply({CLUSTER: {"web": None}})
    gone = await _next(od, CLUSTER)
    assert list(gone.removed_resources) == ["web"]


async def test_a_reconnecting_on_demand_node_is_told_at_once_of_a_fetched_name_now_missing(env: Env) -> None:
    """Envoy re-subscribes, with its first request, to every name it fetched before the stream broke;
    one whose Service went meanwhile (and that Envoy never held) is answered as removed right away."""
    od = OnDemand(env, "od-again")
    await od.send(CLUSTER, ["*", "web", "gone"])
    first = await _next(od, CLUSTER)
    assert set(delta_names(first)) == {"extauth", "web"}
    assert list(first.removed_resources) == ["gone"]


async def test_eager_node_on_the_same_cache_gets_every_cluster(env: Env) -> None:
    eager = Delta(env, "eager")
    await eager.send(CLUSTER, ["*"])
    got = await _next(eager, CLUSTER)
    assert set(delta_names(got)) == {"web", "api", "extauth"}


async def test_pinned_set_follows_routes_for_a_connected_on_demand_node(env: Env) -> None:
    od = OnDemand(env, "od2")
    await od.send(CLUSTER, ["*"])
    assert set(delta_names(await _next(od, CLUSTER))) == {"extauth"}
    await od.send(ROUTE, ["local"])
    await _next(od, ROUTE)
    # A route starts mirroring to "api": an on-demand Envoy must hold it before the route arrives.
    env.cache.apply({ROUTE: {"local": mirroring_route("local", "web", "api")}})
    cds = await _next(od, CLUSTER)
    assert set(delta_names(cds)) == {"api"}


def _hcm_filters(listener_any: bytes) -> list[list[str]]:
    msg = listener_pb2.Listener.FromString(any_pb2.Any.FromString(listener_any).value)
    out = []
    for chain in msg.filter_chains:
        for flt in chain.filters:
            if flt.name == "envoy.filters.network.http_connection_manager":
                hcm = hcm_pb2.HttpConnectionManager.FromString(flt.typed_config.value)
                out.append([f.name for f in hcm.http_filters])
    return out


@pytest.mark.parametrize("case", ["route-partitions", "family-ext-auth", "tls"])
def test_on_demand_listeners_fetch_the_route_cluster_last_before_the_router(case: str) -> None:
    listeners = compiled(CASES_DIR / case).resources[LISTENER]
    variant = OnDemandListeners()
    for res in listeners.values():
        before, after = _hcm_filters(res.any_bytes), _hcm_filters(variant.resource(res).any_bytes)
        assert before and len(before) == len(after)
        for names, od in zip(before, after, strict=True):
            assert ON_DEMAND_FILTER not in names
            assert od == [*names[:-1], ON_DEMAND_FILTER, ROUTER]  # after the scope and policy filters
        assert variant.resource(res) is variant.resource(res)  # rewritten once per version


async def test_only_on_demand_nodes_get_listeners_with_the_on_demand_filter(env: Env) -> None:
    od, eager = OnDemand(env, "od3"), Delta(env, "eager3")
    for client in (od, eager):
        await client.send(LISTENER, ["*"])
    got_od, got_eager = await _next(od, LISTENER), await _next(eager, LISTENER)
    assert [ON_DEMAND_FILTER in f for f in _hcm_filters(got_od.resources[0].resource.SerializeToString())] == [True]
    assert [ON_DEMAND_FILTER in f for f in _hcm_filters(got_eager.resources[0].resource.SerializeToString())] == [False]


async def test_a_new_service_does_not_hold_an_on_demand_node_routes(env: Env) -> None:
    """Make-before-break holds routes for clusters sent to the stream; an on-demand node is not sent a new
    Service's cluster (its on_demand filter fetches it), so its new route goes out at once, alone."""
    od = OnDemand(env, "od4")
    await od.send(CLUSTER, ["*"])
    await _next(od, CLUSTER)
    await od.send(ENDPOINT, [])
    await od.send(ROUTE, ["local"])
    await _next(od, ROUTE)
    env.cache.apply({CLUSTER: {"fresh": cluster("fresh")}, ENDPOINT: {"fresh": cla("fresh", 9009)},
                     ROUTE: {"local": route("local", "now with fresh")}})  # fmt: skip
    r = await od.recv()
    assert r.type_url == ROUTE, r.type_url  # neither the cluster nor its endpoints came first
    await od.ack(r)
    await until(lambda: not env.stream("od4")["types"]["RDS"]["pending"], what="route ACK not taken")
    # The fetch when a request needs it: the cluster, then (asked for by Envoy) its endpoints.
    await od.send(CLUSTER, ["fresh"])
    assert set(delta_names(await _next(od, CLUSTER))) == {"fresh"}
    await od.send(ENDPOINT, ["fresh"])
    assert set(delta_names(await _next(od, ENDPOINT))) == {"fresh"}


async def test_sotw_node_asking_for_on_demand_still_gets_every_cluster(env: Env) -> None:
    """On-demand needs Delta (the bootstrap refuses SotW); a hand-made SotW bootstrap asking for it is
    served every cluster and the plain listeners, as any SotW gateway."""
    client = Sotw(env, "sotw-od")
    req = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    req.node.id, req.node.cluster = "sotw-od", "gw"
    req.node.metadata.update({"meridian.clusters": "on-demand"})
    client.first = False
    await client.call.write(req)
    r = await client.recv()
    assert r.type_url == CLUSTER and sorted(names_of(r)) == ["api", "extauth", "web"]
    await client.send(LISTENER)
    r = await client.recv()
    assert r.type_url == LISTENER
    assert [ON_DEMAND_FILTER in f for f in _hcm_filters(r.resources[0].SerializeToString())] == [False]
