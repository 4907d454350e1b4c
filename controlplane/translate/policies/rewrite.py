"""rewrite-target -> route regex_rewrite over the whole path."""

from __future__ import annotations

import re

from envoy.config.route.v3 import route_components_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import RewriteTarget
from controlplane.translate.features import Feature


class RewriteFeature(Feature):
    name = "rewrite"

    def route_uses(self, route: Route) -> bool:
        return route.policy(RewriteTarget) is not None

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(RewriteTarget)
        if policy is None or not pb.HasField("route"):
            return
        if route.match.kind == "regex":
            # The match regex already ends in ".*", so it covers the whole path: nginx replaces
            # the whole URI with the target, keeping the query string.
            pattern = route.match.value
        else:
            pattern = "^" + re.escape(route.match.value) + ("$" if route.match.kind == "exact" else ".*")
        rw = pb.route.regex_rewrite
        rw.pattern.regex = pattern
        rw.substitution = policy.substitution()
