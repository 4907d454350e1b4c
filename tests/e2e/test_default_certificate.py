"""The default certificate through a real Envoy, as ingress-nginx serves its own.

A host whose TLS Secret is missing (or named by no secretName) is served over HTTPS with the default
certificate and plain HTTP redirects to it (exact 308 Location); a host without a `tls:` entry and
any unknown SNI (or none) get the default certificate too, then are routed by Host (unknown: 404,
or the catch-all defaultBackend). Without `--default-ssl-certificate` it is the generated "Kubernetes
Ingress Controller Fake Certificate" kept in the state dir: a restart and a replica serve the same
one. With the flag, that Secret (and back to the generated one when it goes). Its key is never shown.
"""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes

from controlplane.default_certificate import CERT_FILE, FAKE_CERTIFICATE_CN, GENERATED_NAME, KEY_FILE
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import REPO, Gateway, ingress, rule
from tests.support.http import Response, request
from tests.support.kubegateway import KubeGateway
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

CA = make_ca("default certificate test CA")


def https(gw: Gateway, host: str | None, path: str = "/", *, sni: str | None = None, **kw: object) -> Response:
    """HTTPS without verification (the fake certificate is self-signed), SNI from `host` unless given."""
    return request("GET", gw.https_port, path, host=host, tls=True, sni=sni, **kw)  # type: ignore[arg-type]


def fingerprint(r: Response) -> str:
    cert = r.peer_certificate
    assert cert is not None
    return cert.fingerprint(hashes.SHA256()).hex()


def subject_cn(r: Response) -> str:
    cert = r.peer_certificate
    assert cert is not None
    return cert.subject.rfc4514_string()


def wait_https(gw: Gateway, host: str | None, status: int, **kw: object) -> Response:
    def check() -> Response | None:
        try:
            r = https(gw, host, **kw)  # type: ignore[arg-type]
        except OSError:
            return None
        return r if r.status == status else None

    return wait_until(check, timeout=20, message=f"https {host} never answered {status}")


def sds_version(gw: Gateway, name: str) -> str | None:
    return gw.admin("/debug/snapshot")["types"]["SDS"]["resources"].get(name)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("defcert")))  # --public-https-port stays 443: no port in Locations
    try:
        g.start()
        yield g
    finally:
        g.stop()


