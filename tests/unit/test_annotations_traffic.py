"""Parsing and translation of the traffic annotation families (no Envoy needed)."""

from __future__ import annotations

import base64
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from controlplane.ingress.annotations.base import ParseContext
from controlplane.ingress.annotations.redirects import app_root_routes
from controlplane.ingress.convert import IngressIR, PathRule
from controlplane.ingress.hosts import merge_host
from controlplane.ingress.registry import parse_annotations, uses_service_address
from controlplane.ir import Forward, IngressRef, PathMatch, Route, ServiceCluster, VirtualHost, WeightedCluster
from controlplane.ir.policies import (
    DEFAULT_HEADERS,
    DEFAULT_MAX_AGE,
    AppRoot,
    ConnectionHeader,
    ConnectTimeout,
    CookieAffinity,
    Cors,
    CustomErrors,
    ForwardedPrefix,
    HashBy,
    HashKey,
    HostRewrite,
    IdleTimeout,
    LoadBalancer,
    Mirror,
    RedirectOrigin,
    Retries,
    ServiceUpstream,
    UpstreamProtocol,
    UrlRedirect,
)
from controlplane.translate.policies.redirects import (
    ORIGIN_FILTER,
    RedirectOriginFeature,
    origin_script,
    origin_script_name,
)
from controlplane.translate.resources import service_cluster
from controlplane.translate.routes import route_message, vhost_message

N = "nginx.ingress.kubernetes.io/"
M = "meridian.io/"
REF = IngressRef("c1", "default", "ing")


def parse(ann: dict[str, str], **ctx_kw: Any) -> Any:
    ctx = ParseContext(REF, {}, **ctx_kw)
    parsed = parse_annotations({(k if "/" in k else N + k): v for k, v in ann.items()}, ctx)
    return parsed


def levels(parsed: Any, key: str) -> list[str]:
    return [f.level for f in parsed.findings if f.key == key]


def route_pb(parsed: Any) -> rc_pb2.Route:
    route = Route(
        "r",
        PathMatch("prefix", "/"),
        Forward((WeightedCluster("default/web:80", 100),)),
        REF,
        policies=parsed.route + parsed.ingress,
    )
    return route_message(route, VirtualHost("h", ("h",), (route,)))


def cluster_pb(parsed: Any) -> cluster_pb2.Cluster:
    return service_cluster(ServiceCluster("default/web:80~x", "default/web:80", "default", "web", 80, parsed.upstream))


# -- redirects ------------------------------------------------------------------------------
def test_redirect_codes_and_precedence() -> None:
    p = parse({"permanent-redirect": "https://a.example.com/x"})
    assert p.get(UrlRedirect) == UrlRedirect("https://a.example.com/x", 301)
    p = parse({"permanent-redirect": "https://a.example.com/", "permanent-redirect-code": "305"})
    assert p.get(UrlRedirect).code == 305 and levels(p, "permanent-redirect-code") == ["converted"]
    p = parse({"permanent-redirect": "https://a.example.com/", "permanent-redirect-code": "399"})
    assert p.get(UrlRedirect).code == 301 and "warning" in levels(p, "permanent-redirect-code")
    p = parse({"temporal-redirect": "http://t.example.com/", "permanent-redirect": "https://p.example.com/"})
    assert p.get(UrlRedirect) == UrlRedirect("http://t.example.com/", 302)
    assert levels(p, "permanent-redirect") == ["warning"]
    p = parse({"temporal-redirect": "http://t.example.com/", "temporal-redirect-code": "308"})
    assert p.get(UrlRedirect).code == 302  # 308 is outside 300-307: default
    assert parse({"permanent-redirect": "not a url"}).get(UrlRedirect) is None
    # ingress-nginx runs no url.Parse on permanent-redirect: a port that is not a number is sent as written.
    p = parse({"permanent-redirect": "http://h:x"})
    assert p.get(UrlRedirect) == UrlRedirect("http://h:x", 301) and levels(p, "permanent-redirect") == ["converted"]
    assert route_pb(p).response_headers_to_add[0].header.value == "http://h:x"
    # temporal-redirect is checked with isValidURL (Go's url.Parse): the same value is no redirect at all.
    p = parse({"temporal-redirect": "http://h:x"})
    assert p.get(UrlRedirect) is None and levels(p, "temporal-redirect") == ["warning"]


