"""Envoy bootstrap for a Meridian gateway: everything dynamic, over one ADS stream.

The xDS cluster speaks TLS to Meridian (validating the server against Meridian's CA) and
authenticates with a client certificate whose SAN names the gateway group, or with a
service-account token sent as gRPC metadata. Files are referenced by path, so the bootstrap
itself holds no key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.addresses import is_ip, split_host_port

XDS_CLUSTER = "meridian_xds"
TLS_SOCKET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

ENVOY_STATS = ("gateway", "full")
# `--clusters on-demand`: Envoy starts with only the clusters that must exist before any request
# (see controlplane/xds/pinned.py) and fetches a Service's cluster over the same Delta ADS stream
# the first time a request routes to it (the listeners' on_demand filter). Told to Meridian in the
# node metadata under CLUSTERS_METADATA_KEY.
CLUSTER_MODES = ("all", "on-demand")
CLUSTERS_METADATA_KEY = "meridian.clusters"
# `--envoy-stats gateway` (the default): only the stats a gateway's dashboards and alerts use are
# created; every other stat is a no-op. At 10,000 Services Envoy would otherwise hold about 115
# stats per cluster, 1.1 million in all (BENCHMARKS.md, "Envoy's memory"). As Istio does for its
# proxies, families that stay small whatever the number of Services are kept whole by prefix (a
# prefix ending in "." is also the cheapest test Envoy has); per cluster only request and
# connection outcomes, latency, endpoint health and the EDS update count are kept, and those
# traffic stats are created when the cluster first gets traffic (`deferred_stat_options`).
# `full` keeps every stat, created eagerly.
GATEWAY_STATS_PREFIXES = (
    "server.",  # uptime, memory, state, concurrency, hot restart
    "cluster_manager.",  # CDS: update_success/rejected, active/warming clusters
    "listener_manager.",  # LDS, listeners active/draining/warming
    "control_plane.",  # the xDS stream: connected_state, pending requests, rate limiting
    "runtime.",
    "overload.",
    "workers.",
    "http.",  # per connection manager: downstream_rq_xx/time/active, RDS/SRDS, filters
    "listener.",  # per listener (three): downstream_cx_*, TLS handshakes, no filter chain
    "tls_inspector.",
    "sds.",  # certificate updates
    "cluster.meridian_xds.",  # the connection to Meridian itself
)
GATEWAY_STATS_CLUSTER_SUFFIXES = (
    ".upstream_rq_total",
    ".upstream_rq_completed",
    ".upstream_rq_1xx",
    ".upstream_rq_2xx",
    ".upstream_rq_3xx",
    ".upstream_rq_4xx",
    ".upstream_rq_5xx",
    ".upstream_rq_time",
    ".upstream_rq_timeout",
    ".upstream_rq_retry",
    ".upstream_rq_pending_overflow",
    ".upstream_rq_active",
    ".upstream_cx_active",
    ".upstream_cx_total",
    ".upstream_cx_connect_fail",
    ".upstream_cx_connect_timeout",
    ".membership_healthy",
    ".membership_total",
    ".update_success",
)


@dataclass(frozen=True)
class XdsClientTls:
    """How Envoy talks TLS to Meridian: the CA to trust, and optionally its client certificate."""

    ca: str  # path of the CA bundle that signed Meridian's server certificate
    cert: str | None = None  # client certificate (SAN URI spiffe://meridian/group/<node.cluster>)
    key: str | None = None
    server_name: str | None = None  # SNI and the SAN to expect; default: the host of --xds-address


def local_client_tls(state_dir: str | Path | None, group: str, server_name: str | None = None) -> XdsClientTls:
    """A client certificate for `group` from the local CA in `state_dir` (created when missing)."""
    from controlplane.xds.localca import LocalCA, default_state_dir

    issued = LocalCA(state_dir or default_state_dir()).client(group)
    return XdsClientTls(str(issued.ca.resolve()), str(issued.cert.resolve()), str(issued.key.resolve()), server_name)


def transport_socket(tls: XdsClientTls, host: str) -> dict[str, Any]:
    """UpstreamTlsContext for the xDS cluster: verify Meridian's certificate, present ours."""
    name = tls.server_name or host
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": tls.ca},
            "match_typed_subject_alt_names": [
                {"san_type": "IP_ADDRESS" if is_ip(name) else "DNS", "matcher": {"exact": name}}
            ],
        },
    }
    if tls.cert and tls.key:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
        ]
    ctx: dict[str, Any] = {"@type": TLS_SOCKET, "common_tls_context": common}
    if not is_ip(name):
        ctx["sni"] = name  # SNI carries host names only
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def render_bootstrap(
    *,
    xds_address: str | Sequence[str],
    node_id: str,
    node_cluster: str = "meridian-gateway",
    admin_port: int = 9901,
    admin_address: str = "127.0.0.1",
    delta: bool = True,
    tls: XdsClientTls | None = None,
    token: str | None = None,
    envoy_stats: str = "gateway",
    clusters: str = "all",
) -> dict[str, Any]:
    """Bootstrap dict (dump it as YAML or JSON). Delta ADS by default; `delta=False` selects
    State-of-the-World (every change to a type re-sends the whole type: slow at thousands of Services).

    Several xDS addresses (control plane replicas) become endpoints of one xDS cluster: Envoy
    opens its ADS stream to one of them and, when that replica goes away, reconnects to another.
    A DNS name keeps the cluster STRICT_DNS, so every address it resolves to (a headless
    Service's pods) is an endpoint as well.

    `tls` None means plaintext (only for a server run with --xds-insecure). `token` is sent as
    `authorization: Bearer` metadata; Envoy reads it once, so it must outlive the Envoy process.
    The server name checked defaults to the first address's host (set `tls.server_name` when
    the replicas are reached by different names). `envoy_stats` is `gateway` (the stats
    dashboards use, see GATEWAY_STATS_PREFIXES) or `full` (every stat Envoy has). `clusters` is
    `all` (every cluster up front) or `on-demand` (only those needed before any request; the rest
    fetched on a Service's first request: Delta only, since Envoy asks for them by name).
    """
    if envoy_stats not in ENVOY_STATS:
        raise ValueError(f"envoy_stats must be one of {', '.join(ENVOY_STATS)}, not {envoy_stats!r}")
    if clusters not in CLUSTER_MODES:
        raise ValueError(f"clusters must be one of {', '.join(CLUSTER_MODES)}, not {clusters!r}")
    if clusters == "on-demand" and not delta:
        raise ValueError("on-demand clusters need Delta xDS (Envoy asks for each cluster by name): "
                         "drop --sotw or use --clusters all")  # fmt: skip
    addresses = [xds_address] if isinstance(xds_address, str) else list(xds_address)
    if not addresses:
        raise ValueError("at least one xDS address is needed")
    hosts = [split_host_port(a, 18000) for a in addresses]
    api_type = "DELTA_GRPC" if delta else "GRPC"
    ads = {"resource_api_version": "V3", "ads": {}}
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": XDS_CLUSTER}}
    if token:
        grpc_service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    xds_cluster = _xds_cluster(hosts)
    if tls is not None:
        xds_cluster["transport_socket"] = transport_socket(tls, hosts[0][0])
    boot: dict[str, Any] = {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [grpc_service],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster]},
        # No stats sinks are configured (Prometheus scrapes the admin endpoint), so there is nothing
        # to flush on a timer; at 10,000 clusters the 5 s flush holds Envoy's main thread for
        # hundreds of milliseconds, delaying whatever xDS update arrives during it.
        "stats_flush_on_admin": True,
        # Each worker builds its own copy of a cluster (load balancer, host sets) the first time a
        # request there needs it, not for every cluster up front: a copy costs ~2.4 KiB, and Services
        # that get no traffic on a worker cost it nothing (BENCHMARKS.md, "Envoy's memory": -48 MiB
        # at 10,000 Services with two workers, updates no slower).
        "cluster_manager": dict(LAZY_CLUSTERS),
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {"overload": {"global_downstream_max_connections": 50000}},
                }
            ]
        },
    }
    if clusters == "on-demand":
        boot["node"]["metadata"] = {CLUSTERS_METADATA_KEY: "on-demand"}
    if envoy_stats == "gateway":
        boot["stats_config"] = gateway_stats_config()
        boot["deferred_stat_options"] = dict(GATEWAY_DEFERRED_STATS)
    return boot


def gateway_stats_config() -> dict[str, Any]:
    """`stats_config` keeping only the stats a gateway's dashboards use (see GATEWAY_STATS_PREFIXES)."""
    patterns = [{"prefix": p} for p in GATEWAY_STATS_PREFIXES]
    patterns += [{"suffix": s} for s in GATEWAY_STATS_CLUSTER_SUFFIXES]
    return {"stats_matcher": {"inclusion_list": {"patterns": patterns}}}


GATEWAY_DEFERRED_STATS = {"enable_deferred_creation_stats": True}
LAZY_CLUSTERS = {"enable_deferred_cluster_creation": True}


def _xds_cluster(hosts: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The one static cluster: Meridian's xDS port(s), HTTP/2 with keepalives."""
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if all(is_ip(host) for host, _ in hosts) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Generous: an Envoy busy applying a large config answers pings late,
                        # and a cut stream costs a full resend to every type.
                        "connection_keepalive": {"interval": "30s", "timeout": "30s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in hosts
                    ]
                }
            ],
        },
    }
