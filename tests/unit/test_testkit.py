"""Tests of the shared test kit: echo backends, EnvoyProcess, the HTTP client and wait helpers."""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect as ws_connect

from controlplane.devtools.echo import (
    EchoFleet,
    EchoServer,
    _parse_server_spec,
    canonical_header_name,
    fake_pod_ip,
)
from controlplane.devtools.envoy_proc import EnvoyError, EnvoyProcess, envoy_binary
from tests.support.http import Client, get, request, request_async
from tests.support.ports import free_port, free_ports
from tests.support.wait import wait_until, wait_until_async


@pytest.fixture(scope="module")
def fleet() -> Iterator[EchoFleet]:
    with EchoFleet() as f:
        yield f


def self_signed(tmp_path: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for `hostname` (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{hostname}.crt", tmp_path / f"{hostname}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# ---------------------------------------------------------------- echo server


def test_echo_reports_identity_and_request(fleet: EchoFleet) -> None:
    srv = fleet.add(service="foo", pod="foo-1", namespace="ns1", cluster="east")
    resp = request(
        "POST", srv.port, "/a/b?x=1&y=2", host="foo.example.com",
        headers={"x-custom": "v1"}, body="hello body",
    )
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["X-Echo-Service"] == "foo"
    assert resp.headers["x-echo-pod"] == "foo-1"
    for name in ("Content-Length", "Date", "Server"):
        assert name in resp.headers
    body = resp.json()
    assert body["service"] == "foo"
    assert body["pod"] == "foo-1"
    assert body["namespace"] == "ns1"
    assert body["cluster"] == "east"
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", body["pod_ip"])
    assert body["pod_ip"] == fake_pod_ip("foo-1") != fake_pod_ip("foo-2")
    assert body["method"] == "POST"
    assert body["path"] == "/a/b?x=1&y=2"
    assert body["host"] == "foo.example.com"
    assert body["proto"] == "HTTP/1.1"
    assert body["headers"]["User-Agent"] == "Go-http-client/1.1"
    assert body["headers"]["X-Custom"] == "v1"
    assert body["body"] == "hello body"
    assert body["tls"] is False


def test_echo_truncates_large_body(fleet: EchoFleet) -> None:
    srv = fleet.add(service="big")
    resp = request("PUT", srv.port, "/", body=b"a" * (100 * 1024))
    body = resp.json()
    assert len(body["body"]) == 64 * 1024
    assert body["body_length"] == 100 * 1024


def test_canonical_header_names() -> None:
    assert canonical_header_name("user-agent") == "User-Agent"
    assert canonical_header_name("X-FORWARDED-FOR") == "X-Forwarded-For"


def test_fail_first_counts_per_request_key_then_per_path(fleet: EchoFleet) -> None:
    srv = fleet.add(service="flaky", fail_first=2)
    statuses_a = [request("GET", srv.port, "/p", headers={"X-Request-Key": "a"}).status for _ in range(3)]
    statuses_b = [request("GET", srv.port, "/p", headers={"X-Request-Key": "b"}).status for _ in range(3)]
    assert statuses_a == [503, 503, 200]
    assert statuses_b == [503, 503, 200]
    # Without a key the path is the key.
    assert [get(srv.port, "/q").status for _ in range(3)] == [503, 503, 200]
    assert get(srv.port, "/r").status == 503
    assert srv.request_count == 10
    srv.reset()
    assert srv.request_count == 0
    assert get(srv.port, "/q").status == 503


def test_status_header_and_override(fleet: EchoFleet) -> None:
    srv = fleet.add(service="st")
    assert get(srv.port, "/", headers={"X-Echo-Status": "418"}).status == 418
    no_content = get(srv.port, "/", headers={"X-Echo-Status": "204"})
    assert (no_content.status, no_content.body) == (204, b"")
    assert no_content.headers["X-Echo-Pod"] == srv.pod
    srv.status_override = 500
    assert get(srv.port, "/").status == 500
    srv.status_override = None
    assert get(srv.port, "/").status == 200


def test_delay_knob_and_header(fleet: EchoFleet) -> None:
    slow = fleet.add(service="slow", delay=0.3)
    t0 = time.monotonic()
    assert get(slow.port, "/").status == 200
    assert time.monotonic() - t0 >= 0.3
    # The header overrides the constructor delay, both ways.
    t0 = time.monotonic()
    assert get(slow.port, "/", headers={"X-Echo-Delay": "0"}).status == 200
    assert time.monotonic() - t0 < 0.25
    fast = fleet.add(service="fast")
    with pytest.raises(TimeoutError):
        get(fast.port, "/", headers={"X-Echo-Delay": "2"}, timeout=0.2)


def test_requests_are_recorded_for_mirror_tests(fleet: EchoFleet) -> None:
    srv = fleet.add(service="rec")
    request("DELETE", srv.port, "/x?y=1", headers={"X-Trace": "t1"})
    get(srv.port, "/z")
    seen = srv.requests
    assert [(r.method, r.path) for r in seen] == [("DELETE", "/x?y=1"), ("GET", "/z")]
    method, path, headers = seen[0]
    assert (method, path, headers["X-Trace"]) == ("DELETE", "/x?y=1", "t1")


def test_websocket_echo_prefixes_pod(fleet: EchoFleet) -> None:
    srv = fleet.add(service="ws", pod="ws-7")
    with ws_connect(f"ws://127.0.0.1:{srv.port}/ws", open_timeout=5) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ws-7: ping"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"


def test_fleet_of_ten_and_remove() -> None:
    with EchoFleet() as f:
        servers = f.add_many("lb", 10, namespace="ns", cluster="c2")
        assert len({s.port for s in servers}) == 10
        with Client(servers[0].port) as c:  # kept-alive connection serves several requests
            assert [c.get("/").json()["pod"] for _ in range(3)] == ["lb-1"] * 3
        pods = {get(s.port, "/").json()["pod"] for s in servers}
        assert pods == {f"lb-{i}" for i in range(1, 11)}
        assert len({get(s.port, "/").json()["pod_ip"] for s in servers}) == 10
        gone = servers[3]
        f.remove(gone)
        assert gone not in f.servers and len(f.servers) == 9
        with pytest.raises(ConnectionRefusedError):
            get(gone.port, "/", timeout=1)
        assert get(servers[4].port, "/").status == 200
    with pytest.raises(OSError):
        get(servers[4].port, "/", timeout=1)


async def test_fleet_from_asyncio(fleet: EchoFleet) -> None:
    srv = await fleet.add_async(service="aio", pod="aio-1")
    resp = await request_async("GET", srv.port, "/async", host="aio.local")
    assert resp.json()["host"] == "aio.local"
    await wait_until_async(lambda: srv.request_count == 1, timeout=2)


def test_tls_echo_and_client_sni_and_peer_certificate(fleet: EchoFleet, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "foo.bar.com")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = fleet.add(service="tls", ssl_context=ctx)
    resp = request("GET", srv.port, "/", host="foo.bar.com", tls=True, ca=str(cert))
    assert resp.status == 200
    assert resp.json()["tls"] is True
    assert resp.tls_version == "TLSv1.3"
    assert "foo.bar.com" in resp.peer_cert_names()
    capped = request("GET", srv.port, "/", tls=True, tls_max_version=ssl.TLSVersion.TLSv1_2)
    assert capped.tls_version == "TLSv1.2"
    # Verification is real: a Host/SNI that the certificate does not cover fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        request("GET", srv.port, "/", host="other.bar.com", tls=True, ca=cert.read_text())


def test_server_spec_parsing() -> None:
    spec = _parse_server_spec("listen=127.0.0.1:9001,service=foo,pod=foo-1,cluster=c9,delay=0.5")
    assert spec == {"host": "127.0.0.1", "port": 9001, "service": "foo", "pod": "foo-1",
                    "cluster": "c9", "delay": 0.5}
    with pytest.raises(ValueError):
        _parse_server_spec("listen=127.0.0.1:1,bogus=1")


def test_echo_cli_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.devtools.echo", "--listen", f"127.0.0.1:{port}",
         "--service", "cli-svc", "--pod", "cli-1", "--namespace", "demo", "--cluster", "c3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        body = wait_until(lambda: get(port, "/", timeout=1).json(), timeout=10, message="echo CLI up")
        assert (body["service"], body["pod"], body["namespace"], body["cluster"]) == (
            "cli-svc", "cli-1", "demo", "c3")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert b'"listening"' in out


def test_echo_server_standalone_in_own_loop() -> None:
    import asyncio

    async def main() -> dict[str, Any]:
        srv = await EchoServer(service="solo", pod="solo-1").start()
        try:
            return (await request_async("GET", srv.port, "/")).json()
        finally:
            await srv.close()

    assert asyncio.run(main())["pod"] == "solo-1"


# ---------------------------------------------------------------- Envoy


def _hcm(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager",
            "stat_prefix": "ingress",
            "route_config": {
                "name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }],
        },
    }


def _static_bootstrap(echo_port: int) -> dict[str, Any]:
    routes = [
        {"match": {"path": "/direct"},
         "direct_response": {"status": 200, "body": {"inline_string": "hello"}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "echo"}},
    ]
    return {
        "node": {"id": "testkit", "cluster": "testkit"},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [_hcm(routes)]}],
            }],
            "clusters": [{
                "name": "echo",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": echo_port}}}
                }]}]},
            }],
        },
    }