def test_redirect_route_and_app_root() -> None:
    pb = route_pb(parse({"permanent-redirect": "https://a.example.com:8443/x?y=1,2",
                         "permanent-redirect-code": "308"}))  # fmt: skip
    assert pb.WhichOneof("action") == "direct_response" and pb.direct_response.status == 308
    (loc,) = pb.response_headers_to_add
    assert (loc.header.key, loc.header.value) == ("location", "https://a.example.com:8443/x?y=1,2")
    # ingress-nginx's validator refuses "%" (and a code that is no integer): the Ingress is not served.
    assert levels(parse({"permanent-redirect": "https://a.example.com/%20"}), "permanent-redirect") == ["rejected"]
    assert levels(parse({"permanent-redirect-code": "x"}), "permanent-redirect-code") == ["rejected"]
    # A valid temporal-redirect wins before permanent-redirect is even read.
    p = parse({"temporal-redirect": "https://t.example.com", "permanent-redirect": "https://p/%"})
    assert p.get(UrlRedirect) == UrlRedirect("https://t.example.com", 302)
    assert levels(p, "permanent-redirect") == ["warning"]
    # nginx `return 305 URL` sends the URL as the body, without Location.
    pb = route_pb(parse({"permanent-redirect": "http://a.example.com", "permanent-redirect-code": "305"}))
    assert pb.direct_response.status == 305 and pb.direct_response.body.inline_string == "http://a.example.com"
    assert list(pb.response_headers_to_remove) == ["location"] and not pb.response_headers_to_add
    p = parse({"app-root": "/app"})
    root = p.get(AppRoot)
    (extra,) = app_root_routes(root, "h", REF)
    assert extra.match == PathMatch("exact", "/") and extra.action.code == 302 and extra.action.path == "/app"
    assert parse({"app-root": "app"}).get(AppRoot) is None


def test_path_redirect_gets_the_origin_unless_relative_redirects() -> None:
    # nginx's absolute_redirect is on by default: a path URL gets `http(s)://host[:port]` in front.
    p = parse({"permanent-redirect": "/new-location?a=1", "relative-redirects": "false"})
    assert p.get(RedirectOrigin) == RedirectOrigin(port_in_redirects=False)
    assert levels(p, "relative-redirects") == ["converted"]
    pb = route_pb(p)
    (loc,) = pb.response_headers_to_add
    assert loc.header.value == "%DYNAMIC_METADATA(meridian.redirect_origin:origin)%/new-location?a=1"
    assert ORIGIN_FILTER in pb.typed_per_filter_config
    route = Route("r", PathMatch("prefix", "/"), Forward((WeightedCluster("c", 100),)), REF, policies=p.route)
    feature = RedirectOriginFeature()
    assert feature.filter_keys(route) == frozenset({"origin-noport"})
    (lua,) = feature.http_filters(frozenset({"origin-noport", "origin-8443"}))
    assert lua.name == ORIGIN_FILTER
    plain = origin_script(RedirectOrigin())
    assert '"http://" .. host' in plain and '"https://" .. host .. ""' in plain
    # use-port-in-redirects (the ssl-redirect family's key, reported there): over HTTPS, the public HTTPS
    # port unless 443 (nginx names its own port unless it is the scheme's default; it listens on 80).
    p = parse({"permanent-redirect": "/n", "use-port-in-redirects": "true"})
    assert p.get(RedirectOrigin) == RedirectOrigin(port_in_redirects=True)
    rule = PathRule("h", "/", "Prefix", Forward((WeightedCluster("c", 100),)), "rules[0].paths[0]")
    ir = IngressIR(REF, "2024-01-01T00:00:00Z", True, (rule,), None, (), p, (), False)
    for public, port in ((8443, 8443), (443, None)):
        (route,) = merge_host("h", [ir], tls_hosts=frozenset({"h"}), https_port=public).https.routes
        policy = route.policy(RedirectOrigin)
        assert policy is not None and policy.https_port == port
        assert ('"https://" .. host .. ":8443"' in origin_script(policy)) == (port is not None)
        assert origin_script_name(policy) == f"origin-{port or 'noport'}"
    # relative-redirects: the path as written; absolute URLs never change; temporal-redirect is http(s) only.
    for ann in ({"permanent-redirect": "/n", "relative-redirects": "true"}, {"permanent-redirect": "http://a/n"},
                {"temporal-redirect": "https://t.example.com/n", "permanent-redirect": "/n"}):
        p = parse(ann)
        assert p.get(RedirectOrigin) is None, ann
        pb = route_pb(p)
        assert "%" not in pb.response_headers_to_add[0].header.value and not pb.typed_per_filter_config, ann
    # A code without Location (nginx sends the URL as the body) needs no origin.
    pb = route_pb(parse({"permanent-redirect": "/n", "permanent-redirect-code": "300"}))
    assert pb.direct_response.body.inline_string == "/n" and not pb.typed_per_filter_config
    p = parse({"permanent-redirect": "/n", "relative-redirects": "yes"})
    assert levels(p, "relative-redirects") == ["warning"] and p.get(RedirectOrigin) is not None


