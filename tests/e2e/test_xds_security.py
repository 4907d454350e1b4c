"""xDS is authenticated and authorized by default, through real Envoys and a raw gRPC client.

- An Envoy with a client certificate from Meridian's CA for its group gets config and serves.
- No certificate, a certificate from another CA, or a valid certificate claiming another group:
  refused, logged and counted in meridian_xds_auth_failures_total{reason}; that Envoy never gets a
  listener.
- A service-account token, verified by TokenReview against the fake API server, authenticates an
  Envoy (bootstrap with initial_metadata); a token for another audience or a group it is not
  allowed is refused.
- With --xds-insecure an anonymous plaintext client asking ADS for the Secret (and Cluster) types
  never sees private key bytes, while an authenticated client of the secure server does.
- The README's two commands (`serve`, then `bootstrap` with no certificate flags) work together
  through the default state directory.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.bootstrap import XdsClientTls, local_client_tls, render_bootstrap
from controlplane.default_certificate import GENERATED_NAME, KEY_FILE
from controlplane.devtools.echo import EchoFleet
from controlplane.devtools.envoy_proc import EnvoyProcess
from controlplane.xds.localca import LocalCA
from controlplane.xds.resources import CLUSTER, SECRET
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import REPO, Gateway, dump_manifests, ingress, rule, service_manifests
from tests.support.http import request
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.ports import free_ports
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

GROUP = "meridian-gateway"


def key_needles(pem_key: bytes) -> list[bytes]:
    """The private key as PEM, as DER, and the key's base64 body: none may reach an anonymous client."""
    key = serialization.load_pem_private_key(pem_key, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    body = b"".join(line for line in pem_key.splitlines() if b"-----" not in line)
    return [pem_key, der, body[:48], base64.b64decode(body)[:48]]


def ads_fetch(
    port: int,
    type_url: str,
    names: Sequence[str] = (),
    *,
    group: str = GROUP,
    credentials: grpc.ChannelCredentials | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10,
) -> discovery_pb2.DiscoveryResponse:
    """One SotW request for `type_url` on a fresh ADS stream; the first response (or grpc.RpcError)."""
    done = threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="probe", cluster=group), type_url=type_url, resource_names=list(names)
        )
        done.wait(timeout)

    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            requests(), metadata=list(metadata), timeout=timeout
        )
        try:
            return next(call)
        finally:
            done.set()
            call.cancel()


