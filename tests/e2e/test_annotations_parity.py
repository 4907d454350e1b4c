"""ingress-nginx parity, round 2, end to end through a real Envoy: the exact status, Location and
headers ingress-nginx gives for HTTPS redirects, permanent/temporal redirects, CORS, invalid canary
patterns, spec.defaultBackend, the default-backend annotation, regex ordering and server-alias.

One gateway for the module; it runs with the default `--public-https-port` (443), as behind a
LoadBalancer, so redirect Locations carry no port. Each case has its own host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

NGINX = "nginx.ingress.kubernetes.io/"
CA = make_ca("parity CA")


def ann(values: dict[str, str]) -> dict[str, str]:
    return {NGINX + k: v for k, v in values.items()}


def simple(name: str, host: str, annotations: dict[str, str], *paths: tuple[str, str, str, int], **kw: Any) -> Any:
    return ingress(name, [rule(host, *(paths or (("/", "Prefix", "web", 80),)))], annotations=ann(annotations), **kw)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("parity")))
    try:
        g.start()
        g.backend("web")
        g.backend("other")
        cert = issue_cert(CA, ["tls.example.com", "mixed.example.com", "keep.example.com", "cors-tls.example.com",
                              "r-path.example.com"])
        g.write("secret.yaml", [tls_secret("parity-tls", "default", cert.cert, cert.key)])
        tls = [
            {
                "hosts": ["tls.example.com", "mixed.example.com", "keep.example.com", "cors-tls.example.com"],
                "secretName": "parity-tls",
            }
        ]
        g.write("ssl.yaml", [
            simple("tls", "tls.example.com", {}, tls=tls),
            simple("keep", "keep.example.com", {"preserve-trailing-slash": "true"}, tls=tls),
            simple("force", "force.example.com", {"force-ssl-redirect": "true"}),
            simple("wild", "*.wild.example.com", {"force-ssl-redirect": "true"}),
            simple("portin", "portin.example.com", {"force-ssl-redirect": "true", "use-port-in-redirects": "true"}),
            simple("wild-keep", "*.wild-keep.example.com", {"force-ssl-redirect": "true",
                                                            "preserve-trailing-slash": "true"}),
            simple("aliased", "aliased.example.com", {"force-ssl-redirect": "true",
                                                      "server-alias": "www.aliased.example.com"}),
            # Per path: one Ingress of the host turns the redirect off for its own path only.
            simple("mixed", "mixed.example.com", {}, ("/secure", "Prefix", "web", 80), tls=tls),
            simple("mixed-open", "mixed.example.com", {"ssl-redirect": "false"}, ("/open", "Prefix", "other", 80)),
        ])  # fmt: skip
        g.write("redirects.yaml", [
            simple("r-bare", "r-bare.example.com", {"permanent-redirect": "http://redirect.example.com"}),
            simple("r-exact", "r-exact.example.com", {"permanent-redirect": "https://new.example.com/a/?x=1&y=2,3"}),
            # Characters ingress-nginx's URL validator refuses: it does not serve the Ingress at all.
            simple("r-refused", "r-refused.example.com", {"permanent-redirect": "https://new.example.com/a%20b"}),
            simple("r-bad-code-text", "r-bad-code-text.example.com", {"permanent-redirect-code": "moved"}),
            simple("r-308", "r-308.example.com", {"permanent-redirect": "https://new.example.com/p",
                                                  "permanent-redirect-code": "308"}),
            simple("r-bad-code", "r-bad-code.example.com", {"permanent-redirect": "https://new.example.com",
                                                            "permanent-redirect-code": "399"}),
            simple("r-temp", "r-temp.example.com", {"temporal-redirect": "https://t.example.com/t?q",
                                                    "permanent-redirect": "https://p.example.com"}),
            simple("r-temp-307", "r-temp-307.example.com", {"temporal-redirect": "https://t.example.com",
                                                            "temporal-redirect-code": "307"}),
            simple("r-temp-bad", "r-temp-bad.example.com", {"temporal-redirect": "https://t.example.com",
                                                            "temporal-redirect-code": "308"}),
            simple("r-300", "r-300.example.com", {"permanent-redirect": "https://new.example.com",
                                                  "permanent-redirect-code": "300"}),
            # A path URL: nginx's absolute_redirect (its default) puts the request's origin in front.
            simple("r-path", "r-path.example.com", {"permanent-redirect": "/new-location?a=1", "ssl-redirect": "false"},
                   tls=[{"hosts": ["r-path.example.com"], "secretName": "parity-tls"}]),
            simple("r-path-port", "r-path-port.example.com", {"permanent-redirect": "/n",
                                                              "use-port-in-redirects": "true"}),
            simple("r-path-rel", "r-path-rel.example.com", {"permanent-redirect": "/n", "relative-redirects": "true"}),
        ])  # fmt: skip
        g.write("cors.yaml", [
            simple("cors-any", "cors-any.example.com", {"enable-cors": "true"}),
            simple("cors-tls", "cors-tls.example.com", {"enable-cors": "true"}, tls=tls),
            simple("cors-list", "cors-list.example.com", {
                "enable-cors": "true", "cors-allow-origin": "https://a.example.com, https://*.b.example.com:8443",
                "cors-allow-methods": "GET, POST", "cors-expose-headers": "X-Echo-Pod, X-Other",
                "cors-allow-credentials": "false", "cors-max-age": "600"}),
        ])  # fmt: skip
        canary = {"canary": "true", "canary-by-header": "X-Canary"}
        g.write("canary.yaml", [
            simple("cb-main", "canary-bad.example.com", {}),
            simple("cb-canary", "canary-bad.example.com", {**canary, "canary-by-header-pattern": "foo(",
                                                           "canary-by-cookie": "beta", "canary-weight": "100"},
                   ("/", "Prefix", "other", 80)),
            simple("cn-main", "canary-never.example.com", {}),
            simple("cn-canary", "canary-never.example.com", {**canary, "canary-by-header-pattern": "[a-"},
                   ("/", "Prefix", "other", 80)),
            simple("cv-main", "canary-valid.example.com", {}),
            simple("cv-canary", "canary-valid.example.com", {**canary, "canary-by-header-pattern": "^(beta|gamma)$",
                                                            "canary-by-cookie": "beta"},
                   ("/", "Prefix", "other", 80)),
            # balancer.lua: a canary-weight-total below 100 counts as 100, so 10 of "10" is 10%, not all.
            simple("ct-main", "canary-total.example.com", {}),
            simple("ct-canary", "canary-total.example.com",
                   {"canary": "true", "canary-weight": "10", "canary-weight-total": "10"},
                   ("/", "Prefix", "other", 80)),
            # Patterns only PCRE runs (lookahead, backreference): a Lua step evaluates them as ngx.re.match.
            simple("cp-main", "canary-pcre.example.com", {}),
            simple("cp-canary", "canary-pcre.example.com", {**canary, "canary-by-header-pattern": "^(?=.*beta)(?=.*eu)",
                                                           "canary-by-cookie": "beta"},
                   ("/", "Prefix", "other", 80)),
            simple("cr-main", "canary-backref.example.com", {}),
            simple("cr-canary", "canary-backref.example.com", {**canary, "canary-by-cookie": "beta",
                                                              "canary-by-header-pattern": "^(\\w+)-\\1$|^(a|a)+$"},
                   ("/", "Prefix", "other", 80)),
        ])  # fmt: skip
        g.wait_status("force.example.com", "/", 308)
        yield g
    finally:
        g.stop()


def location(gw: Gateway, host: str, path: str, status: int = 308, **kw: Any) -> str:
    r = wait_until(lambda: (x := gw.get(host, path, **kw)).status == status and x, timeout=15,
                   message=f"{host}{path} never answered {status}")  # fmt: skip
    return r.headers["Location"]


# -- 1. HTTPS redirects name the public HTTPS port (443: no port) ------------------------------------
def test_ssl_redirect_location_is_https_host_and_request_uri(gw: Gateway) -> None:
    assert location(gw, "tls.example.com", "/a/b?x=1&y=2") == "https://tls.example.com/a/b?x=1&y=2"
    # As ingress-nginx (lua_ingress.lua): one trailing "/" of the request URI is dropped...
    assert location(gw, "tls.example.com", "/dir/") == "https://tls.example.com/dir"
    assert location(gw, "tls.example.com", "/") == "https://tls.example.com"
    # ...but not when the URI ends in the query.
    assert location(gw, "tls.example.com", "/dir/?q=1") == "https://tls.example.com/dir/?q=1"
    # The client's port in Host is not kept: the public HTTPS port is 443.
    assert location(gw, "tls.example.com:8080", "/p") == "https://tls.example.com/p"


def test_ssl_redirect_location_takes_the_host_as_sent_without_its_port(gw: Gateway) -> None:
    """lua_ingress's redirect_host(): the Host header up to its first ":", spelled as the client did,
    for named, wildcard and alias hosts alike."""
    assert location(gw, "TLS.Example.COM", "/a") == "https://TLS.Example.COM/a"
    assert location(gw, "TLS.Example.COM:8443", "/") == "https://TLS.Example.COM"
    for host in ("a.wild.example.com", "A.Wild.Example.com"):
        for port in ("", ":80", ":8080", ":443"):
            assert location(gw, host + port, "/x/?q=1") == f"https://{host}/x/?q=1", port
            assert location(gw, host + port, "/x/") == f"https://{host}/x", port
            assert location(gw, host + port, "/") == f"https://{host}", port
    assert location(gw, "b.wild-keep.example.com:8080", "/") == "https://b.wild-keep.example.com/"
    assert location(gw, "b.wild-keep.example.com:8080", "/y/") == "https://b.wild-keep.example.com/y/"
    for host in ("aliased.example.com:8080", "www.aliased.example.com:8080"):
        assert location(gw, host, "/z/") == f"https://{host.split(':')[0]}/z"
        assert location(gw, host, "/") == f"https://{host.split(':')[0]}"


def test_use_port_in_redirects_names_the_port_even_443(gw: Gateway) -> None:
    assert location(gw, "portin.example.com:8080", "/p/") == "https://portin.example.com:443/p"
    assert location(gw, "portin.example.com", "/") == "https://portin.example.com:443"


def test_preserve_trailing_slash_keeps_the_uri(gw: Gateway) -> None:
    assert location(gw, "keep.example.com", "/dir/") == "https://keep.example.com/dir/"
    assert location(gw, "keep.example.com", "/") == "https://keep.example.com/"


def test_force_ssl_redirect_without_tls(gw: Gateway) -> None:
    assert location(gw, "force.example.com", "/f/?a=b") == "https://force.example.com/f/?a=b"
    assert location(gw, "force.example.com", "/f/") == "https://force.example.com/f"


def test_ssl_redirect_per_path(gw: Gateway) -> None:
    assert location(gw, "mixed.example.com", "/secure/x") == "https://mixed.example.com/secure/x"
    gw.wait_served_by("mixed.example.com", "/open/x", "other")


# -- 2. permanent-redirect / temporal-redirect: `return <code> <URL>` -------------------------------
@pytest.mark.parametrize(
    ("host", "status", "where"),
    [
        ("r-bare", 301, "http://redirect.example.com"),  # no "/" added
        ("r-exact", 301, "https://new.example.com/a/?x=1&y=2,3"),  # path and query as written
        ("r-308", 308, "https://new.example.com/p"),
        ("r-bad-code", 301, "https://new.example.com"),  # 399 is outside 300-308: the default
        ("r-temp", 302, "https://t.example.com/t?q"),  # temporal wins over permanent
        ("r-temp-307", 307, "https://t.example.com"),
        ("r-temp-bad", 302, "https://t.example.com"),  # 308 is outside 300-307: the default
    ],
)
def test_url_redirect_location_is_the_annotation(gw: Gateway, host: str, status: int, where: str) -> None:
    # The request's own path and query never leak into the Location.
    assert location(gw, f"{host}.example.com", "/some/path?z=9", status) == where


def test_url_redirect_values_ingress_nginx_refuses_reject_the_ingress(gw: Gateway) -> None:
    for name, key in (("r-refused", "permanent-redirect"), ("r-bad-code-text", "permanent-redirect-code")):
        report = gw.wait_report(name, lambda r: r.get("status") is not None or r["findings"])
        assert any(f["key"] == key and f["level"] == "rejected" for f in report["findings"]), report
        assert gw.get(f"{name}.example.com", "/").status == 404


def test_url_redirect_code_without_location_sends_the_url_as_body(gw: Gateway) -> None:
    r = wait_until(lambda: (x := gw.get("r-300.example.com", "/")).status == 300 and x, timeout=15)
    assert "Location" not in r.headers and r.text == "https://new.example.com"


def test_url_redirect_path_gets_the_origin_as_nginx_absolute_redirect(gw: Gateway) -> None:
    # The Host as nginx's $host: lowercased, its port dropped; the scheme by the connection.
    for host in ("r-path.example.com", "R-Path.Example.COM:8080"):
        assert location(gw, host, "/x?z=9", 301) == "http://r-path.example.com/new-location?a=1", host
    r = wait_until(lambda: (x := gw.get_https("r-path.example.com", "/x")).status == 301 and x, timeout=15)
    assert r.headers["Location"] == "https://r-path.example.com/new-location?a=1"
    # use-port-in-redirects: nginx names its own port unless 80 (HTTP) or 443 (the public HTTPS port here).
    assert location(gw, "r-path-port.example.com:8080", "/", 301) == "http://r-path-port.example.com/n"
    # relative-redirects: nginx's absolute_redirect off, the path as written.
    assert location(gw, "r-path-rel.example.com:8080", "/", 301) == "/n"


# -- 3. CORS as nginx.tmpl's CORS template ---------------------------------------------------------
DEFAULT_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
    "Content-Type,Range,Authorization",
    "Access-Control-Max-Age": "1728000",
}


def cors_headers(headers: Any) -> dict[str, str]:
    """The CORS headers by lower-case name (HTTP/1 header names are case-insensitive)."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_cors_any_origin_on_every_response(gw: Gateway) -> None:
    r = wait_until(lambda: (x := gw.get("cors-any.example.com", "/x")).status == 200 and x, timeout=15)
    assert r.json()["service"] == "web" and cors_headers(r.headers) == lower(DEFAULT_CORS)  # no Origin needed
    r = gw.get("cors-any.example.com", "/x", headers={"Origin": "https://anything.example.org"})
    assert cors_headers(r.headers) == lower(DEFAULT_CORS)
    # Any OPTIONS is a preflight the gateway answers: 204, no body, never the backend.
    pre = gw.get("cors-any.example.com", "/x", method="OPTIONS", headers={"Origin": "https://o.example.org"})
    assert pre.status == 204 and pre.body == b"" and "X-Echo-Service" not in pre.headers
    assert cors_headers(pre.headers) == lower(DEFAULT_CORS)
    # nginx.tmpl sets Content-Type and Content-Length: 0 with more_set_headers. nginx's header filter
    # drops the Content-Type of a 204 (it nulls content_type), but headers-more put Content-Length in
    # the header list, which it still prints.
    assert pre.headers.get("Content-Length") == "0" and "Content-Type" not in pre.headers


