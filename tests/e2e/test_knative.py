"""Knative KIngresses through a real Envoy (file mode, two source clusters): ExternalIP rules on the
north-south listeners, ClusterLocal rules on the east-west listener only, literal-prefix paths,
exact header matches, weighted splits with their headers, rewriteHost, httpOption Redirected, TLS
through SDS, h2c (gRPC) backends, websockets, and a split to a Service of both clusters served with
the endpoints of both."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest

from tests.e2e.test_fuzz_envoy import settled
from tests.support import grpc_echo
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import Gateway
from tests.support.http import request
from tests.support.wait import wait_until

API = "networking.internal.knative.dev/v1alpha1"
CLASS = {"networking.knative.dev/ingress.class": "meridian.ingress.networking.knative.dev"}
PUBLIC = "hello.default.example.com"
LOCAL = "hello.default.svc.cluster.local"


def split(service: str, percent: int | None = None, port: int | str = 80, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"serviceName": service, "serviceNamespace": "default", "servicePort": port}
    if percent is not None:
        out["percent"] = percent
    if headers:
        out["appendHeaders"] = {k.replace("_", "-"): v for k, v in headers.items()}
    return out


def kingress(name: str, rules: list[dict[str, Any]], annotations: dict[str, str] = CLASS,
             **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": API, "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "generation": 1, "annotations": annotations},
            "spec": {"rules": rules, **spec}}  # fmt: skip


def hello() -> dict[str, Any]:
    public_paths = [
        {"headers": {"Knative-Serving-Tag": {"exact": "canary"}}, "appendHeaders": {"K-Tag": "canary"},
         "splits": [split("canary")]},
        {"path": "/rewrite", "rewriteHost": "rewritten.example.internal", "splits": [split("main")]},
        {"path": "/ws", "splits": [split("main")]},
        {"path": "/api", "splits": [split("api", X_Split="api")]},
        {"appendHeaders": {"K-Path": "default"},
         "splits": [split("main", 50, K_Revision="main"), split("shared", 50, K_Revision="shared")]},
    ]  # fmt: skip
    return kingress("hello", [
        {"hosts": [PUBLIC], "visibility": "ExternalIP", "http": {"paths": public_paths}},
        {"hosts": ["hello.default", "hello.default.svc", LOCAL], "visibility": "ClusterLocal",
         "http": {"paths": [{"splits": [split("main", K_Local="yes")]}]}},
    ])  # fmt: skip


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("knative"), clusters=("c1", "c2"), serve_args=())
    rpc = grpc_echo.GrpcEcho("grpc-0")
    try:
        g.start()
        for service in ("main", "canary", "api", "hello"):
            g.backend(service)
        g.backend("shared")
        g.backend("shared", cluster="c2")
        g.publish("grpc", [rpc], port=81, port_name="http2")  # type: ignore[list-item]  # only .port is read
        ca = make_ca()
        cert = issue_cert(ca, ["secure.default.example.com"])
        g.write("tls.yaml", [tls_secret("secure-tls", "knative-serving", cert.cert, cert.key)])
        g.write("kingress.yaml", [
            hello(),
            kingress("grpc", [{"hosts": ["grpc.default.example.com"],
                               "http": {"paths": [{"splits": [split("grpc", port=81)]}]}}]),
            kingress("secure", [{"hosts": ["secure.default.example.com"],
                                 "http": {"paths": [{"splits": [split("main")]}]}}],
                     httpOption="Redirected",
                     tls=[{"hosts": ["secure.default.example.com"], "secretName": "secure-tls",
                           "secretNamespace": "knative-serving"}]),
            kingress("istio", [{"hosts": ["istio.default.example.com"],
                                "http": {"paths": [{"splits": [split("main")]}]}}],
                     annotations={"networking.knative.dev/ingress.class": "istio.ingress.networking.knative.dev"}),
        ])  # fmt: skip
        # Knative's DomainMapping: a public host whose path rewrites the Host to the route's cluster-local
        # name and sends to the route's placeholder Service, an ExternalName naming the gateway's private
        # load balancer (here: localhost, at the east-west port).
        g.write("mapping.yaml", [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello-private", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "http", "port": g.east_west_port}]}},
            kingress("mapping", [{"hosts": ["vanity.example.com"], "http": {"paths": [
                {"rewriteHost": LOCAL, "splits": [split("hello-private", port=g.east_west_port)]}]}}]),
        ])  # fmt: skip
        g.wait_served_by(PUBLIC, "/", "main", timeout=30)
        yield g
    finally:
        g.stop()
        rpc.stop()


def east_west(gw: Gateway, host: str, path: str = "/") -> Any:
    return request("GET", gw.east_west_port, path, host=host)


def test_paths_are_literal_prefixes_and_headers_match_exactly(gw: Gateway) -> None:
    assert gw.get(PUBLIC, "/api").json()["service"] == "api"
    assert gw.get(PUBLIC, "/apis/v1").json()["service"] == "api"  # a literal prefix, not a path element
    canary = gw.get(PUBLIC, "/api", headers={"Knative-Serving-Tag": "canary"}).json()
    assert canary["service"] == "canary" and canary["headers"]["K-Tag"] == "canary"
    assert gw.get(PUBLIC, "/", headers={"Knative-Serving-Tag": "other"}).json()["service"] in ("main", "shared")


def test_split_and_path_headers_reach_the_backend_they_belong_to(gw: Gateway) -> None:
    api = gw.get(PUBLIC, "/api").json()
    assert api["headers"]["X-Split"] == "api"
    for _ in range(10):
        r = gw.get(PUBLIC, "/x").json()
        assert r["headers"]["K-Path"] == "default"
        assert r["headers"]["K-Revision"] == r["service"]  # each split's own header


def test_split_percentages_and_a_service_of_two_clusters(gw: Gateway) -> None:
    seen: Counter[str] = Counter()
    clusters: set[str] = set()
    for _ in range(80):
        r = gw.get(PUBLIC, "/").json()
        seen[r["service"]] += 1
        if r["service"] == "shared":
            clusters.add(r["cluster"])
    assert seen["main"] > 15 and seen["shared"] > 15, seen
    # "shared" exists in both clusters: one cluster with the endpoints of both (localities).
    def both() -> bool:
        r = gw.get(PUBLIC, "/").json()
        if r["service"] == "shared":
            clusters.add(r["cluster"])
        return clusters >= {"c1", "c2"}

    wait_until(both, timeout=15, message=f"shared never served from both clusters: {clusters}")


def test_rewrite_host(gw: Gateway) -> None:
    r = gw.get(PUBLIC, "/rewrite").json()
    assert r["service"] == "main" and r["host"] == "rewritten.example.internal"


def test_domain_mapping_through_an_external_name_service(gw: Gateway) -> None:
    r = gw.wait_served_by("vanity.example.com", "/", "main").json()
    assert r["headers"]["K-Local"] == "yes" and r["host"] == LOCAL  # served by the cluster-local rule


def test_cluster_local_rules_only_on_east_west(gw: Gateway) -> None:
    for host in ("hello.default", "hello.default.svc", LOCAL, f"{LOCAL}:80"):
        r = east_west(gw, host).json()
        assert r["service"] == "main" and r["headers"]["K-Local"] == "yes", host
    # Never from outside: neither listener of the north-south side knows these names.
    for host in ("hello.default", LOCAL):
        assert gw.get(host, "/").status == 404
        assert request("GET", gw.https_port, "/", host=host, tls=True, sni="secure.default.example.com",
                       verify_hostname=False).status == 404  # fmt: skip
    # The public host is not on the east-west listener either.
    assert east_west(gw, PUBLIC).status == 404
    # Other Services keep their east-west names.
    assert east_west(gw, "canary.default.svc.cluster.local").json()["service"] == "canary"


def test_http_option_redirected_and_tls(gw: Gateway) -> None:
    host = "secure.default.example.com"
    r = gw.wait_status(host, "/x", 301)
    assert r.headers["location"] == f"https://{host}/x"
    secure = wait_until(lambda: _https(gw, host), timeout=15, message="TLS host never served")
    assert secure["service"] == "main"


def _https(gw: Gateway, host: str) -> dict[str, Any] | None:
    try:
        r = gw.get_https(host, "/")
    except OSError:
        return None
    return r.json() if r.status == 200 else None


def test_h2c_port_is_http2_upstream(gw: Gateway) -> None:
    def call() -> bytes | None:
        try:
            return grpc_echo.call(gw.http_port, "grpc.default.example.com", b"ping")
        except grpc.RpcError:
            return None

    assert wait_until(call, timeout=15, message="gRPC over the h2c port never served") == b"grpc-0:ping"


def test_websocket(gw: Gateway) -> None:
    async def talk() -> str:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{gw.http_port}/ws"
            async with s.ws_connect(url, headers={"Host": PUBLIC}, timeout=aiohttp.ClientWSTimeout(5)) as ws:
                await ws.send_str("hello")
                msg = await asyncio.wait_for(ws.receive(), 5)
                return str(msg.data)

    assert asyncio.run(asyncio.wait_for(talk(), 10)) == "main-c1-0: hello"


def test_other_classes_are_not_served(gw: Gateway) -> None:
    assert gw.get("istio.default.example.com", "/").status == 404


NASTY_PATHS = ["/(", "/a{99999}", "/a\\", "/a?x=1", "/a#f", "/a\tb", "/é", "/" + "a" * 3000, "nope", "/a b"]


def test_nasty_kingresses_are_reported_never_rejected_by_envoy(gw: Gateway) -> None:
    """Whatever a KIngress holds (file mode has no CRD schema): what Envoy would refuse is left out and
    reported, the rest is served, and Envoy ACKs every push."""
    paths = [{"path": p, "splits": [split("main")]} for p in NASTY_PATHS]
    paths += [
        {"headers": {"bad header": {"exact": "x"}}, "splits": [split("main")]},
        {"headers": {"x-ok": {"exact": "a\r\nb"}}, "splits": [split("main")]},
        {"appendHeaders": {"bad header": "x", ":path": "/evil", "x-crlf": "a\r\nb", "x-fine": "ok"},
         "rewriteHost": "bad host/\r\n", "splits": [split("main", 50, **{"bad header": "x"}),
                                                    split("ghost", 50), split("main", -5)]},
        {"path": "/timeouts", "timeout": "forever", "retries": {"attempts": -1, "perTryTimeout": 3},
         "splits": [split("main", port="nope")]},
    ]  # fmt: skip
    nasty = [
        kingress("nasty", [{"hosts": ["nasty.example.com", "bad host", "UPPER.example.com", "*.wild.example.com",
                                      "a*b.example.com", ""], "http": {"paths": paths}},
                           {"hosts": ["nasty.default.svc.cluster.local"], "visibility": "ClusterLocal",
                            "http": {"paths": paths}},
                           {"hosts": ["odd.example.com"], "visibility": "Sideways", "http": {"paths": paths}}],
                 httpOption="Sometimes", tls=[{"hosts": ["nasty.example.com"], "secretName": "nowhere"},
                                              {"hosts": ["bad host", "x:443", "NASTY.example.com", "a\r\nb"],
                                               "secretName": "secure-tls", "secretNamespace": "knative-serving"}]),
        {"apiVersion": API, "kind": "Ingress", "metadata": {"name": "junk", "namespace": "default",
                                                             "annotations": CLASS},
         "spec": {"rules": "not a list", "tls": [None, 3]}},
        {"apiVersion": API, "kind": "Ingress", "metadata": {"name": "junk2", "namespace": "default",
                                                             "annotations": CLASS},
         "spec": {"rules": [None, {"hosts": 5, "http": {"paths": [None, {"splits": "x"}]}}]}},
    ]  # fmt: skip
    marker = kingress("marker", [{"hosts": ["marker.example.com"], "http": {"paths": [{"splits": [split("main")]}]}}])
    gw.write("nasty.yaml", [*nasty, marker])
    try:
        gw.wait_served_by("marker.example.com", "/", "main", timeout=20)
        gw.wait_served_by("nasty.example.com", "/x", "main", timeout=20)  # the valid paths are served
    except AssertionError:
        nacks = [t["last_nack"] for s in gw.admin("/debug/syncz") for t in s["types"].values() if t.get("last_nack")]
        errors = [line for line in gw.log_text().splitlines() if "ERROR" in line or "Error" in line]
        pytest.fail(f"never served; NACKs: {str(nacks)[:2000]}; control plane errors: {errors[-5:]}")
    finally:
        gw.remove("nasty.yaml")
    streams = wait_until(lambda: settled(gw), timeout=20, message="Envoy never answered the last push")
    nacks = {short: t["last_nack"] for s in streams for short, t in s["types"].items() if t.get("last_nack")}
    assert not nacks, f"Envoy rejected: {str(nacks)[:3000]}"
    assert "Traceback" not in gw.log_text()


def test_debug_kingresses_reports_what_is_served_and_what_is_not(gw: Gateway) -> None:
    reports = {r["name"]: r for r in gw.admin("/debug/kingresses")}
    assert "istio" not in reports  # not ours
    assert reports["hello"]["public_hosts"] == [PUBLIC] and LOCAL in reports["hello"]["local_hosts"]
    assert reports["hello"]["problems"] == []
    gw.write("broken.yaml", [kingress("broken", [{"hosts": ["broken.example.com"],
                                                  "http": {"paths": [{"splits": [split("ghost")]}]}}])])
    try:
        broken = wait_until(lambda: next((r for r in gw.admin("/debug/kingresses") if r["name"] == "broken"), None),
                            timeout=15, message="broken KIngress never reported")  # fmt: skip
        assert any("ghost" in p for p in broken["problems"])
        gw.wait_status("broken.example.com", "/", 503)  # served: no backend of it exists
    finally:
        gw.remove("broken.yaml")