def refused_code(fn: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


def write_tls_site(gw: Gateway) -> tuple[bytes, bytes]:
    """A TLS Ingress and an upstream client certificate (proxy-ssl-secret); returns both keys."""
    ca = make_ca()
    leaf = issue_cert(ca, ["secure.example.com"])
    upstream = issue_cert(ca, [], common_name="gateway-to-backend", client=True)
    gw.backend("web")
    gw.write("site.yaml", [
        tls_secret("site-tls", "default", leaf.cert, leaf.key),
        tls_secret("upstream-client", "default", upstream.cert, upstream.key, ca=ca.cert),
        ingress("site", [rule("secure.example.com", ("/", "Prefix", "web", 80))],
                tls=[{"hosts": ["secure.example.com"], "secretName": "site-tls"}],
                annotations={"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                             "nginx.ingress.kubernetes.io/proxy-ssl-secret": "default/upstream-client"}),
    ])  # fmt: skip
    return leaf.key, upstream.key


def resource_names(gw: Gateway, short: str) -> list[str]:
    return list(gw.admin("/debug/snapshot")["types"][short]["resources"])


def start_envoy(gw: Gateway, name: str, boot: dict[str, Any], *, ready: bool = True) -> EnvoyProcess:
    """An Envoy; `ready` waits for its initialization (a refused Envoy only gets there after timeouts)."""
    envoy = EnvoyProcess(boot, workdir=gw.root / name)
    envoy.start()
    if ready:
        envoy.wait_ready(30)
    return envoy


def has_listeners(envoy: EnvoyProcess) -> bool:
    dump = envoy.config_dump("dynamic_listeners")
    return bool(json.dumps(dump).count("\"name\": \"http\""))


def failures(gw: Gateway, reason: str) -> float:
    return gw.metric("meridian_xds_auth_failures_total", {"reason": reason}) or 0.0


def test_client_certificates_authenticate_and_authorize(make_gateway, tmp_path: Path) -> None:
    gw = make_gateway().start()  # its Envoy bootstraps with the state dir's certificate for its group
    gw.backend("web")
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    gw.wait_served_by("web.example.com", "/", "web")
    (stream,) = gw.admin("/debug/syncz")
    assert stream["identity"] == f"mtls:spiffe://meridian/group/{GROUP}"

    ca_only = XdsClientTls(ca=str(gw.state_dir / "xds-ca.pem"))
    foreign = local_client_tls(tmp_path / "other-ca", GROUP)  # right group, wrong CA
    foreign = XdsClientTls(ca=ca_only.ca, cert=foreign.cert, key=foreign.key)
    edge = local_client_tls(gw.state_dir, "edge")  # a valid certificate, for group "edge"
    cases = [
        ("no-cert", ca_only, GROUP, "no_credentials", "a client certificate from Meridian's CA or a service-account"),
        ("foreign-ca", foreign, GROUP, "bad_certificate", "TLS handshake from"),
        ("other-group", edge, GROUP, "group_not_allowed", f"may not claim gateway group '{GROUP}'"),
    ]
    for name, tls, group, reason, logged in cases:
        before = failures(gw, reason)
        # Refused under SotW (as before Delta was the default); the accepted Envoys below use Delta.
        boot = render_bootstrap(xds_address=f"127.0.0.1:{gw.xds_port}", node_id=name, node_cluster=group, tls=tls,
                                admin_port=0, delta=False)  # fmt: skip
        envoy = start_envoy(gw, name, boot, ready=False)
        try:
            wait_until(lambda r=reason, b=before: failures(gw, r) > b, timeout=20, message=f"{name} not refused")
            assert f"refused ({reason})" in gw.log_text() and logged in gw.log_text()
            assert not has_listeners(envoy), f"{name} got listeners"
            assert all(s["node_id"] != name for s in gw.admin("/debug/syncz"))
        finally:
            envoy.stop()
    # The "edge" certificate is good for its own group.
    edge_boot = render_bootstrap(xds_address=f"127.0.0.1:{gw.xds_port}", node_id="edge-1", node_cluster="edge",
                                 tls=edge, admin_port=0)  # fmt: skip
    envoy = start_envoy(gw, "edge-1", edge_boot)
    try:
        wait_until(lambda: has_listeners(envoy), timeout=20, message="edge Envoy never got listeners")
    finally:
        envoy.stop()


def test_keys_reach_only_authenticated_clients(make_gateway) -> None:
    secure = make_gateway(envoy=False).start()
    site_key, upstream_key = write_tls_site(secure)
    # (the generated default certificate is there from the start: wait for the site's own)
    wait_until(lambda: set(resource_names(secure, "SDS")) - {GENERATED_NAME} and resource_names(secure, "CDS"),
               timeout=20, message="secret not built")  # fmt: skip
    secrets = resource_names(secure, "SDS")
    issued = LocalCA(secure.state_dir).client(GROUP)
    creds = grpc.ssl_channel_credentials(issued.ca.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes())
    got = ads_fetch(secure.xds_port, SECRET, secrets, credentials=creds).SerializeToString()
    assert any(n in got for n in key_needles(site_key))  # the authenticated gateway does get its key

    # TLS without a client certificate or token: refused before anything is sent.
    ca_only = grpc.ssl_channel_credentials(issued.ca.read_bytes())
    assert refused_code(lambda: ads_fetch(secure.xds_port, SECRET, secrets, credentials=ca_only)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # Plaintext against the TLS port gets nothing either.
    before = failures(secure, "tls_handshake")
    assert refused_code(lambda: ads_fetch(secure.xds_port, SECRET, secrets)) == grpc.StatusCode.UNAVAILABLE
    assert failures(secure, "tls_handshake") > before

    insecure = make_gateway(envoy=False, serve_args=("--watch-ingress-without-class", "--xds-insecure")).start()
    site_key, upstream_key = write_tls_site(insecure)
    wait_until(lambda: set(resource_names(insecure, "SDS")) - {GENERATED_NAME}, timeout=20, message="secret not built")
    assert GENERATED_NAME in resource_names(insecure, "SDS")  # the default certificate's key is withheld too
    secret_resp = ads_fetch(insecure.xds_port, SECRET, resource_names(insecure, "SDS"))
    cluster_resp = ads_fetch(insecure.xds_port, CLUSTER)
    assert secret_resp.resources and b"BEGIN CERTIFICATE" in secret_resp.SerializeToString()  # the chain is there
    assert any(b"UpstreamTlsContext" in r.value for r in cluster_resp.resources)  # the TLS cluster is there
    for resp in (secret_resp, cluster_resp):
        raw = resp.SerializeToString()
        default_key = (insecure.state_dir / KEY_FILE).read_bytes()
        for needle in key_needles(site_key) + key_needles(upstream_key) + key_needles(default_key):
            assert needle not in raw


@pytest.fixture
def kube_gw(tmp_path: Path) -> Iterator[KubeGateway]:
    allow = "edge=system:serviceaccount:gw:envoy"
    g = KubeGateway(tmp_path / "kubegw", envoy=False,
                    serve_args=("--watch-ingress-without-class", "--xds-allow", allow))  # fmt: skip
    try:
        g.start()
        yield g
    finally:
        g.stop()


def test_service_account_tokens_via_token_review(kube_gw: KubeGateway) -> None:
    gw = kube_gw
    api = gw.kubes[PRIMARY]
    gw.backend("web")
    gw.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))]))
    ca = (gw.state_dir / "xds-ca.pem").read_bytes()
    tls_only = grpc.ssl_channel_credentials(ca)

    good = api.issue_token("gw", "envoy", ("meridian-xds",))
    bearer = [("authorization", f"Bearer {good}")]
    resp = ads_fetch(gw.xds_port, CLUSTER, group="edge", credentials=tls_only, metadata=bearer)
    assert resp.type_url == CLUSTER

    other_audience = api.issue_token("gw", "envoy")  # the API server's default audience, not ours
    stranger = api.issue_token("default", "someone", ("meridian-xds",))
    cases = [
        (other_audience, "edge", grpc.StatusCode.UNAUTHENTICATED, "invalid_token"),
        ("not-a-token", "edge", grpc.StatusCode.UNAUTHENTICATED, "invalid_token"),
        (good, "other", grpc.StatusCode.PERMISSION_DENIED, "group_not_allowed"),
        (stranger, "edge", grpc.StatusCode.PERMISSION_DENIED, "group_not_allowed"),
    ]
    for token, group, code, reason in cases:
        before = failures(gw, reason)
        assert refused_code(lambda t=token, g=group: ads_fetch(
            gw.xds_port, CLUSTER, group=g, credentials=tls_only, metadata=[("authorization", f"Bearer {t}")]
        )) == code  # fmt: skip
        assert failures(gw, reason) == before + 1
    for token in (good, other_audience, stranger):
        assert token not in gw.log_text()

    # A real Envoy authenticating with the token (bootstrap initial_metadata) gets config and serves.
    token_file = gw.root / "envoy.token"
    token_file.write_text(good)
    ca_only = XdsClientTls(ca=str(gw.state_dir / "xds-ca.pem"))
    boot = render_bootstrap(xds_address=f"127.0.0.1:{gw.xds_port}", node_id="token-gw", node_cluster="edge",
                            tls=ca_only, token=token_file.read_text())  # fmt: skip
    envoy = start_envoy(gw, "token-envoy", boot)
    try:
        wait_until(lambda: has_listeners(envoy), timeout=20, message="token Envoy never got listeners")
        gw.wait_served_by("web.example.com", "/", "web")
        (stream,) = [s for s in gw.admin("/debug/syncz") if s["node_id"] == "token-gw"]
        assert stream["identity"] == "token:system:serviceaccount:gw:envoy"
    finally:
        envoy.stop()