def test_cors_listed_origins(gw: Gateway) -> None:
    want = {
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": DEFAULT_CORS["Access-Control-Allow-Headers"],
        "Access-Control-Expose-Headers": "X-Echo-Pod, X-Other",  # verbatim
        "Access-Control-Max-Age": "600",
    }  # and no Allow-Credentials: cors-allow-credentials is false
    host = "cors-list.example.com"
    wait_until(lambda: gw.get(host, "/").status == 200, timeout=15)
    for origin in ("https://a.example.com", "HTTPS://A.Example.COM", "https://x.b.example.com:8443"):
        expected = lower({"Access-Control-Allow-Origin": origin, **want})
        r = gw.get(host, "/p", headers={"Origin": origin})
        assert r.status == 200 and cors_headers(r.headers) == expected, origin
        pre = gw.get(host, "/p", method="OPTIONS", headers={"Origin": origin})
        assert pre.status == 204 and cors_headers(pre.headers) == expected
    # Other origins (a second label, another port, none at all) get no CORS headers, and their OPTIONS
    # goes to the backend like any request.
    for headers in ({"Origin": "https://evil.example.com"}, {"Origin": "https://x.y.b.example.com:8443"},
                    {"Origin": "https://x.b.example.com"}, {}):  # fmt: skip
        r = gw.get(host, "/p", headers=headers)
        assert r.status == 200 and cors_headers(r.headers) == {}, headers
        r = gw.get(host, "/p", method="OPTIONS", headers=headers)
        assert r.status == 200 and r.json()["service"] == "web" and cors_headers(r.headers) == {}, headers


