"""FallbackBackend -> an aggregate cluster: the route's own cluster first, the default-backend second.

Envoy's aggregate cluster sends traffic to the second cluster exactly while the first has no healthy
(ready) endpoint, which is ingress-nginx's rule for a location's custom default backend (it swaps the
location's upstream while that upstream has no endpoint), without the control plane watching
endpoint counts.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from controlplane.ir import Forward, Route, VirtualHost
from controlplane.ir.policies import FallbackBackend
from controlplane.translate.common import DEFAULT_CONNECT_TIMEOUT, set_duration
from controlplane.translate.features import Feature


def aggregate_name(primary: str, fallback: str) -> str:
    return f"{primary}|or|{fallback}"


def aggregate_cluster(primary: str, fallback: str) -> cluster_pb2.Cluster:
    pb = cluster_pb2.Cluster(name=aggregate_name(primary, fallback), lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    set_duration(pb.connect_timeout, DEFAULT_CONNECT_TIMEOUT)
    pb.cluster_type.name = "envoy.clusters.aggregate"
    pb.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=[primary, fallback]))
    return pb


def _pairs(route: Route) -> list[tuple[str, str]]:
    policy = route.policy(FallbackBackend)
    if policy is None or not isinstance(route.action, Forward):
        return []
    return [(wc.cluster, policy.cluster) for wc in route.action.clusters if wc.cluster != policy.cluster]


class FallbackFeature(Feature):
    name = "fallback"

    def route_uses(self, route: Route) -> bool:
        return bool(_pairs(route))

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        swap = dict(_pairs(route))
        if not swap:
            return
        if pb.route.cluster in swap:
            pb.route.cluster = aggregate_name(pb.route.cluster, swap[pb.route.cluster])
        for wc in pb.route.weighted_clusters.clusters:
            if wc.name in swap:
                wc.name = aggregate_name(wc.name, swap[wc.name])

    def extra_clusters(self, route: Route) -> list[cluster_pb2.Cluster]:
        return [aggregate_cluster(p, f) for p, f in _pairs(route)]
