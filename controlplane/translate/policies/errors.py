"""custom-http-errors + default-backend -> custom_response filter redirecting to an internal route.

The per-route CustomResponse config maps each listed upstream status to a redirect policy
whose internal redirect goes to the host's error route (added by CustomErrors.extra_routes);
that route rewrites the path to `/` and forwards to the error Service.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.custom_response.redirect_policy.v3 import redirect_policy_pb2
from envoy.type.matcher.v3 import status_code_input_pb2
from xds.type.matcher.v3 import matcher_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import CustomErrors, ErrorRoute
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.custom_response"


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def custom_response(policy: CustomErrors, route: Route) -> custom_response_pb2.CustomResponse:
    tree = matcher_pb2.Matcher.MatcherTree()
    tree.input.name = "status"
    tree.input.typed_config.Pack(status_code_input_pb2.HttpResponseStatusCodeMatchInput())
    service = route.action.single if hasattr(route.action, "single") else None
    svc_name, svc_port = "", ""
    if service:
        base = service.partition("~")[0]
        svc_name = base.partition("/")[2].rpartition(":")[0]
        svc_port = base.rpartition(":")[2]
    for code in policy.codes:
        rp = redirect_policy_pb2.RedirectPolicy()
        rp.redirect_action.path_redirect = policy.error_path
        for k, v in (
            ("x-code", str(code)),
            ("x-namespace", route.source.namespace),
            ("x-ingress-name", route.source.name),
            ("x-service-name", svc_name),
            ("x-service-port", svc_port),
        ):
            rp.request_headers_to_add.append(_header(k, v))
        on_match = tree.exact_match_map.map[str(code)]
        on_match.action.name = f"redirect-{code}"
        on_match.action.typed_config.Pack(rp)
    cr = custom_response_pb2.CustomResponse()
    cr.custom_response_matcher.matcher_tree.CopyFrom(tree)
    return cr


class ErrorsFeature(Feature):
    name = "custom-errors"
    filter_order = 150  # sees upstream responses after filters that run later in the chain

    def route_uses(self, route: Route) -> bool:
        return route.policy(CustomErrors) is not None

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        f = hcm_pb2.HttpFilter(name=FILTER)
        f.typed_config.Pack(custom_response_pb2.CustomResponse())
        return [f]

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        if route.policy(ErrorRoute) is not None:
            pb.route.prefix_rewrite = "/"
            pb.request_headers_to_add.append(_header("x-original-uri", "%REQ(x-envoy-original-path)%"))
            return
        policy = route.policy(CustomErrors)
        if policy is not None:
            pb.typed_per_filter_config[FILTER].Pack(custom_response(policy, route))