# -- CORS ---------------------------------------------------------------------------------------
def test_cors_defaults_and_origins() -> None:
    assert parse({"cors-allow-origin": "*"}).get(Cors) is None  # needs enable-cors
    cors = parse({"enable-cors": "true", "cors-allow-origin": "   "}).get(Cors)
    assert cors.any_origin and cors.credentials is True and cors.max_age == DEFAULT_MAX_AGE
    p = parse({"enable-cors": "true", "cors-allow-origin": "https://a.com, https://*.b.com:8443, b.com,"})
    cors = p.get(Cors)
    assert not cors.any_origin and cors.origins == ("https://a.com", "https://*.b.com:8443")
    assert levels(p, "cors-allow-origin") == ["warning"]  # b.com has no scheme: skipped
    assert cors.origin_regex() == r"(?i).*(?:(https://a\.com)|(https://[A-Za-z0-9-]+\.b\.com:8443))"
    # A list that fails ingress-nginx's validation as a whole means any origin.
    assert parse({"enable-cors": "true", "cors-allow-origin": "https://a.com/path"}).get(Cors).any_origin
    p = parse({"enable-cors": "true", "cors-allow-origin": "https://a.com, *", "cors-max-age": "x",
               "cors-allow-methods": "GET, POST", "cors-allow-headers": "X-A;", "cors-expose-headers": "X-B, X-C"})
    cors = p.get(Cors)
    assert cors.any_origin and cors.max_age == DEFAULT_MAX_AGE and levels(p, "cors-max-age") == ["warning"]
    assert (cors.methods, cors.headers, cors.expose_headers) == ("GET, POST", DEFAULT_HEADERS, "X-B, X-C")


def test_cors_routes_answer_preflights_and_add_headers() -> None:
    route = Route("r", PathMatch("prefix", "/"), Forward((WeightedCluster("c", 100),)), REF,
                  policies=parse({"enable-cors": "true", "cors-allow-credentials": "false",
                                  "cors-allow-origin": "https://a.com"}).route)  # fmt: skip
    pb = vhost_message(VirtualHost("h", ("h",), (route,)))
    pre, allowed, plain = pb.routes
    assert [h.name for h in pre.match.headers] == [":method", "origin"] and pre.direct_response.status == 204
    got = {h.header.key: h.header.value for h in pre.response_headers_to_add}
    assert got["Access-Control-Allow-Origin"] == "%REQ(origin)%" and "Access-Control-Allow-Credentials" not in got
    assert got["Content-Length"] == "0" and got["Access-Control-Max-Age"] == str(DEFAULT_MAX_AGE)
    assert allowed.route.cluster == "c" and len(allowed.response_headers_to_add) == 4
    assert plain.route.cluster == "c" and not plain.match.headers and not plain.response_headers_to_add
