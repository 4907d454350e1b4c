"""Private keys never appear in logs, debug endpoints or `meridian translate` output."""

from __future__ import annotations

import base64
import subprocess
import sys

from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import REPO, ingress, rule


def test_private_key_never_shown(make_gateway, tmp_path):
    ca = make_ca()
    leaf = issue_cert(ca, ["secret.example.com"])
    key_body = b"".join(line for line in leaf.key.splitlines() if b"-----" not in line).decode()
    needles = [key_body[:40], base64.b64encode(leaf.key).decode()[:40], "PRIVATE KEY"]

    gw = make_gateway(serve_args=("--watch-ingress-without-class", "--log-level", "debug")).start()
    gw.backend("web")
    objs = [
        tls_secret("site-tls", "default", leaf.cert, leaf.key),
        ingress(
            "site",
            [rule("secret.example.com", ("/", "Prefix", "web", 80))],
            tls=[{"hosts": ["secret.example.com"], "secretName": "site-tls"}],
        ),
    ]
    gw.write("site.yaml", objs)
    from tests.support.wait import wait_until

    def served() -> bool:
        try:
            r = gw.get_https("secret.example.com", "/", ca=ca.cert.decode())
        except OSError:
            return False
        return r.status == 200 and "secret.example.com" in r.peer_cert_names()

    wait_until(served, timeout=20, message="HTTPS with the secret's certificate")
    assert gw.get("secret.example.com", "/").status == 308  # plain HTTP goes to HTTPS
    gw.wait_converged()

    seen = [gw.log_text()]
    for path in ("/debug/ingresses", "/debug/clusters", "/debug/syncz", "/debug/snapshot"):
        seen.append(str(gw.admin(path)))
    seen.append(gw.admin("/metrics"))
    out = subprocess.run(
        [sys.executable, "-m", "controlplane", "translate", "-f", str(gw.dirs["c1"]), "-o", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    seen.append(out.stdout + out.stderr)
    assert "secret.example.com" in out.stdout  # it did translate the host
    assert "[redacted]" in out.stdout  # the SDS secret is there, its key is not
    for text in seen:
        for needle in needles:
            assert needle not in text
