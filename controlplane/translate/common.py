"""Small Envoy message helpers every part of the translator uses (no features, no IR types)."""

from __future__ import annotations

from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2

DEFAULT_CONNECT_TIMEOUT = 5.0


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads={}, resource_api_version=config_source_pb2.V3)


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def set_duration(field: object, seconds: float) -> None:
    whole = int(seconds)
    field.seconds = whole  # type: ignore[attr-defined]
    field.nanos = round((seconds - whole) * 1e9)  # type: ignore[attr-defined]


def url_redirect(rd: rc_pb2.RedirectAction, url: str) -> None:
    """Redirect to exactly `url` (nginx `return code URL`): scheme, host, port, path and query replaced."""
    parts = urlsplit(url)
    if parts.scheme:
        rd.scheme_redirect = parts.scheme
    if parts.hostname:
        rd.host_redirect = parts.hostname
    if parts.port:
        rd.port_redirect = parts.port
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    rd.path_redirect = path
    rd.strip_query = True


def eds_cluster(name: str, eds_name: str) -> cluster_pb2.Cluster:
    """A cluster of a Service port fed by EDS (`eds_name`: the assignment shared by its variants)."""
    pb = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    set_duration(pb.connect_timeout, DEFAULT_CONNECT_TIMEOUT)
    pb.eds_cluster_config.eds_config.CopyFrom(ads_source())
    pb.eds_cluster_config.service_name = eds_name
    # Localities (one per source cluster) are weighted by their ready endpoint count.
    pb.common_lb_config.locality_weighted_lb_config.SetInParent()
    # Not-ready endpoints must never get traffic: Envoy's panic mode (default below 50% healthy)
    # would send requests to them, so it is off. No ready endpoint means 503, as in Kubernetes.
    pb.common_lb_config.healthy_panic_threshold.value = 0.0
    # Keep serving from known endpoints while health information is missing.
    pb.ignore_health_on_host_removal = True
    return pb
