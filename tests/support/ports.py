"""Run-time port selection (loopback only)."""

from __future__ import annotations

from controlplane.devtools.envoy_proc import free_port

__all__ = ["free_port", "free_ports"]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that were free a moment ago (see free_port: outside the ephemeral range)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports
