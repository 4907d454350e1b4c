"""Gateway API HTTPRoute filters -> route header edits, path rewrites, timeouts and mirrors.

The IR policies come from controlplane/gatewayapi (no ingress-nginx annotation produces them);
each feature only patches routes, none needs an HTTP filter.
"""

from __future__ import annotations

import re

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import (
    ClusterMirrors,
    HeaderEdits,
    PathRewrite,
    RequestHeaderEdits,
    RequestTimeout,
    ResponseHeaderEdits,
)
from controlplane.translate.common import set_duration
from controlplane.translate.features import Feature

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _edit(edits: HeaderEdits, to_add: object, to_remove: object) -> None:
    for name, value in edits.set:
        to_add.add(header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE)  # type: ignore[attr-defined]
    for name, value in edits.add:
        to_add.add(header=base_pb2.HeaderValue(key=name, value=value), append_action=_APPEND)  # type: ignore[attr-defined]
    to_remove.extend(edits.remove)  # type: ignore[attr-defined]


class HeaderEditsFeature(Feature):
    name = "header-edits"

    def route_uses(self, route: Route) -> bool:
        return route.policy(RequestHeaderEdits) is not None or route.policy(ResponseHeaderEdits) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        req = route.policy(RequestHeaderEdits)
        if req is not None:
            _edit(req.edits, pb.request_headers_to_add, pb.request_headers_to_remove)
        resp = route.policy(ResponseHeaderEdits)
        if resp is not None:
            _edit(resp.edits, pb.response_headers_to_add, pb.response_headers_to_remove)


class PathRewriteFeature(Feature):
    name = "path-rewrite"

    def route_uses(self, route: Route) -> bool:
        return route.policy(PathRewrite) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(PathRewrite)
        if policy is None or not pb.HasField("route"):
            return
        rw = pb.route.regex_rewrite
        if policy.full is not None:
            rw.pattern.regex, rw.substitution = "^.*$", policy.full
            return
        if policy.prefix is None:
            return
        matched = route.match.value if route.match.kind == "prefix" else "/"
        keep = policy.prefix.rstrip("/")
        if matched == "/":
            # "/" prefix: everything after the leading slash follows the replacement.
            rw.pattern.regex, rw.substitution = "^/", keep + "/"
        elif not keep:
            # Replacing with "/": drop the prefix and the slashes after it, never leave an empty path.
            rw.pattern.regex, rw.substitution = "^" + re.escape(matched) + "/*", "/"
        else:
            rw.pattern.regex, rw.substitution = "^" + re.escape(matched), keep


class RequestTimeoutFeature(Feature):
    name = "request-timeout"

    def route_uses(self, route: Route) -> bool:
        return route.policy(RequestTimeout) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(RequestTimeout)
        if policy is None or not pb.HasField("route"):
            return
        total = policy.request if policy.request is not None else policy.backend
        if total is not None:
            set_duration(pb.route.timeout, total)
        if policy.backend is not None and policy.request is not None and policy.backend:
            set_duration(pb.route.retry_policy.per_try_timeout, policy.backend)


class ClusterMirrorFeature(Feature):
    name = "cluster-mirror"

    def route_uses(self, route: Route) -> bool:
        return route.policy(ClusterMirrors) is not None

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        policy = route.policy(ClusterMirrors)
        if policy is None or not pb.HasField("route"):
            return
        for cluster, percent in policy.targets:
            mp = pb.route.request_mirror_policies.add(cluster=cluster)
            if percent < 100:
                mp.runtime_fraction.default_value.numerator = round(percent * 10000)
                mp.runtime_fraction.default_value.denominator = 2  # MILLION
