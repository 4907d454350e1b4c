"""default-backend as ingress-nginx's custom default backend of a location, with Envoy clusters.

ingress-nginx swaps a location's upstream for the default-backend Service while the location's own
upstream has no endpoint, and then sends it X-Code: 503, X-Format, X-Namespace, X-Ingress-Name,
X-Service-Name and X-Service-Port (nginx.tmpl, `custom-default-backend-`). Here:
- FallbackBackend: the route goes to an aggregate cluster, its own cluster first, then the
  default-backend's stand-in cluster; Envoy uses the second exactly while the first has no healthy
  (ready) endpoint, without the control plane watching endpoint counts;
- FallbackHeaders: the stand-in is a variant of the default-backend Service's cluster (its own
  endpoint assignment) whose upstream header_mutation filter adds those headers. A path whose
  Service does not exist forwards to its stand-in directly.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from controlplane.ir import Forward, Route, ServiceCluster, VirtualHost
from controlplane.ir.policies import FallbackBackend, FallbackHeaders
from controlplane.translate.common import DEFAULT_CONNECT_TIMEOUT, set_duration
from controlplane.translate.features import Feature

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


# X-Format is the request's Accept, sent only when the stand-in serves: a CEL expression (Envoy's built-in
# %CEL% formatter) that reads the serving endpoint's metadata; an empty value adds no header, as nginx's
# proxy_set_header with an empty $http_accept.
X_FORMAT_IF_STAND_IN = (
    "%CEL('meridian.fallback' in xds.upstream_host_metadata.filter_metadata && 'accept' in request.headers"
    " ? request.headers['accept'] : '')%"
)


def aggregate_name(primary: str, fallback: str) -> str:
    return f"{primary}|or|{fallback}"


def aggregate_cluster(primary: str, fallback: str) -> cluster_pb2.Cluster:
    """Envoy runs the route cluster's (this one's) upstream filters whichever cluster serves: the
    headers come from the serving endpoint's metadata, which only the stand-in's endpoints have
    (an empty value adds no header), and X-Format from the request when that metadata is there."""
    pb = cluster_pb2.Cluster(name=aggregate_name(primary, fallback), lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    set_duration(pb.connect_timeout, DEFAULT_CONNECT_TIMEOUT)
    pb.cluster_type.name = "envoy.clusters.aggregate"
    pb.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=[primary, fallback]))
    mutation = header_mutation_pb2.HeaderMutation()
    keys = [key for key, _ in FallbackHeaders("", "", "", "").headers()]
    values = [(key, f"%UPSTREAM_METADATA(meridian.fallback:{key})%") for key in keys]
    values.insert(1, ("X-Format", X_FORMAT_IF_STAND_IN))
    for key, value in values:
        add = mutation.mutations.request_mutations.add().append
        add.header.key, add.header.value = key, value
        add.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    opts = hpo_pb2.HttpProtocolOptions()
    opts.use_downstream_protocol_config.SetInParent()
    opts.http_filters.add(name="envoy.filters.http.header_mutation").typed_config.Pack(mutation)
    opts.http_filters.add(name="envoy.filters.http.upstream_codec").typed_config.Pack(
        upstream_codec_pb2.UpstreamCodec()
    )
    pb.typed_extension_protocol_options[HTTP_OPTIONS].Pack(opts)
    return pb


def _swaps(route: Route) -> dict[str, str]:
    policy = route.policy(FallbackBackend)
    if policy is None or not isinstance(route.action, Forward):
        return {}
    return {wc.cluster: fb for wc in route.action.clusters if (fb := policy.fallback_of(wc.cluster)) is not None}


class FallbackFeature(Feature):
    name = "fallback"

    def route_uses(self, route: Route) -> bool:
        return route.policy(FallbackBackend) is not None

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        swap = _swaps(route)
        if not swap or not pb.HasField("route"):
            return
        if pb.route.cluster in swap:
            pb.route.cluster = aggregate_name(pb.route.cluster, swap[pb.route.cluster])
        for wc in pb.route.weighted_clusters.clusters:
            if wc.name in swap:
                wc.name = aggregate_name(wc.name, swap[wc.name])

    def extra_clusters(self, route: Route) -> list[cluster_pb2.Cluster]:
        return [aggregate_cluster(own, fb) for own, fb in _swaps(route).items()]

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        headers = cluster.policy(FallbackHeaders)
        if headers is None:
            return
        mutation = header_mutation_pb2.HeaderMutation()
        for key, value in (("X-Code", "503"), ("X-Format", "%REQ(accept)%"),
                           ("X-Namespace", headers.namespace.replace("%", "%%")),
                           ("X-Ingress-Name", headers.ingress.replace("%", "%%")),
                           ("X-Service-Name", headers.service.replace("%", "%%")),
                           ("X-Service-Port", headers.port.replace("%", "%%"))):  # fmt: skip
            add = mutation.mutations.request_mutations.add().append
            add.header.key, add.header.value = key, value
            add.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        opts = hpo_pb2.HttpProtocolOptions()
        if HTTP_OPTIONS in pb.typed_extension_protocol_options:  # keep the protocol the backend feature set
            pb.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(opts)
        else:
            opts.explicit_http_config.http_protocol_options.SetInParent()
        opts.http_filters.add(name="envoy.filters.http.header_mutation").typed_config.Pack(mutation)
        opts.http_filters.add(name="envoy.filters.http.upstream_codec").typed_config.Pack(
            upstream_codec_pb2.UpstreamCodec()
        )
        pb.typed_extension_protocol_options[HTTP_OPTIONS].Pack(opts)
