"""permanent-redirect / temporal-redirect: the route answers with a redirect instead of forwarding.

app-root is not handled here: the Ingress frontend adds an exact `/` route with a 302 Redirect
action to each host of the Ingress (AppRoot.extra_routes), and routes.py renders that action.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import UrlRedirect
from controlplane.translate.common import url_redirect
from controlplane.translate.features import Feature

CODES = {
    301: rc_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: rc_pb2.RedirectAction.FOUND,
    303: rc_pb2.RedirectAction.SEE_OTHER,
    307: rc_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: rc_pb2.RedirectAction.PERMANENT_REDIRECT,
}


def redirect_action(url: str, code: int) -> rc_pb2.RedirectAction:
    """nginx `return code URL`: the Location is exactly URL (no request path or query appended)."""
    rd = rc_pb2.RedirectAction(response_code=CODES.get(code, rc_pb2.RedirectAction.MOVED_PERMANENTLY))
    url_redirect(rd, url)
    return rd


class RedirectFeature(Feature):
    name = "redirects"

    def route_uses(self, route: Route) -> bool:
        return route.policy(UrlRedirect) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(UrlRedirect)
        if policy is None or not pb.HasField("route"):
            return
        pb.redirect.CopyFrom(redirect_action(policy.url, policy.code))  # replaces the route action (oneof)
