"""What the operator decides about the gateway (ports, classes, partitions), shared by the
incremental controller and the pure `compile`."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from controlplane.ingress.classes import ClassPolicy
from controlplane.ir import CertificateSecret
from controlplane.ir.gateway import Listener
from controlplane.ir.names import secret_name


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
    # The default certificate (see default_certificate.py): `--default-ssl-certificate` as
    # (namespace, name) of a primary-cluster Secret, and the generated one used when that is unset or
    # unusable (file mode: kept in the state dir; None in Kubernetes mode, where the chart passes the flag).
    default_certificate: tuple[str, str] | None = None
    generated_certificate: CertificateSecret | None = None

    def default_certificate_name(self, primary: str | None, usable: Container[str]) -> str | None:
        """The SDS name of the default certificate now: the flag's Secret when usable, else the
        generated one, else none (hosts without a certificate of their own then have no HTTPS)."""
        if self.default_certificate is not None and primary is not None:
            name = secret_name(primary, *self.default_certificate)
            if name in usable:
                return name
        return self.generated_certificate.name if self.generated_certificate is not None else None

    def listeners(self, *, tls: bool) -> tuple[Listener, ...]:
        """The gateway's listeners; the HTTPS one only when some host has TLS or passes it through."""
        out = [
            Listener("http", self.listen_address, self.http_port, "http"),
            Listener("east_west", self.listen_address, self.east_west_port, "east_west", policy_filters=False),
        ]
        if tls:
            out.append(Listener("https", self.listen_address, self.https_port, "https", tls=True))
        return tuple(out)
