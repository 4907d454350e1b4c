"""Gateway listeners on ports of their own -> one Envoy listener and one route table per port.

Pure: the frontend's `PortEntries` in, protobuf messages out; `compile` and the incremental engine
(engine/gatewayapi.py) both call it, so both serve the same. Only Gateway API routes are on these
ports (Ingresses are served on the fleet's shared ports), each host's routes are one virtual host
in precedence order, exactly as on the shared ports. An HTTPS port gets one filter chain per
certificate (SNI names, and a chain without SNI match for a listener without a hostname), the
certificates over SDS; a port whose certificates are all unusable gets no listener.

A RequestRedirect without scheme and port keeps the listener's port (the spec); Envoy would keep
the Host header's, which a client need not send, so the route names the port unless it is the
protocol's well-known one.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.gatewayapi.build import HostEntries, PortEntries, SecretRef
from controlplane.gatewayapi.httproute import RouteEntry
from controlplane.gatewayapi.merge import merge_gateway_routes
from controlplane.ir import Redirect, TlsHost, VirtualHost
from controlplane.ir.names import secret_name
from controlplane.translate.listeners import http_listener, https_listener
from controlplane.translate.policies import FEATURES
from controlplane.translate.routes import framed_vhost, route_configuration_from_frames, vhost_bytes
from controlplane.xds import resources as rt

_WELL_KNOWN = {"HTTP": 80, "HTTPS": 443}


def listener_name(port: int) -> str:
    """The Envoy listener and route table of a Gateway listener port of its own."""
    return f"gateway_{port}"


@dataclass
class PortResources:
    """What the own ports add to the snapshot: by type URL and name (messages or serialized bytes),
    and the SDS names their listeners use."""

    resources: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in rt.PUSH_ORDER})
    secrets: set[str] = field(default_factory=set)


def port_secrets(ports: Mapping[int, PortEntries]) -> set[str]:
    """Every SDS name the own ports' certificates would use (usable or not)."""
    return {secret_name(*ref) for entries in ports.values() for _host, ref in entries.tls}


def port_resources(ports: Mapping[int, PortEntries], address: str, usable: Container[str]) -> PortResources:
    """Listeners, route tables and extra clusters of every own port; `usable`: SDS names whose
    certificate can be served."""
    out = PortResources()
    for port, entries in sorted(ports.items()):
        name = listener_name(port)
        vhosts = [_vhost(host, routes, port, entries.protocol) for host, routes in entries.hosts]
        routes = [r for vh in vhosts for r in vh.routes]
        needs: dict[str, frozenset[str]] = {}
        for f in FEATURES:
            keys = frozenset().union(*(f.filter_keys(r) for r in routes))
            if keys:
                needs[f.name] = keys
            for r in routes:
                for c in f.extra_clusters(r):
                    out.resources[rt.CLUSTER][c.name] = c
        filters = [flt for f in FEATURES if f.name in needs for flt in f.http_filters(needs[f.name])]
        if entries.protocol == "HTTPS":
            tls_hosts = _tls_hosts(entries.tls, usable)
            if not tls_hosts:
                continue
            out.secrets |= {t.secret for t in tls_hosts}
            listener = https_listener(address, port, tls_hosts, FEATURES, filters, name=name, route_config=name)
        else:
            listener = http_listener(name, address, port, name, filters)
        out.resources[rt.ROUTE][name] = route_configuration_from_frames(
            name, [framed_vhost(vhost_bytes(vh)) for vh in vhosts])  # fmt: skip
        out.resources[rt.LISTENER][name] = listener
    return out


def _tls_hosts(bindings: tuple[tuple[str, SecretRef], ...], usable: Container[str]) -> list[TlsHost]:
    by_secret: dict[str, list[str]] = {}
    for host, ref in bindings:
        sds = secret_name(*ref)
        if sds in usable:
            by_secret.setdefault(sds, []).append(host)
    return [TlsHost(tuple(sorted(hosts)), sds) for sds, hosts in sorted(by_secret.items())]


def _vhost(host: str, entries: tuple[RouteEntry, ...], port: int, protocol: str) -> VirtualHost:
    if port != _WELL_KNOWN.get(protocol):
        entries = tuple(_listener_port_redirect(e, port) for e in entries)
    table = HostEntries(https=entries) if protocol == "HTTPS" else HostEntries(http=entries)
    result = merge_gateway_routes(host, None, table, {})
    assert result is not None  # entries exist
    return result.https if protocol == "HTTPS" else result.http


def _listener_port_redirect(entry: RouteEntry, port: int) -> RouteEntry:
    action = entry.route.action
    if isinstance(action, Redirect) and action.scheme is None and action.port is None and action.url is None:
        return replace(entry, route=replace(entry.route, action=replace(action, port=port)))
    return entry
