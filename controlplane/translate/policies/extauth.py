"""ExtAuth -> ext_authz HTTP service, one filter instance per distinct auth service.

Envoy's ext_authz service is fixed per filter instance (per-route overrides cannot
change the HTTP service), so each distinct auth service gets its own instance, disabled
at the connection manager and enabled only on the routes that use it. auth-signin is a
custom_response filter (before ext_authz, so it sees ext_authz's local 401) that turns
401 into a 302 to the sign-in URL on those routes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_cfg
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.custom_response.local_response_policy.v3 import local_response_policy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import http_inputs_pb2, status_code_input_pb2
from envoy.type.v3 import http_status_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import SELF_HOST, BasicAuth, ExtAuth
from controlplane.protowire import pack_any
from controlplane.translate.common import set_duration, socket_address
from controlplane.translate.features import Feature
from controlplane.translate.policies.ipaccess import access_policy

FILTER_PREFIX = "envoy.filters.http.ext_authz"
SIGNIN_FILTER = "envoy.filters.http.custom_response"
AUTH_TIMEOUT = 10.0
SELF_DST_HEADER = "x-meridian-auth-dst"
LOOP_FILTER = "envoy.filters.http.rbac/auth-loop"


def service_key(p: ExtAuth) -> str:
    """What makes two auth services the same filter instance (the sign-in URL is per route)."""
    parts = [p.scheme, p.host, p.port, p.path, list(p.response_headers), p.always_set_cookie]
    return json.dumps(parts, separators=(",", ":"))


def filter_name(key: str) -> str:
    return f"{FILTER_PREFIX}/{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def auth_filter(key: str) -> hcm_pb2.HttpFilter:
    scheme, host, port, path, headers, set_cookie = json.loads(key)
    cfg = ext_authz_pb2.ExtAuthz(transport_api_version=config_source_pb2.V3, stat_prefix="ext_authz")
    http = cfg.http_service
    http.server_uri.uri = f"{scheme}://{host}:{port}{path}"
    http.server_uri.cluster = ExtAuth(scheme, host, port, path).cluster
    set_duration(http.server_uri.timeout, AUTH_TIMEOUT)
    # nginx requests the auth-url path itself. Envoy appends the request path to path_prefix
    # (and :path cannot be overridden), so the prefix ends in a query parameter that takes the
    # request path: the auth service sees exactly its path, plus `meridian_original_uri=...`.
    # The original URL also travels in X-Original-URL, as nginx sends it.
    http.path_prefix = path + ("&" if "?" in path else "?") + "meridian_original_uri="
    req = http.authorization_request
    req.allowed_headers.patterns.add().safe_regex.regex = ".*"
    for name, value in (
        ("x-original-url", "%REQ(x-forwarded-proto)%://%REQ(:authority)%%REQ(:path)%"),
        ("x-original-method", "%REQ(:method)%"),
        ("x-auth-request-redirect", "%REQ(:path)%"),
        ("x-sent-from", "meridian"),
    ):
        req.headers_to_add.add(key=name, value=value)
    resp = http.authorization_response
    if host == SELF_HOST:
        req.headers_to_add.add(key=SELF_DST_HEADER, value="%DOWNSTREAM_LOCAL_ADDRESS%")
    for h in headers:
        resp.allowed_upstream_headers.patterns.add(exact=h, ignore_case=True)
    # nginx passes only WWW-Authenticate of a denial to the client (and Set-Cookie when asked).
    resp.allowed_client_headers.patterns.add(exact="www-authenticate", ignore_case=True)
    if set_cookie:
        resp.allowed_client_headers.patterns.add(exact="set-cookie", ignore_case=True)
        resp.allowed_client_headers_on_success.patterns.add(exact="set-cookie", ignore_case=True)
    # nginx answers 500 when the auth service fails.
    cfg.status_on_error.code = http_status_pb2.InternalServerError
    return hcm_pb2.HttpFilter(name=filter_name(key), typed_config=pack_any(cfg), disabled=True)


def _status_input() -> xds_extension_pb2.TypedExtensionConfig:
    return xds_extension_pb2.TypedExtensionConfig(
        name="status", typed_config=pack_any(status_code_input_pb2.HttpResponseStatusCodeMatchInput())
    )


def _local_response(status: int, body: str, headers: dict[str, str]) -> xds_extension_pb2.TypedExtensionConfig:
    policy = local_response_policy_pb2.LocalResponsePolicy()
    policy.status_code.value = status
    if body:
        policy.body.inline_string = body
    for name, value in headers.items():
        opt = policy.response_headers_to_add.add()
        opt.header.key, opt.header.value = name, value
        opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    return xds_extension_pb2.TypedExtensionConfig(name=f"status-{status}", typed_config=pack_any(policy))


def on_401(action: xds_extension_pb2.TypedExtensionConfig, cr: custom_response_pb2.CustomResponse) -> None:
    fm = cr.custom_response_matcher.matcher_list.matchers.add()
    single = fm.predicate.single_predicate
    single.input.CopyFrom(_status_input())
    single.value_match.exact = "401"
    fm.on_match.action.CopyFrom(action)


def signin_action(template: str) -> xds_extension_pb2.TypedExtensionConfig:
    """401 -> 302 with Location from the template (an Envoy format string)."""
    return _local_response(302, "", {"location": template})


def realm_action(realm: str) -> xds_extension_pb2.TypedExtensionConfig:
    """401 -> 401 with nginx's `WWW-Authenticate: Basic realm="..."`."""
    value = 'Basic realm="' + realm.replace("%", "%%") + '"'  # header values are Envoy format strings
    return _local_response(401, "401 Authorization Required\n", {"www-authenticate": value})


