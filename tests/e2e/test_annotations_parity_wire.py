"""ingress-nginx parity on the wire, through a real Envoy: what a client receives byte for byte where
the usual clients hide it.

- permanent-redirect with a port that is not a number (`http://h:x`): ingress-nginx checks the value
  with its character validator only (no url.Parse, unlike temporal-redirect), so nginx's
  `return 301 http://h:x` sends it as written;
- the CORS preflight's 204 over HTTP/2 carries `content-length: 0`, as nginx's HTTP/2 header filter
  prints the template's header. nghttp2-based clients (curl) remove that header from a 204, so the
  response is read here with the `h2` library, header validation off.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.e2e.test_annotations_parity import ann
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("parity-wire")))
    try:
        g.start()
        g.backend("web")
        root = [rule("redir-port.example.com", ("/", "Prefix", "web", 80))]
        cors = [rule("cors-h2.example.com", ("/", "Prefix", "web", 80))]
        temporal = [rule("temp-port.example.com", ("/", "Prefix", "web", 80))]
        g.write("wire.yaml", [
            ingress("redir-port", root, annotations=ann({"permanent-redirect": "http://h:x"})),
            ingress("temp-port", temporal, annotations=ann({"temporal-redirect": "http://h:x"})),
            ingress("cors-h2", cors, annotations=ann({"enable-cors": "true"})),
        ])  # fmt: skip
        g.wait_status("redir-port.example.com", "/", 301)
        yield g
    finally:
        g.stop()


def h2_request(port: int, host: str, method: str, path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """One HTTP/2 (prior knowledge) request: the response's header list exactly as sent, and its body."""
    config = h2.config.H2Configuration(client_side=True, validate_inbound_headers=False,
                                       normalize_inbound_headers=False)  # fmt: skip
    conn = h2.connection.H2Connection(config)
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn.initiate_connection()
        conn.send_headers(1, [(":method", method), (":path", path), (":scheme", "http"), (":authority", host),
                              ("origin", "https://o.example.org")], end_stream=True)  # fmt: skip
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65535)
            if not data:
                raise AssertionError("connection closed before the response ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {event.error_code}")
                elif isinstance(event, h2.events.StreamEnded):
                    return headers, body
            sock.sendall(conn.data_to_send())


def test_permanent_redirect_with_a_port_that_is_not_a_number_is_sent_as_written(gw: Gateway) -> None:
    r = gw.get("redir-port.example.com", "/a?b=1")
    assert r.status == 301 and r.headers["Location"] == "http://h:x"
    report = gw.ingress_report("redir-port")
    assert report is not None and not any(f["level"] == "warning" for f in report["findings"])
    # temporal-redirect goes through Go's url.Parse (isValidURL): no redirect, the backend answers.
    gw.wait_served_by("temp-port.example.com", "/", "web")


def test_cors_preflight_over_http2_carries_content_length_zero(gw: Gateway) -> None:
    wait_until(lambda: gw.get("cors-h2.example.com", "/").status == 200, timeout=15)
    headers, body = h2_request(gw.http_port, "cors-h2.example.com", "OPTIONS", "/x")
    got = dict(headers)
    assert got[b":status"] == b"204" and body == b""
    assert [v for k, v in headers if k == b"content-length"] == [b"0"]
    assert b"content-type" not in got and got[b"access-control-allow-origin"] == b"*"
    assert got[b"access-control-max-age"] == b"1728000"
    # An ordinary request over HTTP/2 gets the CORS headers too, from the backend's answer.
    headers, _ = h2_request(gw.http_port, "cors-h2.example.com", "GET", "/x")
    assert dict(headers)[b":status"] == b"200" and dict(headers)[b"access-control-allow-origin"] == b"*"
