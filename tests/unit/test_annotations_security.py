"""Access-control annotation families: parsing, validation and their Envoy translation."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.ingress.annotations.base import ParseContext, ParsedAnnotations
from controlplane.ingress.annotations.bodysize import parse_size
from controlplane.ingress.registry import parse_annotations
from controlplane.ir import Forward, IngressRef, PathMatch, Redirect, Route, TlsHost, VirtualHost, WeightedCluster
from controlplane.ir.policies import (
    BasicAuth,
    BodySize,
    ClientCert,
    ClientCertCheck,
    DeniedLocation,
    ExtAuth,
    IpAccess,
    PassClientCert,
    RateLimit,
    TlsParams,
)
from controlplane.translate.policies import FEATURES
from controlplane.translate.routes import route_message
from tests.support.certs import ca_secret, issue_cert, make_ca

_FUZZ_CA = make_ca().cert

N = "nginx.ingress.kubernetes.io/"
M = "meridian.io/"
REF = IngressRef("c1", "default", "web")


def _sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def _secret(name: str, data: dict[str, bytes], ns: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def parse(ann: dict[str, str], secrets: list[dict[str, Any]] = ()) -> ParsedAnnotations:  # type: ignore[assignment]
    by_key = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in secrets}
    ctx = ParseContext(REF, {}, lookup_secret=lambda ns, name: by_key.get((ns, name)))
    return parse_annotations(ann, ctx)


def levels(p: ParsedAnnotations, key: str) -> list[str]:
    return [f.level for f in p.findings if f.key == key]


# -- source ranges ---------------------------------------------------------------------------
def test_source_ranges_normalized_and_both_prefixes() -> None:
    p = parse({N + "whitelist-source-range": "10.0.0.0/8,\n  192.168.1.5 , 10.0.0.0/8,2001:db8::/32, 10.1.2.3/8"})
    assert p.get(IpAccess) == IpAccess(allow=("10.0.0.0/8", "192.168.1.5/32", "2001:db8::/32"))
    assert levels(p, "whitelist-source-range") == ["converted"]
    p = parse({N + "denylist-source-range": "1.2.3.4", M + "denylist-source-range": "5.6.7.0/24"})
    assert p.get(IpAccess) == IpAccess(deny=("5.6.7.0/24",))
    p = parse({N + "allowlist-source-range": "10.0.0.0/8", N + "denylist-source-range": "10.1.0.0/16"})
    assert p.get(IpAccess) == IpAccess(allow=("10.0.0.0/8",), deny=("10.1.0.0/16",))


@pytest.mark.parametrize("key", ["whitelist-source-range", "allowlist-source-range", "denylist-source-range"])
def test_unparsable_source_range_rejects(key: str) -> None:
    p = parse({N + key: "10.0.0.0/8, 300.1.1.1"})
    assert p.rejected and "rejected" in levels(p, key)
    assert p.get(IpAccess) is None


# -- rate limits --------------------------------------------------------------------------------
def test_rate_limits() -> None:
    p = parse({N + "limit-rps": "10", N + "limit-rpm": "100", N + "limit-whitelist": "10.0.0.0/8, 1.2.3.4"})
    rl = p.get(RateLimit)
    assert [(r.name, r.rate, r.period, r.burst) for r in rl.rules] == [("rps", 10, 1, 50), ("rpm", 100, 60, 500)]
    assert rl.exempt == ("10.0.0.0/8", "1.2.3.4/32")
    p = parse({M + "limit-rps": "4", N + "limit-rps": "99", N + "limit-burst-multiplier": "2"})
    assert p.get(RateLimit).rules[0].burst == 8


def test_rate_limit_invalid_values_warn() -> None:
    p = parse({N + "limit-rps": "fast", N + "limit-burst-multiplier": "x"})
    assert p.get(RateLimit) is None
    assert levels(p, "limit-rps") == ["warning"] and levels(p, "limit-burst-multiplier") == ["warning"]
    p = parse({N + "limit-rps": "5", N + "limit-burst-multiplier": "0"})
    assert p.get(RateLimit).rules[0].burst == 25  # default multiplier 5
    p = parse({N + "limit-connections": "25"})
    assert levels(p, "limit-connections") == ["unsupported"]
    assert not p.rejected


# -- body size -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "size"),
    [("8m", 8 << 20), ("1k", 1024), ("0", 0), ("100M", 100 << 20), ("1g", 1 << 30), ("512", 512), ("x", None)],
)
def test_parse_size(raw: str, size: int | None) -> None:
    assert parse_size(raw) == size


def test_body_size_invalid_warns_and_defaults() -> None:
    assert parse({N + "proxy-body-size": "10m"}).get(BodySize) == BodySize(10 << 20)
    p = parse({N + "proxy-body-size": "ten megs"})
    assert p.get(BodySize) is None and levels(p, "proxy-body-size") == ["warning"]


# -- external auth ------------------------------------------------------------------------------------
def test_ext_auth() -> None:
    p = parse(
        {
            N + "auth-url": "http://auth.example.svc:4180/oauth2/auth",
            N + "auth-response-headers": "X-Auth-Request-User, X-Auth-Request-Email,authorization",
            N + "auth-signin": "https://login.example.com/oauth2/start?rd=$escaped_request_uri",
        }
    )
    ea = p.get(ExtAuth)
    assert (ea.scheme, ea.host, ea.port, ea.path) == ("http", "auth.example.svc", 4180, "/oauth2/auth")
    assert ea.cluster == "extauth:http:auth.example.svc:4180"
    assert ea.response_headers == ("x-auth-request-user", "x-auth-request-email", "authorization")
    escaped = "%DYNAMIC_METADATA(meridian.signin:escaped_request_uri)%"  # nginx's $escaped_request_uri
    assert ea.signin == f"https://login.example.com/oauth2/start?rd={escaped}"
    ea = parse({N + "auth-url": "https://auth.example.com", N + "auth-signin": "https://x.example.com/s"}).get(ExtAuth)
    assert ea.port == 443 and ea.path == "/"
    assert ea.signin == f"https://x.example.com/s?rd=%REQ(x-forwarded-proto)%://%REQ(:authority)%{escaped}"


def test_ext_auth_on_request_host() -> None:
    """auth-url http(s)://$host/...: checked through this gateway with the request's Host."""
    ea = parse({N + "auth-url": "https://$host/oauth2/auth"}).get(ExtAuth)
    assert ea.self_host and ea.cluster == "extauth:https:self" and ea.path == "/oauth2/auth"
    pb, route = _route(ea)
    assert "envoy.filters.http.rbac/auth-loop" in pb.typed_per_filter_config
    feature = _feature("ext-auth")
    cluster = feature.extra_clusters(route)[0]
    assert cluster.type == cluster.ORIGINAL_DST and cluster.original_dst_lb_config.use_http_header
    filters = feature.http_filters(feature.filter_keys(route))
    assert filters[0].name == "envoy.filters.http.rbac/auth-loop"  # a check landing on a $host-auth route: 403
    cfg = _unpack(filters[1].typed_config, ext_authz_pb2.ExtAuthz)
    added = {h.key: h.value for h in cfg.http_service.authorization_request.headers_to_add}
    assert added[cluster.original_dst_lb_config.http_header_name] == "%DOWNSTREAM_LOCAL_ADDRESS%"


