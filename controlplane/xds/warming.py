"""Make-before-break for new EDS clusters: routes wait until Envoy can use the clusters they name.

A new EDS cluster warms until its first ClusterLoadAssignment; a route naming a warming cluster
gets `no_cluster` and an empty 503 (envoyproxy/envoy#5174). So, per stream, listeners, scoped
routes and routes are held while an EDS cluster new to the stream has not had its endpoints
delivered. Endpoints and secrets are never held (they are what ends the wait).

Delivered means *written to the same stream*, not ACKed. Envoy handles an ADS stream's responses
one at a time, in order, on its main thread (Envoy 1.40: GrpcMuxImpl / NewGrpcMuxImpl
onDiscoveryResponse, no response queue), and applying the first assignment of a warming EDS
cluster finishes its warming before the next response is read: EdsClusterImpl::onConfigUpdate ->
batchHostUpdate -> onPreInitComplete -> (no init targets, no health checks) finishInitialization ->
ClusterManagerImpl::onClusterInit, which makes the cluster active and posts it to the workers; a
route table applied later is posted to the workers after it (their queues are FIFO; with
`enable_deferred_cluster_creation` the post carries the cluster's initialization object instead).
That is the ordering the xDS protocol gives ADS ("EDS after CDS for the respective clusters, RDS
after CDS/EDS"). Envoy subscribes to the new cluster's assignment while it applies the CDS
response, and Meridian sends an assignment only to a stream subscribed to it, so the assignment
is read after the cluster exists; the route written after the assignment is read after it. This
spares a round trip through Envoy's main thread (it ACKs CDS, and then EDS, only once the cluster
is warm: `ClusterManagerImpl::updateClusterCounts` pauses CDS ACKs while any cluster warms).

Where that ordering does not hold, the wait lasts until Envoy ACKs the assignment:
- clusters whose warming needs more than their endpoints (health checks: the first round; TLS
  secrets over SDS: the secret, which goes out after routes);
- an assignment the stream held before the cluster was sent (its response may be read first);
- while the stream's last endpoints response was NACKed (the next one may be rejected too).

Never a deadlock: a name stops being waited for once its assignment is written (or ACKed, above),
once Envoy's CDS answer shows it did not subscribe to it (logged), when the snapshot has no
assignment for it (Envoy would wait for nothing), or after WARMING_TIMEOUT (Envoy's own default
initial_fetch_timeout, after which it uses the cluster without endpoints anyway). Static,
STRICT_DNS (ExternalName) and aggregate clusters have no EDS and are never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

from controlplane.xds.cache import Resource, SnapshotCache
from controlplane.xds.resources import ENDPOINT
from controlplane.xds.tracking import StreamState, TypeState

log = logging.getLogger("controlplane.xds")

WARMING_TIMEOUT = 15.0  # seconds: Envoy's default initial_fetch_timeout
_EDS_NAME_CACHE_MAX = 100_000
_UPSTREAM_TLS = "type.googleapis.com/" + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name


class EdsNames:
    """Cluster resource -> (the EDS name it subscribes to, whether its assignment alone warms it);
    (None, False) for a cluster without EDS.

    Keyed by content version, so each cluster version is parsed once for every stream."""

    def __init__(self) -> None:
        self._by_version: dict[str, tuple[str | None, bool]] = {}

    def of(self, res: Resource) -> tuple[str | None, bool]:
        try:
            return self._by_version[res.version]
        except KeyError:
            pass
        msg = cluster_pb2.Cluster.FromString(any_pb2.Any.FromString(res.any_bytes).value)
        found: tuple[str | None, bool] = (None, False)
        if msg.type == cluster_pb2.Cluster.EDS and not msg.HasField("cluster_type"):
            found = (msg.eds_cluster_config.service_name or msg.name, _warmed_by_endpoints_alone(msg))
        if len(self._by_version) >= _EDS_NAME_CACHE_MAX:
            self._by_version.clear()
        self._by_version[res.version] = found
        return found


def _warmed_by_endpoints_alone(msg: cluster_pb2.Cluster) -> bool:
    """Whether Envoy finishes warming this EDS cluster while it applies its first assignment:
    not when a first health check round or a TLS secret over SDS must come first."""
    if msg.health_checks:
        return False
    sockets = [msg.transport_socket, *(m.transport_socket for m in msg.transport_socket_matches)]
    for sock in sockets:
        if sock.typed_config.type_url != _UPSTREAM_TLS:
            continue  # none, or a kind with no secrets to fetch (raw buffer)
        common = tls_pb2.UpstreamTlsContext.FromString(sock.typed_config.value).common_tls_context
        combined = common.combined_validation_context
        if (
            common.tls_certificate_sds_secret_configs
            or common.HasField("validation_context_sds_secret_config")
            or combined.HasField("validation_context_sds_secret_config")
        ):
            return False
    return True


def note_new_clusters(s: StreamState, fresh: Iterable[Resource], eds_names: EdsNames) -> None:
    """Clusters new to the stream were just sent: wait for the endpoints of the EDS ones."""
    eds = s.types.get(ENDPOINT)
    if eds is None or not eds.requested:
        return  # this client does not use EDS over this stream: nothing it could wait for
    deadline = time.monotonic() + WARMING_TIMEOUT
    for res in fresh:
        name, alone = eds_names.of(res)
        if name is None:
            continue
        held_before = _holds(eds, name)
        if held_before and not eds.pending:
            continue  # Envoy already has this assignment (a variant sharing it): nothing to fetch
        # An assignment sent before this cluster may be read before it: only its ACK tells.
        needs_ack = not alone or held_before
        if name in s.warming:
            needs_ack = needs_ack or s.warming[name][1]
        s.warming[name] = (deadline, needs_ack)


def on_clusters_answered(s: StreamState) -> None:
    """Envoy answered a CDS response: names it did not subscribe to over EDS will never warm."""
    if not s.warming:
        return
    eds = s.types.get(ENDPOINT)
    if eds is not None and eds.wildcard:
        return
    names = eds.names if eds is not None else frozenset()
    for name in [n for n in s.warming if n not in names]:
        log.info("xDS node=%s did not subscribe to endpoints %r of a new cluster; routes not held for it",
                 s.node_id, name)  # fmt: skip
        del s.warming[name]


def on_endpoints_acked(s: StreamState) -> None:
    """Envoy ACKed an EDS response: the assignments it now holds end their clusters' warming."""
    if not s.warming:
        return
    eds = s.types[ENDPOINT]
    for name in [n for n in s.warming if _holds(eds, n)]:
        del s.warming[name]


