"""Unit tests of the core builders (hosts, ingress, services), the file source and the controller's
incrementality (a change rebuilds only what depends on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.ingress.convert import Lookups, build_ingress
from controlplane.ingress.hosts import host_domains, merge_host
from controlplane.ingress.locations import path_match
from controlplane.ir import DirectResponse, Forward, HeaderMatch, IngressRef, Redirect
from controlplane.ir.pcre import classify
from controlplane.ir.policies import ClientCertCheck, CookieAffinity, HeaderPattern
from controlplane.metrics import Metrics
from controlplane.services import ServiceIndex
from controlplane.sources.files import FileSource, ManifestError, parse_manifests
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache
from tests.support.certs import ca_secret, make_ca
from tests.support.gateway import ingress, rule, service_manifests

N = "nginx.ingress.kubernetes.io/"


# -- helpers -----------------------------------------------------------------------------------------
def svc(name: str, ns: str = "default", ports: tuple[tuple[str, int, int], ...] = (("http", 80, 8080),),
        ips: tuple[str, ...] = ("10.0.0.1",), ready: tuple[bool, ...] | None = None,
        annotations: Mapping[str, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    s = {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": ns, "annotations": dict(annotations or {})},
         "spec": {"ports": [{"name": n, "port": p, "targetPort": t} for n, p, t in ports]}}  # fmt: skip
    rdy = ready or (True,) * len(ips)
    sl = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": f"{name}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
          "addressType": "IPv4", "ports": [{"name": n, "port": t} for n, _p, t in ports],
          "endpoints": [{"addresses": [ip], "conditions": {"ready": r}}
                        for ip, r in zip(ips, rdy, strict=True)]}  # fmt: skip
    return [s, sl]


def index_with(*objs: dict[str, Any], cluster: str = "c1") -> ServiceIndex:
    idx = ServiceIndex()
    for o in objs:
        m = o["metadata"]
        if o["kind"] == "Service":
            idx.set_service(cluster, m["namespace"], m["name"], o)
        else:
            idx.set_slice(cluster, m["namespace"], m["name"], o)
    return idx


def build(obj: dict[str, Any], idx: ServiceIndex | None = None, secrets: dict[str, Any] | None = None,
          cluster: str = "c1", accepted: bool = True):  # fmt: skip
    idx = idx or index_with(*svc("s"), *svc("t"))
    meta = obj["metadata"]
    ref = IngressRef(cluster, meta.get("namespace", "default"), meta["name"])
    lk = Lookups(resolve_port=idx.resolve_port, get_secret=lambda c, ns, n: (secrets or {}).get(n))
    return build_ingress(obj, ref, class_accepted=accepted, lookups=lk)


def clusters_of(route: Any) -> list[str]:
    assert isinstance(route.action, Forward), route
    return [wc.cluster for wc in route.action.clusters]


# -- ingress/hosts.py ------------------------------------------------------------------------------------
def test_path_match_kinds_and_order() -> None:
    assert path_match("/foo/", "Prefix", False).kind == "prefix"
    assert path_match("/foo/", "Prefix", False).value == "/foo"
    assert path_match("/", "Prefix", False).value == "/"
    assert path_match("/foo/", "Exact", True).value == "/foo/"  # Exact stays exact in regex mode
    assert path_match("/a.b", "ImplementationSpecific", True).value == "(?i)^/a.b.*"
    ms = [path_match("/a", "Prefix", False), path_match("/a/b", "Prefix", False), path_match("/z", "Exact", False),
          path_match("/", "Prefix", False)]  # fmt: skip
    ordered = [(m.kind, m.value) for m in sorted(ms, key=lambda m: m.sort_key())]
    assert ordered == [("exact", "/z"), ("prefix", "/a/b"), ("prefix", "/a"), ("prefix", "/")]


def test_host_domains_wildcard_is_one_label() -> None:
    import re

    assert host_domains("") == (("*",), None)
    assert host_domains("a.com") == (("a.com",), None)
    domains, authority = host_domains("*.foo.com")
    assert domains == ("*.foo.com",) and authority is not None
    assert re.fullmatch(authority, "bar.foo.com") and re.fullmatch(authority, "bar.foo.com:8080")
    assert not re.fullmatch(authority, "baz.bar.foo.com") and not re.fullmatch(authority, "foo.com")


def test_merge_oldest_wins_and_loser_reported() -> None:
    old = build(ingress("old", [rule("h.com", ("/api", "Prefix", "s", 80))], created="2024-01-01T00:00:00Z"))
    new = build(ingress("new", [rule("h.com", ("/api/", "Prefix", "t", 80), ("/x", "Exact", "t", 80))],
                        created="2024-02-01T00:00:00Z"))  # fmt: skip
    for irs in ([old, new], [new, old]):  # input order does not matter
        res = merge_host("h.com", irs, tls_hosts=frozenset())
        routes = res.https.routes
        assert [r.match.value for r in routes] == ["/x", "/api"]
        assert clusters_of(routes[1]) == ["default/s:80"]
        assert [(ref.name, f.level) for ref, f in res.findings] == [("new", "conflict")]
        assert res.http is res.https  # no TLS, no redirect: one shared vhost


def test_client_cert_check_goes_on_every_route_of_the_host() -> None:
    """nginx's ssl_verify_client is the server's: every location of the host, from any Ingress, carries
    the per-request check (every HTTPS chain shares the route table, so it cannot stay on the chain)."""
    secrets = {"ca": ca_secret("ca", "default", make_ca().cert)}
    ann = {"nginx.ingress.kubernetes.io/auth-tls-secret": "default/ca",
           "nginx.ingress.kubernetes.io/auth-tls-verify-client": "optional"}
    tls = [{"hosts": ["h.com"], "secretName": "site"}]
    mtls = build(ingress("mtls", [rule("h.com", ("/", "Prefix", "s", 80))], annotations=ann, tls=tls,
                         created="2024-01-01T00:00:00Z"), secrets=secrets)
    more = build(ingress("more", [rule("h.com", ("/more", "Prefix", "t", 80))], created="2024-02-01T00:00:00Z"))
    res = merge_host("h.com", [mtls, more], tls_hosts=frozenset({"h.com"}))
    assert [r.policy(ClientCertCheck) for r in res.https.routes] == [ClientCertCheck("optional")] * 2
    # Another host (or the host without TLS) carries none.
    other = build(ingress("o", [rule("o.com", ("/", "Prefix", "s", 80))], tls=[{"hosts": ["o.com"]}]))
    assert merge_host("o.com", [other], tls_hosts=frozenset({"o.com"})).https.routes[0].policy(ClientCertCheck) is None
    assert all(r.policy(ClientCertCheck) is None
               for r in merge_host("h.com", [mtls, more], tls_hosts=frozenset()).https.routes)  # fmt: skip


def test_client_cert_check_also_guards_gateway_api_routes_of_the_host() -> None:
    """An HTTPRoute (or KIngress) on a host whose Ingress asks for client certificates shares the
    HTTPS chain that accepts any certificate: its routes get the same per-request check."""
    from controlplane.gatewayapi.build import HostEntries
    from controlplane.gatewayapi.httproute import RouteEntry
    from controlplane.gatewayapi.merge import merge_gateway_routes

    secrets = {"ca": ca_secret("ca", "default", make_ca().cert)}
    ann = {"nginx.ingress.kubernetes.io/auth-tls-secret": "default/ca",
           "nginx.ingress.kubernetes.io/auth-tls-verify-client": "on"}
    mtls = build(ingress("mtls", [rule("h.com", ("/", "Prefix", "s", 80))], annotations=ann,
                         tls=[{"hosts": ["h.com"], "secretName": "site"}]), secrets=secrets)  # fmt: skip
    other = build(ingress("r", [rule("h.com", ("/gw", "Prefix", "t", 80))]))
    gw_route = replace(merge_host("h.com", [other], tls_hosts=frozenset()).https.routes[0], name="gw#0")
    entries = HostEntries(http=(RouteEntry(gw_route, "2025-01-01T00:00:00Z", 0, 0),),
                          https=(RouteEntry(gw_route, "2025-01-01T00:00:00Z", 0, 0),))  # fmt: skip
    res = merge_gateway_routes("h.com", merge_host("h.com", [mtls], tls_hosts=frozenset({"h.com"})), entries, {})
    assert res is not None and len(res.https.routes) == 2
    assert [r.policy(ClientCertCheck) for r in res.https.routes] == [ClientCertCheck("on")] * 2
    # Without a client-certificate host nothing is added.
    plain = merge_gateway_routes("h.com", merge_host("h.com", [other], tls_hosts=frozenset()), entries, {})
    assert plain is not None and all(r.policy(ClientCertCheck) is None for r in plain.https.routes)


def test_merge_same_timestamp_breaks_tie_by_namespace_name() -> None:
    # ingress-nginx's sortIngressSlice: equal times put the greater "namespace/name" first ("zz/a" > "aa/b").
    a = build(ingress("a", [rule("h.com", ("/", "Prefix", "s", 80))], namespace="zz", created="2024-01-01T00:00:00Z"),
              idx=index_with(*svc("s", ns="zz")))  # fmt: skip
    b = build(ingress("b", [rule("h.com", ("/", "Prefix", "t", 80))], namespace="aa", created="2024-01-01T00:00:00Z"),
              idx=index_with(*svc("t", ns="aa")))  # fmt: skip
    for irs in ([a, b], [b, a]):
        res = merge_host("h.com", irs, tls_hosts=frozenset())
        assert clusters_of(res.https.routes[0]) == ["zz/s:80"]
        assert [(ref.name, f.level) for ref, f in res.findings] == [("b", "conflict")]


def test_default_backend_is_fallback_of_its_hosts_and_catch_all() -> None:
    ir = build(ingress("d", [rule("h.com", ("/app", "Prefix", "s", 80))], default_backend=("t", 80),
                       created="2024-01-01T00:00:00Z"))  # fmt: skip
    h = merge_host("h.com", [ir], tls_hosts=frozenset()).https.routes
    assert [(r.match.value, clusters_of(r)) for r in h] == [("/app", ["default/s:80"]), ("/", ["default/t:80"])]
    # With rules it is not the catch-all (ingress-nginx: only an Ingress without rules configures "_").
    assert merge_host("", [ir], tls_hosts=frozenset()).https.routes == ()
    only = build(ingress("o", default_backend=("u", 80), created="2030-01-01T00:00:00Z"), index_with(*svc("u")))
    c = merge_host("", [ir, only], tls_hosts=frozenset()).https.routes
    assert [clusters_of(r) for r in c] == [["default/u:80"]]
    # The oldest Ingress naming a host decides its root location, even without a default backend.
    older = build(ingress("a", [rule("h.com", ("/x", "Prefix", "s", 80))], created="2000-01-01T00:00:00Z"))
    assert "/" not in [r.match.value for r in merge_host("h.com", [ir, older], tls_hosts=frozenset()).https.routes]
    other = merge_host("other.com", [ir], tls_hosts=frozenset()).https.routes
    assert other == ()


def test_a_rule_with_a_host_and_no_paths_takes_the_default_backend_and_is_no_catch_all() -> None:
    """ingress-nginx's without_host.go: `rules: [{host: only-backend}]` plus spec.defaultBackend serves
    that host from the default backend, and unknown hosts still get the 404."""
    ir = build(ingress("o", [{"host": "only.com"}], default_backend=("t", 80)), index_with(*svc("t")))
    assert ir.hosts == {"only.com"} and ir.has_rules and not ir.rules
    routes = merge_host("only.com", [ir], tls_hosts=frozenset()).https.routes
    assert [(r.match.value, clusters_of(r)) for r in routes] == [("/", ["default/t:80"])]
    assert merge_host("", [ir], tls_hosts=frozenset()).https.routes == ()
    assert merge_host("other.com", [ir], tls_hosts=frozenset()).https.routes == ()


def test_affinity_cookie_path_is_the_ingress_path_and_secure_over_https() -> None:
    """nginx's sticky balancer: Path is `$location_path` unless session-cookie-path says otherwise, and
    the cookie is Secure whenever the request came over HTTPS."""
    ann = {N + "affinity": "cookie"}
    ir = build(ingress("a", [rule("h.com", ("/something", "Prefix", "s", 80), ("/", "Prefix", "s", 80))],
                       annotations=ann))  # fmt: skip
    res = merge_host("h.com", [ir], tls_hosts=frozenset())
    cookies = {r.match.value: r.policy(CookieAffinity) for r in res.https.routes}
    assert {k: (c.path, c.secure) for k, c in cookies.items() if c} == {"/something": ("/something", True),
                                                                          "/": ("/", True)}  # fmt: skip
    http = {r.match.value: r.policy(CookieAffinity) for r in res.http.routes}
    assert {k: (c.path, c.secure) for k, c in http.items() if c} == {"/something": ("/something", False),
                                                                       "/": ("/", False)}  # fmt: skip
    fixed = build(ingress("f", [rule("h.com", ("/x", "Prefix", "s", 80))],
                          annotations={**ann, N + "session-cookie-path": "/y"}))  # fmt: skip
    route = merge_host("h.com", [fixed], tls_hosts=frozenset()).http.routes[0]
    assert route.policy(CookieAffinity).path == "/y"


def test_a_denied_ingress_answers_503_on_every_path() -> None:
    """auth-type basic with a Secret that does not exist: ingress-nginx's denied location (`return 503`)."""
    ann = {N + "auth-type": "basic", N + "auth-secret": "nope"}
    ir = build(ingress("d", [rule("h.com", ("/a", "Prefix", "s", 80), ("/b", "Exact", "s", 80))], annotations=ann))
    routes = merge_host("h.com", [ir], tls_hosts=frozenset()).https.routes
    assert [r.action for r in routes] == [DirectResponse(503, "503 Service Temporarily Unavailable\n")] * 2