def test_readme_commands_work_with_the_default_state_dir(tmp_path: Path) -> None:
    """`meridian serve --cluster ...` then `meridian bootstrap ...` with no certificate flags: the
    bootstrap finds the CA `serve` made under the default cache directory and Envoy is served."""
    xds, admin, http = free_ports(3)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    manifests = tmp_path / "c1"
    manifests.mkdir()
    fleet = EchoFleet()
    web = fleet.add(service="web", pod="web-0", namespace="default", cluster="c1")
    (manifests / "app.yaml").write_text(dump_manifests([
        *service_manifests("web", [web]),
        ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))]),
    ]))  # fmt: skip
    log = (tmp_path / "meridian.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "serve", "--cluster", f"c1={manifests}", "--watch-ingress-without-class",
         "--xds-address", f"127.0.0.1:{xds}", "--admin-address", f"127.0.0.1:{admin}",
         "--listen-address", "127.0.0.1", "--http-port", str(http), "--https-port", "0", "--east-west-port", "0"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    envoy = None
    try:
        boot = subprocess.run(
            [sys.executable, "-m", "controlplane", "bootstrap", "--xds-address", f"127.0.0.1:{xds}",
             "--node-id", "gw-1", "--node-cluster", "edge", "--admin-port", "0"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        doc = yaml.safe_load(boot.stdout)
        assert "transport_socket" in doc["static_resources"]["clusters"][0]
        envoy = EnvoyProcess(doc, workdir=tmp_path / "envoy")
        envoy.start()

        def served() -> bool:
            try:
                r = request("GET", http, "/", host="web.example.com", timeout=2)
            except OSError:
                return False
            return r.status == 200 and r.json().get("service") == "web"

        wait_until(served, timeout=30, message="the README's commands did not serve the route")
        assert (tmp_path / "cache" / "meridian" / "xds-ca.pem").exists()
    finally:
        if envoy is not None:
            envoy.stop()
        serve.terminate()
        serve.wait(10)
        log.close()
        fleet.close()


def test_plaintext_client_with_a_token_is_authenticated(tmp_path: Path) -> None:
    """Under --xds-insecure a valid token still authenticates (and gets keys); a bad one is refused,
    never downgraded to anonymous."""
    allow = "edge=system:serviceaccount:gw:envoy"
    gw = KubeGateway(tmp_path / "kubegw", envoy=False,
                     serve_args=("--watch-ingress-without-class", "--xds-insecure", "--xds-allow", allow))  # fmt: skip
    try:
        gw.start()
        ca = make_ca()
        leaf = issue_cert(ca, ["secure.example.com"])
        gw.backend("web")
        gw.apply([tls_secret("site-tls", "default", leaf.cert, leaf.key),
                  ingress("site", [rule("secure.example.com", ("/", "Prefix", "web", 80))],
                          tls=[{"hosts": ["secure.example.com"], "secretName": "site-tls"}])])  # fmt: skip
        wait_until(lambda: resource_names(gw, "SDS"), timeout=20, message="secret not built")
        names = resource_names(gw, "SDS")
        token = gw.kubes[PRIMARY].issue_token("gw", "envoy", ("meridian-xds",))

        bearer = [("authorization", f"Bearer {token}")]
        with_token = ads_fetch(gw.xds_port, SECRET, names, group="edge", metadata=bearer)
        assert any(n in with_token.SerializeToString() for n in key_needles(leaf.key))
        anonymous = ads_fetch(gw.xds_port, SECRET, names, group="edge")
        assert anonymous.resources and not any(n in anonymous.SerializeToString() for n in key_needles(leaf.key))
        bad = [("authorization", "Bearer forged")]
        assert refused_code(lambda: ads_fetch(gw.xds_port, SECRET, names, group="edge", metadata=bad)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    finally:
        gw.stop()
