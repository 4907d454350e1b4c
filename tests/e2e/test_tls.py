"""TLS through a real Envoy: SNI per host, rotation by replacing the Secret file, bad Secrets.

Certificates come over SDS, so a rotation must reach new handshakes without a restart and without
dropping a keep-alive connection opened before it; an invalid replacement keeps the previous
certificate; a host whose Secret never existed is served with the default certificate (and
redirected to it, as in ingress-nginx); a deleted Secret stops being served: its hosts fall back to
the default certificate (test_default_certificate.py has the rest).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Issued, issue_cert, make_ca, tls_secret
from tests.support.gateway import Gateway, ingress, rule
from tests.support.http import Client, Response, request
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

CA = make_ca("TLS test CA")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("tls")))
    g.serve_args += ["--public-https-port", str(g.https_port)]  # clients connect straight to the listener
    try:
        g.start()
        yield g
    finally:
        g.stop()


def https(gw: Gateway, host: str, path: str = "/") -> Response:
    return request("GET", gw.https_port, path, host=host, tls=True, ca=CA.cert)


def serial(r: Response) -> int:
    cert = r.peer_certificate
    assert cert is not None
    return cert.serial_number


def tls_ingress(name: str, host: str, secret: str) -> dict:
    return ingress(name, [rule(host, ("/", "Prefix", name, 80))], tls=[{"hosts": [host], "secretName": secret}])


def test_sni_rotation_invalid_and_missing_secrets(gw: Gateway) -> None:
    certs: dict[str, Issued] = {h: issue_cert(CA, [f"{h}.example.com"]) for h in ("a", "b")}
    for h in ("a", "b"):
        gw.backend(h)
        gw.write(f"secret-{h}.yaml", [tls_secret(f"{h}-tls", "default", certs[h].cert, certs[h].key)])
        gw.write(f"ing-{h}.yaml", [tls_ingress(h, f"{h}.example.com", f"{h}-tls")])

    # Each SNI gets its own certificate (verified against the CA and the hostname) and backend.
    for h in ("a", "b"):
        r = wait_until(lambda h=h: (x := https(gw, f"{h}.example.com")).status == 200 and x, timeout=15,
                       message=f"{h} never served over HTTPS")  # fmt: skip
        assert r.json()["service"] == h
        assert serial(r) == certs[h].x509.serial_number
        assert r.peer_cert_names() == [f"{h}.example.com", f"{h}.example.com"]
    # Plain HTTP for a TLS host is redirected (ssl-redirect default).
    r = gw.get("a.example.com", "/x")
    assert r.status == 308 and r.headers["location"] == f"https://a.example.com:{gw.https_port}/x"

    # A keep-alive connection opened before the rotation.
    kept = Client(gw.https_port, host="a.example.com", tls=True, ca=CA.cert)
    first = kept.get("/")
    assert first.status == 200 and serial(first) == certs["a"].x509.serial_number
    assert kept._conn is not None and kept._conn.sock is not None
    local_port = kept._conn.sock.getsockname()[1]
    connections_before = gw.envoy.stat(f"listener.127.0.0.1_{gw.https_port}.downstream_cx_total")  # type: ignore[union-attr]

    # Rotate a's certificate by replacing its Secret file.
    rotated = issue_cert(CA, ["a.example.com"])
    gw.write("secret-a.yaml", [tls_secret("a-tls", "default", rotated.cert, rotated.key)])
    wait_until(lambda: serial(https(gw, "a.example.com")) == rotated.x509.serial_number, timeout=15,
               message="rotated certificate never served")  # fmt: skip
    assert serial(https(gw, "b.example.com")) == certs["b"].x509.serial_number  # b untouched
    # The old connection is still the same TCP connection, still on the old certificate, still served.
    for _ in range(3):
        again = kept.get("/")
        assert again.status == 200 and again.json()["service"] == "a"
        assert kept._conn is not None and kept._conn.sock is not None
        assert kept._conn.sock.getsockname()[1] == local_port, "keep-alive connection was dropped"
        assert serial(again) == certs["a"].x509.serial_number
    kept.close()
    assert gw.envoy.stat(f"listener.127.0.0.1_{gw.https_port}.downstream_cx_total") > connections_before  # type: ignore[union-attr]

    # An invalid replacement for b: reported, and b keeps its previous certificate.
    broken = tls_secret("b-tls", "default", b"not a certificate", certs["b"].key)
    gw.write("secret-b.yaml", [broken])
    rep = gw.wait_report("b", lambda r: any("secret default/b-tls" in w for w in r["warnings"]))
    assert rep["accepted"], rep
    assert any("last good certificate is still served" in w for w in rep["warnings"]), rep
    gw.wait_converged()
    r = https(gw, "b.example.com")
    assert r.status == 200 and serial(r) == certs["b"].x509.serial_number

    # A host whose Secret never existed: reported, served with the default certificate (which this
    # CA did not sign: the handshake fails verification) and redirected to HTTPS.
    gw.backend("c")
    gw.write("ing-c.yaml", [tls_ingress("c", "c.example.com", "never-created")])
    rep = gw.wait_report("c", lambda r: bool(r["warnings"]))
    assert any("never-created: not found" in w and "default certificate" in w for w in rep["warnings"]), rep
    gw.wait_status("c.example.com", "/", 308)
    r = wait_until(lambda: (x := request("GET", gw.https_port, "/", host="c.example.com", tls=True)).status == 200
                   and x, timeout=15, message="c never served with the default certificate")  # fmt: skip
    assert r.json()["service"] == "c" and r.peer_certificate.serial_number not in (  # type: ignore[union-attr]
        certs["a"].x509.serial_number, certs["b"].x509.serial_number, rotated.x509.serial_number)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https(gw, "c.example.com")

    # Nothing of the above was NACKed.
    gw.wait_converged()
    for stream in gw.admin("/debug/syncz"):
        assert all(t["last_nack"] is None for t in stream["types"].values()), stream


def test_deleted_secret_stops_being_served(gw: Gateway) -> None:
    certs = {h: issue_cert(CA, [f"{h}.example.com"]) for h in ("del", "forced")}
    for h in ("del", "forced"):
        gw.backend(h)
        gw.write(f"secret-{h}.yaml", [tls_secret(f"{h}-tls", "default", certs[h].cert, certs[h].key)])
    gw.write("ing-del.yaml", [tls_ingress("del", "del.example.com", "del-tls")])
    forced = tls_ingress("forced", "forced.example.com", "forced-tls")
    forced["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] = "true"
    gw.write("ing-forced.yaml", [forced])
    for h in ("del", "forced"):
        r = wait_until(lambda h=h: (x := https(gw, f"{h}.example.com")).status == 200 and x, timeout=15,
                       message=f"{h} never served over HTTPS")  # fmt: skip
        assert serial(r) == certs[h].x509.serial_number
        assert gw.get(f"{h}.example.com", "/").status == 308

    gw.remove("secret-del.yaml")
    gw.remove("secret-forced.yaml")
    # The certificates are no longer served: the hosts fall back to the default certificate (not
    # signed by this CA), still redirected to HTTPS, as in ingress-nginx.
    gw.wait_converged()
    for h in ("del", "forced"):
        wait_until(lambda h=h: request("GET", gw.https_port, "/", host=f"{h}.example.com", tls=True)
                   .peer_certificate.serial_number != certs[h].x509.serial_number,  # type: ignore[union-attr]
                   timeout=15, message=f"{h}'s deleted certificate still served")  # fmt: skip
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https(gw, f"{h}.example.com")
        assert gw.get(f"{h}.example.com", "/").status == 308
    sds = gw.admin("/debug/snapshot")["types"]["SDS"]["resources"]
    assert "c1/default/del-tls" not in sds and "c1/default/forced-tls" not in sds, sds
    rep = gw.wait_report("del", lambda r: any("del-tls: not found" in w for w in r["warnings"]))
    assert any("served with the default certificate" in w for w in rep["warnings"]), rep
    rep = gw.wait_report("forced", lambda r: any("forced-tls: not found" in w for w in r["warnings"]))
    assert any("served with the default certificate" in w for w in rep["warnings"]), rep

    # The Secret back: served again, no restart.
    gw.write("secret-del.yaml", [tls_secret("del-tls", "default", certs["del"].cert, certs["del"].key)])
    wait_until(lambda: serial(https(gw, "del.example.com")) == certs["del"].x509.serial_number, timeout=15,
               message="certificate never back")  # fmt: skip
    assert gw.get("del.example.com", "/").status == 308
