"""Checks of what a snapshot must never hold, for tests and debugging (not run on the hot path).

A route that names a cluster the snapshot does not have is answered by Envoy with an empty 503
(`no_cluster`): whatever the objects are, every cluster a route table forwards or mirrors to must be in
the same snapshot's CDS set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, SnapshotCache


def route_clusters(table: route_pb2.RouteConfiguration) -> Iterator[str]:
    """Every cluster a route table's routes forward or mirror to."""
    for vhost in table.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                yield action.cluster
            for wc in action.weighted_clusters.clusters:
                yield wc.name
            for mirror in action.request_mirror_policies:
                if mirror.cluster:
                    yield mirror.cluster


def dangling_clusters(routes: Mapping[str, Resource], clusters: Mapping[str, Resource]) -> dict[str, set[str]]:
    """Route table -> the clusters its routes name that are not in `clusters` (empty when sound)."""
    out: dict[str, set[str]] = {}
    for name, res in routes.items():
        table = route_pb2.RouteConfiguration.FromString(any_pb2.Any.FromString(res.any_bytes).value)
        missing = {c for c in route_clusters(table) if c not in clusters}
        if missing:
            out[name] = missing
    return out


def snapshot_dangling_clusters(cache: SnapshotCache, group: str | None = None) -> dict[str, set[str]]:
    """`dangling_clusters` of one group's current snapshot."""
    kw = {} if group is None else {"group": group}
    return dangling_clusters(cache.get(rt.ROUTE, **kw).resources, cache.get(rt.CLUSTER, **kw).resources)