def test_envoy_binary_runs() -> None:
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30)
    assert "1.40" in out.stdout


def test_envoy_routes_to_echo_and_exposes_admin(fleet: EchoFleet) -> None:
    srv = fleet.add(service="behind-envoy", pod="be-1")
    with EnvoyProcess(_static_bootstrap(srv.port)) as envoy:
        assert envoy.running() and envoy.admin_port > 0
        port = envoy.listener_port("ingress")
        assert port > 0
        direct = get(port, "/direct")
        assert (direct.status, direct.body) == (200, b"hello")
        assert direct.headers["server"] == "envoy"
        resp = get(port, "/via?q=1", host="foo.example.com", user_agent="testkit/1")
        assert resp.status == 200
        body = resp.json()
        assert (body["service"], body["pod"], body["host"], body["path"]) == (
            "behind-envoy", "be-1", "foo.example.com", "/via?q=1")
        assert body["headers"]["User-Agent"] == "testkit/1"
        assert "X-Request-Id" in body["headers"]  # added by Envoy, so the request really went through it
        assert srv.request_count == 1
        wait_until(lambda: envoy.stat("cluster.echo.upstream_rq_200") == 1, timeout=5,
                   message="upstream_rq_200 stat")
        assert envoy.stats()["cluster.echo.upstream_rq_total"] == 1
        dump = envoy.config_dump()
        types = [c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]]
        assert "ListenersConfigDump" in types and "ClustersConfigDump" in types
        wait_until(lambda: "starting main dispatch loop" in envoy.log_text(), timeout=5,
                   message="Envoy log file is flushed")
        with pytest.raises(KeyError):
            envoy.listener_port("missing")
    assert not envoy.running()
    assert envoy.proc is not None and envoy.proc.returncode is not None
    assert not envoy.workdir.exists()  # temp dir removed after a clean exit


