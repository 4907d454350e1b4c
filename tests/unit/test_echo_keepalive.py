"""The echo backend's idle keep-alive timeout is a knob: `--verify`'s stand-ins (migration/stage.py) keep
idle connections longer than Envoy does, since a backend closing one just as Envoy reuses it fails that
request by timing (503 "connection termination")."""

from __future__ import annotations

import socket
import time

from controlplane.devtools.echo import EchoFleet
from controlplane.migration import stage


def _idle_connection(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        assert chunk, "the echo closed the connection before answering"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    return conn


def test_an_idle_connection_is_closed_after_the_keepalive_timeout() -> None:
    with EchoFleet() as fleet:
        srv = fleet.add("web", keepalive_timeout=0.2)
        conn = _idle_connection(srv.port)
        started = time.monotonic()
        assert conn.recv(1) == b"", "the idle connection is closed"  # blocks until EOF (10 s socket timeout)
        assert time.monotonic() - started < 5
        conn.close()


def test_the_verify_stand_ins_outlast_envoys_upstream_idle_timeout() -> None:
    assert stage.KEEPALIVE > 3600  # Envoy's default upstream idle_timeout: 1 h