# -- timeouts and retries -------------------------------------------------------------------------------
def test_timeouts_and_retries() -> None:
    p = parse({"proxy-connect-timeout": "2", "proxy-read-timeout": "30s", "proxy-send-timeout": "1m"})
    assert p.get(ConnectTimeout) == ConnectTimeout(2.0)
    assert p.get(IdleTimeout) == IdleTimeout(60.0)
    assert p.get(Retries) is None  # the default policy is applied without a policy object
    assert parse({"proxy-read-timeout": "soon"}).get(IdleTimeout) == IdleTimeout(60.0)
    p = parse({"proxy-next-upstream": "error http_503 non_idempotent", "proxy-next-upstream-tries": "5"})
    r = p.get(Retries)
    assert r.retries == 4 and r.non_idempotent and r.status_codes() == [503]
    assert "retriable-status-codes" in r.retry_on() and "connect-failure" in r.retry_on()
    assert parse({"proxy-next-upstream": "off"}).get(Retries).retry_on() == []
    p = parse({"proxy-next-upstream": "error bogus"})
    assert p.get(Retries).tokens == ("error", "timeout") and levels(p, "proxy-next-upstream") == ["warning"]


def vhost_pb(parsed: Any) -> rc_pb2.VirtualHost:
    route = Route("r", PathMatch("prefix", "/"), Forward((WeightedCluster("default/web:80", 100),)), REF,
                  policies=parsed.route + parsed.ingress)  # fmt: skip
    return vhost_message(VirtualHost("h", ("h",), (route,)))


def test_retry_policy_on_route() -> None:
    # nginx's default (error timeout, 3 tries, no POST/LOCK/PATCH) sits once on the virtual host.
    vh = vhost_pb(parse({}))
    assert not vh.routes[0].route.HasField("retry_policy")
    rp = vh.retry_policy
    assert rp.num_retries.value == 2 and "connect-failure" in rp.retry_on
    # Only failures before the request reached the application: safe for every method, no matchers.
    assert "reset" not in rp.retry_on and not rp.retriable_request_headers
    # An explicit proxy-next-upstream keeps nginx's method rule, on the route.
    rp = route_pb(parse({"proxy-next-upstream": "error timeout http_502"})).route.retry_policy
    methods = {h.string_match.exact for h in rp.retriable_request_headers if h.name == ":method"}
    assert "GET" in methods and not methods & {"POST", "LOCK", "PATCH"} and "reset" in rp.retry_on
    pb = route_pb(parse({"proxy-next-upstream": "http_502 non_idempotent", "proxy-read-timeout": "3"}))
    rp = pb.route.retry_policy
    assert list(rp.retriable_status_codes) == [502] and not rp.retriable_request_headers
    assert rp.per_try_idle_timeout.seconds == 3 and pb.route.idle_timeout.seconds == 4
    assert pb.route.timeout.seconds == 0  # no total timeout
    assert route_pb(parse({"proxy-next-upstream": "off"})).route.retry_policy.num_retries.value == 0
    assert cluster_pb(parse({"proxy-connect-timeout": "2"})).connect_timeout.seconds == 2


