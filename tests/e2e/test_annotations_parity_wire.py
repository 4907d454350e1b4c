"""ingress-nginx parity on the wire, through a real Envoy: what a client receives byte for byte where
the usual clients hide it.

- permanent-redirect with a port that is not a number (`http://h:x`): ingress-nginx checks the value
  with its character validator only (no url.Parse, unlike temporal-redirect), so nginx's
  `return 301 http://h:x` sends it as written;
- the CORS preflight's 204 over HTTP/2 carries `content-length: 0`, as nginx's HTTP/2 header filter
  prints the template's header. nghttp2-based clients (curl) remove that header from a 204, so the
  response is read here with the `h2` library, header validation off;
- canary-by-header-pattern with PCRE-only syntax (\\h, POSIX classes, recursion, \\Q..\\E, \\p) and
  header values with bytes above 127 (PCRE reads bytes, RE2 UTF-8), each answer checked against
  real PCRE1 (libpcre3) first, and what the match limit costs Envoy's worker.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.e2e.test_annotations_parity import ann
from tests.support import pcre1
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

# host -> pattern; each canary Ingress has the header X-Canary and no cookie or weight.
PATTERNS = {
    "pat-h.example.com": "^\\h*beta[[:digit:]]+$",  # \h holds the byte 0xA0; POSIX class
    "pat-rec.example.com": "^(\\((?:[^()]|(?1))*\\))$",  # recursion: balanced parentheses
    "pat-q.example.com": "^\\Qa.b\\E$",  # literal text (RE2 runs it)
    "pat-dot.example.com": "^b.ta$",  # one byte, not one UTF-8 character
    "pat-p.example.com": "^\\p{Lu}+$",  # Unicode property of each byte read as Latin-1
    "pat-limit.example.com": "^(a|a)+$",  # exponential: past PCRE's match limit on a long value
}

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
        canaries = []
        for n, (host, pattern) in enumerate(PATTERNS.items()):
            canaries.append(ingress(f"pat-main-{n}", [rule(host, ("/", "Prefix", "web", 80))]))
            canaries.append(ingress(f"pat-canary-{n}", [rule(host, ("/", "Prefix", "other", 80))], annotations=ann(
                {"canary": "true", "canary-by-header": "X-Canary", "canary-by-header-pattern": pattern})))
        g.backend("other")
        g.write("patterns.yaml", canaries)
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


def raw_get(gw: Gateway, host: str, value: bytes) -> tuple[int, str]:
    """GET / with X-Canary sent as raw bytes (Latin-1 on the wire): (status, the service that answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=60)
    try:
        conn.putrequest("GET", "/", skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("X-Canary", value)
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
        return r.status, (r.getheader("X-Echo-Service") or body.decode(errors="replace"))
    finally:
        conn.close()


def _requests_by_service(gw: Gateway) -> dict[str, int]:
    """Envoy's count of upstream requests per Service (web, other), from its admin stats."""
    assert gw.envoy is not None
    out: dict[str, int] = {}
    for name, count in gw.envoy.stats("upstream_rq_total").items():
        for service in ("web", "other"):
            if f"/{service}_" in name:  # cluster.default/web_80.upstream_rq_total
                out[service] = out.get(service, 0) + count
    return out


def served(gw: Gateway, host: str, value: bytes) -> str:
    """The Service Envoy sent the request to (the echo backends answer 500 to bytes that are not
    UTF-8, so Envoy's own upstream counters say which one it was)."""
    before = _requests_by_service(gw)
    status, service = raw_get(gw, host, value)
    if status == 200:
        return service
    after = _requests_by_service(gw)
    went = [s for s in after if after[s] != before.get(s, 0)]
    assert status == 500 and len(went) == 1, (host, value, status, service, before, after)
    return went[0]


CASES = [
    ("pat-h.example.com", [b"beta7", b"\xa0\tbeta42", b" beta1", b"beta", b"\x85beta1", b"xbeta1"]),
    ("pat-rec.example.com", [b"(a(b)c)", b"((()))", b"(a(b c)", b"(()", b"x"]),
    ("pat-q.example.com", [b"a.b", b"axb", b"a.bc"]),
    ("pat-dot.example.com", [b"beta", "b\u00e9ta".encode(), "b\u00e9ta".encode("latin-1"), b"bta"]),
    ("pat-p.example.com", [b"ABC", "\u00c9T\u00c9".encode("latin-1"), "\u00c9T\u00c9".encode(), b"aB"]),
]


NEEDS_PCRE1 = pytest.mark.skipif(pcre1.library() is None, reason="libpcre3 (real PCRE1) is not installed")


@NEEDS_PCRE1
@pytest.mark.parametrize(("host", "values"), CASES, ids=[h.split(".")[0] for h, _ in CASES])
def test_canary_pattern_answers_as_pcre1(gw: Gateway, host: str, values: list[bytes]) -> None:
    pattern = PATTERNS[host]
    wait_until(lambda: served(gw, host, values[0]) == "other", timeout=15, message=f"{host}: no canary")
    for value in values:
        want = pcre1.search(pattern, value)  # real PCRE1: match or nomatch (no error on these)
        assert want in ("match", "nomatch"), (pattern, value, want)
        assert served(gw, host, value) == ("other" if want == "match" else "web"), (pattern, value, want)


def _cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@NEEDS_PCRE1
def test_match_limit_is_pcres_and_what_it_costs_envoy(gw: Gateway) -> None:
    host = "pat-limit.example.com"
    wait_until(lambda: served(gw, host, b"aaaa") == "other", timeout=15, message="no canary")
    value = b"a" * 30 + b"!"
    assert pcre1.search(PATTERNS[host], value) == "error"  # ngx.re.match fails: the main Service
    assert pcre1.search(PATTERNS[host], b"a" * 17 + b"!") == "nomatch"  # 2^17 steps: an answer
    assert served(gw, host, b"a" * 17 + b"!") == "web"
    assert gw.envoy is not None and gw.envoy.pid is not None
    pid = gw.envoy.pid
    before, wall = _cpu_ms(pid), time.monotonic()
    assert served(gw, host, value) == "web"
    cpu, wall = _cpu_ms(pid) - before, (time.monotonic() - wall) * 1000
    print(f"\nmatch limit (10,000,000 steps) in Envoy's LuaJIT: {cpu:.0f} ms CPU, {wall:.0f} ms wall")
    assert cpu < 20_000  # bounded: the search stops at the limit
