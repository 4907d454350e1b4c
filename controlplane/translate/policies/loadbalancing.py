"""load-balance / upstream-hash-by / affinity: cluster LB policy and route hash policies."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from controlplane.ir import Route, ServiceCluster, VirtualHost
from controlplane.ir.policies import CookieAffinity, HashBy, LoadBalancer
from controlplane.translate.features import Feature


def hash_policies(route: Route) -> list[rc_pb2.RouteAction.HashPolicy]:
    out: list[rc_pb2.RouteAction.HashPolicy] = []
    cookie = route.policy(CookieAffinity)
    if cookie is not None:
        hp = rc_pb2.RouteAction.HashPolicy()
        c = hp.cookie
        c.name = cookie.name
        c.ttl.seconds = cookie.ttl  # present (even 0 = session cookie): Envoy generates the cookie
        if cookie.path:
            c.path = cookie.path
        if cookie.samesite:
            c.attributes.add(name="SameSite", value=cookie.samesite)
        if cookie.secure:
            c.attributes.add(name="Secure")
        if cookie.domain:
            c.attributes.add(name="Domain", value=cookie.domain)
        out.append(hp)
        return out
    by = route.policy(HashBy)
    if by is None:
        return out
    for key in by.keys:
        hp = rc_pb2.RouteAction.HashPolicy()
        if key.kind == "source_ip":
            hp.connection_properties.source_ip = True
        elif key.kind == "header":
            hp.header.header_name = key.name
        elif key.kind == "query":
            hp.query_parameter.name = key.name
        else:
            hp.cookie.name = key.name  # no ttl: hash on the cookie only when the client sends it
        out.append(hp)
    return out


class LoadBalancingFeature(Feature):
    name = "load-balancing"

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        pb.route.hash_policy.extend(hash_policies(route))

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        policy = cluster.policy(LoadBalancer)
        if policy is None:
            return
        pb.lb_policy = cluster_pb2.Cluster.LbPolicy.Value(policy.policy)
        if policy.policy == "RING_HASH":
            pb.ring_hash_lb_config.minimum_ring_size.value = 1024