def test_ssl_redirect_only_for_tls_hosts_and_forced() -> None:
    ir = build(ingress("r", [rule("h.com", ("/", "Prefix", "s", 80))]))
    res = merge_host("h.com", [ir], tls_hosts=frozenset({"h.com"}), https_port=8443)
    root, slash, plain = res.http.routes
    assert isinstance(root.action, DirectResponse) and root.action.headers == (("location", "https://h.com:8443"),)
    assert isinstance(slash.action, Redirect) and slash.action.strip_trailing_slash
    assert isinstance(plain.action, Redirect) and (plain.action.port, plain.action.host) == (8443, "h.com")
    assert isinstance(res.https.routes[0].action, Forward)
    off = build(ingress("r", [rule("h.com", ("/", "Prefix", "s", 80))], annotations={N + "ssl-redirect": "false"}))
    assert isinstance(merge_host("h.com", [off], tls_hosts=frozenset({"h.com"})).http.routes[0].action, Forward)
    forced = build(
        ingress("f", [rule("h.com", ("/", "Prefix", "s", 80))], annotations={N + "force-ssl-redirect": "true"})
    )
    res = merge_host("h.com", [forced], tls_hosts=frozenset(), https_port=443)
    assert res.http.routes[0].action == DirectResponse(308, headers=(("location", "https://h.com"),))
    assert isinstance(res.http.routes[-1].action, Redirect) and res.http.routes[-1].action.port is None