def auth_error_to_500(cr: custom_response_pb2.CustomResponse) -> None:
    """nginx: an auth answer other than 2xx/401/403 is an error (500). Envoy passes it through.

    Such a denial is a local reply, so it lacks the router's x-envoy-upstream-service-time
    header that every upstream answer carries; 413 (body size) stays as it is.
    """
    fm = cr.custom_response_matcher.matcher_list.matchers.add()
    both = fm.predicate.and_matcher
    status = both.predicate.add().single_predicate
    status.input.CopyFrom(_status_input())
    status.value_match.safe_regex.google_re2.SetInParent()  # xds RegexMatcher requires the engine
    status.value_match.safe_regex.regex = r"4(0[024-9]|1[0-24-9]|[2-9][0-9])"
    absent = both.predicate.add().not_matcher.single_predicate
    absent.input.CopyFrom(
        xds_extension_pb2.TypedExtensionConfig(
            name="upstream-time",
            typed_config=pack_any(
                http_inputs_pb2.HttpResponseHeaderMatchInput(header_name="x-envoy-upstream-service-time")
            ),
        )
    )
    absent.value_match.safe_regex.google_re2.SetInParent()
    absent.value_match.safe_regex.regex = ".*"
    fm.on_match.action.CopyFrom(_local_response(500, "500 Internal Server Error\n", {}))


def self_cluster(p: ExtAuth) -> cluster_pb2.Cluster:
    """auth-url `$host`: back into this gateway, to the listener the request came in on.

    An ORIGINAL_DST cluster reads the destination from a header the auth filter sets to
    %DOWNSTREAM_LOCAL_ADDRESS%; the Host header is the request's, so the gateway routes the
    check like any request for that host (e.g. to oauth2-proxy's /oauth2 Ingress).
    """
    pb = cluster_pb2.Cluster(name=p.cluster, type=cluster_pb2.Cluster.ORIGINAL_DST)
    pb.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    pb.original_dst_lb_config.use_http_header = True
    pb.original_dst_lb_config.http_header_name = SELF_DST_HEADER
    set_duration(pb.connect_timeout, 5.0)
    if p.scheme == "https":
        tls = tls_pb2.UpstreamTlsContext()
        pb.transport_socket.name = "envoy.transport_sockets.tls"
        pb.transport_socket.typed_config.Pack(tls)
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        opts.upstream_http_protocol_options.auto_sni = True
        opts.explicit_http_config.http_protocol_options.SetInParent()
        pb.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(opts)
    return pb


