"""IR -> Envoy clusters, endpoints and secrets."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane.ir import CertificateSecret, LocalityEndpoints, ServiceCluster
from controlplane.translate.common import DEFAULT_CONNECT_TIMEOUT, eds_cluster, set_duration, socket_address
from controlplane.translate.policies import FEATURES

# Envoy's default overprovisioning factor (percent), sent explicitly because locality weights depend on it.
OVERPROVISIONING_FACTOR = 140
LOCALITY_WEIGHT_SCALE = 100  # locality weight per ready endpoint (room for the correction below)


def service_cluster(sc: ServiceCluster) -> cluster_pb2.Cluster:
    if sc.static_address is None:
        pb = eds_cluster(sc.name, sc.eds_name)
    else:
        host, port = sc.static_address
        # An IP is the endpoint; a DNS name (an ExternalName Service) is resolved by Envoy.
        kind = cluster_pb2.Cluster.STATIC if _is_ip(host) else cluster_pb2.Cluster.STRICT_DNS
        pb = cluster_pb2.Cluster(name=sc.name, type=kind)
        if kind == cluster_pb2.Cluster.STRICT_DNS:
            pb.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        set_duration(pb.connect_timeout, DEFAULT_CONNECT_TIMEOUT)
        pb.load_assignment.cluster_name = sc.name
        pb.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(socket_address(host, port))
        # Keep serving from known endpoints while health information is missing.
        pb.ignore_health_on_host_removal = True
    for feature in FEATURES:
        feature.patch_cluster(sc, pb)
    return pb


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def locality_weight(ready: int, total: int) -> int:
    """A locality weight whose *effective* value in Envoy is proportional to the ready count.

    Envoy multiplies a locality's weight by its availability, min(1, overprovisioning * healthy/total),
    so a cluster with not-ready endpoints would be discounted twice (ready count, then availability);
    dividing the availability out here keeps traffic per ready endpoint equal across clusters.
    """
    if ready <= 0 or total <= 0:
        return 1  # no healthy host: Envoy gives the locality no traffic whatever its weight
    availability = min(1.0, OVERPROVISIONING_FACTOR / 100 * ready / total)
    return max(1, round(LOCALITY_WEIGHT_SCALE * ready / availability))


def load_assignment(
    name: str, localities: Sequence[LocalityEndpoints], labels: Sequence[tuple[str, str]] = ()
) -> endpoint_pb2.ClusterLoadAssignment:
    """Only ready endpoints get traffic: others are sent as UNHEALTHY (or DRAINING if terminating).
    `labels` become every endpoint's metadata under `meridian.fallback`."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    cla.policy.overprovisioning_factor.value = OVERPROVISIONING_FACTOR
    for loc in localities:
        group = cla.endpoints.add()
        group.locality.region = loc.cluster_id
        group.priority = loc.priority
        group.load_balancing_weight.value = locality_weight(loc.ready_count, len(loc.endpoints))
        add = group.lb_endpoints.add
        for ep in loc.endpoints:  # fields set in place: half the cost of building and copying an Address
            lb = add()
            sa = lb.endpoint.address.socket_address
            sa.address = ep.address
            sa.port_value = ep.port
            if labels:
                lb.metadata.filter_metadata["meridian.fallback"].update(dict(labels))
            if ep.ready:
                lb.health_status = health_check_pb2.HEALTHY
            elif ep.terminating and ep.serving:
                lb.health_status = health_check_pb2.DRAINING
            else:
                lb.health_status = health_check_pb2.UNHEALTHY
    return cla


def certificate_secret(s: CertificateSecret) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=s.name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=s.cert_chain),
            private_key=base_pb2.DataSource(inline_bytes=s.private_key),
        ),
    )
