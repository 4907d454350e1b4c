"""The request checks of the transcribed Knative ingress conformance (one function per step kind).

Each function raises AssertionError with the upstream test's wording of what went wrong. They run
after the case's KIngresses are ready (see runner.py), so, as upstream after
CreateIngressReady, every request must succeed the first time; only the first gRPC stream is
retried, since grpc-ping cannot answer the HTTP probes that establish readiness.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from websockets.sync.client import connect as ws_connect

from controlplane.devtools.echo import canonical_header_name
from tests.support.grpc_ping import PingStream
from tests.support.http import Client, Response
from tests.support.knative_images import BACKEND_HEADER

FIRST_STREAM_TIMEOUT = 15.0

# The listener a request goes to: the public load balancer (north-south HTTP or HTTPS) or the private one.
Listeners = dict[str, int]
# host -> PEM certificate the client trusts for it (upstream: the tls.Config of CreateTLSSecret).
Trust = dict[str, bytes]


def client(listeners: Listeners, trust: Trust, req: dict[str, Any], timeout: float = 10.0) -> Client:
    listener = req.get("listener", "public")
    if listener == "https":
        return Client(listeners["https"], host=req["host"], ca=trust[req["host"]], timeout=timeout)
    return Client(listeners[listener], host=req["host"], timeout=timeout)


def send(listeners: Listeners, trust: Trust, req: dict[str, Any], timeout: float = 10.0) -> Response:
    with client(listeners, trust, req, timeout) as c:
        return c.request(req.get("method", "GET"), req.get("path", "/"), headers=req.get("headers"))


def runtime_info(resp: Response) -> dict[str, Any]:
    """RuntimeRequest's checks: status 200 and a RuntimeInfo body; returns its `request`."""
    if resp.status != 200:
        raise AssertionError(f"got unexpected status: {resp.status}, expected [200]: {resp.text[:200]!r}")
    try:
        info = resp.json()["request"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"Unable to parse runtime image's response payload: {resp.text[:200]!r}") from exc
    return dict(info)


def header_get(info: dict[str, Any], name: str) -> str:
    """Go's http.Header.Get on RuntimeInfo.Request.Headers: the first value of the canonical name."""
    values = (info.get("headers") or {}).get(canonical_header_name(name)) or [""]
    return str(values[0])


def check(resp: Response, expect: dict[str, Any], hashes: dict[str, str]) -> None:
    status = expect.get("status", 200)
    if resp.status != status:
        raise AssertionError(f"got unexpected status: {resp.status}, expected [{status}]: {resp.text[:200]!r}")
    for name, value in (expect.get("response_headers") or {}).items():
        want = hashes[value[6:-1]] if value.startswith("{hash:") else value
        if resp.headers.get(name) != want:
            raise AssertionError(f"Header[{name!r}] = {resp.headers.get(name)!r}, wanted {want!r}")
    if "body" in expect and resp.text != expect["body"]:
        raise AssertionError(f"body {resp.text[:200]!r}, wanted {expect['body']!r}")
    if expect.get("backend") and resp.headers.get(BACKEND_HEADER) != expect["backend"]:
        raise AssertionError(f"served by {resp.headers.get(BACKEND_HEADER)!r}, wanted {expect['backend']!r}")
    if not expect.get("runtime"):
        return
    info = runtime_info(resp)
    for name, value in (expect.get("headers_seen") or {}).items():
        if header_get(info, name) != value:
            raise AssertionError(f"Headers[{name!r}] = {header_get(info, name)!r}, wanted {value!r}")
    if "protoMajor" in expect and info.get("protoMajor") != expect["protoMajor"]:
        raise AssertionError(f"ProtoMajor = {info.get('protoMajor')}, wanted {expect['protoMajor']}")
    if expect.get("request_host") and info.get("host") != expect["request_host"]:
        raise AssertionError(f"backend saw Host {info.get('host')!r}, wanted {expect['request_host']!r}")


def request_step(listeners: Listeners, trust: Trust, step: dict[str, Any], hashes: dict[str, str]) -> None:
    resp = send(listeners, trust, step["request"], timeout=step.get("timeout", 10.0))
    check(resp, step.get("expect") or {}, hashes)