def auth_cluster(p: ExtAuth) -> cluster_pb2.Cluster:
    if p.self_host:
        return self_cluster(p)
    pb = cluster_pb2.Cluster(name=p.cluster)
    set_duration(pb.connect_timeout, 5.0)
    try:
        ipaddress.ip_address(p.host)
        pb.type = cluster_pb2.Cluster.STATIC
    except ValueError:
        pb.type = cluster_pb2.Cluster.STRICT_DNS
        pb.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    pb.load_assignment.cluster_name = p.cluster
    pb.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(socket_address(p.host, p.port))
    if p.scheme == "https":
        tls = tls_pb2.UpstreamTlsContext(sni=p.host)
        pb.transport_socket.name = "envoy.transport_sockets.tls"
        pb.transport_socket.typed_config.Pack(tls)
    return pb


class ExtAuthFeature(Feature):
    name = "ext-auth"
    filter_order = 300

    def route_uses(self, route: Route) -> bool:
        return access_policy(route, ExtAuth) is not None

    def filter_keys(self, route: Route) -> frozenset[str]:
        p = access_policy(route, ExtAuth)
        return frozenset() if p is None else frozenset({service_key(p)})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        out = [auth_filter(k) for k in sorted(keys)]
        if any(json.loads(k)[1] == SELF_HOST for k in keys):
            out.insert(0, hcm_pb2.HttpFilter(name=LOOP_FILTER, typed_config=pack_any(rbac_pb2.RBAC())))
        return out

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        p = access_policy(route, ExtAuth)
        if p is None:
            return
        per_route = ext_authz_pb2.ExtAuthzPerRoute(check_settings=ext_authz_pb2.CheckSettings())
        enable = route_components_pb2.FilterConfig(config=pack_any(per_route), disabled=False)
        pb.typed_per_filter_config[filter_name(service_key(p))].CopyFrom(pack_any(enable))
        if p.self_host:
            # A check sent back through the gateway that lands on a route needing that same kind of
            # check would recurse (nginx loops too): refuse it at once, so the outer check fails closed.
            rules = rbac_cfg.RBAC(action=rbac_cfg.RBAC.DENY)
            pol = rules.policies["auth-loop"]
            pol.permissions.add(any=True)
            pol.principals.add().header.name = SELF_DST_HEADER
            pol.principals[0].header.present_match = True
            per_route = rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rules))
            pb.typed_per_filter_config[LOOP_FILTER].CopyFrom(pack_any(per_route))

    def extra_clusters(self, route: Route) -> list[cluster_pb2.Cluster]:
        p = access_policy(route, ExtAuth)
        return [auth_cluster(p)] if p is not None else []


class AuthResponsesFeature(Feature):
    """Answers of the auth filters as nginx gives them: a 302 to auth-signin, the basic realm,
    and 500 for auth answers other than 2xx/401/403.

    Envoy's basic_auth names its own realm and ext_authz passes any auth status through; a
    custom_response filter placed before both rewrites those answers on these routes.
    """

    name = "auth-responses"
    filter_order = 240

    def route_uses(self, route: Route) -> bool:
        return self._policy(route) is not None

    @staticmethod
    def _policy(route: Route) -> custom_response_pb2.CustomResponse | None:
        basic = access_policy(route, BasicAuth)
        ext = access_policy(route, ExtAuth)
        if basic is None and ext is None:
            return None
        cr = custom_response_pb2.CustomResponse()
        if basic is not None:
            # Basic auth runs first: a 401 on this route is basic auth's (or the upstream's).
            on_401(realm_action(basic.realm), cr)
        elif ext is not None and ext.signin:
            on_401(signin_action(ext.signin), cr)
        if ext is not None:
            auth_error_to_500(cr)
        return cr

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        return [hcm_pb2.HttpFilter(name=SIGNIN_FILTER, typed_config=pack_any(custom_response_pb2.CustomResponse()))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        cfg = self._policy(route)
        if cfg is not None:
            pb.typed_per_filter_config[SIGNIN_FILTER].CopyFrom(pack_any(cfg))