# -- 8. canary-by-header-pattern that is not a valid regex ---------------------------------------------
def served_by(gw: Gateway, host: str, headers: dict[str, str]) -> str:
    r = gw.get(host, "/", headers=headers)
    assert r.status == 200, r
    return str(r.json()["service"])


def test_invalid_canary_pattern_keeps_requests_with_the_header_on_main(gw: Gateway) -> None:
    host = "canary-bad.example.com"
    gw.wait_served_by(host, "/", "other")  # no header, no cookie: canary-weight 100
    # balancer.lua: ngx.re.match fails -> `return false`, before the cookie and weight are looked at.
    for value in ("foo(", "always", "anything"):
        assert served_by(gw, host, {"X-Canary": value}) == "web", value
        assert served_by(gw, host, {"X-Canary": value, "Cookie": "beta=always"}) == "web", value
    # Without the header the cookie and the weight still decide.
    assert served_by(gw, host, {"Cookie": "a=1; beta=always"}) == "other"
    assert served_by(gw, host, {"Cookie": "beta=never"}) == "web"
    assert served_by(gw, host, {}) == "other"
    # Without cookie or weight the canary never gets traffic at all.
    host = "canary-never.example.com"
    gw.wait_served_by(host, "/", "web")
    for headers in ({"X-Canary": "always"}, {"X-Canary": "[a-"}, {}):
        assert served_by(gw, host, headers) == "web", headers
    report = gw.wait_report("cb-canary", lambda r: any(f["key"] == "canary-by-header-pattern" for f in r["findings"]))
    finding = next(f for f in report["findings"] if f["key"] == "canary-by-header-pattern")
    assert finding["level"] == "warning" and "main Service" in finding["message"]


