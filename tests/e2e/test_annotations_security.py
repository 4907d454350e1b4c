"""Access-control annotations end to end through a real Envoy: one gateway for the whole module."""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.certs import ca_secret, issue_cert, make_ca, tls_secret, write_pair
from tests.support.gateway import Gateway, ingress, rule, service_manifests
from tests.support.ports import free_port
from tests.support.wait import wait_until

P = "nginx.ingress.kubernetes.io/"
M = "meridian.io/"


def _sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def _opaque(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": "default"},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _ing(name: str, host: str, annotations: dict[str, str], svc: str = "echo", **kw: Any) -> dict[str, Any]:
    return ingress(name, [rule(host, ("/", "Prefix", svc, 80))], annotations=annotations, **kw)


class Env:
    def __init__(self, gw: Gateway, auth: AuthServer, ca: Any, client: tuple[str, str], other_client: tuple[str, str],
                 backend_ca: bytes) -> None:  # fmt: skip
        self.gw, self.auth, self.ca = gw, auth, ca
        self.client, self.other_client, self.backend_ca = client, other_client, backend_ca


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("security")
    gw = Gateway(root / "gw")
    auth = AuthServer().start()
    try:
        gw.start()
        gw.backend("echo")
        gw.write("svc-sink.yaml", service_manifests("sink", [types.SimpleNamespace(port=auth.port)]))  # type: ignore[list-item]
        # Passthrough backend: terminates TLS itself with a certificate of its own CA.
        backend_ca = make_ca("Backend CA")
        backend_cert = issue_cert(backend_ca, ["pass.example.com"])
        bctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        bctx.load_cert_chain(*write_pair(root / "certs", "backend", backend_cert))
        tls_srv = gw.fleet.add(service="tlsecho", pod="tlsecho-0", ssl_context=bctx)
        gw.publish("tlsecho", [tls_srv], port=443)

        ca = make_ca()
        server = issue_cert(
            ca,
            [
                "mtls.example.com",
                "mtlsopt.example.com",
                "tls13.example.com",
                "ciphers.example.com",
                "selfauths.example.com",
            ],
        )
        client = write_pair(root / "certs", "client", issue_cert(ca, common_name="alice", client=True))
        rogue_ca = make_ca("Rogue CA")
        other_client = write_pair(root / "certs", "rogue", issue_cert(rogue_ca, common_name="mallory", client=True))
        htpasswd = f"alice:{_sha('wonderland')}\nbob:$apr1$abcdefgh$0123456789abcdefghijkl\n".encode()
        auth_url = f"http://127.0.0.1:{auth.port}/auth/check"
        objs = [
            tls_secret("site", "default", server.cert, server.key),
            ca_secret("client-ca", "default", ca.cert),
            _opaque("htpasswd", {"auth": htpasswd}),
            _opaque("htpasswd-bcrypt", {"auth": b"carol:$2y$05$" + b"a" * 53 + b"\n"}),
            _ing("allow", "allow.example.com", {P + "whitelist-source-range": "10.0.0.0/8,\n 127.0.0.1 , 127.0.0.1"}),
            _ing("notallowed", "notallowed.example.com", {M + "allowlist-source-range": "10.0.0.0/8"}),
            _ing("denied", "denied.example.com", {P + "denylist-source-range": "127.0.0.0/8"}),
            _ing("denyother", "denyother.example.com", {P + "denylist-source-range": "10.0.0.0/8 192.168.0.1"}),
            _ing("badlist", "badlist.example.com", {P + "whitelist-source-range": "10.0.0.0/8,not-an-ip"}),
            _ing("rl", "rl.example.com", {P + "limit-rps": "1", P + "limit-burst-multiplier": "3"}),
            _ing("rlexempt", "rlexempt.example.com",
                 {P + "limit-rps": "1", P + "limit-burst-multiplier": "1", P + "limit-whitelist": "127.0.0.0/8"}),
            _ing("body", "body.example.com", {P + "proxy-body-size": "2m"}, svc="sink"),
            _ing("nolimit", "nolimit.example.com", {P + "proxy-body-size": "0"}, svc="sink"),
            _ing("default", "default.example.com", {}, svc="sink"),
            _ing("basic", "basic.example.com", {P + "auth-type": "basic", P + "auth-secret": "htpasswd",
                                                 P + "auth-realm": "Meridian Zone"}),
            _ing("basicbad", "basicbad.example.com", {P + "auth-type": "basic", P + "auth-secret": "htpasswd-bcrypt"}),
            _ing("basicmissing", "basicmissing.example.com", {P + "auth-type": "basic", P + "auth-secret": "nope"}),
            _ing("ext", "ext.example.com", {P + "auth-url": auth_url,
                                             P + "auth-response-headers": "X-Auth-Request-User"}),
            _ing("signin", "signin.example.com", {P + "auth-url": auth_url,
                                                   P + "auth-signin": "https://login.example.com/start"}),
            _ing("mtls", "mtls.example.com", {P + "auth-tls-secret": "default/client-ca",
                                               P + "auth-tls-pass-certificate-to-upstream": "true"},
                 tls=[{"hosts": ["mtls.example.com"], "secretName": "site"}]),
            _ing("tls13", "tls13.example.com", {P + "ssl-protocols": "TLSv1.3"},
                 tls=[{"hosts": ["tls13.example.com"], "secretName": "site"}]),
            _ing("mtlsopt", "mtlsopt.example.com",
                 {P + "auth-tls-secret": "default/client-ca", P + "auth-tls-verify-client": "optional"},
                 tls=[{"hosts": ["mtlsopt.example.com"], "secretName": "site"}]),
            _ing("ciphers", "ciphers.example.com",
                 {P + "ssl-ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"},
                 tls=[{"hosts": ["ciphers.example.com"], "secretName": "site"}]),
            _ing("extdown", "extdown.example.com", {P + "auth-url": f"http://127.0.0.1:{free_port()}/auth"}),
            # auth-url on $host: the auth service is behind this gateway (oauth2-proxy style).
            _ing("selfauth", "selfauth.example.com", {P + "auth-url": "http://$host/auth/check"}),
            ingress("selfauth-proxy", [rule("selfauth.example.com", ("/auth", "Prefix", "sink", 80))]),
            # $host auth with no auth service on that host: the check would recurse; it fails closed.
            _ing("selfloop", "selfloop.example.com", {P + "auth-url": "http://$host/oauth2/auth"}),
            ingress("selfnone", [rule("selfnone.example.com", ("/x", "Prefix", "echo", 80))],
                    annotations={P + "auth-url": "http://$host/oauth2/auth"}),
            _ing("selfauths", "selfauths.example.com", {P + "auth-url": "https://$host/auth/check"},
                 tls=[{"hosts": ["selfauths.example.com"], "secretName": "site"}]),
            ingress("selfauths-proxy", [rule("selfauths.example.com", ("/auth", "Prefix", "sink", 80))],
                    tls=[{"hosts": ["selfauths.example.com"], "secretName": "site"}]),
            ingress("pass", [rule("pass.example.com", ("/", "Prefix", "tlsecho", 443))],
                    annotations={P + "ssl-passthrough": "true"}),
        ]  # fmt: skip
        gw.write("security.yaml", objs)
        try:
            gw.wait_served_by("allow.example.com", "/", "echo")
            gw.wait_status("default.example.com", "/", 200)
            wait_until(lambda: gw.get_https("tls13.example.com", "/").status == 200, timeout=20, message="tls13")
        except AssertionError:
            _no_nack(gw)
            raise
        gw.wait_converged()
        yield Env(gw, auth, ca, client, other_client, backend_ca.cert)
    finally:
        gw.stop()
        auth.close()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _no_nack(gw: Gateway) -> None:
    for stream in gw.admin("/debug/syncz"):
        for short, t in stream["types"].items():
            assert t.get("last_nack") is None, f"{short} NACKed: {t['last_nack']}"


def test_source_ranges(env: Env) -> None:
    gw = env.gw
    assert gw.get("allow.example.com", "/").status == 200
    r = gw.get("notallowed.example.com", "/")
    assert r.status == 403
    assert gw.get("denied.example.com", "/x").status == 403
    assert gw.get("denyother.example.com", "/").status == 200
    # An unparsable list rejects the Ingress: reported, never served.
    rep = gw.ingress_report("badlist")
    assert rep is not None and not rep["accepted"]
    assert any("not-an-ip" in reason for reason in rep["reasons"])
    assert gw.get("badlist.example.com", "/").status == 404
    _no_nack(gw)


def _raw(
    port: int, data: bytes, source: str = "127.0.0.1", read_until: bytes = b"\r\n\r\n"
) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(data)
    buf = b""
    while read_until not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return sock, buf


def _status_from(port: int, host: str, source: str) -> int:
    sock, head = _raw(port, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(), source)
    sock.close()
    return int(head.split(b" ", 2)[1])


def test_rate_limit_per_client_ip(env: Env) -> None:
    gw = env.gw
    statuses = [gw.get("rl.example.com", "/").status for _ in range(12)]
    # Burst 3 (1 rps x 3): the first requests pass, then 503 (nginx's limit_req default).
    assert statuses[0] == 200
    assert 503 in statuses, statuses
    assert statuses.count(200) <= 6, statuses
    assert set(statuses) <= {200, 503}
    # Another client address has its own bucket.
    assert _status_from(gw.http_port, "rl.example.com", "127.0.0.2") == 200
    # limit-whitelist: exempt clients are never limited.
    exempt = [gw.get("rlexempt.example.com", "/").status for _ in range(12)]
    assert exempt == [200] * 12, exempt
    _no_nack(gw)


def test_body_size(env: Env) -> None:
    gw = env.gw

    def post(host: str, size: int) -> int:
        try:
            return gw.get(host, "/upload", method="POST", body=b"x" * size, timeout=15).status
        except (ConnectionError, OSError):
            return -1  # the gateway may close while the client still sends: only a 413 is acceptable

    ok = gw.get("body.example.com", "/upload", method="POST", body=b"x" * 1_500_000, timeout=15)
    assert ok.status == 200 and ok.json()["length"] == 1_500_000
    assert post("body.example.com", 3 * 1024 * 1024) == 413
    # nginx's 1m default applies to every route.
    assert post("default.example.com", 900_000) == 200
    assert post("default.example.com", 1_500_000) == 413
    # The declared length is refused before any body byte is sent (nothing is buffered).
    head = b"POST /up HTTP/1.1\r\nHost: body.example.com\r\nContent-Length: 10000000\r\n\r\n"
    sock, resp = _raw(gw.http_port, head)
    sock.close()
    assert resp.startswith(b"HTTP/1.1 413"), resp[:100]
    # 0: unlimited.
    big = gw.get("nolimit.example.com", "/", method="POST", body=b"y" * 5_000_000, timeout=20)
    assert big.status == 200 and big.json()["length"] == 5_000_000


def test_websocket_not_buffered(env: Env) -> None:
    """The body-size buffer filter must not hold an upgraded stream."""
    req = (
        b"GET /ws HTTP/1.1\r\nHost: allow.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock, head = _raw(env.gw.http_port, req)
    try:
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        payload = b"hello"
        mask = b"\x01\x02\x03\x04"
        frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(frame)
        data = head.split(b"\r\n\r\n", 1)[1]
        while len(data) < 2 or len(data) < 2 + data[1]:
            data += sock.recv(4096)
        assert data[2 : 2 + data[1]].endswith(b"hello")
    finally:
        sock.close()


def test_basic_auth(env: Env) -> None:
    gw = env.gw

    def creds(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    r = gw.get("basic.example.com", "/")
    assert r.status == 401
    assert r.headers.get("WWW-Authenticate") == 'Basic realm="Meridian Zone"'
    assert gw.get("basic.example.com", "/", headers=creds("alice", "wonderland")).json()["service"] == "echo"
    assert gw.get("basic.example.com", "/", headers=creds("alice", "wrong")).status == 401
    # bob's apr1 hash cannot be checked by Envoy: refused (reported), never let through.
    assert gw.get("basic.example.com", "/", headers=creds("bob", "anything")).status == 401
    rep = gw.ingress_report("basic")
    assert rep is not None and rep["accepted"] and any("bob (apr1-md5)" in w for w in rep["warnings"])
    # Only bcrypt entries: none Envoy can check, so every request gets the 401 (as nginx answers without
    # the right password), none goes through.
    rep = gw.ingress_report("basicbad")
    assert rep is not None and rep["accepted"] and any("every request gets the 401" in w for w in rep["warnings"])
    for headers in ({}, creds("alice", "wonderland"), creds("", "")):
        r = gw.get("basicbad.example.com", "/", headers=headers)
        assert r.status == 401 and "X-Echo-Service" not in r.headers, headers
    # A Secret that does not exist: ingress-nginx denies the location, every path answers 503.
    rep = gw.ingress_report("basicmissing")
    assert rep is not None and rep["accepted"] and any("answers 503" in w for w in rep["warnings"]), rep
    r = gw.get("basicmissing.example.com", "/")
    assert r.status == 503 and "X-Echo-Service" not in r.headers
    _no_nack(gw)


def test_external_auth(env: Env) -> None:
    gw, auth = env.gw, env.auth
    auth.auth_requests.clear()
    r = gw.get("ext.example.com", "/app/page?q=1")
    assert r.status == 401
    seen = auth.auth_requests[-1]
    # The auth service is asked at its own path (Envoy adds the request path as a query parameter).
    assert seen["path"].split("?")[0] == "/auth/check", seen["path"]
    assert seen["headers"]["x-original-url"] == "http://ext.example.com/app/page?q=1"
    assert gw.get("ext.example.com", "/", headers={"Authorization": "Bearer forbidden"}).status == 403
    # Any other auth answer is an error (nginx: 500); the upstream's own 404 still passes through.
    assert gw.get("ext.example.com", "/", headers={"Authorization": "Bearer teapot"}).status == 500
    up = gw.get("ext.example.com", "/", headers={"Authorization": "Bearer good", "X-Echo-Status": "404"})
    assert up.status == 404 and up.headers.get("x-echo-service") == "echo"
    ok = gw.get("ext.example.com", "/app", headers={"Authorization": "Bearer good"})
    assert ok.status == 200
    headers = _lower(ok.json()["headers"])
    assert headers.get("x-auth-request-user") == "alice"
    assert "x-not-copied" not in headers
    # auth-signin: 401 becomes a 302 to the sign-in URL with rd = the original URL, its URI escaped as
    # nginx's $escaped_request_uri (ingress-nginx's e2e: rd=http://host + url.QueryEscape("/?a=b&c=d")).
    r = gw.get("signin.example.com", "/deep/link")
    assert r.status == 302
    assert r.headers["Location"] == "https://login.example.com/start?rd=http://signin.example.com%2Fdeep%2Flink"
    r = gw.get("signin.example.com", "/?a=b&c=d")
    assert r.headers["Location"] == "https://login.example.com/start?rd=http://signin.example.com%2F%3Fa%3Db%26c%3Dd"
    assert gw.get("signin.example.com", "/", headers={"Authorization": "Bearer good"}).status == 200
    # auth-url http://$host/...: the check goes back through the gateway with the request's Host.
    auth.auth_requests.clear()
    assert gw.get("selfauth.example.com", "/app").status == 401
    assert auth.auth_requests[-1]["path"].split("?")[0] == "/auth/check"
    assert auth.auth_requests[-1]["headers"]["host"] == "selfauth.example.com"
    assert gw.get("selfauth.example.com", "/app", headers={"Authorization": "Bearer good"}).json()["service"] == "echo"
    r = gw.get_https("selfauths.example.com", "/app", headers={"Authorization": "Bearer good"})
    assert r.status == 200 and r.json()["service"] == "echo"
    assert gw.get_https("selfauths.example.com", "/app").status == 401
    assert gw.get("selfloop.example.com", "/", headers={"Authorization": "Bearer good"}).status == 403
    # No route for the auth path on that host: the gateway's own 404 is an error answer (500).
    assert gw.get("selfnone.example.com", "/x").status == 500
    # The auth service is down: fail closed with 500, as nginx does.
    assert gw.get("extdown.example.com", "/").status == 500
    _no_nack(gw)


def test_client_certificates(env: Env) -> None:
    gw = env.gw
    r = gw.get_https("mtls.example.com", "/", client_cert=env.client)
    assert r.status == 200
    headers = _lower(r.json()["headers"])
    assert "BEGIN%20CERTIFICATE" in headers.get("ssl-client-cert", "")
    assert "CN=alice" in headers.get("ssl-client-subject-dn", "")
    # As nginx: the handshake completes, the request gets 400 (and never reaches the backend).
    r = gw.get_https("mtls.example.com", "/")
    assert r.status == 400 and b"No required SSL certificate was sent" in r.body
    r = gw.get_https("mtls.example.com", "/", client_cert=env.other_client)
    assert r.status == 400 and b"The SSL certificate error" in r.body
    # optional: no certificate is fine, a certificate of another CA is not.
    assert gw.get_https("mtlsopt.example.com", "/").status == 200
    assert gw.get_https("mtlsopt.example.com", "/", client_cert=env.client).status == 200
    assert gw.get_https("mtlsopt.example.com", "/", client_cert=env.other_client).status == 400
    _no_nack(gw)


def test_client_certificate_host_not_reachable_through_another_chain(env: Env) -> None:
    """Every HTTPS chain shares the route table: a client that negotiates another name (the default
    certificate's catch-all, another TLS host) and sends the client-cert host in Host gets nginx's 421
    (ngx_http_set_virtual_server: SNI differs from Host, and that server verifies client certificates);
    without SNI the certificate checks run (none was asked for: 400). Never the backend."""
    gw = env.gw
    for sni in ("unknown.example.com", "tls13.example.com", "MTLSOPT.example.com"):
        for host in ("mtls.example.com", "mtlsopt.example.com"):
            if sni.lower() == host:
                continue
            for cert in (None, env.client):
                r = gw.get_https(host, "/", sni=sni, client_cert=cert)
                assert r.status == 421 and b"421 Misdirected Request" in r.body, (sni, host, cert, r.status)
    r = gw.get_https("mtls.example.com", "/", sni="")
    assert r.status == 400 and b"No required SSL certificate was sent" in r.body
    # optional: without SNI no certificate was asked for, and none is needed (nginx serves it too).
    assert gw.get_https("mtlsopt.example.com", "/", sni="").status == 200
    # Host and SNI agree up to case and a port: served.
    r = gw.get_https("MTLS.example.com:443", "/", sni="mtls.example.com", client_cert=env.client)
    assert r.status == 200 and r.json()["service"] == "echo"
    # Other hosts are not affected by the check.
    assert gw.get_https("tls13.example.com", "/", sni="unknown.example.com").status == 200
    _no_nack(gw)


def test_ssl_protocols(env: Env) -> None:
    gw = env.gw
    assert gw.get_https("tls13.example.com", "/").tls_version == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        gw.get_https("tls13.example.com", "/", tls_max_version=ssl.TLSVersion.TLSv1_2)
    # ssl-ciphers: only the listed (BoringSSL-supported) TLS 1.2 suite is negotiated; DHE is dropped and reported.
    r = gw.get_https("ciphers.example.com", "/", tls_max_version=ssl.TLSVersion.TLSv1_2)
    assert r.status == 200 and r.cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
    rep = gw.ingress_report("ciphers")
    assert rep is not None and any("DHE-RSA-AES128-GCM-SHA256" in w for w in rep["warnings"])
    # Other hosts keep the default range: TLS 1.2 works there.
    r = gw.get_https("mtls.example.com", "/", client_cert=env.client, tls_max_version=ssl.TLSVersion.TLSv1_2)
    assert r.status == 200 and r.tls_version == "TLSv1.2"


def test_ssl_passthrough(env: Env) -> None:
    gw = env.gw
    r = wait_until(lambda: gw.get_https("pass.example.com", "/p", ca=env.backend_ca), timeout=15)
    # The backend terminated TLS (its own CA verified), so the client saw the backend's certificate.
    assert r.status == 200 and r.json()["service"] == "tlsecho" and r.json()["tls"] is True
    assert "pass.example.com" in r.peer_cert_names()
    issuer = r.peer_certificate.issuer.rfc4514_string()
    assert "Backend CA" in issuer
    _no_nack(gw)