def test_regex_mode_spreads_to_the_whole_host() -> None:
    rx = build(ingress("rx", [rule("h.com", ("/v[0-9]+", "ImplementationSpecific", "s", 80))],
                       annotations={N + "use-regex": "true"}))  # fmt: skip
    plain = build(ingress("p", [rule("h.com", ("/static", "Prefix", "t", 80))]))
    other = build(ingress("o", [rule("o.com", ("/static", "Prefix", "t", 80))]))
    assert {r.match.kind for r in merge_host("h.com", [rx, plain, other], tls_hosts=frozenset()).https.routes} == {
        "regex"
    }
    assert merge_host("o.com", [rx, plain, other], tls_hosts=frozenset()).https.routes[0].match.kind == "prefix"


def test_canary_weight_and_header_routes() -> None:
    primary = build(ingress("p", [rule("h.com", ("/", "Prefix", "s", 80))], created="2024-01-01T00:00:00Z"))
    canary = build(ingress("c", [rule("h.com", ("/", "Prefix", "t", 80))], created="2024-02-01T00:00:00Z",
                           annotations={N + "canary": "true", N + "canary-by-header": "X-C",
                                        N + "canary-weight": "30", N + "canary-weight-total": "200"}))  # fmt: skip
    routes = merge_host("h.com", [canary, primary], tls_hosts=frozenset()).https.routes
    assert [(r.headers[0].name, r.headers[0].exact) if r.headers else None for r in routes] == [
        ("x-c", "always"),
        ("x-c", "never"),
        None,
    ]
    assert clusters_of(routes[0]) == ["default/t:80"] and clusters_of(routes[1]) == ["default/s:80"]
    split = routes[2].action
    assert isinstance(split, Forward) and split.total_weight == 200
    assert [(w.cluster, w.weight) for w in split.clusters] == [("default/s:80", 170), ("default/t:80", 30)]
    # A pattern that does not compile: the header keeps requests on the primary, before cookie and weight.
    bad = build(ingress("c", [rule("h.com", ("/", "Prefix", "t", 80))], created="2024-02-01T00:00:00Z",
                        annotations={N + "canary": "true", N + "canary-by-header": "X-C", N + "canary-weight": "50",
                                     N + "canary-by-header-pattern": "a(", N + "canary-by-cookie": "k"}))  # fmt: skip
    first, *rest = merge_host("h.com", [bad, primary], tls_hosts=frozenset()).https.routes
    assert first.headers == (HeaderMatch("x-c", present=True),) and clusters_of(first) == ["default/s:80"]
    assert [r.headers[0].name for r in rest if r.headers] == ["cookie", "cookie"] and len(rest) == 3
    # Characters ingress-nginx's validator refuses: the pattern is dropped, always/never apply.
    odd = build(ingress("c", [rule("h.com", ("/", "Prefix", "t", 80))], annotations={
        N + "canary": "true", N + "canary-by-header": "X-C", N + "canary-by-header-pattern": "a b"}))  # fmt: skip
    assert [r.headers[0].exact for r in merge_host("h.com", [odd, primary], tls_hosts=frozenset()).https.routes
            if r.headers] == ["always", "never"]  # fmt: skip
    # A pattern only PCRE runs: every route of the rule carries the Lua step, the canary and the error
    # routes match on its verdict, then cookie and weight as usual.
    pcre_ann = {N + "canary": "true", N + "canary-by-header": "X-C", N + "canary-weight": "50",
                N + "canary-by-header-pattern": "^(a)\\1", N + "canary-by-cookie": "k"}  # fmt: skip
    pcre = build(ingress("c", [rule("h.com", ("/", "Prefix", "t", 80))], created="2024-02-01T00:00:00Z",
                         annotations=pcre_ann))  # fmt: skip
    assert not [f for f in pcre.findings if f.level == "warning"]
    routes = merge_host("h.com", [pcre, primary], tls_hosts=frozenset()).https.routes
    assert all(r.policy(HeaderPattern) == HeaderPattern("x-c", "^(a)\\1") for r in routes)
    assert [r.headers[0].exact for r in routes[:2]] == ["match", "error"]
    assert clusters_of(routes[0]) == ["default/t:80"] and clusters_of(routes[1]) == ["default/s:80"]
    assert [r.headers[0].name for r in routes[2:4]] == ["cookie", "cookie"] and len(routes) == 5
    # The canary alone creates nothing.
    lonely = merge_host("h.com", [canary], tls_hosts=frozenset())
    assert lonely.https.routes == () and lonely.findings[0][1].level == "warning"


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("^(?=.*a)(?=.*b)", "pcre"),  # lookahead
        ("(a|b)\\1", "pcre"),  # backreference
        ("a*+b", "pcre"),  # possessive
        ("(a)?(?(1)b|c)", "pcre"),  # conditional
        ("foo(", "invalid"),
        ("(a)\\2", "invalid"),  # no group 2
        ("\\u0041(a)\\1", "invalid"),  # PCRE refuses \u
        ("\\h(a)\\1", "pcre"),  # PCRE-only escape
        ("[[:alpha:]](a)\\1", "pcre"),  # POSIX class
        ("a{,3}\\1", "invalid"),  # `{,3}` is literal in PCRE1; no group 1
        ("(?R)", "invalid"),  # PCRE1: "recursive call could loop indefinitely"
        ("a(?R)?b", "pcre"),  # recursion
        ("(*COMMIT)a", "pcre"),  # backtracking verb
        ("(*UTF8)a", "unsupported"),  # start-of-pattern setting
    ],
)
def test_header_patterns_are_classified_as_pcre_reads_them(pattern: str, kind: str) -> None:
    assert classify(pattern).kind == kind