def test_valid_canary_pattern_falls_through_to_cookie(gw: Gateway) -> None:
    host = "canary-valid.example.com"
    gw.wait_served_by(host, "/", "other", headers={"X-Canary": "beta"})
    assert served_by(gw, host, {"X-Canary": "gamma"}) == "other"
    assert served_by(gw, host, {"X-Canary": "always"}) == "web"  # a pattern replaces always/never
    assert served_by(gw, host, {"X-Canary": "delta", "Cookie": "beta=always"}) == "other"  # no match: cookie
    assert served_by(gw, host, {}) == "web"


def test_pcre_only_canary_patterns_run_as_ngx_re_match(gw: Gateway) -> None:
    host = "canary-pcre.example.com"
    gw.wait_served_by(host, "/", "other", headers={"X-Canary": "beta-eu"})
    assert served_by(gw, host, {"X-Canary": "eu,beta"}) == "other"  # both lookaheads, any order
    assert served_by(gw, host, {"X-Canary": "beta"}) == "web"  # no match, no cookie, no weight
    assert served_by(gw, host, {"X-Canary": "beta", "Cookie": "beta=always"}) == "other"  # no match: the cookie
    r = gw.get(host, "/", headers=[("X-Canary", "beta"), ("X-Canary", "eu")])  # joined as nginx does
    assert r.status == 200 and r.json()["service"] == "other"
    # A client cannot send the verdict itself, and the backend never sees it.
    r = gw.get(host, "/", headers={"X-Meridian-Pattern": "match"})
    assert r.json()["service"] == "web" and "x-meridian-pattern" not in {k.lower() for k in r.json()["headers"]}
    r = gw.get(host, "/", headers={"X-Canary": "beta-eu", "X-Meridian-Pattern": "error"})
    assert r.json()["service"] == "other" and "x-meridian-pattern" not in {k.lower() for k in r.json()["headers"]}
    host = "canary-backref.example.com"
    gw.wait_served_by(host, "/", "other", headers={"X-Canary": "ab-ab"})
    assert served_by(gw, host, {"X-Canary": "ab-ac"}) == "web"
    assert served_by(gw, host, {"X-Canary": "x ab-ab"}) == "web"  # anchored at the start
    assert served_by(gw, host, {"X-Canary": "aaaa"}) == "other"
    # Exponential backtracking ((a|a)+ on 30 a's and a "!": 2^30 steps) is past PCRE's match limit and
    # the matcher's: ngx.re.match's error keeps the request on the main Service, the cookie unread.
    # Reaching the limit (10 million steps) takes the matcher about 1.5 s of CPU: a longer timeout.
    r = gw.get(host, "/", headers={"X-Canary": "a" * 30 + "!", "Cookie": "beta=always"}, timeout=60)
    assert r.status == 200 and r.json()["service"] == "web"
    assert served_by(gw, host, {"Cookie": "beta=always"}) == "other"
    report = gw.ingress_report("cp-canary")
    assert report is not None and not any(f["level"] == "warning" for f in report["findings"])


