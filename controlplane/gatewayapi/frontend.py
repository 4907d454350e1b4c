"""The Gateway API frontend as the engines call it: objects + Service index + config -> result,
and what it adds to the TLS plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.config import GatewayConfig
from controlplane.gatewayapi.build import GatewayApiResult, Objects, build
from controlplane.gatewayapi.listeners import SecretRef
from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ir.names import secret_name
from controlplane.services import ServiceIndex


def shared_ports(config: GatewayConfig) -> tuple[frozenset[int], frozenset[int]]:
    """Listener ports served by the fleet's HTTP and HTTPS listeners: the well-known port (what the
    fleet's Service exposes) and the port Envoy listens on."""
    return frozenset({80, config.http_port}), frozenset({443, config.https_port})


def secret_checker(get: Callable[[str, str, str], Mapping[str, Any] | None]) -> Callable[[SecretRef], str | None]:
    def problem(ref: SecretRef) -> str | None:
        obj = get(*ref)
        if obj is None:
            return "not found"
        try:
            decode_tls_secret(obj)
        except ValueError as exc:
            return str(exc)
        return None

    return problem


def gateway_api(
    objects: Objects, services: ServiceIndex, config: GatewayConfig, get_secret: Callable[[str, str, str], Any]
) -> GatewayApiResult:
    http_ports, https_ports = shared_ports(config)
    return build(objects, services, http_ports=http_ports, https_ports=https_ports,
                 secret_problem=secret_checker(get_secret), reserved=frozenset({config.east_west_port}))  # fmt: skip


def add_certificates(result: GatewayApiResult, certs: dict[str, str]) -> None:
    """Add HTTPS listener certificates to a TLS plan's host -> SDS name map (an Ingress's TLS wins a
    host both name). A listener without a hostname binds its certificate to the hostnames of its
    routes and, as "*" (translate.listeners.CATCH_ALL), to any other SNI: the spec's listener
    without a hostname matches every name. The first such listener (oldest cluster/namespace/name
    order of Gateways) holds the catch-all."""
    for hosts, (cluster, ns, name) in result.tls:
        for host in hosts:
            certs.setdefault(host, secret_name(cluster, ns, name))
