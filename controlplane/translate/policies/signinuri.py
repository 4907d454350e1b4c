"""auth-signin's `$escaped_request_uri`: the request URI escaped as nginx's `set_escape_uri` does.

A request the auth service refuses (401) is sent to auth-signin with, unless the URL has its own,
`rd=$pass_access_scheme://$http_host$escaped_request_uri`: the URI escaped as a query component
(`/p?a=b&c=d` -> `%2Fp%3Fa%3Db%26c%3Dd`, every byte but letters, digits and `-._~`), so the sign-in
service gets the whole URL back, query included. Envoy's formatters cannot escape, so a small Lua
step on those routes puts the escaped URI in dynamic metadata, read by the 302's Location.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import ESCAPED_REQUEST_URI, ExtAuth
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature
from controlplane.translate.policies.ipaccess import access_policy

FILTER = "envoy.filters.http.lua/signin-uri"
SCRIPT_NAME = "escaped-request-uri"

# The namespace and key are ESCAPED_REQUEST_URI's (the format operator the sign-in Location uses).
_SCRIPT = """-- meridian auth-signin $escaped_request_uri (nginx set_escape_uri)
function envoy_on_request(h)
  local uri = h:headers():get(":path") or "/"
  local escaped = string.gsub(uri, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end)
  h:streamInfo():dynamicMetadata():set("meridian.signin", "escaped_request_uri", escaped)
end
"""


def _uses(route: Route) -> bool:
    p = access_policy(route, ExtAuth)
    return p is not None and ESCAPED_REQUEST_URI in (p.signin or "")


class SigninUriFeature(Feature):
    name = "signin-uri"
    filter_order = 230  # before the auth filters, whose 401 becomes the 302 that reads it

    def route_uses(self, route: Route) -> bool:
        return _uses(route)

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="signin_uri")
        cfg.source_codes[SCRIPT_NAME].inline_string = _SCRIPT
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        if _uses(route):
            pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(lua_pb2.LuaPerRoute(name=SCRIPT_NAME)))