@pytest.mark.parametrize("url", ["http://$remote_addr/oauth2/auth", "not a url", "ftp://x/y", "http://a b/x"])
def test_ext_auth_unusable_url_rejects(url: str) -> None:
    p = parse({N + "auth-url": url})
    assert p.rejected and p.get(ExtAuth) is None


# -- basic auth ------------------------------------------------------------------------------------------
def test_basic_auth_sha_entries_only() -> None:
    htpasswd = f"alice:{_sha('pw')}\nbob:$apr1$x$y\ncarol:$2y$05$abc\n".encode()
    p = parse(
        {N + "auth-type": "basic", N + "auth-secret": "users", N + "auth-realm": 'Say "hi"'},
        [_secret("users", {"auth": htpasswd})],
    )
    ba = p.get(BasicAuth)
    assert ba.users == f"alice:{_sha('pw')}\n" and ba.realm == "Say hi"
    warning = next(f.message for f in p.findings if f.key == "auth-secret")
    assert "bob (apr1-md5)" in warning and "carol (bcrypt)" in warning
    assert not p.rejected


def test_basic_auth_rejections() -> None:
    # Nothing Envoy can verify (bcrypt, apr1, "user:"): every request gets the 401, none goes through.
    for content in (b"bob:$apr1$x$y\n", b"foo:", b"foo:$2b$04$wCdSmw1OenoRcYnkE2l97OCAx.aRMfm1cBU/jNW816NaFZuwDKd2e\n"):
        p = parse({N + "auth-type": "basic", N + "auth-secret": "u", N + "auth-realm": "r"},
                  [_secret("u", {"auth": content})])  # fmt: skip
        assert not p.rejected and p.get(BasicAuth) == BasicAuth("", "r"), content
        assert levels(p, "auth-type") == ["warning"]
    # No Secret, no auth-secret, no key `auth`: ingress-nginx denies the location (503), never unauthenticated.
    for p in (parse({N + "auth-type": "basic", N + "auth-secret": "missing"}), parse({N + "auth-type": "basic"}),
              parse({N + "auth-type": "basic", N + "auth-secret": "u"}, [_secret("u", {"other": b"x"})])):  # fmt: skip
        assert not p.rejected and p.get(DeniedLocation) is not None and p.get(BasicAuth) is None
        assert levels(p, "auth-secret") == ["warning"]
    p = parse({N + "auth-type": "magic", N + "auth-secret": "u"})
    assert not p.rejected and levels(p, "auth-type") == ["warning"]