def test_canary_weight_total_below_100_counts_as_100(gw: Gateway) -> None:
    host = "canary-total.example.com"
    gw.wait_served_by(host, "/", "web")
    gw.wait_served_by(host, "/", "other")
    served = [served_by(gw, host, {}) for _ in range(150)]
    # 10% canary: both answer (all 150 on one side: probability below 1e-6), and not all canary.
    assert 0 < served.count("other") < 60, served.count("other")
    report = gw.wait_report("ct-canary", lambda r: any(f["key"] == "canary-weight-total" for f in r["findings"]))
    assert [f["level"] for f in report["findings"] if f["key"] == "canary-weight-total"] == ["converted"]
    assert any("below 100" in f["message"] for f in report["findings"])


# -- 7. spec.defaultBackend: the catch-all only without rules ------------------------------------------
def test_default_backend_with_rules_is_the_fallback_of_its_hosts_only(gw: Gateway) -> None:
    gw.write("default-backend.yaml", [
        ingress("db-rules", [rule("db.example.com", ("/app", "Prefix", "web", 80))], default_backend=("other", 80)),
    ])  # fmt: skip
    gw.wait_served_by("db.example.com", "/elsewhere", "other")
    assert served_by_path(gw, "db.example.com", "/app/x") == "web"
    # Unknown hosts get the controller's 404, not this Ingress's default backend.
    r = gw.get("unknown.example.com", "/app")
    assert r.status == 404 and "X-Echo-Service" not in r.headers
    try:
        # An Ingress with a default backend and no rules is the catch-all.
        # ingress-nginx keeps the catch-all location's own redirect and rewrite settings: these do nothing.
        catch_all = {"force-ssl-redirect": "true", "permanent-redirect": "https://away.example.com",
                     "app-root": "/app", "rewrite-target": "/rewritten"}  # fmt: skip
        gw.write("catch-all.yaml", [ingress("catch-all", default_backend=("web", 80), annotations=ann(catch_all))])
        gw.wait_served_by("unknown.example.com", "/anything", "web")
        for path in ("/", "/x/"):
            r = gw.get("unknown.example.com:8080", path)
            assert r.status == 200 and r.json()["path"] == path, path
        assert served_by_path(gw, "db.example.com", "/elsewhere") == "other"  # its own fallback still wins
    finally:
        gw.remove("catch-all.yaml")
        gw.wait_status("unknown.example.com", "/", 404)


