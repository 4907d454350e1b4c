"""The Knative frontend as the engines call it: objects + Service index -> result, and how its
parts join the others' (north-south entries beside Gateway API's, certificates, east-west hosts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from controlplane.gatewayapi.build import HostEntries
from controlplane.ir import Route, VirtualHost
from controlplane.ir.names import secret_name
from controlplane.knative.build import Cache, KnativeResult, Objects, build
from controlplane.services import ServiceIndex

LOCAL_PREFIX = "knative:"


def knative(objects: Objects, services: ServiceIndex, get_secret: Callable[[str, str, str], Any],
            cache: Cache | None = None) -> KnativeResult:  # fmt: skip
    return build(objects, services, get_secret, cache)


def combine(first: HostEntries | None, second: HostEntries | None) -> HostEntries | None:
    """One host's north-south entries of two frontends (Gateway API, then Knative), each in its own
    order (a KIngress's paths match in spec order, see build.spec_order)."""
    if first is None or second is None:
        return first if second is None else second
    return HostEntries(first.http + second.http, first.https + second.https)


def add_certificates(result: KnativeResult, certs: dict[str, str], usable: Callable[[str], bool]) -> None:
    """Add `spec.tls` certificates to a TLS plan's host -> SDS name map (an Ingress's TLS wins a host
    both name); only certificates that decode (`usable(sds name)`) are bound."""
    for hosts, secret in result.tls:
        name = secret_name(*secret)
        if usable(name):
            for host in hosts:
                certs.setdefault(host, name)


def local_domains(host: str) -> tuple[str, ...]:
    """A cluster-local host on the east-west listener (whose route table matches ports): bare, as
    clients send it for port 80, and with the port."""
    return (host, f"{host}:80")


def local_vhost(host: str, routes: Iterable[Route]) -> VirtualHost:
    return VirtualHost(LOCAL_PREFIX + host, local_domains(host), tuple(routes))


def local_key(host: str) -> tuple[str, str]:
    """The east-west table key of a cluster-local host: sorts before every Service's (ns, name)."""
    return ("", host)


def claimed_service(host: str) -> tuple[str, str] | None:
    """The Service (namespace, name) whose east-west names a cluster-local host takes over
    (`name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`), if it is such a name."""
    parts = host.split(".")
    if len(parts) in (2, 3, 5) and parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]):
        return (parts[1], parts[0])
    return None
