"""Stable names of Envoy resources, derived from Kubernetes identities."""

from __future__ import annotations


def cluster_name(namespace: str, service: str, port: int, variant: str = "") -> str:
    """`ns/svc:port`, plus `~variant` when annotations need a cluster with other upstream settings."""
    base = f"{namespace}/{service}:{port}"
    return f"{base}~{variant}" if variant else base


def eds_name(namespace: str, service: str, port: int) -> str:
    """Every variant of a Service port shares one ClusterLoadAssignment."""
    return f"{namespace}/{service}:{port}"


def parse_cluster_name(name: str) -> tuple[str, str, int, str] | None:
    """Inverse of cluster_name: (namespace, service, port, variant), or None if not a Service cluster."""
    base, _, variant = name.partition("~")
    ns, sep, rest = base.partition("/")
    svc, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not port.isdigit():
        return None
    return ns, svc, int(port), variant


def secret_name(cluster: str, namespace: str, name: str) -> str:
    return f"{cluster}/{namespace}/{name}"


def vhost_name(host: str) -> str:
    return host or "*"