def served_by_path(gw: Gateway, host: str, path: str) -> str:
    r = gw.get(host, path)
    assert r.status == 200, r
    return str(r.json()["service"])


# -- 4. the default-backend annotation serves paths whose Service has no endpoint ----------------------
def test_default_backend_annotation_serves_paths_without_endpoints(gw: Gateway) -> None:
    empty = gw.fleet.add(service="empty", pod="empty-0")
    gw.publish("empty", [empty], ready=[False])
    gw.write("dflt.yaml", [
        simple("dflt", "dflt.example.com", {"default-backend": "other"},
               ("/ready", "Prefix", "web", 80), ("/empty", "Prefix", "empty", 80), ("/missing", "Prefix", "ghost", 80)),
        simple("nodflt", "nodflt.example.com", {}, ("/missing", "Prefix", "ghost", 80)),
    ])  # fmt: skip
    gw.wait_served_by("dflt.example.com", "/missing", "other")  # no such Service
    assert served_by_path(gw, "dflt.example.com", "/empty/x") == "other"  # no ready endpoint
    assert served_by_path(gw, "dflt.example.com", "/ready") == "web"
    # The headers nginx sends to a custom default backend (nginx.tmpl, custom-default-backend-), the path kept.
    for path, service in (("/missing/a?b=1", "ghost"), ("/empty/x", "empty")):
        r = gw.get("dflt.example.com", path, headers={"Accept": "text/html"})
        got = {k.lower(): v for k, v in r.json()["headers"].items()}
        want = {"x-code": "503", "x-format": "text/html", "x-namespace": "default", "x-ingress-name": "dflt",
                "x-service-name": service, "x-service-port": "80"}  # fmt: skip
        assert {k: got.get(k) for k in want} == want and r.json()["path"] == path, path
        # Without an Accept, nginx's empty $http_accept sends no X-Format.
        r = gw.get("dflt.example.com", path, headers={"Accept": ""})
        assert "x-format" not in {k.lower() for k in r.json()["headers"]}, path
    r = gw.get("dflt.example.com", "/ready", headers={"Accept": "text/html"})
    assert not {"x-code", "x-format"} & {k.lower() for k in r.json()["headers"]}
    assert gw.get("nodflt.example.com", "/missing").status == 503  # without the annotation
    # Once the Service has a ready endpoint it serves its own path again, and loses it again.
    gw.publish("empty", [empty], ready=[True])
    gw.wait_served_by("dflt.example.com", "/empty/x", "empty")
    gw.publish("empty", [empty], ready=[False])
    gw.wait_served_by("dflt.example.com", "/empty/x", "other")


