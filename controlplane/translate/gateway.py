"""A whole GatewayIR -> every Envoy resource, in one pass (the reference the controller's
incremental path must agree with). Pure: no cache, no event loop, no Kubernetes."""

from __future__ import annotations

from typing import Any

from controlplane.ir.gateway import GatewayIR
from controlplane.translate import listeners as lst
from controlplane.translate.policies import FEATURES
from controlplane.translate.resources import certificate_secret, load_assignment, service_cluster
from controlplane.translate.route_tables import RouteTables
from controlplane.translate.routes import framed_vhost, vhost_bytes
from controlplane.xds import resources as rt

Resources = dict[str, dict[str, Any]]  # type URL -> name -> message (or its serialized bytes)


def translate_gateway(gw: GatewayIR) -> Resources:
    """Every resource of `gw`, by type URL and name."""
    out: Resources = {t: {} for t in rt.PUSH_ORDER}
    for sc in gw.clusters:
        out[rt.CLUSTER][sc.name] = service_cluster(sc)
    for ep in gw.endpoints:
        out[rt.ENDPOINT][ep.name] = load_assignment(ep.name, ep.localities, ep.labels)
    for secret in gw.secrets:
        out[rt.SECRET][secret.name] = certificate_secret(secret)

    # What the north-south routes need: HTTP filters (by feature and key) and extra clusters.
    needs: dict[str, frozenset[str]] = {}
    https = next((t for t in gw.route_tables if t.name == lst.HTTPS_ROUTES), None)
    routes = [r for vh in (https.virtual_hosts if https else ()) for r in vh.routes]
    for f in FEATURES:
        keys = frozenset().union(*(f.filter_keys(r) for r in routes))
        if keys:
            needs[f.name] = keys
        for r in routes:
            for c in f.extra_clusters(r):
                out[rt.CLUSTER][c.name] = c
    filters = [flt for f in FEATURES if f.name in needs for flt in f.http_filters(needs[f.name])]

    tables = RouteTables(gw.route_partitions)
    by_name = {t.base: t for t in tables.all}
    for table in gw.route_tables:
        target = by_name[table.name]
        for i, entry in enumerate(table.entries):
            frames = b"".join(framed_vhost(vhost_bytes(vh)) for vh in entry)
            target.put(i, frames, [d for vh in entry for d in vh.domains])

    def emit(type_url: str, name: str, body: Any) -> None:
        if body is not None:
            out[type_url][name] = body

    # The HTTPS table is needed only by terminated TLS (passthrough chains carry TCP).
    tables.render(emit, filters, https_listener=bool(gw.tls_hosts))
    partitions = {t.base: t.partitions for t in tables.all}
    tls_hosts, passthrough = list(gw.tls_hosts), list(gw.passthrough)
    out[rt.LISTENER].update(lst.listener_messages(gw.listeners, filters, tls_hosts, passthrough, FEATURES, partitions))
    return out