def test_basic_auth_map_and_namespace() -> None:
    s = _secret("map", {"alice": _sha("pw").encode()}, ns="auth")
    p = parse({N + "auth-type": "basic", N + "auth-secret": "auth/map", N + "auth-secret-type": "auth-map"}, [s])
    assert p.get(BasicAuth).users == f"alice:{_sha('pw')}\n"


# -- client certificates --------------------------------------------------------------------------------
def test_client_cert() -> None:
    ca = make_ca()
    secrets = [ca_secret("ca", "certs", ca.cert), _secret("bad", {"ca.crt": b"nope"})]
    p = parse(
        {
            N + "auth-tls-secret": "certs/ca",
            N + "auth-tls-verify-client": "optional",
            N + "auth-tls-verify-depth": "2",
            N + "auth-tls-pass-certificate-to-upstream": "true",
        },
        secrets,
    )
    cc = p.get(ClientCert)
    assert (cc.ca, cc.mode, cc.depth) == (ca.cert, "optional", 2)
    assert cc in p.tls and p.get(PassClientCert) in p.route
    p = parse({N + "auth-tls-secret": "certs/ca", N + "auth-tls-verify-client": "sometimes"}, secrets)
    assert p.get(ClientCert).mode == "on" and levels(p, "auth-tls-verify-client") == ["warning"]
    assert (
        parse({N + "auth-tls-secret": "certs/ca", N + "auth-tls-verify-client": "off"}, secrets).get(ClientCert) is None
    )
    assert parse({N + "auth-tls-secret": "certs/missing"}, secrets).rejected
    assert parse({N + "auth-tls-secret": "default/bad"}, secrets).rejected
    base = {N + "auth-tls-secret": "certs/ca"}
    p = parse({**base, N + "auth-tls-error-page": "http://e.test/err", N + "auth-tls-match-cn": "CN=(a|b)"}, secrets)
    assert (p.get(ClientCert).error_page, p.get(ClientCert).match_cn) == ("http://e.test/err", "CN=(a|b)")
    # As ingress-nginx: a value not starting with CN= is ignored; a pattern PCRE refuses rejects the Ingress.
    p = parse({**base, N + "auth-tls-match-cn": "O=x"}, secrets)
    assert p.get(ClientCert).match_cn == "" and levels(p, "auth-tls-match-cn") == ["warning"]
    assert parse({**base, N + "auth-tls-match-cn": "CN=(a"}, secrets).rejected