def unreachable_step(listeners: Listeners, spec: dict[str, Any]) -> None:
    """Beyond upstream (which dials port 80 only): a cluster-local host is not served on the north-south
    HTTPS listener either: the TLS handshake fails (no certificate for that name) or the answer is 404."""
    try:
        with Client(listeners[spec["listener"]], host=spec["host"], tls=spec["listener"] == "https") as c:
            resp = c.request("GET", spec.get("path", "/"))
    except OSError:
        return
    if resp.status != 404:
        raise AssertionError(f"{spec['host']} on the {spec['listener']} listener: {resp.status}, wanted 404 or no TLS")


def concurrent_step(listeners: Listeners, trust: Trust, steps: list[dict[str, Any]], hashes: dict[str, str]) -> None:
    """Sub-tests that upstream runs with t.Parallel() (TestTimeout's 10 s delays)."""
    with ThreadPoolExecutor(len(steps)) as pool:
        futures = [pool.submit(request_step, listeners, trust, dict(s, timeout=30.0), hashes) for s in steps]
        problems = [str(f.exception()) for f in futures if f.exception() is not None]
    if problems:
        raise AssertionError("; ".join(problems))


def _split_values(listeners: Listeners, trust: Trust, spec: dict[str, Any]) -> Callable[[Client], str]:
    """One request of a split test: the split's header value, after checking the answer (200 RuntimeInfo,
    and, beyond upstream, that the Service the value names is the one that answered)."""

    def one(c: Client) -> str:
        resp = c.request("GET", spec.get("path", "/"), headers=spec.get("headers"))
        value = header_get(runtime_info(resp), spec["header"])
        if resp.headers.get(BACKEND_HEADER) != value:
            raise AssertionError(
                f"{spec['header']}: {value!r} appended, but {resp.headers.get(BACKEND_HEADER)!r} answered"
            )
        return value

    return one


def distribution_step(listeners: Listeners, trust: Trust, spec: dict[str, Any]) -> None:
    """TestPercentage / TestVisibilitySplit (`percent`, `margin` in points) and TestPathAndPercentageSplit
    (`counts`, `tolerance` in requests)."""
    one = _split_values(listeners, trust, spec)
    with client(listeners, trust, spec) as c:
        seen = Counter(one(c) for _ in range(spec["requests"]))
    problems = []
    if "percent" in spec:
        for name, want in spec["percent"].items():
            got = seen[name] * 100.0 / spec["requests"]
            if want == 0 and got > 0:
                problems.append(f"Target {name!r} received traffic, wanted none (0% target)")
            elif abs(got - want) > spec["margin"]:
                problems.append(f"Target {name!r} received {got:.1f}%, wanted {want} +/- {spec['margin']}")
        expected = spec["percent"]
    else:
        for name, want in spec["counts"].items():
            if abs(seen[name] - want) > spec["tolerance"]:
                problems.append(f"Header {name} got: {seen[name]} times, want {want} +/- {spec['tolerance']}")
        expected = spec["counts"]
    problems += [f"{name} is not in the expected header set" for name in seen if name not in expected]
    if problems:
        raise AssertionError("; ".join(problems) + f" (seen {dict(seen)})")


def seen_all_step(listeners: Listeners, trust: Trust, spec: dict[str, Any]) -> None:
    """TestPostSplitSetHeaders: every split's value within `max_requests` requests."""
    one = _split_values(listeners, trust, spec)
    want, seen = set(spec["values"]), set()
    with client(listeners, trust, spec) as c:
        for _ in range(spec["max_requests"]):
            seen.add(one(c))
            if seen == want:
                return
    raise AssertionError(f"(over {spec['max_requests']} requests) Header[{spec['header']!r}] missing {want - seen}, "
                         f"unexpected {seen - want}")  # fmt: skip


def _message() -> str:
    return f"ping -{random.randrange(1000)}"


def _ws(port: int, host: str) -> Any:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    # close_timeout=0: like gorilla's conn.Close(), end the connection without waiting for the peer's close.
    return ws_connect(f"ws://{host}/", sock=sock, proxy=None, open_timeout=10, close_timeout=0, compression=None)


