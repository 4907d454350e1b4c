"""permanent-redirect / temporal-redirect: the route answers `return <code> <URL>` as nginx does.

A direct response rather than Envoy's redirect action: the redirect action always spells a path
(`http://a.example.com` would become `http://a.example.com/`) and sends only 301/302/303/307/308.
nginx sends the URL verbatim as Location for 301/302/303/307/308; for other codes `return` takes
its argument as the body, so 300/305/306 answer with the URL as body and no Location (304 none).

A path URL (`/new-location`) with RedirectOrigin gets nginx's `absolute_redirect on` origin in front:
Envoy's header formatter cannot lowercase the Host or drop its port, and its redirect action keeps
the Host's port and may re-encode the path, so a small Lua step (per route, by name: one script per
HTTPS port) computes `http(s)://host[:port]` into dynamic metadata and the Location header is that
metadata followed by the URL as written.

app-root is not handled here: the Ingress frontend adds an exact `/` route with a 302 Redirect
action to each host of the Ingress (AppRoot.extra_routes), and routes.py renders that action.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import RedirectOrigin, UrlRedirect
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature

LOCATION_CODES = frozenset({301, 302, 303, 307, 308})

ORIGIN_FILTER = "envoy.filters.http.lua/redirect-origin"
ORIGIN_NAMESPACE = "meridian.redirect_origin"

# nginx's ngx_http_header_filter with absolute_redirect on: the scheme of the connection, the Host as
# ngx_http_validate_host leaves it (lowercased, port and one trailing "." dropped, [IPv6] kept) and,
# with port_in_redirect, its own port unless the scheme's default: only the public HTTPS port can be.
_ORIGIN_SCRIPT = """-- meridian redirect origin (nginx absolute_redirect)
function envoy_on_request(h)
  local authority = string.lower(h:headers():get(":authority") or "")
  local host = string.match(authority, "^%%[[^%%]]*%%]") or string.match(authority, "^[^:]*")
  if string.byte(host, -1) == 46 then
    host = string.sub(host, 1, -2)
  end
  local origin = "http://" .. host
  if h:connection():ssl() ~= nil then
    origin = "https://" .. host .. "%(port)s"
  end
  h:streamInfo():dynamicMetadata():set("%(namespace)s", "origin", origin)
end
"""


def origin_script_name(policy: RedirectOrigin) -> str:
    return f"origin-{policy.https_port or 'noport'}"


def origin_script(policy: RedirectOrigin) -> str:
    port = f":{policy.https_port}" if policy.https_port else ""
    return _ORIGIN_SCRIPT % {"port": port, "namespace": ORIGIN_NAMESPACE}


def _origin(route: Route) -> RedirectOrigin | None:
    """The RedirectOrigin of a route that answers a path UrlRedirect with a Location."""
    policy, redirect = route.policy(RedirectOrigin), route.policy(UrlRedirect)
    if policy is None or redirect is None or redirect.code not in LOCATION_CODES or not redirect.url.startswith("/"):
        return None
    return policy


def literal_header_value(value: str) -> str:
    """A header value Envoy's formatter leaves as written (`%` starts a command)."""
    return value.replace("%", "%%")


def url_redirect_response(pb: rc_pb2.Route, url: str, code: int, *, origin: bool = False) -> None:
    """Replace the route's action (a oneof) with nginx's `return code URL` (`origin`: the Lua step's
    `http(s)://host[:port]` in front of the Location)."""
    pb.direct_response.status = code
    if code in LOCATION_CODES:
        value = literal_header_value(url)
        if origin:
            value = f"%DYNAMIC_METADATA({ORIGIN_NAMESPACE}:origin)%" + value
        added = pb.response_headers_to_add.add(header={"key": "location", "value": value})
        added.append_action = added.OVERWRITE_IF_EXISTS_OR_ADD
        return
    if code != 304:
        pb.direct_response.body.inline_string = url
    pb.response_headers_to_remove.append("location")  # Envoy adds one to every 3xx direct response


class RedirectFeature(Feature):
    name = "redirects"

    def route_uses(self, route: Route) -> bool:
        return route.policy(UrlRedirect) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(UrlRedirect)
        if policy is None or not pb.HasField("route"):
            return
        url_redirect_response(pb, policy.url, policy.code, origin=_origin(route) is not None)


class RedirectOriginFeature(Feature):
    """The Lua step that computes a path redirect's origin (the Location itself: RedirectFeature)."""

    name = "redirect-origin"
    filter_order = 50  # nginx's `return` runs in its rewrite phase, before access rules

    def route_uses(self, route: Route) -> bool:
        return _origin(route) is not None

    def filter_keys(self, route: Route) -> frozenset[str]:
        policy = _origin(route)
        return frozenset() if policy is None else frozenset({origin_script_name(policy)})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="redirect_origin")
        for key in sorted(keys):
            port = key.removeprefix("origin-")
            policy = RedirectOrigin(https_port=None if port == "noport" else int(port))
            cfg.source_codes[key].inline_string = origin_script(policy)
        return [hcm_pb2.HttpFilter(name=ORIGIN_FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = _origin(route)
        if policy is not None:  # runs before RedirectFeature turns the route into its direct response
            pb.typed_per_filter_config[ORIGIN_FILTER].CopyFrom(
                pack_any(lua_pb2.LuaPerRoute(name=origin_script_name(policy)))
            )
