"""Request body limits (413 above): the buffer filter with nginx's 1m default on every route.

ingress-nginx applies client_max_body_size 1m to every location, so Meridian does too:
the buffer filter is in the chain whenever a route forwards, with 1 MiB at the
connection manager and a per-route override for proxy-body-size (disabled for 0).
The filter holds the body in memory up to the limit before forwarding (nginx buffers
request bodies as well, to disk).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.annotations.bodysize import DEFAULT_BODY_SIZE, BodySize
from controlplane.ir import Forward, Route, VirtualHost
from controlplane.translate.features import Feature, register
from controlplane.translate.policies.ipaccess import pack

FILTER = "envoy.filters.http.buffer"


class BodySizeFeature(Feature):
    name = "body-size"
    filter_order = 900  # after access control and auth: never buffer what will be refused

    def route_uses(self, route: Route) -> bool:
        return isinstance(route.action, Forward)

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = buffer_pb2.Buffer()
        cfg.max_request_bytes.value = DEFAULT_BODY_SIZE
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(BodySize)
        if policy is None or policy.max_bytes == DEFAULT_BODY_SIZE or not isinstance(route.action, Forward):
            return
        per_route = buffer_pb2.BufferPerRoute()
        if policy.max_bytes == 0:
            per_route.disabled = True
        else:
            per_route.buffer.max_request_bytes.value = policy.max_bytes
        pb.typed_per_filter_config[FILTER].CopyFrom(pack(per_route))


register(BodySizeFeature())