def _ws_suffix(conn: Any) -> str:
    msg = _message()
    conn.send(msg)
    got = str(conn.recv(timeout=10))
    if not got.startswith(msg):
        raise AssertionError(f"ReadMessage() = {got}, wanted {msg} prefix")
    return got[len(msg) :].strip()


def _ws_roundtrip(conn: Any, suffix: str) -> None:
    msg = _message()
    conn.send(msg)
    got = str(conn.recv(timeout=10))
    if got != f"{msg} {suffix}":
        raise AssertionError(f"ReadMessage() = {got}, wanted {msg} {suffix}")


def websocket_step(listeners: Listeners, spec: dict[str, Any]) -> None:
    with _ws(listeners["public"], spec["host"]) as conn:
        for _ in range(spec["messages"]):
            _ws_roundtrip(conn, spec["suffix"])


def websocket_split_step(listeners: Listeners, spec: dict[str, Any]) -> None:
    want, seen = set(spec["suffixes"]), set()
    for _ in range(spec["max_connections"]):
        with _ws(listeners["public"], spec["host"]) as conn:
            suffix = _ws_suffix(conn)
            seen.add(suffix)
            for _ in range(spec["roundtrips"]):
                _ws_roundtrip(conn, suffix)
        if seen == want:
            return
    raise AssertionError(f"(over {spec['max_connections']} requests) want {sorted(want)}, got {sorted(seen)}")


def _grpc_channel(listeners: Listeners, spec: dict[str, Any]) -> grpc.Channel:
    # grpc.NewClient("passthrough:///host:80"): the :authority is "host:80".
    return grpc.insecure_channel(
        f"127.0.0.1:{listeners['public']}", options=[("grpc.default_authority", spec["authority"])]
    )


def _first_stream(channel: grpc.Channel) -> tuple[PingStream, str, str]:
    """A PingStream that answered once, its message and the reply (retried until FIRST_STREAM_TIMEOUT: the only
    readiness wait for gRPC)."""
    deadline = time.monotonic() + FIRST_STREAM_TIMEOUT
    while True:
        stream = PingStream(channel)
        msg = _message()
        try:
            return stream, msg, stream.ping(msg)
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"PingStream() = {exc.code()}: {exc.details()}") from exc
            time.sleep(0.1)


def _grpc_roundtrip(stream: PingStream, suffix: str) -> None:
    msg = _message()
    got = stream.ping(msg)
    if got != msg + suffix:
        raise AssertionError(f"Recv() = {got}, wanted {msg + suffix}")


def grpc_step(listeners: Listeners, spec: dict[str, Any]) -> None:
    with _grpc_channel(listeners, spec) as channel:
        stream, msg, got = _first_stream(channel)
        with stream:
            if got != msg + spec["suffix"]:
                raise AssertionError(f"Recv() = {got}, wanted {msg + spec['suffix']}")
            for _ in range(spec["messages"] - 1):
                _grpc_roundtrip(stream, spec["suffix"])


def grpc_split_step(listeners: Listeners, spec: dict[str, Any]) -> None:
    want, seen = set(spec["suffixes"]), set()
    with _grpc_channel(listeners, spec) as channel:
        for i in range(spec["max_streams"]):
            if i == 0:
                stream, msg, got = _first_stream(channel)
            else:
                stream, msg = PingStream(channel), _message()
                got = stream.ping(msg)
            with stream:
                if not got.startswith(msg):
                    raise AssertionError(f"Recv() = {got}, wanted {msg} prefix")
                suffix = got[len(msg) :].strip()
                seen.add(suffix)
                for _ in range(spec["roundtrips"]):
                    _grpc_roundtrip(stream, suffix)
            if seen == want:
                return
    raise AssertionError(f"(over {spec['max_streams']} requests) want {sorted(want)}, got {sorted(seen)}")


def describe(resp_or_exc: Response | BaseException) -> str:
    if isinstance(resp_or_exc, BaseException):
        return f"{type(resp_or_exc).__name__}: {resp_or_exc}"
    return json.dumps({"status": resp_or_exc.status, "body": resp_or_exc.text[:120]})
