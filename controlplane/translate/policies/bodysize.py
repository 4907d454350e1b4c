"""Request body limits (413 above): a Content-Length check with nginx's 1m default on every route.

ingress-nginx applies client_max_body_size 1m to every location, so Meridian does too.
The check is a tiny Lua filter that compares the request's Content-Length with the
route's limit and answers 413 before any body byte is read, as nginx does for a
declared length. Nothing is buffered, so large uploads within the limit stream
through, and WebSocket upgrades and gRPC streams are untouched (Envoy's buffer filter
would hold them until the body ends). Requests without Content-Length (chunked) are
not counted: that is the difference from nginx, which counts as it reads.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Forward, Route, VirtualHost
from controlplane.ir.policies import DEFAULT_BODY_SIZE, BodySize, UrlRedirect
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.lua/body-size"

_SCRIPT = """-- meridian proxy-body-size
function envoy_on_request(h)
  local cl = h:headers():get("content-length")
  if cl ~= nil then
    local n = tonumber(cl)
    if n ~= nil and n > %d then
      h:respond({[":status"] = "413", ["content-type"] = "text/plain", ["connection"] = "close"},
        "413 Request Entity Too Large\\n")
    end
  end
end
"""


def script(limit: int) -> str:
    return _SCRIPT % limit


class BodySizeFeature(Feature):
    name = "body-size"
    filter_order = 900  # after access control and auth, as nginx checks the body after access

    def route_uses(self, route: Route) -> bool:
        return isinstance(route.action, Forward) and route.policy(UrlRedirect) is None

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="body_size")
        cfg.default_source_code.inline_string = script(DEFAULT_BODY_SIZE)
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(BodySize)
        if policy is None or policy.max_bytes == DEFAULT_BODY_SIZE or not self.route_uses(route):
            return
        per_route = lua_pb2.LuaPerRoute()
        if policy.max_bytes == 0:
            per_route.disabled = True
        else:
            per_route.source_code.inline_string = script(policy.max_bytes)
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(per_route))