# -- ingress/convert.py ----------------------------------------------------------------------------------
def test_build_ingress_findings() -> None:
    obj = ingress("bad", [
        rule("ok.com", ("/a", "Prefix", "s", 80), ("/b", "Regex", "s", 80), ("/c", "Prefix", "missing", 80),
             ("/d", "Prefix", "s", 81)),
        rule("bad_host!.com", ("/", "Prefix", "s", 80)),
    ])  # fmt: skip
    obj["spec"]["rules"][0]["http"]["paths"].append({"path": "nope", "pathType": "Prefix", "backend": {}})
    ir = build(obj)
    msgs = {f.key: (f.level, f.message) for f in ir.findings}
    assert msgs["rules[0].paths[1]"][0] == "rejected" and "invalid pathType" in msgs["rules[0].paths[1]"][1]
    assert "service default/missing not found" in msgs["rules[0].paths[2]"][1]
    assert "has no port 81" in msgs["rules[0].paths[3]"][1]
    assert msgs["rules[0].paths[4]"][0] == "rejected"
    assert msgs["rules[1].host"][0] == "rejected"
    assert ir.served  # one bad path does not take the Ingress down
    assert [(r.path, type(r.action).__name__) for r in ir.rules] == [
        ("/a", "Forward"),
        ("/c", "DirectResponse"),
        ("/d", "DirectResponse"),
    ]
    assert isinstance(ir.rules[1].action, DirectResponse) and ir.rules[1].action.status == 503
    assert ("default", "missing") in ir.services  # recomputed when that Service appears


