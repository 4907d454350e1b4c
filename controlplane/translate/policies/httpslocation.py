"""HttpsLocation -> the ssl-redirect Location ingress-nginx's lua_ingress.lua computes, exactly.

nginx answers `https://` + the request's Host up to its first ":" (redirect_host() splits
$best_http_host on ":") + `:port` unless the public HTTPS port is 443 + $request_uri, one trailing
"/" dropped unless preserve-trailing-slash. Envoy's redirect action keeps a Host port other than 80
and cannot send a bare origin, so a small Lua step (per route, by name: the filter holds one script
per port and slash mode in use) computes the Location into dynamic metadata, and the route's
response header replaces the redirect action's Location with it. Without the metadata (no Lua ran)
the header is empty, so Envoy's own Location stays.

The frontend spells the redirect for readers of the IR as up to three routes (the bare origin for
`/`, the trailing-slash one, the rest); the step computes all three cases, so only the last one, which
matches every request the others match, goes to Envoy.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import DirectResponse, Redirect, Route, VirtualHost
from controlplane.ir.policies import HttpsLocation
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.lua/https-location"
NAMESPACE = "meridian.https_location"

_SCRIPT = """-- meridian ssl-redirect Location (ingress-nginx lua_ingress.lua)
function envoy_on_request(h)
  local hd = h:headers()
  local host = string.match(hd:get(":authority") or "", "^[^:]*")
  local uri = hd:get(":path") or "/"
%(strip)s  h:streamInfo():dynamicMetadata():set("%(namespace)s", "location", "https://" .. host .. "%(port)s" .. uri)
end
"""

_STRIP = """  if string.byte(uri, -1) == 47 then
    uri = string.sub(uri, 1, -2)
  end
"""


def script_name(policy: HttpsLocation) -> str:
    return f"https-{policy.port or 'noport'}-{'strip' if policy.strip_trailing_slash else 'keep'}"


def script(policy: HttpsLocation) -> str:
    port = f":{policy.port}" if policy.port else ""
    return _SCRIPT % {"strip": _STRIP if policy.strip_trailing_slash else "", "port": port, "namespace": NAMESPACE}


def _policy(route: Route) -> HttpsLocation | None:
    if not isinstance(route.action, (Redirect, DirectResponse)):
        return None
    return route.policy(HttpsLocation)


class HttpsLocationFeature(Feature):
    name = "https-location"
    filter_order = 50  # before access rules: nginx redirects in its rewrite phase

    def route_uses(self, route: Route) -> bool:
        return _policy(route) is not None

    def expand_route(self, route: Route) -> list[Route] | None:
        action = route.action
        covered = isinstance(action, DirectResponse) or (isinstance(action, Redirect) and action.strip_trailing_slash)
        return [] if covered and _policy(route) is not None else None

    def filter_keys(self, route: Route) -> frozenset[str]:
        policy = _policy(route)
        return frozenset() if policy is None else frozenset({script_name(policy)})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="https_location")
        for key in sorted(keys):
            _, port, mode = key.split("-")
            policy = HttpsLocation(port=None if port == "noport" else int(port), strip_trailing_slash=mode == "strip")
            cfg.source_codes[key].inline_string = script(policy)
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = _policy(route)
        if policy is None:
            return
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(lua_pb2.LuaPerRoute(name=script_name(policy))))
        kept = [h for h in pb.response_headers_to_add if h.header.key.lower() != "location"]
        del pb.response_headers_to_add[:]
        pb.response_headers_to_add.extend(kept)
        added = pb.response_headers_to_add.add(
            header={"key": "location", "value": f"%DYNAMIC_METADATA({NAMESPACE}:location)%"}
        )
        added.append_action = added.OVERWRITE_IF_EXISTS_OR_ADD
