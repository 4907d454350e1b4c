"""What the operator decides about the gateway (ports, classes, partitions), shared by the
incremental controller and the pure `compile`."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.ingress.classes import ClassPolicy
from controlplane.ir.gateway import Listener


@dataclass(frozen=True)
class GatewayConfig:
    listen_address: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    # The HTTPS port clients use (a LoadBalancer's 443 in front of the listener's 8443): the port of
    # ssl-redirect Locations, left out when it is 443 (as ingress-nginx does).
    public_https_port: int = 443
    east_west_port: int = 15080
    classes: ClassPolicy = field(default_factory=ClassPolicy)
    publish_address: str | None = None
    # Route tables per listener: N fixed hash partitions (1 = one table), or None to grow them
    # automatically with the number of hosts (see translate/partitions.py).
    route_partitions: int | None = None

    def listeners(self, *, tls: bool) -> tuple[Listener, ...]:
        """The gateway's listeners; the HTTPS one only when some host has TLS or passes it through."""
        out = [
            Listener("http", self.listen_address, self.http_port, "http"),
            Listener("east_west", self.listen_address, self.east_west_port, "east_west", policy_filters=False),
        ]
        if tls:
            out.append(Listener("https", self.listen_address, self.https_port, "https", tls=True))
        return tuple(out)