# -- load balancing -------------------------------------------------------------------------------------------
def test_load_balancing() -> None:
    assert parse({"load-balance": "ewma"}).get(LoadBalancer) == LoadBalancer("LEAST_REQUEST")
    assert parse({"load-balance": "round_robin"}).get(LoadBalancer) is None  # no variant needed
    p = parse({"load-balance": "fastest"})
    assert p.get(LoadBalancer) is None and levels(p, "load-balance") == ["warning"]
    p = parse({"upstream-hash-by": "$http_x_user$arg_id", "load-balance": "random"})
    assert p.get(HashBy).keys == (HashKey("header", "x-user"), HashKey("query", "id"))
    assert p.get(LoadBalancer) == LoadBalancer("RING_HASH") and levels(p, "load-balance") == ["warning"]
    assert parse({"upstream-hash-by": "$remote_addr"}).get(HashBy).keys == (HashKey("source_ip"),)
    assert parse({"upstream-hash-by": "$request_uri"}).get(HashBy).keys == (HashKey("header", ":path"),)
    assert parse({"upstream-hash-by": "$binary_remote_addr"}).get(HashBy) is None
    p = parse({"affinity": "ip_hash", "session-cookie-name": "x"})
    assert p.get(CookieAffinity) is None and levels(p, "affinity") == ["warning"]
    p = parse({"affinity": "cookie", "session-cookie-max-age": "100", "session-cookie-samesite": "None"})
    c = p.get(CookieAffinity)
    assert (c.name, c.ttl, c.samesite, c.secure) == ("INGRESSCOOKIE", 100, "None", True)
    pb = route_pb(p)
    hp = pb.route.hash_policy[0].cookie
    assert (
        hp.name == "INGRESSCOOKIE"
        and hp.ttl.seconds == 100
        and {a.name for a in hp.attributes} == {"SameSite", "Secure"}
    )
    assert cluster_pb(p).lb_policy == cluster_pb2.Cluster.RING_HASH
    # session-cookie-domain is a cookie attribute (affinity.go "should set cookie with domain").
    p = parse({"affinity": "cookie", "session-cookie-domain": "foo.bar"})
    assert p.get(CookieAffinity).domain == "foo.bar" and levels(p, "session-cookie-domain") == ["converted"]
    attrs = {(a.name, a.value) for a in route_pb(p).route.hash_policy[0].cookie.attributes}
    assert attrs == {("Domain", "foo.bar")}
    p = parse({"affinity": "cookie", "session-cookie-domain": "foo bar; x=1"})
    assert p.get(CookieAffinity).domain == "" and levels(p, "session-cookie-domain") == ["warning"]


# -- backend ----------------------------------------------------------------------------------------------
def _secret(**data: bytes) -> dict[str, Any]:
    return {"data": {k.replace("_", "."): base64.b64encode(v).decode() for k, v in data.items()}}


def test_backend_protocol_and_tls() -> None:
    assert parse({}).get(UpstreamProtocol) is None
    assert parse({"backend-protocol": "grpc"}).get(UpstreamProtocol).http2
    p = parse({"backend-protocol": "FCGI"})
    assert p.get(UpstreamProtocol) is None and levels(p, "backend-protocol") == ["unsupported"]
    assert levels(parse({"backend-protocol": "SPDY"}), "backend-protocol") == ["warning"]
    secrets = {("default", "ca"): _secret(ca_crt=b"CA", tls_crt=b"CERT", tls_key=b"KEY")}
    p = parse(
        {"backend-protocol": "HTTPS", "proxy-ssl-verify": "on", "proxy-ssl-secret": "default/ca",
         "proxy-ssl-name": "b.internal", "proxy-ssl-protocols": "TLSv1.2 TLSv1.3", "proxy-ssl-ciphers": "NOPE"},
        lookup_secret=lambda ns, name: secrets.get((ns, name)),
    )  # fmt: skip
    up = p.get(UpstreamProtocol)
    assert up.tls and up.verify and up.ca == b"CA" and up.cert == b"CERT" and up.sni == "b.internal"
    assert up.ciphers == () and levels(p, "proxy-ssl-ciphers") == ["warning"]
    cl = cluster_pb(p)
    assert cl.transport_socket.name == "envoy.transport_sockets.tls"
    p = parse({"backend-protocol": "HTTPS", "proxy-ssl-verify": "on", "proxy-ssl-secret": "missing"})
    assert not p.get(UpstreamProtocol).verify and "warning" in levels(p, "proxy-ssl-verify")
    p = parse({"backend-protocol": "GRPC"})
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in cluster_pb(p).typed_extension_protocol_options
    assert levels(parse({"proxy-ssl-verify": "on"}), "proxy-ssl-verify") == ["warning"]


