"""The parts of `translate --to gateway-api --verify` that need no Envoy: the request set derived from
Ingresses (through the real Ingress frontend), the manifests' stand-ins, how answers are compared,
and what counts as a regression. The replay itself: tests/e2e/test_gatewayapi_migration.py."""

from __future__ import annotations

from typing import Any

from controlplane.compile import SourceObjects, compile
from controlplane.config import GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.ir import IngressRef
from controlplane.migration.probes import CATCH_ALL_HOST, WEIGHT_SAMPLES, Probe, derive
from controlplane.migration.replay import Answer, Batch, shares_differ
from controlplane.migration.standins import BackendPort, complete
from controlplane.migration.verify import SetResult, Verdict, difference_kind, regressions

EVERY_CLASS = GatewayConfig(classes=ClassPolicy(frozenset(), watch_without_class=True, accept_all=True))
A = "nginx.ingress.kubernetes.io/"


def ingress(name: str, host: str | None, paths: list[tuple[str, str, str]], annotations: dict[str, str] | None = None,
            tls: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    rule: dict[str, Any] = {"http": {"paths": [
        {"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 80}}}} for p, t, svc in paths
    ]}}  # fmt: skip
    if host:
        rule["host"] = host
    spec: dict[str, Any] = {"rules": [rule]}
    if tls:
        spec["tls"] = [{"hosts": tls, "secretName": f"{name}-tls"}]
    meta = {"name": name, "namespace": "shop", "annotations": annotations or {}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def probes_of(*ingresses: dict[str, Any]) -> dict[str, list[Probe]]:
    irs = compile(SourceObjects({"local": {"Ingress": list(ingresses)}}, "local"), EVERY_CLASS).irs
    out: dict[str, list[Probe]] = {}
    for p in derive(irs):
        out.setdefault(p.source.name, []).append(p)
    return out


def test_paths_and_their_boundaries() -> None:
    got = probes_of(ingress("web", "shop.example.com", [("/api", "Prefix", "api"), ("/healthz", "Exact", "web")]))
    paths = {(p.scheme, p.path) for p in got["web"]}
    # Prefix: itself, with "/", a sub-path (and one ending in "/"), the same characters without the boundary.
    assert {("http", p) for p in ("/api", "/api/", "/api/verify-probe", "/api/verify-probe/", "/apix")} <= paths
    assert {("http", "/healthz"), ("http", "/healthz/")} <= paths  # Exact: the trailing "/" must not match
    assert ("http", "/api?verify=1") in paths  # a query string on a rule's first path
    assert all(p.host == "shop.example.com" and p.repeat == 1 for p in got["web"])


def test_tls_hosts_get_https_and_odd_hosts_a_name() -> None:
    got = probes_of(ingress("web", "shop.example.com", [("/", "Prefix", "web")], tls=["shop.example.com"]),
                    ingress("any", None, [("/any", "Prefix", "web")]),
                    ingress("wild", "*.example.org", [("/", "Prefix", "web")]))  # fmt: skip
    assert {p.scheme for p in got["web"]} == {"http", "https"}
    assert {p.host for p in got["any"]} == {CATCH_ALL_HOST} and {p.scheme for p in got["any"]} == {"http"}
    assert {p.host for p in got["wild"]} == {"verify.example.org"}


def test_canary_headers_cookies_and_weights() -> None:
    primary = ingress("web", "shop.example.com", [("/", "Prefix", "web")])
    by_header = ingress("canary", "shop.example.com", [("/", "Prefix", "web-v2")],
                        {A + "canary": "true", A + "canary-by-header": "x-v2", A + "canary-by-header-value": "yes",
                         A + "canary-by-cookie": "beta"})  # fmt: skip
    got = probes_of(primary, by_header)
    headers = {p.headers for p in got["canary"]}
    assert {(("x-v2", "yes"),), (("x-v2", "always"),), (("x-v2", "never"),), (("cookie", "beta=always"),),
            (("cookie", "beta=never"),), ()} <= headers  # fmt: skip
    assert all(p.repeat == 1 for ps in got.values() for p in ps)  # no weight: every answer is deterministic
    weighted = ingress("canary", "shop.example.com", [("/", "Prefix", "web-v2")],
                       {A + "canary": "true", A + "canary-weight": "30"})  # fmt: skip
    got = probes_of(primary, weighted)
    assert {p.repeat for ps in got.values() for p in ps} == {WEIGHT_SAMPLES}  # the whole host is a batch


def test_standins_for_missing_services_and_secrets() -> None:
    ing = ingress("web", "shop.example.com", [("/", "Prefix", "web")], tls=["shop.example.com"])
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}}  # fmt: skip
    objects = {"Ingress": [ing], "Service": [svc]}
    irs = compile(SourceObjects({"local": objects}, "local"), EVERY_CLASS).irs
    done = complete(objects, irs)
    assert done.backends == [BackendPort("shop", "web", 80, "http"), BackendPort("shop", "web", 9000, "admin")]
    assert [s["metadata"]["name"] for s in done.objects["Secret"]] == ["web-tls"]
    assert any("Secret shop/web-tls" in n for n in done.notes) and not any("Service" in n for n in done.notes)
    served = compile(SourceObjects({"local": done.objects}, "local"), EVERY_CLASS)
    assert served.gateway.tls_hosts, "the throwaway certificate is a usable TLS Secret"
    done = complete({"Ingress": [ing]}, irs)  # no Service at all: one stands in, with the port the Ingress names
    assert done.backends == [BackendPort("shop", "web", 80, "port-80")] and any("Service shop/web" in n
                                                                                 for n in done.notes)  # fmt: skip


def test_answers_compare_field_by_field() -> None:
    a = Answer(308, location="https://shop.example.com")
    assert a.first_difference(Answer(308, location="https://shop.example.com/")) is None  # one URL (RFC 3986)
    assert a.first_difference(Answer(301, location="https://shop.example.com")) == "status: 308 vs 301"
    b = Answer(200, backend="shop/web:80", upstream_path="/a", headers=(("x-a", "1"),))
    assert b.first_difference(Answer(200, backend="shop/api:80", upstream_path="/b")).startswith("backend:")
    diff = b.first_difference(Answer(200, backend="shop/web:80", upstream_path="/a"))
    assert diff == "response header x-a: '1' vs '(none)'"


def test_shares_differ_only_beyond_sampling_noise() -> None:
    assert not shares_differ(60, 200, 55, 200)  # 30% vs 27.5%: noise
    assert shares_differ(60, 200, 140, 200)  # 30% vs 70%
    assert not shares_differ(200, 200, 200, 200) and shares_differ(200, 200, 0, 200)
    web = Answer(200, backend="shop/web:80", upstream_path="/")
    v2 = Answer(200, backend="shop/v2:80", upstream_path="/")
    one = Batch(((web, 140), (v2, 60)), 200)
    swapped = Batch(((web, 60), (v2, 140)), 200)
    assert one.first_difference(one) is None
    assert one.first_difference(swapped) == "share of answers from shop/v2:80 (/): 60/200 vs 140/200"
    rewritten = Batch(((Answer(200, backend="shop/web:80", upstream_path="/x"), 140), (v2, 60)), 200)
    assert "from shop/web:80" in (one.first_difference(rewritten) or ""), "a batch compares whole answers"


def test_regressions_and_difference_kinds() -> None:
    ref = IngressRef("local", "shop", "web")
    worse = Verdict(ref, requests=3, equal=2, differences=[("http://h/", "status: 500 vs 200")])
    result = [SetResult("f.yaml", {ref: worse}, [], [])]
    assert regressions(result, {"f.yaml: local/shop/web": "equal"}) == [
        "f.yaml: local/shop/web: equal -> differs (http://h/: status: 500 vs 200)"
    ]
    assert regressions(result, {"f.yaml: local/shop/web": "differs"}) == []
    assert (
        regressions([SetResult("f.yaml", {ref: Verdict(ref, 3, 3)}, [], [])], {"f.yaml: local/shop/web": "differs"})
        == []
    )
    assert (
        difference_kind("location: 'https://h/a' vs 'https://h/a/'")
        == 'HTTPS redirect keeps a trailing "/" (ssl-redirect)'
    )
    assert difference_kind("location: 'https://x/' vs 'https://x/?q=1'") == "redirect keeps the query string"
    assert difference_kind("status: 502 vs 200") == "status 502 vs 200"


def test_a_default_backend_is_probed_on_the_catch_all() -> None:
    fallback = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "fallback", "namespace": "shop"},
                "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}  # fmt: skip
    got = probes_of(fallback)
    assert {(p.host, p.path) for p in got["fallback"]} == {(CATCH_ALL_HOST, "/"), (CATCH_ALL_HOST, "/verify-default")}
