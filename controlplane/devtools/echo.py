"""Echo backends: HTTP/1.1 servers that answer with who they are and what they received.

Used by `make demo`, the end-to-end tests and the benchmarks. One `EchoFleet` runs many servers in
a single background thread with its own event loop, so synchronous pytest tests and asyncio tests
can share it. Knobs (failures, delays, forced status) let one backend serve many test cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import signal
import ssl
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiohttp import WSMsgType, web
from aiohttp.web_request import BaseRequest

MAX_ECHO_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


def fake_pod_ip(pod: str) -> str:
    """A stable 10.x.y.z address derived from the pod name (text only; nothing listens there)."""
    d = hashlib.sha256(pod.encode()).digest()
    return f"10.{d[0]}.{d[1]}.{d[2] % 254 + 1}"


def canonical_header_name(name: str) -> str:
    """Go-style canonical form (`user-agent` -> `User-Agent`), as the conformance echo server shows.

    Envoy lower-cases header names on HTTP/1 upstreams, so tests compare canonical names.
    """
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def headers_dict(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """Canonicalized header names; repeated headers are joined with ', '."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        key = canonical_header_name(k)
        out[key] = f"{out[key]}, {v}" if key in out else v
    return out


class SeenRequest(NamedTuple):
    """One request as the backend received it (for mirror / retry / header tests)."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(eq=False)
class EchoServer:
    """One echo backend. Knob attributes may be changed while it runs (read per request)."""

    service: str
    pod: str
    namespace: str = "default"
    cluster: str = "c1"
    host: str = "127.0.0.1"
    port: int = 0
    fail_first: int = 0
    delay: float = 0.0
    status_override: int | None = None
    ssl_context: ssl.SSLContext | None = None
    pod_ip: str = ""
    # Seconds an idle keep-alive connection stays open (aiohttp's default). A backend closing one just as
    # Envoy reuses it makes that request fail (503 "connection termination"); Envoy's own upstream idle
    # timeout is an hour, so a stand-in that must never cause that sets it longer (migration/stage.py).
    keepalive_timeout: float = 75.0
    _seen: list[SeenRequest] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fail_counts: dict[str, int] = field(default_factory=dict, repr=False)
    _runner: web.ServerRunner | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.pod_ip:
            self.pod_ip = fake_pod_ip(self.pod)

    # --- observation (thread-safe) ---
    @property
    def requests(self) -> list[SeenRequest]:
        """Snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._seen)

    def reset(self) -> None:
        """Forget seen requests and fail_first counters."""
        with self._lock:
            self._seen.clear()
            self._fail_counts.clear()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # --- lifecycle (call on the loop that serves it) ---
    async def start(self) -> EchoServer:
        """Bind and serve; `port` becomes the bound port when it was 0."""
        server = web.Server(self._handle, access_log=None, handler_cancellation=True,
                            keepalive_timeout=self.keepalive_timeout)  # fmt: skip
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True)
        await site.start()
        self._runner = runner
        sockets = runner.addresses
        if sockets:
            self.port = int(sockets[0][1])
        return self

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- request handling ---
    def _should_fail(self, request: BaseRequest) -> bool:
        if self.fail_first <= 0:
            return False
        key = request.headers.get("X-Request-Key") or request.path
        with self._lock:
            n = self._fail_counts.get(key, 0) + 1
            self._fail_counts[key] = n
        return n <= self.fail_first

    def _describe(self, request: BaseRequest, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        return {
            "service": self.service,
            "pod": self.pod,
            "pod_ip": self.pod_ip,
            "namespace": self.namespace,
            "cluster": self.cluster,
            "method": request.method,
            "path": request.raw_path,
            "host": request.headers.get("Host", ""),
            "proto": f"HTTP/{request.version.major}.{request.version.minor}",
            "tls": request.secure,
            "headers": headers,
            "body": body[:MAX_ECHO_BODY].decode("utf-8", errors="replace"),
            "body_length": len(body),
        }

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        headers = headers_dict(request.headers)
        with self._lock:
            self._seen.append(SeenRequest(request.method, request.raw_path, headers))
        if request.path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        body = await request.read()
        delay = self.delay
        if "X-Echo-Delay" in request.headers:
            with contextlib.suppress(ValueError):
                delay = float(request.headers["X-Echo-Delay"])
        elif "delay" in request.query:  # as the Gateway API conformance echo server: ?delay=1s / 500ms
            found = re.fullmatch(r"([0-9.]+)(ms|s)", request.query["delay"])
            if found:
                delay = float(found.group(1)) / (1000 if found.group(2) == "ms" else 1)
        if delay > 0:
            await asyncio.sleep(delay)
        status = 200
        if self._should_fail(request):
            status = 503
        elif self.status_override is not None:
            status = self.status_override
        elif "X-Echo-Status" in request.headers:
            with contextlib.suppress(ValueError):
                status = int(request.headers["X-Echo-Status"])
        resp_headers = {"X-Echo-Service": self.service, "X-Echo-Pod": self.pod}
        # As the Gateway API conformance echo server: "X-Echo-Set-Header: Name:value,Name2:value2".
        for item in request.headers.get("X-Echo-Set-Header", "").split(","):
            name, sep, value = item.partition(":")
            if sep and name.strip():
                resp_headers[name.strip()] = value.strip()
        if status in _NO_BODY_STATUSES or status < 200:
            return web.Response(status=status, headers=resp_headers)
        payload = orjson.dumps(self._describe(request, body, headers))
        return web.Response(status=status, body=payload, content_type="application/json", headers=resp_headers)

    async def _websocket(self, request: BaseRequest) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        ws.headers["X-Echo-Service"] = self.service
        ws.headers["X-Echo-Pod"] = self.pod
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"{self.pod}: {msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            else:
                break
        return ws


class EchoFleet:
    """Many echo servers served from one background thread/event loop; usable from sync or async code."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="echo-fleet", daemon=True)
        self._servers: list[EchoServer] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def servers(self) -> list[EchoServer]:
        with self._lock:
            return list(self._servers)

    def _submit(self, coro: Any) -> Future[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError("EchoFleet is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _make(self, service: str, pod: str | None, namespace: str, cluster: str, **knobs: Any) -> EchoServer:
        return EchoServer(
            service=service, pod=pod or f"{service}-{len(self._servers)}", namespace=namespace, cluster=cluster, **knobs
        )

    def add(
        self,
        service: str = "echo",
        pod: str | None = None,
        namespace: str = "default",
        cluster: str = "c1",
        *,
        timeout: float = 10.0,
        **knobs: Any,
    ) -> EchoServer:
        """Start one server (port 0 unless `port=` is given) and return it once it listens."""
        srv = self._make(service, pod, namespace, cluster, **knobs)
        self._submit(srv.start()).result(timeout)
        with self._lock:
            self._servers.append(srv)
        return srv

    async def add_async(
        self,
        service: str = "echo",
        pod: str | None = None,
        namespace: str = "default",
        cluster: str = "c1",
        **knobs: Any,
    ) -> EchoServer:
        """Like `add` without blocking the caller's event loop."""
        srv = self._make(service, pod, namespace, cluster, **knobs)
        await asyncio.wrap_future(self._submit(srv.start()))
        with self._lock:
            self._servers.append(srv)
        return srv

    def add_many(self, service: str, count: int, **kwargs: Any) -> list[EchoServer]:
        """`count` pods named `<service>-<i>` (i from 1)."""
        return [self.add(service, f"{service}-{i}", **kwargs) for i in range(1, count + 1)]

    def remove(self, srv: EchoServer, timeout: float = 10.0) -> None:
        """Stop one server (its port stops accepting connections)."""
        with self._lock:
            if srv in self._servers:
                self._servers.remove(srv)
        self._submit(srv.close()).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every server and the loop thread. Idempotent."""
        if self._closed:
            return
        with self._lock:
            servers, self._servers = self._servers, []

        async def _close_all() -> None:
            await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)

        with contextlib.suppress(Exception):
            self._submit(_close_all()).result(timeout)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> EchoFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- CLI (for `make demo`) ---


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _parse_server_spec(spec: str) -> dict[str, Any]:
    """'listen=127.0.0.1:9001,service=foo,pod=foo-1[,namespace=N][,cluster=C][,delay=S][,fail_first=N]'."""
    fields = dict(item.split("=", 1) for item in spec.split(",") if item)
    host, port = _parse_listen(fields.pop("listen", "127.0.0.1:0"))
    out: dict[str, Any] = {"host": host, "port": port, "service": fields.pop("service", "echo")}
    out["pod"] = fields.pop("pod", f"{out['service']}-{port}")
    for key in ("namespace", "cluster"):
        if key in fields:
            out[key] = fields.pop(key)
    if "delay" in fields:
        out["delay"] = float(fields.pop("delay"))
    if "fail_first" in fields:
        out["fail_first"] = int(fields.pop("fail_first"))
    if fields:
        raise ValueError(f"unknown keys in --server spec: {sorted(fields)}")
    return out


def _build_ssl(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _serve_forever(specs: list[dict[str, Any]]) -> None:
    servers = [EchoServer(**spec) for spec in specs]
    for srv in servers:
        await srv.start()
        print(
            orjson.dumps(
                {
                    "listening": srv.address,
                    "service": srv.service,
                    "pod": srv.pod,
                    "namespace": srv.namespace,
                    "cluster": srv.cluster,
                }
            ).decode(),
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.devtools.echo", description=__doc__)
    p.add_argument("--listen", help="HOST:PORT for a single server")
    p.add_argument("--service", default="echo")
    p.add_argument("--pod")
    p.add_argument("--namespace", default="default")
    p.add_argument("--cluster", default="c1")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--tls-cert", help="PEM certificate (chain) to serve TLS")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="SPEC",
        help="repeatable: listen=H:P,service=S,pod=P[,namespace=N][,cluster=C]",
    )
    args = p.parse_args(argv)
    tls = _build_ssl(args.tls_cert, args.tls_key)
    specs: list[dict[str, Any]] = []
    if args.listen:
        host, port = _parse_listen(args.listen)
        specs.append(
            {
                "host": host,
                "port": port,
                "service": args.service,
                "pod": args.pod or f"{args.service}-{port}",
                "namespace": args.namespace,
                "cluster": args.cluster,
                "delay": args.delay,
                "fail_first": args.fail_first,
            }
        )
    try:
        specs.extend(_parse_server_spec(s) for s in args.server)
    except ValueError as e:
        p.error(str(e))
    if not specs:
        p.error("give --listen or at least one --server")
    for spec in specs:
        spec["ssl_context"] = tls
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
