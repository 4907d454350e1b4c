"""Cors -> routes that do what ingress-nginx's CORS template does, without Envoy's CORS filter.

Envoy's filter echoes the origin, answers preflights 200 and adds nothing when a request has no
Origin. nginx instead (nginx.tmpl, `define "CORS"`) sets the headers on every response once the
origin is allowed (always, for `*`) and answers any OPTIONS 204. So a route with a Cors policy
becomes, in this order:
  1. OPTIONS [+ allowed Origin] -> direct response 204 with the CORS headers, Content-Type and
     Content-Length: 0 (before any access rule, as nginx returns in its rewrite phase);
  2. [allowed Origin] -> the route itself with the CORS headers set on its responses;
  3. (listed origins only) the route unchanged, for requests from other origins.

nginx sends the template's `Content-Length: 0` on the 204 (headers-more adds it to the header list,
which nginx's header filter prints even for a 204; Content-Type it drops). Envoy removes the header
from a 204 local reply, so a small Lua step sets it on the preflight's response again. Over HTTP/2 the
header reaches the client too, as nginx's (nghttp2-based clients such as curl hide a 204's
`content-length: 0`, whoever sends it).
"""

from __future__ import annotations

from dataclasses import replace

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import DirectResponse, HeaderMatch, Route, VirtualHost
from controlplane.ir.policies import Cors, ResponseHeaders
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.lua/cors-preflight"
PREFLIGHT_SUFFIX = "#cors-preflight"
_PREFLIGHT_SCRIPT = """-- meridian CORS preflight: nginx's 204 carries Content-Length: 0
function envoy_on_response(h)
  h:headers():replace("content-length", "0")
end
"""

PREFLIGHT_HEADERS = (("Content-Type", "text/plain charset=UTF-8"), ("Content-Length", "0"))


def cors_routes(route: Route, policy: Cors) -> list[Route]:
    others = tuple(p for p in route.policies if not isinstance(p, Cors))
    plain = replace(route, policies=others)
    pattern = policy.origin_regex()
    if pattern is None:
        allow, origin_match = "*", ()
    elif policy.origins:
        allow, origin_match = "%REQ(origin)%", (HeaderMatch("origin", regex=pattern),)
    else:
        return [plain]  # no valid origin: nginx never sets $cors
    headers = policy.response_headers(allow)
    preflight = replace(
        route,
        name=route.name + PREFLIGHT_SUFFIX,
        headers=(*route.headers, HeaderMatch(":method", exact="OPTIONS"), *origin_match),
        action=DirectResponse(204, headers=headers + PREFLIGHT_HEADERS),
        policies=(),
    )
    allowed = replace(route, name=f"{route.name}#cors", headers=(*route.headers, *origin_match),
                      policies=(*others, ResponseHeaders(headers)))  # fmt: skip
    return [preflight, allowed] + ([plain] if origin_match else [])


class CorsFeature(Feature):
    name = "cors"

    def route_uses(self, route: Route) -> bool:
        return route.policy(Cors) is not None

    def expand_route(self, route: Route) -> list[Route] | None:
        policy = route.policy(Cors)
        return None if policy is None else cors_routes(route, policy)

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="cors_preflight")
        cfg.source_codes["preflight"].inline_string = _PREFLIGHT_SCRIPT
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        action = route.action
        if isinstance(action, DirectResponse) and action.status == 204 and route.name.endswith(PREFLIGHT_SUFFIX):
            pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(lua_pb2.LuaPerRoute(name="preflight")))