def test_build_ingress_v1beta1_and_named_port() -> None:
    idx = index_with(*svc("s", ports=(("web", 80, 8080), ("admin", 9000, 9090))))
    obj = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "old", "namespace": "default"},
           "spec": {"backend": {"serviceName": "s", "servicePort": "admin"},
                    "rules": [{"host": "H.com.", "http": {"paths": [
                        {"path": "/", "backend": {"serviceName": "s", "servicePort": 80}}]}}]}}  # fmt: skip
    ir = build(obj, idx)
    assert ir.hosts == frozenset({"h.com"})  # lower-cased, trailing dot dropped
    assert clusters_of(ir.rules[0]) == ["default/s:80"]
    assert isinstance(ir.default_backend, Forward) and ir.default_backend.clusters[0].cluster == "default/s:9000"
    assert any(f.key == "apiVersion" and "deprecated" in f.message for f in ir.findings)


def test_build_ingress_tls_binding_without_valid_secret() -> None:
    obj = ingress("t", [rule("a.com", ("/", "Prefix", "s", 80))], tls=[{"hosts": ["a.com"], "secretName": "nope"}])
    ir = build(obj)
    assert ir.tls[0].secret is None and ir.tls[0].secret_ref == ("c1", "default", "nope")
    assert ("c1", "default", "nope") in ir.secrets
    assert ir.tls[0].problem == "not found" and ir.tls[0].location == "tls[0]"  # reported with its effect


