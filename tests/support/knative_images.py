"""Backends that answer as Knative's networking test images do (knative/networking test/test_images).

The Knative ingress conformance suite (test/conformance/ingress) asserts on what these images
answer, so the transcribed suite needs servers that behave the same:

- `runtime`: a JSON `RuntimeInfo` of the request it received (`request.uri`, `host`, `method`,
  `headers` as Go's `http.Header`, `protoMajor`/`protoMinor`), over HTTP/1.1 and h2c;
- `timeout`: sleeps `?initialTimeout=` ms before the headers and `?timeout=` ms after them;
- `retry`: answers 503 to its first request, 200 to every later one;
- `websocket` (wsserver): echoes each message with " " + suffix appended;
- `httpproxy`: a reverse proxy to a gateway address that sets Host to its target host (how the
  visibility tests reach a cluster-local KIngress through the private load balancer).

Every image sits behind Knative's probe handler (pkg/http/probe): a request with
`K-Network-Probe: probe` is answered 200 with its `K-Network-Hash` echoed (400 without one) and never
reaches the image; any other request loses its `K-Network-Hash` header first.

Beyond the images, each server names itself in an `X-Backend-Service` response header, so a test can
check which Service answered (upstream identifies backends only by headers the ingress appends).
Servers are hypercorn ASGI servers (HTTP/1.1, h2c prior knowledge and upgrade, websockets), all on
one background event loop; ports are chosen at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config
from multidict import CIMultiDict

from controlplane.devtools.echo import canonical_header_name

PROBE_KEY = "k-network-probe"
PROBE_VALUE = "probe"
HASH_KEY = "k-network-hash"
BACKEND_HEADER = "X-Backend-Service"
KINDS = ("runtime", "timeout", "retry", "websocket", "httpproxy")
# Not forwarded by a proxy (RFC 9110 7.6.1, as Go's httputil.ReverseProxy), nor Host (set to the target).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
    }
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def go_header(headers: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """Request headers as Go's `http.Header` holds them: canonical names, every value, no Host."""
    out: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        if name.lower() == "host" or name.startswith(":"):
            continue
        out.setdefault(canonical_header_name(name), []).append(raw_value.decode("latin-1"))
    return out


@dataclass(eq=False)
class ImageServer:
    """One pod of a Knative test image on 127.0.0.1:`port`."""

    service: str
    kind: str = "runtime"
    suffix: str = ""
    target_host: str = ""  # httpproxy: TARGET_HOST
    gateway: str = ""  # httpproxy: GATEWAY_HOST, where requests go ("127.0.0.1:PORT")
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _served: int = field(default=0, repr=False)  # the retry image's counter (probes excluded)
    _stop: asyncio.Event | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown image kind {self.kind!r}; one of {KINDS}")

    async def start(self) -> ImageServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        sock.listen(128)  # connections queue from now on, before hypercorn's task runs
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 0.2
        config.accesslog = None
        config.errorlog = None
        config.websocket_ping_interval = None
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve(self._app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        return self

    async def close(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        if self._session is not None:
            await self._session.close()

    # -- ASGI -------------------------------------------------------------------------
    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = (await receive())["type"]
                if event == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get(PROBE_KEY) == PROBE_VALUE:  # pkg/http/probe: answered before the image
            await self._probe(scope, headers, send)
            return
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != HASH_KEY.encode()])
        info = self._request_info(scope)
        self.requests.append(info)
        if scope["type"] == "websocket":
            await self._websocket(receive, send)
        elif self.kind == "websocket":  # wsserver answers plain requests (kubelet probes) with 200
            await self._respond(send, 200, b"")
        elif self.kind == "httpproxy":
            await self._proxy(scope, receive, send)
        elif self.kind == "timeout":
            await self._timeout(scope, send)
        elif self.kind == "retry":
            self._served += 1
            await self._respond(send, 503 if self._served == 1 else 200, f"Retry {self._served - 1}".encode())
        else:
            body = orjson.dumps({"request": info, "host": {"envs": {"K_SERVICE": self.service}}})
            await self._respond(send, 200, body, content_type=b"application/json")

    def _request_info(self, scope: Scope) -> dict[str, Any]:
        """Knative's types.RequestInfo."""
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), "")
        uri = scope.get("raw_path", b"").decode("latin-1")
        if scope.get("query_string"):
            uri += "?" + scope["query_string"].decode("latin-1")
        major, _, minor = str(scope.get("http_version", "1.1")).partition(".")
        return {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(),
            "uri": uri,
            "host": host,
            "method": scope.get("method", "GET"),
            "headers": go_header(scope["headers"]),
            "protoMajor": int(major),
            "protoMinor": int(minor or 0),
        }

    async def _probe(self, scope: Scope, headers: dict[str, str], send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        value = headers.get(HASH_KEY, "")
        if not value:
            await self._respond(send, 400, b'a probe request must contain a non-empty "K-Network-Hash" header')
            return
        await self._respond(send, 200, b"", extra=[(b"k-network-hash", value.encode("latin-1"))])

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        forward = CIMultiDict((k, v) for k, v in headers if k.lower() not in HOP_BY_HOP)
        forward["Host"] = self.target_host
        skip = {h for h in ("User-Agent", "Accept-Encoding") if h not in forward}
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        uri = self._request_info(scope)["uri"]
        try:
            async with self._session.request(
                scope["method"],
                f"http://{self.gateway}{uri}",
                headers=forward,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=skip,
            ) as resp:
                data = await resp.read()
                out = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP]
                status = resp.status
        except aiohttp.ClientError as exc:  # as the image's ErrorHandler: 502 with the error
            await self._respond(send, 502, str(exc).encode())
            return
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})

    async def _timeout(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        initial = int((query.get("initialTimeout") or ["0"])[0] or 0)
        after = int((query.get("timeout") or ["0"])[0] or 0)
        await asyncio.sleep(initial / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": self._headers()})
        await send({"type": "http.response.body", "body": b"", "more_body": True})  # flush the headers
        await asyncio.sleep(after / 1000)
        await send({"type": "http.response.body", "body": f"Slept for {after} milliseconds".encode()})

    async def _websocket(self, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept", "headers": self._headers()})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            if event.get("text") is not None:
                text = event["text"] + (f" {self.suffix}" if self.suffix else "")
                await send({"type": "websocket.send", "text": text})
            else:
                tail = f" {self.suffix}".encode() if self.suffix else b""
                await send({"type": "websocket.send", "bytes": (event.get("bytes") or b"") + tail})

    def _headers(self, content_type: bytes = b"text/plain; charset=utf-8") -> list[tuple[bytes, bytes]]:
        return [(b"content-type", content_type), (BACKEND_HEADER.lower().encode(), self.service.encode())]

    async def _respond(
        self, send: Send, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:  # fmt: skip
        headers = self._headers(content_type) + list(extra or [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ImageFleet:
    """Many image servers on one background event loop; usable from synchronous tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="knative-images", daemon=True)
        self._thread.start()
        self.servers: list[ImageServer] = []

    def _run(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def add(self, service: str, kind: str = "runtime", suffix: str = "", **kw: str) -> ImageServer:
        srv = ImageServer(service, kind, suffix, **kw)
        self._run(srv.start())
        self.servers.append(srv)
        return srv

    def remove(self, srv: ImageServer) -> None:
        if srv in self.servers:
            self.servers.remove(srv)
        self._run(srv.close())

    def close(self) -> None:
        servers, self.servers = self.servers, []

        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(close_all(), timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