def still_warming(s: StreamState, cache: SnapshotCache) -> bool:
    """True while routes must wait; arranges a wake-up at the earliest deadline.

    Called in a push after clusters and endpoints went out: an assignment in what the stream now
    holds was written ahead of anything this push writes next."""
    if not s.warming:
        return False
    now = time.monotonic()
    assignments = cache.get(ENDPOINT, s.group).resources
    eds = s.types.get(ENDPOINT)
    written = eds if eds is not None and not eds.nacked else None  # where writing it is enough
    for name, (deadline, needs_ack) in list(s.warming.items()):
        if name not in assignments:
            del s.warming[name]  # no assignment to send: Envoy waits for its timeout whatever we do
        elif written is not None and not needs_ack and _holds(written, name):
            del s.warming[name]  # written after the cluster: Envoy applies it before what follows
        elif deadline <= now:
            log.warning("xDS node=%s did not take endpoints %r of a new cluster within %.0f s; routes no longer "
                        "held for it", s.node_id, name, WARMING_TIMEOUT)  # fmt: skip
            del s.warming[name]
    if not s.warming:
        return False
    earliest = min(deadline for deadline, _ in s.warming.values())
    asyncio.get_running_loop().call_later(earliest - now, s.wake.set)
    return True


def _holds(eds: TypeState, name: str) -> bool:
    """Whether the client holds (as last sent) the assignment `name`."""
    sent: Mapping[str, Resource] = eds.sent
    return name in sent or name in eds.known
