"""Envoy bootstrap for a Meridian gateway: everything dynamic, over one ADS stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.addresses import is_ip, split_host_port

XDS_CLUSTER = "meridian_xds"


def render_bootstrap(
    *,
    xds_address: str | Sequence[str],
    node_id: str,
    node_cluster: str = "meridian-gateway",
    admin_port: int = 9901,
    admin_address: str = "127.0.0.1",
    delta: bool = False,
) -> dict[str, Any]:
    """Bootstrap dict (dump it as YAML or JSON). `delta` selects Delta ADS instead of SotW.

    Several xDS addresses (control plane replicas) become endpoints of one xDS cluster: Envoy
    opens its ADS stream to one of them and, when that replica goes away, reconnects to another.
    A DNS name keeps the cluster STRICT_DNS, so every address it resolves to (a headless
    Service's pods) is an endpoint as well.
    """
    addresses = [xds_address] if isinstance(xds_address, str) else list(xds_address)
    if not addresses:
        raise ValueError("at least one xDS address is needed")
    hosts = [split_host_port(a, 18000) for a in addresses]
    api_type = "DELTA_GRPC" if delta else "GRPC"
    ads = {"resource_api_version": "V3", "ads": {}}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
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
            ]
        },
        # No stats sinks are configured (Prometheus scrapes the admin endpoint), so there is nothing
        # to flush on a timer; at 10,000 clusters the 5 s flush holds Envoy's main thread for
        # hundreds of milliseconds, delaying whatever xDS update arrives during it.
        "stats_flush_on_admin": True,
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {"overload": {"global_downstream_max_connections": 50000}},
                }
            ]
        },
    }

