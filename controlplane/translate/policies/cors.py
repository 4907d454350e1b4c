"""Cors -> routes that do what ingress-nginx's CORS template does, without Envoy's CORS filter.

Envoy's filter echoes the origin, answers preflights 200 and adds nothing when a request has no
Origin. nginx instead (nginx.tmpl, `define "CORS"`) sets the headers on every response once the
origin is allowed (always, for `*`) and answers any OPTIONS 204. So a route with a Cors policy
becomes, in this order:
  1. OPTIONS [+ allowed Origin] -> direct response 204 with the CORS headers, Content-Type and
     Content-Length: 0 (before any access rule, as nginx returns in its rewrite phase);
  2. [allowed Origin] -> the route itself with the CORS headers set on its responses;
  3. (listed origins only) the route unchanged, for requests from other origins.
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.ir import DirectResponse, HeaderMatch, Route
from controlplane.ir.policies import Cors, ResponseHeaders
from controlplane.translate.features import Feature

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
        name=f"{route.name}#cors-preflight",
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
