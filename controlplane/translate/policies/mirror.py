"""mirror-target -> route request mirror policy and a cluster for the target host:port."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import Mirror
from controlplane.translate.common import DEFAULT_CONNECT_TIMEOUT, set_duration, socket_address
from controlplane.translate.features import Feature


def mirror_cluster(policy: Mirror) -> cluster_pb2.Cluster:
    pb = cluster_pb2.Cluster(name=policy.cluster)
    set_duration(pb.connect_timeout, DEFAULT_CONNECT_TIMEOUT)
    pb.type = cluster_pb2.Cluster.STATIC if policy.is_ip else cluster_pb2.Cluster.STRICT_DNS
    if not policy.is_ip:
        pb.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    pb.load_assignment.cluster_name = policy.cluster
    ep = pb.load_assignment.endpoints.add().lb_endpoints.add().endpoint
    ep.address.CopyFrom(socket_address(policy.host, policy.port))
    if policy.scheme == "https":
        ctx = tls_pb2.UpstreamTlsContext(sni="" if policy.is_ip else policy.host)
        pb.transport_socket.name = "envoy.transport_sockets.tls"
        pb.transport_socket.typed_config.Pack(ctx)
    return pb


class MirrorFeature(Feature):
    name = "mirror"

    def route_uses(self, route: Route) -> bool:
        return route.policy(Mirror) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(Mirror)
        if policy is None or not pb.HasField("route"):
            return
        mp = pb.route.request_mirror_policies.add(cluster=policy.cluster)
        default_port = 443 if policy.scheme == "https" else 80
        mp.host_rewrite_literal = policy.host if policy.port == default_port else f"{policy.host}:{policy.port}"
        mp.disable_shadow_host_suffix_append = True

    def extra_clusters(self, route: Route) -> list[cluster_pb2.Cluster]:
        policy = route.policy(Mirror)
        return [mirror_cluster(policy)] if policy is not None else []