def test_missing_secret_is_served_with_the_fake_certificate_and_redirected(gw: Gateway) -> None:
    good = issue_cert(CA, ["good.example.com"])
    for name in ("missing", "unnamed", "plain", "good", "fallback"):
        gw.backend(name)
    gw.write("good.yaml", [tls_secret("good-tls", "default", good.cert, good.key),
                           ingress("good", [rule("good.example.com", ("/", "Prefix", "good", 80))],
                                   tls=[{"hosts": ["good.example.com"], "secretName": "good-tls"}])])  # fmt: skip
    missing_tls = [{"hosts": ["missing.example.com"], "secretName": "never-created"}]
    gw.write("missing.yaml", [ingress("missing", [rule("missing.example.com", ("/", "Prefix", "missing", 80))],
                                      tls=missing_tls)])  # fmt: skip
    gw.write("unnamed.yaml", [ingress("unnamed", [rule("unnamed.example.com", ("/", "Prefix", "unnamed", 80))],
                                      tls=[{"hosts": ["unnamed.example.com"]}])])  # fmt: skip
    gw.write("plain.yaml", [ingress("plain", [rule("plain.example.com", ("/", "Prefix", "plain", 80))])])

    # A missing Secret: HTTPS with the fake certificate, to the host's own backend.
    r = wait_https(gw, "missing.example.com", 200)
    assert r.json()["service"] == "missing"
    assert subject_cn(r) == f"CN={FAKE_CERTIFICATE_CN},O=Acme Co"
    fake = fingerprint(r)
    # ... and plain HTTP redirects to it, as for a host with its own certificate (ingress-nginx's Location).
    r = gw.wait_status("missing.example.com", "/x/?q=1", 308)
    assert r.headers["location"] == "https://missing.example.com/x/?q=1"
    r = gw.get("missing.example.com:8080", "/dir/")
    assert r.status == 308 and r.headers["location"] == "https://missing.example.com/dir"
    # A tls entry without secretName: the same (ingress-nginx: "Using default certificate").
    r = wait_https(gw, "unnamed.example.com", 200)
    assert r.json()["service"] == "unnamed" and fingerprint(r) == fake
    r = gw.get("unnamed.example.com", "/a")
    assert r.status == 308 and r.headers["location"] == "https://unnamed.example.com/a"
    # A host without a tls entry: plain HTTP is served (no redirect); HTTPS works with the default certificate.
    assert gw.get("plain.example.com", "/").json()["service"] == "plain"
    r = https(gw, "plain.example.com")
    assert r.status == 200 and r.json()["service"] == "plain" and fingerprint(r) == fake
    # A host with its own certificate keeps it.
    r = https(gw, "good.example.com", ca=CA.cert)
    assert r.status == 200 and r.peer_certificate.serial_number == good.x509.serial_number  # type: ignore[union-attr]

    # Unknown SNI, and no SNI at all: the default certificate, then routing by Host: the gateway's 404 ...
    r = https(gw, "unknown.example.com")
    assert r.status == 404 and fingerprint(r) == fake
    r = https(gw, "unknown.example.com", sni="")
    assert r.status == 404 and fingerprint(r) == fake
    # ... a known Host without SNI is served (nginx routes by Host, too).
    r = https(gw, "plain.example.com", sni="")
    assert r.status == 200 and r.json()["service"] == "plain" and fingerprint(r) == fake
    # ... or the catch-all defaultBackend of an Ingress without rules.
    gw.write("fallback.yaml", [ingress("fallback", default_backend=("fallback", 80))])
    r = wait_https(gw, "unknown.example.com", 200)
    assert r.json()["service"] == "fallback" and fingerprint(r) == fake
    assert gw.get("unknown.example.com", "/").status == 200  # the catch-all is not redirected

    # Reported: the missing Secret, and that the host is served with the default certificate.
    rep = gw.wait_report("missing", lambda r: bool(r["warnings"]))
    assert any("secret default/never-created: not found" in w and "served with the default certificate" in w
               for w in rep["warnings"]), rep  # fmt: skip
    rep = gw.wait_report("unnamed", lambda r: bool(r["warnings"]))
    assert any("no secretName" in w and "default certificate" in w for w in rep["warnings"]), rep

    # The Secret created: its own certificate replaces the default one, no restart.
    missing = issue_cert(CA, ["missing.example.com"])
    gw.write("missing-secret.yaml", [tls_secret("never-created", "default", missing.cert, missing.key)])
    wait_until(lambda: fingerprint(https(gw, "missing.example.com")) != fake, timeout=20,
               message="the host's own certificate never replaced the default one")  # fmt: skip
    assert https(gw, "missing.example.com").peer_certificate.serial_number == missing.x509.serial_number  # type: ignore[union-attr]

    gw.wait_converged()
    for stream in gw.admin("/debug/syncz"):
        assert all(t["last_nack"] is None for t in stream["types"].values()), stream


def test_unlisted_hosts_of_a_tls_ingress_get_a_covering_certificate_else_the_default(gw: Gateway) -> None:
    """A `tls:` entry without hosts (ingress-nginx's extractTLSSecretName): the wildcard certificate for
    the rule hosts it covers, the default certificate for the others; both redirected to HTTPS."""
    wild = issue_cert(CA, ["*.wild.example.com"])
    gw.backend("wild")
    rules = [rule(h, ("/", "Prefix", "wild", 80)) for h in ("a.wild.example.com", "other.example.org")]
    gw.write("wild.yaml", [tls_secret("wild-tls", "default", wild.cert, wild.key),
                           ingress("wild", rules, tls=[{"secretName": "wild-tls"}])])  # fmt: skip
    r = wait_https(gw, "a.wild.example.com", 200, ca=CA.cert)
    assert r.json()["service"] == "wild" and r.peer_certificate.serial_number == wild.x509.serial_number  # type: ignore[union-attr]
    r = https(gw, "other.example.org")
    assert r.status == 200 and subject_cn(r).startswith(f"CN={FAKE_CERTIFICATE_CN}")
    for host in ("a.wild.example.com", "other.example.org"):
        r = gw.get(host, "/p")
        assert r.status == 308 and r.headers["location"] == f"https://{host}/p"