# -- 6. regex ordering: ingress-nginx's location sort, first matching regex wins -----------------------
def test_regex_mode_orders_locations_as_ingress_nginx(gw: Gateway) -> None:
    host = "rx.example.com"
    rx = {"use-regex": "true"}
    gw.write("regex.yaml", [
        simple("rx-a", host, rx, ("/foo.", "ImplementationSpecific", "web", 80),
               ("/aa", "ImplementationSpecific", "web", 80)),
        simple("rx-b", host, rx, ("/a.", "ImplementationSpecific", "other", 80)),
        # No use-regex here: regex mode spreads to these paths of the same host.
        simple("rx-c", host, {}, ("/foo", "Prefix", "other", 80), ("/exact", "Exact", "web", 80)),
    ])  # fmt: skip
    gw.wait_served_by(host, "/foo", "other")
    want = {
        "/fooX": "web",  # ^/foo. (length 5) comes before ^/foo/ and ^/foo (the Prefix /foo, length 4)
        "/foo/x": "web",  # the same: the longer regex is tried first and matches
        "/foo": "other",  # only ^/foo matches
        "/FOO": "other",  # case-insensitive
        "/aa": "web",  # equal lengths: the path sorting last (descending) is tried first: /aa before /a.
        "/ab": "other",
        "/exact/sub": "web",  # an Exact path is `~* "^/exact"` in regex mode
        "/EXACT": "web",
    }
    got = {path: served_by_path(gw, host, path) for path in want}
    assert got == want


