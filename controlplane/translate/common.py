"""Small Envoy message helpers every part of the translator uses (no features, no IR types)."""

from __future__ import annotations

from urllib.parse import urlsplit

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
