"""A push reads one snapshot: a route never goes out naming a cluster the same push skipped.

A stream's push sends the due types in order (clusters, endpoints, listeners, routes) and awaits each
write. The engine builds on the same event loop, so a batch can land while a write is awaited. Reading
each type's snapshot when its turn came, a push that had found clusters up to date sent, after an
endpoint write, the routes of the newer batch: they named its new cluster before any CDS response
carried it, and Envoy answered 503 `no_cluster` (Knative TestUpdate in Kubernetes mode: a Service and
the KIngress moved to it in consecutive batches). The batch here lands during exactly that write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.engine.invariants import route_clusters
from controlplane.xds.cache import Resource, make_resource
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit import test_xds_server
from tests.unit.test_xds_server import Delta, Env, Sotw, acked, cla, cluster, delta_names, delta_subscribe_all, names_of

env = test_xds_server.env  # the fixture: an ADS server over a snapshot cache


def forward(name: str, to: str) -> Resource:
    """A route table sending everything to cluster `to`."""
    action = route_components_pb2.RouteAction(cluster=to)
    vhost = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[
        route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"), route=action)])  # fmt: skip
    return make_resource(name, ROUTE, route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost]))


class _Writes:
    """The stream's transport, as the server sees it: runs `during` while the first endpoint response
    after arming is being written (the loop is free then: an engine batch can run)."""

    def __init__(self, context: Any, delta: bool, hook: _Hook) -> None:
        self._context, self._delta, self._hook = context, delta, hook

    async def write(self, body: bytes) -> None:
        kind = discovery_pb2.DeltaDiscoveryResponse if self._delta else discovery_pb2.DiscoveryResponse
        if self._hook.during is not None and kind.FromString(body).type_url == ENDPOINT:
            during, self._hook.during = self._hook.during, None
            during()
        await self._context.write(body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Hook:
    during: Callable[[], None] | None = None


def _hook_writes(env: Env, monkeypatch: pytest.MonkeyPatch, delta: bool) -> _Hook:
    hook = _Hook()
    push = env.server._push

    def wrapped(s: Any, context: Any) -> Awaitable[None]:
        return push(s, _Writes(context, delta, hook))

    monkeypatch.setattr(env.server, "_push", wrapped)
    return hook


def _new_service_and_route(env: Env) -> None:
    """One engine batch: a new Service's cluster and endpoints, and the route moved to it."""
    env.cache.apply({CLUSTER: {"new": cluster("new")}, ENDPOINT: {"new": cla("new", 9020)},
                     ROUTE: {"local": forward("local", "new")}})  # fmt: skip


def _check_route(table: Any, clusters: set[str]) -> bool:
    """Asserts the route table names only clusters the client has; whether it names "new"."""
    msg = route_pb2.RouteConfiguration()
    assert table.Unpack(msg)
    named = set(route_clusters(msg))
    assert named <= clusters, f"route {msg.name} names {sorted(named - clusters)}, not sent in CDS yet"
    return "new" in named


async def test_sotw_routes_of_a_batch_landing_mid_push_wait_for_its_clusters(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _hook_writes(env, monkeypatch, delta=False)
    client = Sotw(env, "envoy-1")
    await client.subscribe_all()
    await acked(env, "envoy-1", "RDS", env.cache.get(ROUTE).digest)
    clusters = {"backend"}
    hook.during = lambda: _new_service_and_route(env)
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9002)}})  # an EndpointSlice change: EDS is due
    eds_names, eds_acked = ["backend"], ("", "")
    for _ in range(20):  # as Envoy: subscribe to the endpoints of new clusters, ACK everything
        resp = await client.recv()
        if resp.type_url == CLUSTER:
            clusters = set(names_of(resp))
            eds_names = sorted(clusters)
            await client.send(ENDPOINT, eds_names, *eds_acked)
            await client.ack(resp)
        elif resp.type_url == ENDPOINT:
            eds_acked = (resp.version_info, resp.nonce)
            await client.ack(resp, eds_names)
        elif resp.type_url == ROUTE:
            if any([_check_route(t, clusters) for t in resp.resources]):
                return
            await client.ack(resp, ["local"])
        elif resp.type_url == LISTENER:
            await client.ack(resp)
    pytest.fail("the route to the new cluster never came")


async def test_delta_routes_of_a_batch_landing_mid_push_wait_for_its_clusters(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _hook_writes(env, monkeypatch, delta=True)
    client = Delta(env, "d1")
    await delta_subscribe_all(client)
    await acked(env, "d1", "RDS", env.cache.get(ROUTE).digest)
    clusters = {"backend"}
    hook.during = lambda: _new_service_and_route(env)
    env.cache.apply({ENDPOINT: {"backend": cla("backend", 9002)}})
    for _ in range(20):
        resp = await asyncio.wait_for(client.recv(), 10)
        if resp.type_url == CLUSTER:
            new = set(delta_names(resp)) - clusters
            clusters |= set(delta_names(resp))
            if new:
                await client.send(ENDPOINT, sorted(new))
            await client.ack(resp)
        elif resp.type_url == ROUTE:
            if any([_check_route(r.resource, clusters) for r in resp.resources]):
                return
            await client.ack(resp)
        else:
            await client.ack(resp)
    pytest.fail("the route to the new cluster never came")