# -- TLS parameters -----------------------------------------------------------------------------------------
def test_tls_params() -> None:
    p = parse({N + "ssl-protocols": "TLSv1.2 TLSv1.3"})
    assert p.get(TlsParams) == TlsParams("TLSv1_2", "TLSv1_3")
    assert p.get(TlsParams) in p.tls
    assert parse({M + "ssl-protocols": "TLSv1.3"}).get(TlsParams) == TlsParams("TLSv1_3", "TLSv1_3")
    p = parse({N + "ssl-protocols": "SSLv3 TLSv1 TLSv1.2"})
    assert p.get(TlsParams) == TlsParams("TLSv1_0", "TLSv1_2") and levels(p, "ssl-protocols") == ["warning"]
    p = parse({N + "ssl-protocols": "SSLv2"})
    assert p.get(TlsParams) is None and levels(p, "ssl-protocols") == ["warning"]
    # The corpus list: DHE suites do not exist in BoringSSL and would make Envoy reject the listener.
    corpus = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256"
    p = parse({N + "ssl-ciphers": corpus})
    assert p.get(TlsParams).ciphers == ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256")
    assert "DHE-RSA-AES128-GCM-SHA256" in next(f.message for f in p.findings if f.key == "ssl-ciphers")


def test_every_key_reported_once() -> None:
    p = parse({N + "limit-rps": "3", N + "proxy-body-size": "1m", N + "auth-realm": "x", N + "limit-rate": "100"})
    keys = [f.key for f in p.findings]
    assert sorted(keys) == sorted(set(keys))
    assert levels(p, "auth-realm") == ["warning"] and levels(p, "limit-rate") == ["unsupported"]


# -- translation ---------------------------------------------------------------------------------------------
def _route(*policies: Any, action: Any = None) -> tuple[route_components_pb2.Route, Route]:
    r = Route("r", PathMatch("prefix", "/"), action or Forward((WeightedCluster("default/web:80", 1),)), REF,
              policies=policies)  # fmt: skip
    vh = VirtualHost("web", ("web.example.com",), (r,))
    return route_message(r, vh), r


def _feature(name: str) -> Any:
    return next(f for f in FEATURES if f.name == name)


def _unpack(any_msg: Any, cls: Any) -> Any:
    out = cls()
    assert any_msg.Unpack(out)
    return out


def test_translate_source_ranges() -> None:
    pb, _ = _route(IpAccess(allow=("10.0.0.0/8",), deny=("10.1.0.0/16",)))
    per = _unpack(pb.typed_per_filter_config["envoy.filters.http.rbac"], rbac_pb2.RBACPerRoute)
    principal = per.rbac.rules.policies["source-range"].principals[0]
    assert principal.and_ids.ids[0].not_id.or_ids.ids[0].remote_ip.prefix_len.value == 16
    assert principal.and_ids.ids[1].or_ids.ids[0].remote_ip.address_prefix == "10.0.0.0"


def test_translate_rate_limit() -> None:
    p = parse({N + "limit-rps": "2", N + "limit-whitelist": "10.0.0.0/8"}).get(RateLimit)
    pb, route = _route(p)
    cfg = _unpack(pb.typed_per_filter_config["envoy.filters.http.local_ratelimit"], local_rate_limit_pb2.LocalRateLimit)
    assert cfg.status.code == 503
    d = cfg.descriptors[0]
    assert [(e.key, e.value) for e in d.entries] == [
        ("meridian_limit", "rps"), ("meridian_exempt", "denied"), ("remote_address", ""),
    ]  # fmt: skip
    assert (d.token_bucket.max_tokens, d.token_bucket.tokens_per_fill.value) == (10, 2)
    assert "envoy.filters.http.rbac/rate-limit-exempt" in pb.typed_per_filter_config
    keys = _feature("rate-limit").filter_keys(route)
    names = [f.name for f in _feature("rate-limit").http_filters(keys)]
    assert names == ["envoy.filters.http.rbac/rate-limit-exempt", "envoy.filters.http.local_ratelimit"]


