"""ResponseHeaders -> route response_headers_to_add, replacing what the backend sent (more_set_headers)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import ResponseHeaders
from controlplane.translate.features import Feature


class ResponseHeadersFeature(Feature):
    name = "response-headers"

    def route_uses(self, route: Route) -> bool:
        return route.policy(ResponseHeaders) is not None

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(ResponseHeaders)
        if policy is None:
            return
        for name, value in policy.headers:
            added = pb.response_headers_to_add.add(header={"key": name, "value": value})
            added.append_action = added.OVERWRITE_IF_EXISTS_OR_ADD
