"""Upstream annotations end to end through a real Envoy: cookie affinity, upstream-hash-by,
load-balance, backend-protocol GRPC (a real grpcio service) and HTTPS (a TLS echo backend).

One gateway for the whole module (each Ingress has its own host).
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import grpc_echo
from tests.support.certs import issue_cert, make_ca, tls_secret, write_pair
from tests.support.gateway import Gateway, ingress, rule

NGINX = "nginx.ingress.kubernetes.io/"


def ing(name: str, backend: str, annotations: dict[str, str]) -> Any:
    return ingress(
        name,
        [rule(f"{name}.example.com", ("/", "Prefix", backend, 80))],
        annotations={NGINX + k: v for k, v in annotations.items()},
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("traffic-upstream")
    g = Gateway(root)
    grpc_srv = grpc_echo.GrpcEcho("grpc-0")
    try:
        g.start()
        g.backend("pool", replicas=3)
        ca = make_ca()
        server = issue_cert(ca, ["tls-backend.internal", "127.0.0.1"])
        cert_path, key_path = write_pair(root / "certs", "backend", server)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
        tls_srv = g.fleet.add(service="secure", pod="secure-0", ssl_context=ctx)
        g.publish("secure", [tls_srv])
        g.publish("grpc", [grpc_srv])  # type: ignore[list-item]  # only .port is read
        secret = tls_secret("backend-ca", "default", server.cert, server.key, ca=ca.cert)
        objs = [
            secret,
            ing("sticky", "pool", {"affinity": "cookie", "session-cookie-name": "route",
                                   "session-cookie-max-age": "3600", "session-cookie-samesite": "Lax"}),
            ing("hashed", "pool", {"upstream-hash-by": "$http_x_user"}),
            ing("leastconn", "pool", {"load-balance": "least_conn"}),
            ing("random", "pool", {"load-balance": "random"}),
            ing("badaffinity", "pool", {"affinity": "ip_hash"}),
            ing("grpc", "grpc", {"backend-protocol": "GRPC"}),
            ing("https", "secure", {"backend-protocol": "HTTPS"}),
            ing("verified", "secure", {"backend-protocol": "HTTPS", "proxy-ssl-verify": "on",
                                       "proxy-ssl-secret": "default/backend-ca",
                                       "proxy-ssl-name": "tls-backend.internal"}),
            ing("wrongname", "secure", {"backend-protocol": "HTTPS", "proxy-ssl-verify": "on",
                                        "proxy-ssl-secret": "default/backend-ca",
                                        "proxy-ssl-name": "other.internal"}),
        ]  # fmt: skip
        g.write("ing.yaml", objs)
        # Variant clusters share the Service's EDS assignment; see the report about warming delays.
        g.wait_served_by("random.example.com", "/", "pool", timeout=40)
        g.grpc_srv = grpc_srv  # type: ignore[attr-defined]
        yield g
    finally:
        g.stop()
        grpc_srv.stop()


def test_cookie_affinity_sticks_and_sets_cookie(gw: Gateway) -> None:
    first = gw.wait_status("sticky.example.com", "/", 200)
    cookie = first.headers.get("Set-Cookie", "")
    assert cookie.startswith("route="), cookie
    assert "Max-Age=3600" in cookie and "SameSite=Lax" in cookie
    value = cookie.split(";")[0]
    pods = {gw.get("sticky.example.com", "/", headers={"Cookie": value}).json()["pod"] for _ in range(15)}
    assert len(pods) == 1
    # Without the cookie, clients spread over the endpoints (each gets its own cookie).
    others = {gw.get("sticky.example.com", "/").headers["Set-Cookie"].split(";")[0] for _ in range(10)}
    assert len(others) > 1


def test_upstream_hash_by_header(gw: Gateway) -> None:
    gw.wait_status("hashed.example.com", "/", 200)
    chosen: dict[str, str] = {}
    for user in [f"user-{i}" for i in range(12)]:
        pods = {gw.get("hashed.example.com", "/", headers={"X-User": user}).json()["pod"] for _ in range(20)}
        assert len(pods) == 1, (user, pods)
        chosen[user] = pods.pop()
    assert len(set(chosen.values())) > 1  # different keys spread


def test_load_balance_policies_serve(gw: Gateway) -> None:
    for host in ("leastconn.example.com", "random.example.com"):
        counts = Counter(gw.get(host, "/").json()["pod"] for _ in range(30))
        assert len(counts) >= 2, (host, counts)
    report = gw.wait_report("badaffinity", lambda r: any(f["key"] == "affinity" for f in r["findings"]))
    assert any(f["key"] == "affinity" and f["level"] == "warning" for f in report["findings"])


def test_backend_protocol_grpc(gw: Gateway) -> None:
    reply = grpc_echo.call(gw.http_port, "grpc.example.com", b"ping")
    assert reply == b"grpc-0:ping"  # grpcio only speaks HTTP/2: the cluster uses h2c upstream
    assert len(gw.grpc_srv.authorities) >= 1  # type: ignore[attr-defined]


def test_backend_protocol_https(gw: Gateway) -> None:
    r = gw.wait_status("https.example.com", "/x", 200)
    assert r.json()["tls"] is True and r.json()["service"] == "secure"
    r = gw.wait_status("verified.example.com", "/x", 200)
    assert r.json()["tls"] is True
    # Verification on, with a name the certificate does not carry: the handshake fails.
    assert gw.get("wrongname.example.com", "/x").status == 503


def test_no_nack(gw: Gateway) -> None:
    gw.wait_converged()
    for stream in gw.admin("/debug/syncz"):
        for short, t in stream["types"].items():
            assert t.get("last_nack") is None, (short, t["last_nack"])
