"""A tiny HTTP server for access-control tests: an external-auth endpoint and a body sink.

- `/auth...`: 200 with `X-Auth-Request-User` when `Authorization: Bearer good`, 403 for
  `Bearer forbidden`, 418 for `Bearer teapot`, else 401 with `WWW-Authenticate`. Every auth request is recorded.
- anything else: reads the whole body (Content-Length or chunked) and answers JSON with its
  length, path and headers (the echo backend caps bodies at 1 MiB, this one does not).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AuthServer  # type: ignore[assignment]

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith("/auth"):
            with self.server.lock:
                self.server.auth_requests.append({"path": self.path, "method": self.command, "headers": headers})
            token = headers.get("authorization", "")
            if token == "Bearer good":
                self._send(200, {}, {"X-Auth-Request-User": "alice", "X-Not-Copied": "secret"})
            elif token == "Bearer forbidden":
                self._send(403, {"error": "forbidden"})
            elif token == "Bearer teapot":
                self._send(418, {"error": "not an auth answer"})
            else:
                self._send(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="auth"'})
            return
        self._send(200, {"path": self.path, "length": len(body), "headers": headers, "service": "sink"})

    do_GET = do_POST = do_PUT = do_HEAD = _handle


class AuthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.auth_requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, name="auth-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> AuthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
