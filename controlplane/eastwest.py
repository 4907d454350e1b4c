"""East-west routing: `svc.ns[.svc[.cluster.local]][:port]` to the Service merged across clusters."""

from __future__ import annotations

from collections.abc import Container, Sequence

from controlplane.ir import Forward, IngressRef, PathMatch, Route, ServicePort, VirtualHost, WeightedCluster
from controlplane.ir.names import cluster_name

_SOURCE = IngressRef("", "", "east-west")


def service_hostnames(namespace: str, name: str) -> tuple[str, ...]:
    return (f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local")


def default_port(ports: Sequence[ServicePort]) -> ServicePort:
    """A Host without a port means port 80 if the Service has it, else its first port."""
    for p in ports:
        if p.port == 80:
            return p
    return ports[0]


def east_west_vhosts(
    namespace: str, name: str, ports: Sequence[ServicePort], taken: Container[str] = ()
) -> list[VirtualHost]:
    """One virtual host per Service port; the bare names go to the default port. Names in `taken`
    (cluster-local KIngress hosts, which route them themselves) are left out, with every port."""
    if not ports:
        return []
    names = service_hostnames(namespace, name)
    bare = default_port(ports)
    out = []
    for p in ports:
        domains = [f"{h}:{p.port}" for h in names if h not in taken]
        if p is bare:
            domains = [h for h in names if h not in taken] + domains
        if not domains:
            continue
        cname = cluster_name(namespace, name, p.port)
        route = Route(
            name=f"{cname}",
            match=PathMatch("prefix", "/"),
            action=Forward((WeightedCluster(cname, 100),)),
            source=_SOURCE,
        )
        out.append(VirtualHost(f"{namespace}/{name}:{p.port}", tuple(domains), (route,)))
    return out