# -- services.py ---------------------------------------------------------------------------------
def test_resolve_port_by_number_name_and_missing() -> None:
    idx = index_with(*svc("s", ports=(("web", 80, 8080), ("admin", 9000, 9090))))
    assert idx.resolve_port("default", "s", {"number": 9000}, "c1") == (9000, "")
    assert idx.resolve_port("default", "s", {"name": "web"}, "c1") == (80, "")
    assert idx.resolve_port("default", "s", {"number": 81}, "c1")[0] is None
    assert idx.resolve_port("default", "s", {"name": "nope"}, "c1")[0] is None
    assert idx.resolve_port("default", "x", {"number": 80}, "c1")[0] is None
    assert idx.resolve_port("default", "s", {}, "c1")[0] is None  # two ports, none named


def test_localities_per_cluster_ready_only_target_port_by_name() -> None:
    idx = ServiceIndex()
    for cluster, ips, ready in (("east", ("10.1.0.1", "10.1.0.2"), (True, False)), ("west", ("10.2.0.1",), (True,))):
        for o in svc("s", ports=(("web", 80, 8080),), ips=ips, ready=ready):
            m = o["metadata"]
            if o["kind"] == "Service":
                idx.set_service(cluster, "default", "s", o)
            else:
                idx.set_slice(cluster, "default", m["name"], o)
    port = idx.ports(("default", "s"))[0]
    locs = idx.localities(("default", "s"), port, primary="east")
    assert [loc.cluster_id for loc in locs] == ["east", "west"]
    east = {(e.address, e.port): e.ready for e in locs[0].endpoints}
    assert east == {("10.1.0.1", 8080): True, ("10.1.0.2", 8080): False}
    assert [loc.priority for loc in locs] == [0, 0]
    # A slice moving away from the Service is reported as a change of that Service.
    assert idx.set_slice("west", "default", "s-x", None) == {("default", "s")}
    assert [loc.cluster_id for loc in idx.localities(("default", "s"), port, primary="east")] == ["east"]


def test_failover_annotation_gives_remote_clusters_priority_one() -> None:
    idx = ServiceIndex()
    for cluster in ("east", "west"):
        for o in svc("s", annotations={"meridian.io/failover": "true"} if cluster == "east" else None):
            m = o["metadata"]
            if o["kind"] == "Service":
                idx.set_service(cluster, "default", "s", o)
            else:
                idx.set_slice(cluster, "default", m["name"], o)
    port = idx.ports(("default", "s"))[0]
    assert [(loc.cluster_id, loc.priority) for loc in idx.localities(("default", "s"), port, primary="east")] == [
        ("east", 0),
        ("west", 1),
    ]


# -- sources/files.py --------------------------------------------------------------------------------------
def test_parse_manifests_skips_bad_objects_and_lists() -> None:
    text = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: a}}
