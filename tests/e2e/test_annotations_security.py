"""Access-control annotations end to end through a real Envoy: one gateway for the whole module."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import types
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth_server import AuthServer
from tests.support.certs import ca_secret, issue_cert, make_ca, tls_secret, write_pair
from tests.support.gateway import Gateway, ingress, rule, service_manifests
from tests.support.http import request
from tests.support.wait import wait_until

P = "nginx.ingress.kubernetes.io/"
M = "meridian.io/"


def _sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # noqa: S324 - htpasswd


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
        server = issue_cert(ca, ["mtls.example.com", "tls13.example.com", "pass.example.com"])
        client = write_pair(root / "certs", "client", issue_cert(ca, common_name="alice", client=True))
        rogue_ca = make_ca("Rogue CA")
        other_client = write_pair(root / "certs", "rogue", issue_cert(rogue_ca, common_name="mallory", client=True))
        htpasswd = f"alice:{_sha('wonderland')}\nbob:$apr1$abcdefgh$0123456789abcdefghijkl\n".encode()
        auth_url = f"http://127.0.0.1:{auth.port}/auth/check"
        objs = [
            tls_secret("site", "default", server.cert, server.key),
            ca_secret("client-ca", "default", ca.cert),
            _opaque("htpasswd", {"auth": htpasswd}),
            _opaque("htpasswd-bcrypt", {"auth": b"carol:$2y$05$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXyz\n"}),
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
            ingress("pass", [rule("pass.example.com", ("/", "Prefix", "tlsecho", 443))],
                    annotations={P + "ssl-passthrough": "true"}),
        ]  # fmt: skip
        gw.write("security.yaml", objs)
        try:
            gw.wait_served_by("allow.example.com", "/", "echo")
        except AssertionError:
            _no_nack(gw)
            raise
        gw.wait_status("default.example.com", "/", 200)
        wait_until(lambda: gw.get_https("tls13.example.com", "/").status == 200, timeout=20, message="tls13 not served")
        gw.wait_converged()
        yield Env(gw, auth, ca, client, other_client, backend_ca.cert)
    finally:
        gw.stop()
        auth.close()


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