def test_the_fake_key_is_never_shown(gw: Gateway) -> None:
    key = (gw.state_dir / KEY_FILE).read_bytes()
    assert stat.S_IMODE((gw.state_dir / KEY_FILE).stat().st_mode) == 0o600
    body = b"".join(line for line in key.splitlines() if b"-----" not in line).decode()
    needles = [body[:40], body[-40:], base64.b64encode(key).decode()[:40], "PRIVATE KEY"]
    seen = [gw.log_text(), str(gw.admin("/metrics"))]
    for path in ("/debug/ingresses", "/debug/clusters", "/debug/syncz", "/debug/snapshot", "/debug/history",
                 "/debug/history/1", "/debug/history/diff?from=1&to=live"):  # fmt: skip
        seen.append(str(gw.admin(path)))
    for text in seen:
        for needle in needles:
            assert needle not in text


def test_restart_and_replica_serve_the_same_fake_certificate(gw: Gateway) -> None:
    before = sds_version(gw, GENERATED_NAME)
    assert before is not None
    served = fingerprint(https(gw, "plain.example.com"))
    cert_file = (gw.state_dir / CERT_FILE).read_bytes()

    # A replica started from the same state dir serves exactly the same resource.
    replica = gw.replica("r2")
    try:
        replica.start()
        assert sds_version(replica, GENERATED_NAME) == before
    finally:
        replica.stop_control_plane()

    gw.stop_control_plane()
    gw.start_control_plane()
    assert sds_version(gw, GENERATED_NAME) == before
    assert (gw.state_dir / CERT_FILE).read_bytes() == cert_file
    # Envoy reconnected to the restarted control plane (a new host is served) and still presents it.
    gw.write("after.yaml", [ingress("after", [rule("after.example.com", ("/", "Prefix", "plain", 80))])])
    wait_https(gw, "after.example.com", 200)
    assert fingerprint(https(gw, "after.example.com")) == served


def test_flag_names_the_default_certificate(make_gateway) -> None:  # type: ignore[no-untyped-def]
    mine = issue_cert(CA, ["default.example.com"])
    gw: Gateway = make_gateway(serve_args=("--watch-ingress-without-class",
                                           "--default-ssl-certificate", "certs/my-default"))  # fmt: skip
    gw.write("secret.yaml", [tls_secret("my-default", "certs", mine.cert, mine.key)])
    gw.start()
    gw.backend("web")
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))],
                                  tls=[{"hosts": ["web.example.com"], "secretName": "absent"}])])  # fmt: skip
    r = wait_https(gw, "web.example.com", 200)
    assert r.peer_certificate.serial_number == mine.x509.serial_number  # type: ignore[union-attr]
    assert https(gw, "other.example.com", sni="").peer_certificate.serial_number == mine.x509.serial_number  # type: ignore[union-attr]
    r = gw.get("web.example.com", "/p?x=1")
    assert r.status == 308 and r.headers["location"] == "https://web.example.com/p?x=1"
    rep = gw.wait_report("web", lambda r: bool(r["warnings"]))
    assert any("default certificate (c1/certs/my-default)" in w for w in rep["warnings"]), rep

    # The flag's Secret gone: the generated fake certificate, as ingress-nginx falls back to its own.
    gw.remove("secret.yaml")
    r = wait_until(lambda: (x := https(gw, "web.example.com")).peer_certificate.subject.rfc4514_string()  # type: ignore[union-attr]
                   .startswith(f"CN={FAKE_CERTIFICATE_CN}") and x, timeout=20, message="never fell back")  # fmt: skip
    assert r.status == 200 and gw.get("web.example.com", "/").status == 308


