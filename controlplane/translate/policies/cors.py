"""enable-cors -> the CORS HTTP filter (only when some route uses it) and a per-route CorsPolicy."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import Cors
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.cors"


def cors_policy(policy: Cors) -> cors_pb2.CorsPolicy:
    pb = cors_pb2.CorsPolicy(
        allow_methods=policy.methods,
        allow_headers=policy.headers,
        max_age=str(policy.max_age),
    )
    if policy.expose_headers:
        pb.expose_headers = policy.expose_headers
    pb.allow_credentials.value = policy.credentials
    for kind, value in policy.origin_patterns():
        m = string_pb2.StringMatcher()
        if kind == "any":
            m.safe_regex.regex = ".*"
        elif kind == "exact":
            m.exact = value
        else:
            m.safe_regex.regex = value
        pb.allow_origin_string_match.append(m)
    return pb


class CorsFeature(Feature):
    name = "cors"
    filter_order = 100  # preflights are answered before auth or rate limits see them

    def route_uses(self, route: Route) -> bool:
        return route.policy(Cors) is not None

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        f = hcm_pb2.HttpFilter(name=FILTER)
        f.typed_config.Pack(cors_pb2.Cors())
        return [f]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(Cors)
        if policy is None:
            return
        pb.typed_per_filter_config[FILTER].Pack(cors_policy(policy))