def test_translate_body_size_default_everywhere() -> None:
    feature = _feature("body-size")
    pb, route = _route()
    assert feature.route_uses(route) and "envoy.filters.http.lua/body-size" not in pb.typed_per_filter_config
    lua = _unpack(feature.http_filters(frozenset({""}))[0].typed_config, lua_pb2.Lua)
    assert "n > 1048576" in lua.default_source_code.inline_string
    pb, _ = _route(BodySize(8 << 20))
    per = _unpack(pb.typed_per_filter_config["envoy.filters.http.lua/body-size"], lua_pb2.LuaPerRoute)
    assert f"n > {8 << 20}" in per.source_code.inline_string
    pb, _ = _route(BodySize(0))
    assert _unpack(pb.typed_per_filter_config["envoy.filters.http.lua/body-size"], lua_pb2.LuaPerRoute).disabled
    _, redirect = _route(action=Redirect(code=301, scheme="https"))
    assert not feature.route_uses(redirect)


def test_translate_ext_auth_one_filter_per_service() -> None:
    a = ExtAuth("http", "127.0.0.1", 9000, "/auth", response_headers=("x-user",), signin="https://l/?rd=%DYNAMIC_METADATA(meridian.signin:escaped_request_uri)%")
    b = ExtAuth("https", "auth.example.com", 443, "/check")
    feature = _feature("ext-auth")
    pa, ra = _route(a)
    pb_, rb = _route(b)
    keys = feature.filter_keys(ra) | feature.filter_keys(rb)
    filters = feature.http_filters(keys)
    assert len(filters) == 2 and all(f.disabled for f in filters)
    enabled_a = [k for k in pa.typed_per_filter_config if k.startswith("envoy.filters.http.ext_authz/")]
    enabled_b = [k for k in pb_.typed_per_filter_config if k.startswith("envoy.filters.http.ext_authz/")]
    assert len(enabled_a) == len(enabled_b) == 1 and enabled_a != enabled_b
    by_name = {f.name: _unpack(f.typed_config, ext_authz_pb2.ExtAuthz) for f in filters}
    cfg = by_name[enabled_a[0]]
    assert cfg.http_service.server_uri.cluster == "extauth:http:127.0.0.1:9000"
    assert cfg.http_service.path_prefix == "/auth?meridian_original_uri="
    assert cfg.http_service.authorization_response.allowed_upstream_headers.patterns[0].exact == "x-user"
    clusters = feature.extra_clusters(rb)
    assert clusters[0].name == "extauth:https:auth.example.com:443" and clusters[0].transport_socket.name
    # auth-signin: 401 -> 302 on that route only.
    cr = _unpack(pa.typed_per_filter_config["envoy.filters.http.custom_response"], custom_response_pb2.CustomResponse)
    assert cr.custom_response_matcher.matcher_list.matchers[0].predicate.single_predicate.value_match.exact == "401"
    # Without auth-signin only the "other auth answers are 500" rule is there.
    cr_b = _unpack(
        pb_.typed_per_filter_config["envoy.filters.http.custom_response"], custom_response_pb2.CustomResponse
    )
    assert [m.predicate.WhichOneof("match_type") for m in cr_b.custom_response_matcher.matcher_list.matchers] == [
        "and_matcher"
    ]


def test_translate_basic_auth_per_route_users_and_realm() -> None:
    pb, _ = _route(BasicAuth("alice:" + _sha("pw") + "\n", "Zone"))
    fc = _unpack(pb.typed_per_filter_config["envoy.filters.http.basic_auth"], route_components_pb2.FilterConfig)
    assert not fc.disabled and fc.config.type_url.endswith("BasicAuthPerRoute")
    assert "envoy.filters.http.custom_response" in pb.typed_per_filter_config
    assert all(f.disabled for f in _feature("basic-auth").http_filters(frozenset({""})))


