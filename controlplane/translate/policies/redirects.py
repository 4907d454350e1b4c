"""permanent-redirect / temporal-redirect: the route answers `return <code> <URL>` as nginx does.

A direct response rather than Envoy's redirect action: the redirect action always spells a path
(`http://a.example.com` would become `http://a.example.com/`) and sends only 301/302/303/307/308.
nginx sends the URL verbatim as Location for 301/302/303/307/308; for other codes `return` takes
its argument as the body, so 300/305/306 answer with the URL as body and no Location (304 none).

app-root is not handled here: the Ingress frontend adds an exact `/` route with a 302 Redirect
action to each host of the Ingress (AppRoot.extra_routes), and routes.py renders that action.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import UrlRedirect
from controlplane.translate.features import Feature

LOCATION_CODES = frozenset({301, 302, 303, 307, 308})


def literal_header_value(value: str) -> str:
    """A header value Envoy's formatter leaves as written (`%` starts a command)."""
    return value.replace("%", "%%")


def url_redirect_response(pb: rc_pb2.Route, url: str, code: int) -> None:
    """Replace the route's action (a oneof) with nginx's `return code URL`."""
    pb.direct_response.status = code
    if code in LOCATION_CODES:
        added = pb.response_headers_to_add.add(header={"key": "location", "value": literal_header_value(url)})
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
        url_redirect_response(pb, policy.url, policy.code)