def test_translate_shows_the_flag_certificate_without_its_key(tmp_path: Path) -> None:
    mine = issue_cert(CA, ["default.example.com"])
    objs = [
        tls_secret("my-default", "certs", mine.cert, mine.key),
        ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))],
                tls=[{"hosts": ["web.example.com"], "secretName": "absent"}]),
    ]  # fmt: skip
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(objs))
    out = subprocess.run([sys.executable, "-m", "controlplane", "translate", "-f", str(tmp_path), "-o", "json",
                          "--default-ssl-certificate", "certs/my-default"],
                         cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
    assert "/certs/my-default" in out.stdout and "[redacted]" in out.stdout
    body = b"".join(line for line in mine.key.splitlines() if b"-----" not in line).decode()
    assert body[:40] not in out.stdout and "PRIVATE KEY" not in out.stdout


def test_kube_replicas_serve_the_charts_default_certificate(tmp_path: Path) -> None:
    """Kubernetes mode: the flag names one Secret (the chart generates it once), so every replica
    serves the same default certificate; nothing is generated per process."""
    mine = issue_cert(CA, ["default.example.com"])
    flags = ("--watch-ingress-without-class", "--default-ssl-certificate", "meridian-system/meridian-default")
    gw = KubeGateway(tmp_path / "kube", serve_args=flags)
    replica: KubeGateway | None = None
    try:
        gw.start()
        gw.apply(tls_secret("meridian-default", "meridian-system", mine.cert, mine.key))
        gw.backend("web")
        gw.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))],
                         tls=[{"hosts": ["web.example.com"], "secretName": "absent"}]))  # fmt: skip
        r = wait_https(gw, "web.example.com", 200)
        assert r.peer_certificate.serial_number == mine.x509.serial_number  # type: ignore[union-attr]
        assert gw.get("web.example.com", "/").status == 308
        replica = gw.replica("r2")
        replica.start()
        wait_until(lambda: sds_version(replica, "primary/meridian-system/meridian-default") is not None, timeout=20,
                   message="replica never served the default certificate")  # fmt: skip
        ours = gw.admin("/debug/snapshot")["types"]["SDS"]["resources"]
        theirs = replica.admin("/debug/snapshot")["types"]["SDS"]["resources"]
        assert ours == theirs and GENERATED_NAME not in ours, (ours, theirs)
    finally:
        if replica is not None:
            replica.stop_control_plane()
        gw.stop()


def test_kube_without_the_flag_the_leader_creates_one_secret_every_replica_serves(tmp_path: Path) -> None:
    """Kubernetes mode without the chart's flag: the leader creates meridian-default-certificate in
    Meridian's namespace if absent (never replaces it); both replicas serve that object's certificate."""
    from controlplane.default_certificate import OWN_SECRET

    gw = KubeGateway(tmp_path / "kube-own")
    replica: KubeGateway | None = None
    sds = f"primary/meridian-system/{OWN_SECRET}"
    try:
        gw.start()
        wait_until(lambda: sds_version(gw, sds) is not None, timeout=30, message="the leader never made one")
        created = gw.kubes["primary"].get("Secret", "meridian-system", OWN_SECRET)
        assert created is not None and created["type"] == "kubernetes.io/tls"
        gw.backend("web")
        gw.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))],
                         tls=[{"hosts": ["web.example.com"], "secretName": "absent"}]))  # fmt: skip
        r = wait_https(gw, "web.example.com", 200)
        assert subject_cn(r).startswith(f"CN={FAKE_CERTIFICATE_CN}")
        assert gw.get("web.example.com", "/x").headers.get("location") == "https://web.example.com/x"
        replica = gw.replica("r2")
        replica.start()
        wait_until(lambda: sds_version(replica, sds) == sds_version(gw, sds), timeout=20,
                   message="the replica serves another default certificate")  # fmt: skip
        # Still the one object: nothing replaced it.
        after = gw.kubes["primary"].get("Secret", "meridian-system", OWN_SECRET)
        assert after["data"] == created["data"]
    finally:
        if replica is not None:
            replica.stop_control_plane()
        gw.stop()