def test_vhost_prefix_service_upstream() -> None:
    p = parse({"upstream-vhost": "internal.svc", "x-forwarded-prefix": "/api", "rewrite-target": "/"})
    assert p.get(HostRewrite) == HostRewrite("internal.svc") and p.get(ForwardedPrefix) == ForwardedPrefix("/api")
    pb = route_pb(p)
    assert pb.route.host_rewrite_literal == "internal.svc"
    assert pb.request_headers_to_add[0].header.key == "x-forwarded-prefix"
    p = parse({"x-forwarded-prefix": "/api"})
    assert p.get(ForwardedPrefix) is None and levels(p, "x-forwarded-prefix") == ["warning"]
    upstream = parse({"service-upstream": "true"}).upstream
    assert ServiceUpstream() in upstream and uses_service_address(upstream) is True
    assert uses_service_address(parse({"service-upstream": "false"}).upstream) is False


def test_connection_proxy_header() -> None:
    """connection.go: the backend receives `Connection: keep-alive`."""
    p = parse({"connection-proxy-header": "keep-alive"})
    assert p.get(ConnectionHeader) == ConnectionHeader("keep-alive") and levels(p, "connection-proxy-header") == [
        "converted"
    ]
    added = {(h.header.key, h.header.value) for h in route_pb(p).request_headers_to_add}
    assert added == {("connection", "keep-alive")}
    p = parse({"connection-proxy-header": "keep-alive\r\nX-Evil: 1"})
    assert p.get(ConnectionHeader) is None and levels(p, "connection-proxy-header") == ["warning"]


# -- errors and mirror ---------------------------------------------------------------------------------------
def test_custom_errors() -> None:
    resolve = lambda ns, name, ref: (8080, "") if name == "errors" else (None, f"service {ns}/{name} not found")  # noqa: E731
    p = parse({"default-backend": "errors", "custom-http-errors": "404, 503,abc"}, resolve_service_port=resolve)
    ce = p.get(CustomErrors)
    assert ce.codes == (404, 503) and ce.cluster == "default/errors:8080"
    assert levels(p, "custom-http-errors") == ["warning"]
    pb = route_pb(p)
    assert "envoy.filters.http.custom_response" in pb.typed_per_filter_config
    p = parse({"default-backend": "nope", "custom-http-errors": "404"}, resolve_service_port=resolve)
    assert p.get(CustomErrors) is None and levels(p, "default-backend") == ["warning"]
    assert levels(parse({"custom-http-errors": "404"}), "custom-http-errors") == ["warning"]


def test_mirror() -> None:
    p = parse({"mirror-target": "http://10.0.0.1:8080$request_uri"})
    m = p.get(Mirror)
    assert m == Mirror("http", "10.0.0.1", 8080) and m.cluster == "mirror:10.0.0.1:8080" and m.is_ip
    pb = route_pb(p)
    assert pb.route.request_mirror_policies[0].cluster == "mirror:10.0.0.1:8080"
    p = parse({"mirror-target": "https://mirror.example.com/copy"})
    assert p.get(Mirror).port == 443 and "path" in p.findings[0].message
    assert parse({"mirror-target": "ftp://x"}).get(Mirror) is None


def test_meridian_prefix_wins() -> None:
    p = parse({N + "load-balance": "random", M + "load-balance": "least_conn"})
    assert p.get(LoadBalancer) == LoadBalancer("LEAST_REQUEST")
    p = parse({M + "permanent-redirect": "https://m.example.com/"})
    assert p.get(UrlRedirect).url == "https://m.example.com/"
