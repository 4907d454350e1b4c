"""HeaderPattern -> a Lua step that runs a PCRE-only canary-by-header-pattern as ngx.re.match does.

Before routing settles, the step searches the pattern in the request's header (the values of a
repeated header joined with ", ", as nginx's $http_ variables) with the matcher of
controlplane.translate.pcre_lua, sets the verdict header (`match`, or `error` when the matcher gives
up, as PCRE's match limit makes ngx.re.match fail), removes any verdict a client sent, and has Envoy
route again; the canary's routes match on the verdict. The filter holds one script per pattern in
use; each route names its own, and the verdict header is removed before the request goes upstream.
"""

from __future__ import annotations

import hashlib
import json

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.pcre import classify
from controlplane.ir.policies import PATTERN_VERDICT_HEADER, HeaderPattern
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature
from controlplane.translate.pcre_lua import NotCompiled, matcher_source

FILTER = "envoy.filters.http.lua/header-pattern"

_STEP = """
function envoy_on_request(h)
  local hd = h:headers()
  local name = %(header)s
  local value = nil
  local n = hd:getNumValues(name)
  if n == 1 then
    value = hd:get(name)
  elseif n > 1 then
    local parts = {}
    for i = 0, n - 1 do parts[#parts + 1] = hd:getAtIndex(name, i) end
    value = table.concat(parts, ", ")
  end
  hd:remove("%(verdict)s")
  if value ~= nil then
    local hit = pattern_search(value)
    if hit then
      hd:add("%(verdict)s", "match")
    elseif hit == nil then
      hd:add("%(verdict)s", "error")
    end
  end
  h:clearRouteCache()
end
"""


def _key(policy: HeaderPattern) -> str:
    return json.dumps([policy.header, policy.pattern])


def script_name(policy: HeaderPattern) -> str:
    return "pattern-" + hashlib.blake2b(_key(policy).encode(), digest_size=6).hexdigest()


def script(policy: HeaderPattern) -> str:
    kind = classify(policy.pattern)
    step = _STEP % {"header": json.dumps(policy.header), "verdict": PATTERN_VERDICT_HEADER}
    try:
        matcher = matcher_source(kind.tree) if kind.kind == "pcre" else None
    except NotCompiled:
        matcher = None
    if matcher is None:
        # The frontend attaches only patterns the matcher runs; anything else is an error (never the canary).
        return "function pattern_search(value) return nil, 'not a pattern' end\n" + step
    return "-- meridian canary-by-header-pattern (PCRE, as ngx.re.match)\n" + matcher + step


class HeaderPatternFeature(Feature):
    name = "header-pattern"
    filter_order = 40  # first: the route it settles is what every later filter sees

    def route_uses(self, route: Route) -> bool:
        return route.policy(HeaderPattern) is not None

    def filter_keys(self, route: Route) -> frozenset[str]:
        policy = route.policy(HeaderPattern)
        return frozenset() if policy is None else frozenset({_key(policy)})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        cfg = lua_pb2.Lua(stat_prefix="header_pattern")
        for key in sorted(keys):
            header, pattern = json.loads(key)
            policy = HeaderPattern(header, pattern)
            cfg.source_codes[script_name(policy)].inline_string = script(policy)
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(cfg))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(HeaderPattern)
        if policy is None:
            return
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(lua_pb2.LuaPerRoute(name=script_name(policy))))
        if pb.HasField("route"):
            pb.request_headers_to_remove.append(PATTERN_VERDICT_HEADER)