def test_decoded_routes_never_show_basic_auth_users() -> None:
    """Debug output, history and goldens decode resources with xds.resources.decode: the users
    (password hashes) of a route are redacted, everything else is kept."""
    from envoy.config.route.v3 import route_pb2
    from google.protobuf import any_pb2

    from controlplane.xds import resources as rt

    pb, _ = _route(BasicAuth("alice:" + _sha("pw") + "\n", "Zone"))
    config = route_pb2.RouteConfiguration(name="r")
    config.virtual_hosts.add(name="v", domains=["*"]).routes.append(pb)
    wrapped = any_pb2.Any()
    wrapped.Pack(config)
    doc = rt.decode(rt.ROUTE, wrapped.SerializeToString())
    text = repr(doc)
    assert _sha("pw") not in text and "alice" not in text
    per_route = doc["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"]["envoy.filters.http.basic_auth"]
    assert per_route["config"]["users"] == {"inline_string": "[redacted]"}


def _route_step(check: ClientCertCheck) -> str:
    """The Lua code a route carrying `check` runs (by name, from the filter every connection manager has)."""
    pb, r = _route(check)
    feature = _feature("client-cert")
    per_route = _unpack(pb.typed_per_filter_config["envoy.filters.http.lua/client-cert"], lua_pb2.LuaPerRoute)
    [step] = feature.http_filters(feature.filter_keys(r))
    assert not step.disabled  # off by default would force one route table partition; no code runs instead
    lua = _unpack(step.typed_config, lua_pb2.Lua)
    assert not lua.HasField("default_source_code")  # routes of other hosts run nothing
    return lua.source_codes[per_route.name].inline_string


def test_translate_tls_policies() -> None:
    ca = make_ca()
    host = TlsHost(("a.example.com",), "default/site", (ClientCert(ca.cert, "on", 2), TlsParams("TLSv1_3", "TLSv1_3")))
    ctx = tls_pb2.DownstreamTlsContext()
    chain = listener_components_pb2.FilterChain()
    for f in FEATURES:
        f.patch_tls(host, chain, ctx)
    # nginx completes the handshake and answers per request: the host's routes' Lua step does.
    assert not ctx.require_client_certificate.value
    vc = ctx.common_tls_context.validation_context
    assert vc.trusted_ca.inline_bytes == ca.cert and vc.max_verify_depth.value == 2
    assert vc.trust_chain_verification == common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    # No connection manager of its own: the check travels with the host's routes (any chain reaches them).
    assert not chain.filters
    code = _route_step(ClientCertCheck("on"))
    assert "local REQUIRED = true" in code and "local VERIFIED = true" in code and "local MATCH_CN = false" in code
    assert '[":status"] = "421"' in code and "requestedServerName()" in code
    code = _route_step(ClientCertCheck("optional", "http://e/x", "CN=(a|b)"))
    assert "local REQUIRED = false" in code and "local MATCH_CN = true" in code and "function pattern_search" in code
    assert "envoy.filters.http.lua/client-cert" not in _route(TlsParams())[0].typed_per_filter_config
    params = ctx.common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    ctx2 = tls_pb2.DownstreamTlsContext()
    for f in FEATURES:
        f.patch_tls(TlsHost(("b",), "s", (ClientCert(ca.cert, "optional_no_ca"),)), chain, ctx2)
    assert not ctx2.require_client_certificate.value
    assert ctx2.common_tls_context.validation_context.trust_chain_verification == (
        common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    )
    pb, _ = _route(PassClientCert())
    assert next(h.header.key for h in pb.request_headers_to_add) == "ssl-client-cert"