def test_envoy_failure_inside_block_keeps_log_and_adds_note(fleet: EchoFleet) -> None:
    srv = fleet.add(service="n")
    with pytest.raises(ZeroDivisionError) as info, EnvoyProcess(_static_bootstrap(srv.port)) as envoy:
        _ = 1 / 0
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "log tail" in notes and str(envoy.workdir) in notes
    assert envoy.log_path.exists()
    envoy.cleanup()
    assert not envoy.workdir.exists()


def test_envoy_bad_bootstrap_fails_fast_with_log() -> None:
    bad = {"static_resources": {"clusters": [{"name": "x", "type": "NOT_A_TYPE"}]}}
    t0 = time.monotonic()
    with pytest.raises(EnvoyError) as info, EnvoyProcess(bad):
        pass
    assert time.monotonic() - t0 < 10
    assert "exited with code" in str(info.value)
    assert "NOT_A_TYPE" in str(info.value)


# ---------------------------------------------------------------- wait / ports


def test_wait_until_returns_truthy_value() -> None:
    calls = iter([0, None, "", "done"])
    assert wait_until(lambda: next(calls), timeout=2, interval=0.001) == "done"


def test_wait_until_times_out_with_message_and_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as info:
        wait_until(lambda: [], timeout=0.2, message="route never appeared")
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 1.0
    text = str(info.value)
    assert "route never appeared" in text and "0.2s" in text and "last value: []" in text


def test_wait_until_reports_last_exception() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(AssertionError, match="ConnectionRefusedError: nobody home"):
        wait_until(boom, timeout=0.1)


async def test_wait_until_async_accepts_coroutines() -> None:
    state = {"n": 0}

    async def pred() -> int:
        state["n"] += 1
        return state["n"] if state["n"] >= 3 else 0

    assert await wait_until_async(pred, timeout=2, interval=0.001) == 3
    with pytest.raises(AssertionError, match="never"):
        await wait_until_async(lambda: False, timeout=0.05, message="never")


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
