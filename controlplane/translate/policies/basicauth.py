"""BasicAuth -> Envoy basic_auth filter, disabled by default and enabled per route with its users."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import BasicAuth
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature
from controlplane.translate.policies.ipaccess import access_policy

FILTER = "envoy.filters.http.basic_auth"
# The connection-manager config must name a user; this one's password is 32 random bytes nobody kept.
_PLACEHOLDER = "meridian-no-user:{SHA}q7cKZr0KpyC1JVe2WlQ8bLQY4Ek=\n"


class BasicAuthFeature(Feature):
    name = "basic-auth"
    filter_order = 250

    def route_uses(self, route: Route) -> bool:
        return access_policy(route, BasicAuth) is not None

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = basic_auth_pb2.BasicAuth()
        cfg.users.inline_string = _PLACEHOLDER
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg), disabled=True)]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = access_policy(route, BasicAuth)
        if policy is None:
            return
        per_route = basic_auth_pb2.BasicAuthPerRoute()
        per_route.users.inline_string = policy.users or _PLACEHOLDER  # no user Envoy can verify: all get 401
        fc = route_components_pb2.FilterConfig(config=pack_any(per_route), disabled=False)
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(fc))