def test_certs_helper() -> None:
    ca = make_ca()
    leaf = issue_cert(ca, ["a.example.com", "127.0.0.1"])
    assert leaf.x509.issuer == ca.x509.subject
    client = issue_cert(ca, common_name="alice", client=True)
    assert "alice" in client.x509.subject.rfc4514_string()


def test_redirect_routes_are_not_access_controlled() -> None:
    """nginx returns redirects in the rewrite phase, before allow/deny, limits and auth."""
    from controlplane.ir.policies import UrlRedirect

    policies = (IpAccess(allow=("10.0.0.0/8",)), BasicAuth("a:" + _sha("pw") + "\n"), BodySize(5))
    for route_pb, route in (
        _route(*policies, action=Redirect(code=308, scheme="https")),
        _route(*policies, UrlRedirect("https://x.example.com", 302)),
    ):
        assert not any(f.route_uses(route) for f in FEATURES if f.name in ("ip-access", "basic-auth", "body-size"))
        assert "envoy.filters.http.rbac" not in route_pb.typed_per_filter_config
        assert "envoy.filters.http.basic_auth" not in route_pb.typed_per_filter_config


# -- fuzz: any value parses without raising and translates to serializable Envoy config ---------------
_KEYS = [
    "whitelist-source-range", "denylist-source-range", "limit-rps", "limit-rpm", "limit-burst-multiplier",
    "limit-whitelist", "proxy-body-size", "auth-url", "auth-signin", "auth-response-headers", "auth-method",
    "auth-type", "auth-secret", "auth-realm", "auth-tls-secret", "auth-tls-verify-client", "auth-tls-verify-depth",
    "ssl-protocols", "ssl-ciphers",
]  # fmt: skip
_VALUE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["10.0.0.0/8", "1.2.3.4, ::1", "99999999999", "0", "8m", "http://a.b:0/x", "http://[::1]:9/a",
                     "https://h/p?q=$arg_x", "basic", "users", "TLSv1.3", "AES128-SHA:FOO", "on", "%x%", "a%REQ(x)%"]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUE, max_size=6), st.booleans())
def test_fuzz_parse_and_translate(values: dict[str, str], meridian: bool) -> None:
    ann = {(M if meridian else N) + k: v for k, v in values.items()}
    ca = _FUZZ_CA
    p = parse(ann, [_secret("users", {"auth": f"u:{_sha('p')}\n".encode()}), ca_secret("ca", "default", ca)])
    pb, route = _route(*p.route)
    pb.SerializeToString()
    for f in FEATURES:
        keys = f.filter_keys(route)
        if keys:
            for flt in f.http_filters(keys):
                flt.SerializeToString()
        for c in f.extra_clusters(route):
            c.SerializeToString()
    ctx = tls_pb2.DownstreamTlsContext()
    for f in FEATURES:
        f.patch_tls(TlsHost(("h",), "s", p.tls), listener_components_pb2.FilterChain(), ctx)
    ctx.SerializeToString()


def test_ext_auth_signin_param_and_cookies() -> None:
    p = parse(
        {
            N + "auth-url": "http://127.0.0.1:9/auth",
            N + "auth-signin": "https://l.example.com/start",
            N + "auth-signin-redirect-param": "return_to",
            N + "auth-always-set-cookie": "true",
        }
    )
    ea = p.get(ExtAuth)
    assert ea.signin is not None and ea.signin.startswith("https://l.example.com/start?return_to=")
    assert ea.always_set_cookie
    _, route = _route(ea)
    feature = _feature("ext-auth")
    cfg = _unpack(feature.http_filters(feature.filter_keys(route))[0].typed_config, ext_authz_pb2.ExtAuthz)
    resp = cfg.http_service.authorization_response
    assert [m.exact for m in resp.allowed_client_headers.patterns] == ["www-authenticate", "set-cookie"]
    assert [m.exact for m in resp.allowed_client_headers_on_success.patterns] == ["set-cookie"]
    assert parse({N + "auth-url": "http://a/b", N + "auth-signin-redirect-param": "a b"}).get(ExtAuth) is not None