---
- just a list
---
{apiVersion: v1, kind: Service, metadata: {}}
---
{apiVersion: apps/v1, kind: Deployment, metadata: {name: ignored}}
---
{apiVersion: example/v9, kind: Ingress, metadata: {name: weird}}
"""
    objs, problems = parse_manifests(text)
    assert [(k, o["metadata"]["name"], o["metadata"]["namespace"]) for k, o in objs] == [("Service", "a", "default")]
    assert "creationTimestamp" not in objs[0][1]["metadata"]  # never made up
    assert len(problems) == 3, problems
    with pytest.raises(ManifestError):
        parse_manifests("a: [\n")


@pytest.fixture
def store_and_source(tmp_path: Path) -> Iterator[tuple[ClusterStore, FileSource, Path]]:
    store = ClusterStore("c1", primary=True)
    yield store, FileSource(tmp_path, store), tmp_path


def test_file_source_last_good_content_edits_and_removal(
    store_and_source: tuple[ClusterStore, FileSource, Path],
) -> None:
    store, source, d = store_and_source
    f = d / "a.yaml"
    f.write_text(
        "{apiVersion: v1, kind: Service, metadata: {name: a}}\n---\n"
        "{apiVersion: v1, kind: Service, metadata: {name: b}}\n"
    )
    source.load_all()
    assert {o["metadata"]["name"] for o in store.list("Service")} == {"a", "b"}

    f.write_text("{apiVersion: v1, kind: Service, metadata: {name: a, labels: {x: y}}}\nbroken: [\n")
    source.load_file(f)
    assert str(f) in store.status.errors
    assert {o["metadata"]["name"] for o in store.list("Service")} == {"a", "b"}  # last good content kept

    f.write_text("{apiVersion: v1, kind: Service, metadata: {name: a, labels: {x: y}}}\n")
    source.load_file(f)
    assert str(f) not in store.status.errors
    a = store.get("Service", "default", "a")
    assert a["metadata"]["labels"] == {"x": "y"} and "creationTimestamp" not in a["metadata"]
    assert store.get("Service", "default", "b") is None  # dropped from the file -> deleted

    # The same object in two files: deleting one file keeps the other's definition.
    g = d / "b.yaml"
    g.write_text("{apiVersion: v1, kind: Service, metadata: {name: a, labels: {from: b}}}\n")
    source.load_file(g)
    f.unlink()
    source.load_file(f)
    assert store.get("Service", "default", "a")["metadata"]["labels"] == {"from": "b"}
    g.unlink()
    source.remove_file(g)
    assert store.get("Service", "default", "a") is None


# -- controller incrementality -----------------------------------------------------------------------------------
class Harness:
    def __init__(self) -> None:
        self.registry = ClusterRegistry()
        self.cache = SnapshotCache()
        self.controller = Controller(
            self.registry, self.cache, Metrics(), GatewayConfig(classes=ClassPolicy(watch_without_class=True))
        )
        self.store = self.registry.add(ClusterStore("c1", primary=True))
        self.loop = asyncio.new_event_loop()
        self.controller.attach(self.loop)
        self.store.mark_synced()

    def apply(self, *objs: dict[str, Any]) -> int:
        for o in objs:
            self.store.upsert(o["kind"], o)
        self.controller.flush()
        return self.cache.version

    def versions(self, type_url: str) -> dict[str, str]:
        return {n: r.version for n, r in self.cache.get(type_url).resources.items()}

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def test_endpoint_change_touches_only_that_assignment(harness: Harness) -> None:
    from controlplane.devtools.echo import EchoServer

    def slice_for(name: str, port: int) -> list[dict[str, Any]]:
        return service_manifests(name, [EchoServer(service=name, pod=name, port=port)])

    harness.apply(*slice_for("a", 1001), *slice_for("b", 1002),
                  ingress("ab", [rule("a.com", ("/", "Prefix", "a", 80)), rule("b.com", ("/", "Prefix", "b", 80))],
                          created="2024-01-01T00:00:00Z"))  # fmt: skip
    before = {t: harness.versions(t) for t in rt.PUSH_ORDER}
    type_versions = {t: harness.cache.get(t).version for t in rt.PUSH_ORDER}
    vh_b = harness.controller.routes.http.frame("b.com")
    harness.apply(*slice_for("a", 2001)[1:])  # only a's EndpointSlice
    after = {t: harness.versions(t) for t in rt.PUSH_ORDER}
    assert after[rt.ENDPOINT]["default/a:80"] != before[rt.ENDPOINT]["default/a:80"]
    assert after[rt.ENDPOINT]["default/b:80"] == before[rt.ENDPOINT]["default/b:80"]
    for t in (rt.CLUSTER, rt.LISTENER, rt.ROUTE, rt.SECRET):
        assert harness.cache.get(t).version == type_versions[t], rt.SHORT_NAMES[t]
    assert harness.controller.routes.http.frame("b.com") is vh_b


def test_ingress_change_rebuilds_only_its_hosts(harness: Harness) -> None:
    harness.apply(*svc("a"), *svc("b"),
                  ingress("a", [rule("a.com", ("/", "Prefix", "a", 80))], created="2024-01-01T00:00:00Z"),
                  ingress("b", [rule("b.com", ("/", "Prefix", "b", 80))], created="2024-01-01T00:00:00Z"))  # fmt: skip
    vh_a, vh_b = harness.controller.routes.http.frame("a.com"), harness.controller.routes.http.frame("b.com")
    listeners = harness.versions(rt.LISTENER)
    clusters = harness.cache.get(rt.CLUSTER).version
    harness.apply(ingress("a", [rule("a.com", ("/v2", "Prefix", "a", 80))], created="2024-01-01T00:00:00Z"))
    assert harness.controller.routes.http.frame("a.com") != vh_a
    assert harness.controller.routes.http.frame("b.com") is vh_b  # not rebuilt
    assert harness.versions(rt.LISTENER) == listeners
    assert harness.cache.get(rt.CLUSTER).version == clusters
    # A no-op re-apply publishes nothing.
    v = harness.cache.version
    assert harness.apply(ingress("a", [rule("a.com", ("/v2", "Prefix", "a", 80))], created="2024-01-01T00:00:00Z")) == v


def test_service_appearing_recomputes_dependent_ingress(harness: Harness) -> None:
    harness.apply(ingress("g", [rule("g.com", ("/", "Prefix", "ghost", 80))], created="2024-01-01T00:00:00Z"))
    route = harness.controller.host_results["g.com"].https.routes[0]
    assert isinstance(route.action, DirectResponse) and route.action.status == 503
    harness.apply(*svc("ghost"))
    route = harness.controller.host_results["g.com"].https.routes[0]
    assert clusters_of(route) == ["default/ghost:80"]
    assert "default/ghost:80" in harness.cache.get(rt.CLUSTER).resources
    # Deleting the Ingress removes its host from the route table.
    harness.store.delete("Ingress", "default", "g")
    harness.controller.flush()
    assert "g.com" not in harness.controller.routes.http


# -- ingress/aliases.py ----------------------------------------------------------------------------------
def test_server_alias_assignment() -> None:
    from controlplane.ingress.aliases import assign_aliases

    a = build(ingress("a", [rule("a.com", ("/", "Prefix", "s", 80))], created="2024-01-01T00:00:00Z",
                      annotations={N + "server-alias": "x.com, b.com, A.com, x.com"}))  # fmt: skip
    later = build(ingress("a2", [rule("a.com", ("/z", "Prefix", "s", 80))], created="2024-02-01T00:00:00Z",
                          annotations={N + "server-alias": "late.com"}))  # fmt: skip
    b = build(ingress("b", [rule("b.com", ("/", "Prefix", "t", 80))], annotations={N + "server-alias": "x.com"}))
    plan = assign_aliases([b, later, a], {"a.com", "b.com"}.__contains__)
    assert plan["a.com"][0] == ("x.com",)  # the oldest Ingress with aliases gives them; b.com is a host
    assert [f.message for _ref, f in plan["a.com"][1]] == ["alias b.com of a.com is a host of an Ingress; dropped"]
    assert plan["b.com"][0] == () and "already an alias of a.com" in plan["b.com"][1][0][1].message
    res = merge_host("a.com", [a, later], tls_hosts=frozenset(), aliases=plan["a.com"][0])
    assert res.https.domains == ("a.com", "x.com") and len(res.https.routes) == 2


def test_from_to_www_redirect() -> None:
    """fromtowwwredirect.go: the www. twin answers 308 to http://<host>:80<uri>; a www. host redirects
    from its bare name; a twin that is a host of an Ingress gets no redirect (reported)."""
    from controlplane.ingress.aliases import assign_aliases

    www = {N + "from-to-www-redirect": "true"}
    a = build(ingress("a", [rule("a.com", ("/", "Prefix", "s", 80))], annotations=www))
    w = build(ingress("w", [rule("www.w.com", ("/", "Prefix", "s", 80))], annotations=www))
    taken = build(ingress("t", [rule("t.com", ("/", "Prefix", "s", 80))], annotations=www))
    plan = assign_aliases([a, w, taken], {"a.com", "www.w.com", "t.com", "www.t.com"}.__contains__)
    assert (plan["a.com"][0], plan["www.w.com"][0], plan["t.com"][0]) == (("www.a.com",), ("w.com",), ())
    assert [f.key for _ref, f in plan["t.com"][1]] == ["from-to-www-redirect"]
    res = merge_host("a.com", [a], tls_hosts=frozenset(), https_port=8443, aliases=plan["a.com"][0])
    assert res.http.domains == ("a.com", "www.a.com")
    root, slash, rest = res.http.routes[:3]
    assert root.action == DirectResponse(308, headers=(("location", "http://a.com:80"),))
    assert slash.action == Redirect(code=308, scheme="http", host="a.com", port=80, strip_trailing_slash=True)
    assert rest.action == Redirect(code=308, scheme="http", host="a.com", port=80)
    assert rest.headers[0].name == ":authority" and rest.headers[0].regex == r"(?i)www\.a\.com(:[0-9]+)?"
    assert res.https.routes[2].action == Redirect(code=308, scheme="https", host="a.com", port=8443)
    assert isinstance(res.http.routes[3].action, Forward)  # the host itself is served as before
    assert len(merge_host("t.com", [taken], tls_hosts=frozenset()).http.routes) == 1
