"""Prometheus metrics (prefix `meridian_`), in one registry so tests can run several control planes."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    """All metrics of one control plane instance."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.connected_proxies = Gauge(
            "meridian_xds_connected_proxies", "Envoy streams currently connected", ["protocol"], registry=r
        )
        self.pushes = Counter("meridian_xds_pushes_total", "xDS responses sent", ["type"], registry=r)
        self.resources_sent = Counter(
            "meridian_xds_resources_sent_total", "Resources put on the wire in xDS responses", ["type"], registry=r
        )
        self.acks = Counter("meridian_xds_acks_total", "xDS ACKs received", ["type"], registry=r)
        self.nacks = Counter("meridian_xds_nacks_total", "xDS NACKs received", ["type"], registry=r)
        self.build_duration = Histogram(
            "meridian_build_duration_seconds",
            "Time to turn object changes into a new snapshot",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.convergence = Histogram(
            "meridian_convergence_seconds",
            "From a change being seen to every connected proxy having ACKed it",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.snapshot_version = Gauge("meridian_snapshot_version", "Current snapshot version", registry=r)
        self.route_partitions = Gauge(
            "meridian_route_partitions", "Route tables (host-hash partitions) per listener table", ["table"], registry=r
        )
        self.ingresses = Gauge(
            "meridian_ingresses", "Ingresses seen, by state", ["state"], registry=r
        )  # accepted | rejected | ignored
        self.source_up = Gauge(
            "meridian_source_cluster_up", "1 when a source cluster is synced", ["cluster"], registry=r
        )
        self.source_stale = Gauge(
            "meridian_source_cluster_stale",
            "1 while a source cluster is unreachable and its last-known state is served",
            ["cluster"],
            registry=r,
        )
        self.source_errors = Counter(
            "meridian_source_errors_total", "Source errors (bad files, failed watches)", ["cluster"], registry=r
        )
        self.xds_auth_failures = Counter(
            "meridian_xds_auth_failures_total",
            "xDS clients refused: tls_handshake, bad_certificate, no_credentials, invalid_token, "
            "token_unsupported, unknown_connection, no_group, group_not_allowed",
            ["reason"],
            registry=r,
        )
        self.xds_streams_authenticated = Counter(
            "meridian_xds_streams_authenticated_total",
            "xDS streams accepted, by how the client authenticated (mtls, token, anonymous)",
            ["method"],
            registry=r,
        )