# -- 5. server-alias serves every path of its host ------------------------------------------------------
def test_server_alias_serves_every_path_of_the_host(gw: Gateway) -> None:
    host = "alias-main.example.com"
    gw.write("alias.yaml", [
        simple("al-a", host, {"server-alias": "www.alias.example.com, alias-real.example.com"},
               ("/a", "Prefix", "web", 80)),
        simple("al-b", host, {}, ("/b", "Prefix", "other", 80)),  # another Ingress of the same host
        simple("al-real", "alias-real.example.com", {}, ("/", "Prefix", "other", 80)),
    ])  # fmt: skip
    gw.wait_served_by("www.alias.example.com", "/a", "web")
    assert served_by_path(gw, "www.alias.example.com", "/b/x") == "other"
    assert served_by_path(gw, "WWW.Alias.example.com:8080", "/a") == "web"
    assert gw.get("www.alias.example.com", "/c").status == 404  # the host has no /c either
    # An alias that is a real host is dropped (that host keeps its own routes) and reported.
    assert served_by_path(gw, "alias-real.example.com", "/a") == "other"
    report = gw.wait_report("al-a", lambda r: any(f["key"] == "server-alias" for f in r["findings"]))
    assert any(f["level"] == "warning" and "alias-real.example.com" in f["message"] for f in report["findings"])
    # The alias follows the host's routes as they change.
    gw.write("alias-c.yaml", [simple("al-c", host, {}, ("/c", "Prefix", "web", 80))])
    gw.wait_served_by("www.alias.example.com", "/c", "web")
    # Removing the real host frees the name: it becomes an alias.
    gw.write("alias.yaml", [
        simple("al-a", host, {"server-alias": "www.alias.example.com, alias-real.example.com"},
               ("/a", "Prefix", "web", 80)),
        simple("al-b", host, {}, ("/b", "Prefix", "other", 80)),
    ])  # fmt: skip
    gw.wait_served_by("alias-real.example.com", "/a", "web")


def test_cors_on_a_redirected_plain_http_host(gw: Gateway) -> None:
    """nginx answers the preflight in its rewrite phase, before lua_ingress redirects, and sets the CORS
    headers on the redirect too."""
    host = "cors-tls.example.com"
    assert location(gw, host, "/x") == "https://cors-tls.example.com/x"
    r = gw.get(host, "/x")
    assert cors_headers(r.headers) == lower(DEFAULT_CORS)
    pre = gw.get(host, "/x", method="OPTIONS", headers={"Origin": "https://o.example.org"})
    assert pre.status == 204 and cors_headers(pre.headers) == lower(DEFAULT_CORS)


def test_lua_steps_behind_route_partitions(tmp_path: Path) -> None:
    """With scoped route tables (a first Lua filter picks the partition), the steps that settle a route
    again (PCRE canary pattern) or compute a Location (ssl-redirect) and the preflight's Content-Length
    work the same."""
    g = Gateway(tmp_path, serve_args=["--watch-ingress-without-class", "--route-partitions", "4"])
    try:
        g.start()
        g.backend("web")
        g.backend("other")
        canary = {"canary": "true", "canary-by-header": "X-Canary", "canary-by-header-pattern": "^(\\w+)-\\1$"}
        g.write("p.yaml", [
            simple("main", "pcre.example.com", {}),
            simple("canary", "pcre.example.com", canary, ("/", "Prefix", "other", 80)),
            simple("wild", "*.wild.example.com", {"force-ssl-redirect": "true", "enable-cors": "true"}),
        ])  # fmt: skip
        g.wait_served_by("pcre.example.com", "/", "other", headers={"X-Canary": "ab-ab"})
        assert served_by(g, "pcre.example.com", {"X-Canary": "ab-ac"}) == "web"
        assert location(g, "A.wild.example.com:8080", "/x/") == "https://A.wild.example.com/x"
        pre = g.get("a.wild.example.com", "/x", method="OPTIONS", headers={"Origin": "https://o.example.org"})
        assert pre.status == 204 and pre.headers.get("Content-Length") == "0"
    finally:
        g.stop()
