"""The pieces of xDS security on their own: local CA, identities and group policy, key redaction for
anonymous streams, server certificate rotation, and the bootstrap's TLS/token rendering."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from controlplane import cli
from controlplane.bootstrap import XdsClientTls, render_bootstrap
from controlplane.devtools.envoy_proc import envoy_binary
from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth, bearer_token
from controlplane.xds.cache import SnapshotCache, TypeSnapshot, make_resource
from controlplane.xds.identity import ANONYMOUS, MTLS, TOKEN, GroupPolicy, Peer, group_dns_name, group_of_uri, group_uri
from controlplane.xds.keyless import KeylessView
from controlplane.xds.localca import LocalCA
from controlplane.xds.resources import CLUSTER, LISTENER, SECRET
from controlplane.xds.server import XdsServer
from controlplane.xds.tlsfront import TlsFiles
from tests.support.certs import issue_cert, make_ca


def _sans(path: Path) -> list[object]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_local_ca_is_reused_and_reissues_only_when_needed(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "state")
    first = ca.server(["localhost", "127.0.0.1"])
    before = {p: p.read_bytes() for p in (first.cert, first.key, first.ca)}
    again = LocalCA(tmp_path / "state").server(["127.0.0.1"])  # a subset: still covered
    assert {p: p.read_bytes() for p in (again.cert, again.key, again.ca)} == before
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state" / "xds-ca-key.pem").stat().st_mode) == 0o600

    wider = ca.server(["localhost", "127.0.0.1", "meridian.example"])
    assert wider.cert.read_bytes() != before[first.cert]  # a new name: re-issued by the same CA
    assert wider.ca.read_bytes() == before[first.ca]
    assert x509.DNSName("meridian.example") in _sans(wider.cert)

    client = ca.client("edge/../x")
    assert client.cert.parent == tmp_path / "state" / "clients"  # the group cannot steer the path
    (uri,) = _sans(client.cert)
    assert uri == x509.UniformResourceIdentifier(group_uri("edge/../x"))
    assert group_of_uri(uri.value) == "edge/../x"
    assert ca.client("edge/../x").cert.read_bytes() == client.cert.read_bytes()


def test_group_policy() -> None:
    policy = GroupPolicy.from_rules([("edge", "system:serviceaccount:gw:envoy")])
    cert_edge = Peer(MTLS, frozenset({group_uri("edge")}))
    assert policy.may_claim(cert_edge, "edge")
    assert not policy.may_claim(cert_edge, "internal")
    sa = Peer(TOKEN, frozenset({"system:serviceaccount:gw:envoy"}))
    assert policy.may_claim(sa, "edge") and not policy.may_claim(sa, "internal")
    assert not policy.may_claim(Peer(TOKEN, frozenset({"system:serviceaccount:gw:other"})), "edge")
    assert not policy.may_claim(Peer(ANONYMOUS), "edge")
    assert not policy.may_claim(cert_edge, "")
    helm_made = Peer(MTLS, frozenset({group_dns_name("edge"), "meridian.example"}))  # no URI SANs in Helm
    assert policy.may_claim(helm_made, "edge") and not policy.may_claim(helm_made, "meridian")


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None


def test_keyless_view_takes_out_every_private_key() -> None:
    ca = make_ca()
    leaf = issue_cert(ca, ["a.example"])
    secret = secret_pb2.Secret(name="default/a")
    secret.tls_certificate.certificate_chain.inline_bytes = leaf.cert
    secret.tls_certificate.private_key.inline_bytes = leaf.key
    cluster = cluster_pb2.Cluster(name="default/web:443")
    ctx = tls_pb2.UpstreamTlsContext(sni="web")
    cert = ctx.common_tls_context.tls_certificates.add()
    cert.certificate_chain.inline_bytes = leaf.cert
    cert.private_key.inline_bytes = leaf.key
    ctx.common_tls_context.validation_context.trusted_ca.inline_bytes = ca.cert
    cluster.transport_socket.name = "envoy.transport_sockets.tls"
    cluster.transport_socket.typed_config.Pack(ctx)
    plain = cluster_pb2.Cluster(name="default/plain:80")

    view = KeylessView()
    res_secret = make_resource("default/a", SECRET, secret)
    res_cluster = make_resource("default/web:443", CLUSTER, cluster)
    res_plain = make_resource("default/plain:80", CLUSTER, plain)
    secrets = view.snapshot(SECRET, TypeSnapshot(3, {"default/a": res_secret}))
    clusters = view.snapshot(CLUSTER, TypeSnapshot(4, {r.name: r for r in (res_cluster, res_plain)}))
    assert (secrets.version, clusters.version) == (3, 4)

    got = secret_pb2.Secret.FromString(any_pb2.Any.FromString(secrets.resources["default/a"].any_bytes).value)
    assert got.tls_certificate.certificate_chain.inline_bytes == leaf.cert
    assert not got.tls_certificate.HasField("private_key")
    got_cluster = cluster_pb2.Cluster.FromString(
        any_pb2.Any.FromString(clusters.resources["default/web:443"].any_bytes).value
    )
    got_ctx = tls_pb2.UpstreamTlsContext()
    got_cluster.transport_socket.typed_config.Unpack(got_ctx)
    assert not got_ctx.common_tls_context.tls_certificates and got_ctx.sni == "web"
    assert got_ctx.common_tls_context.validation_context.trusted_ca.inline_bytes == ca.cert
    assert clusters.resources["default/plain:80"] is res_plain  # nothing to take out: the same bytes
    for res in (*secrets.resources.values(), *clusters.resources.values()):
        assert leaf.key not in res.any_bytes
    listeners = TypeSnapshot(1, {})
    assert view.snapshot(LISTENER, listeners) is listeners


def _served_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(
        raw, server_hostname="127.0.0.1"
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotated_server_certificate_is_served_without_restart(tmp_path: Path) -> None:
    local = LocalCA(tmp_path)
    files = local.server(["127.0.0.1"])
    metrics = Metrics()
    cache = SnapshotCache()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=False),
                       tls=TlsFiles(files.cert, files.key, files.ca))  # fmt: skip
    port = await server.start("127.0.0.1:0")
    try:
        first = await asyncio.to_thread(_served_serial, port, files.ca)
        files.cert.unlink()  # as cert-manager or an operator replaces it
        rotated = local.server(["127.0.0.1"])
        want = x509.load_pem_x509_certificate(rotated.cert.read_bytes()).serial_number
        assert want != first
        assert await asyncio.to_thread(_served_serial, port, files.ca) == want

        rotated.key.write_bytes(b"half-written")  # a broken rotation keeps the last good certificate
        assert await asyncio.to_thread(_served_serial, port, files.ca) == want
    finally:
        await server.stop()


async def test_the_grpc_socket_behind_the_tls_front_is_private_and_refuses_direct_clients(tmp_path: Path) -> None:
    """gRPC listens on a Unix socket in a directory only this user may enter, removed on shutdown;
    dialling it around the TLS front leaves no record of a verified client: refused."""
    files = LocalCA(tmp_path).server(["127.0.0.1"])
    metrics = Metrics()
    cache = SnapshotCache()
    cache.ready = True
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=False),
                       tls=TlsFiles(files.cert, files.key, files.ca))  # fmt: skip
    await server.start("127.0.0.1:0")
    assert server.grpc_address.startswith("unix:")
    socket_path = Path(server.grpc_address.removeprefix("unix:"))
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    try:
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            with pytest.raises(grpc.aio.AioRpcError) as info:  # refused at once: the write may see it too
                await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="x", cluster="g"),
                                                                type_url=CLUSTER))  # fmt: skip
                await call.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        sample = metrics.registry.get_sample_value("meridian_xds_auth_failures_total", {"reason": "unknown_connection"})
        assert sample == 1
    finally:
        await server.stop()
    assert not socket_path.parent.exists()


def test_plaintext_needs_an_explicit_insecure() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="insecure"):
        XdsServer(SnapshotCache(), metrics, auth=XdsAuth(metrics, insecure=False))


def test_bootstrap_renders_tls_and_token() -> None:
    tls = XdsClientTls(ca="/etc/meridian/ca.crt", cert="/etc/meridian/tls.crt", key="/etc/meridian/tls.key")
    boot = render_bootstrap(xds_address="meridian.ns.svc:18000", node_id="gw", tls=tls, token="t0k")
    (cluster,) = boot["static_resources"]["clusters"]
    ctx = cluster["transport_socket"]["typed_config"]
    assert ctx["sni"] == "meridian.ns.svc"
    common = ctx["common_tls_context"]
    assert common["validation_context"]["trusted_ca"] == {"filename": "/etc/meridian/ca.crt"}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "meridian.ns.svc"}}
    ]
    assert common["tls_certificates"][0]["private_key"] == {"filename": "/etc/meridian/tls.key"}
    (svc,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    assert svc["initial_metadata"] == [{"key": "authorization", "value": "Bearer t0k"}]
    by_ip = render_bootstrap(xds_address="127.0.0.1:18000", node_id="gw", tls=XdsClientTls(ca="/ca"))
    ip_ctx = by_ip["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert "sni" not in ip_ctx and "tls_certificates" not in ip_ctx["common_tls_context"]
    plain = render_bootstrap(xds_address="127.0.0.1:18000", node_id="gw")
    assert "transport_socket" not in plain["static_resources"]["clusters"][0]


def _bootstrap_cli(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["bootstrap", *args]) == 0
    return yaml.safe_load(out.getvalue())


def test_bootstrap_command_uses_the_state_dir_and_envoy_accepts_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    boot = _bootstrap_cli("--xds-address", "127.0.0.1:18000", "--node-id", "gw-1", "--node-cluster", "edge",
                          "--state-dir", str(state))  # fmt: skip
    common = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    cert_path = Path(common["tls_certificates"][0]["certificate_chain"]["filename"])
    assert cert_path.is_absolute() and cert_path.parent == state / "clients"
    assert x509.UniformResourceIdentifier(group_uri("edge")) in _sans(cert_path)
    assert common["validation_context"]["trusted_ca"]["filename"] == str(state / "xds-ca.pem")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(boot))
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    token = tmp_path / "token"
    token.write_text("abc\n")
    with_token = _bootstrap_cli("--node-id", "gw-1", "--state-dir", str(state), "--xds-token-file", str(token))
    common = with_token["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "tls_certificates" not in common  # the token is the credential
    svc = with_token["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert svc["initial_metadata"] == [{"key": "authorization", "value": "Bearer abc"}]
    with pytest.raises(SystemExit, match="nothing to authenticate with"):
        _bootstrap_cli("--node-id", "gw-1", "--xds-ca", str(state / "xds-ca.pem"))
    insecure = _bootstrap_cli("--node-id", "gw-1", "--xds-insecure", "--state-dir", str(state))
    assert "transport_socket" not in insecure["static_resources"]["clusters"][0]


def test_serve_rejects_contradictory_xds_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["serve", "--xds-insecure", "--xds-cert", "a", "--xds-key", "b", "--xds-ca", "c"],
                 ["serve", "--xds-cert", "a"], ["serve", "--xds-allow", "no-equals-sign"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "GROUP=IDENTITY" in capsys.readouterr().err
