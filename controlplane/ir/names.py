"""Stable names of Envoy resources, derived from Kubernetes identities.

Names are what Envoy sees and what survives restarts: they must not change for the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ClusterName:
    """A Service port's cluster; `variant` names a cluster of the same port with other upstream
    policies (see policies.cluster_variant). On the wire: `ns/svc:port` or `ns/svc:port~variant`."""

    namespace: str
    service: str
    port: int
    variant: str = ""

    def __str__(self) -> str:
        return cluster_name(self.namespace, self.service, self.port, self.variant)

    @classmethod
    def parse(cls, name: str) -> ClusterName:
        """The inverse of str(): `ns/svc:port` or `ns/svc:port~variant`."""
        base, _, variant = name.partition("~")
        namespace, _, rest = base.partition("/")
        service, _, port = rest.rpartition(":")
        return cls(namespace, service, int(port), variant)

    @property
    def base(self) -> ClusterName:
        """The plain cluster of the same Service port (what TCP passthrough uses)."""
        return ClusterName(self.namespace, self.service, self.port) if self.variant else self

    @property
    def service_key(self) -> tuple[str, str]:
        return (self.namespace, self.service)


def cluster_name(namespace: str, service: str, port: int, variant: str = "") -> str:
    """`ns/svc:port`, plus `~variant` when annotations need a cluster with other upstream settings."""
    base = f"{namespace}/{service}:{port}"
    return f"{base}~{variant}" if variant else base


def eds_name(namespace: str, service: str, port: int) -> str:
    """Every variant of a Service port shares one ClusterLoadAssignment."""
    return f"{namespace}/{service}:{port}"


def secret_name(cluster: str, namespace: str, name: str) -> str:
    return f"{cluster}/{namespace}/{name}"


def vhost_name(host: str) -> str:
    return host or "*"
