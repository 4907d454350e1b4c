"""Make-before-break for new EDS clusters: routes wait until Envoy can use the clusters they name.

Envoy ACKs a CDS response once it has *added* its clusters, while new EDS clusters are still
warming (waiting for their first ClusterLoadAssignment); a route naming a warming cluster gets
`no_cluster` and an empty 503 (envoyproxy/envoy#5174, #17483). So, per stream, listeners, scoped
routes and routes are held while an EDS cluster new to the stream has not had its endpoints
delivered and ACKed. Endpoints and secrets are never held (they are what ends the wait).

Never a deadlock: a name stops being waited for once its assignment is ACKed, once Envoy's CDS
answer shows it did not subscribe to it (logged), when the snapshot has no assignment for it
(Envoy would wait for nothing), when the cluster leaves the stream, or after WARMING_TIMEOUT (Envoy's
own default initial_fetch_timeout, after which it uses the cluster without endpoints anyway).
Static, STRICT_DNS (ExternalName) and aggregate clusters have no EDS and are never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import any_pb2

from controlplane.xds.cache import Resource, SnapshotCache
from controlplane.xds.resources import ENDPOINT
from controlplane.xds.tracking import StreamState, TypeState

log = logging.getLogger("controlplane.xds")

WARMING_TIMEOUT = 15.0  # seconds: Envoy's default initial_fetch_timeout
_EDS_NAME_CACHE_MAX = 100_000


class EdsNames:
    """Cluster resource -> the EDS name it subscribes to (None: not an EDS cluster).

    Keyed by content version, so each cluster version is parsed once for every stream."""

    def __init__(self) -> None:
        self._by_version: dict[str, str | None] = {}

    def of(self, res: Resource) -> str | None:
        try:
            return self._by_version[res.version]
        except KeyError:
            pass
        msg = cluster_pb2.Cluster.FromString(any_pb2.Any.FromString(res.any_bytes).value)
        name: str | None = None
        if msg.type == cluster_pb2.Cluster.EDS and not msg.HasField("cluster_type"):
            name = msg.eds_cluster_config.service_name or msg.name
        if len(self._by_version) >= _EDS_NAME_CACHE_MAX:
            self._by_version.clear()
        self._by_version[res.version] = name
        return name


def note_new_clusters(s: StreamState, fresh: Iterable[Resource], eds_names: EdsNames) -> None:
    """Clusters new to the stream were just sent: wait for the endpoints of the EDS ones."""
    eds = s.types.get(ENDPOINT)
    if eds is None or not eds.requested:
        return  # this client does not use EDS over this stream: nothing it could wait for
    deadline = time.monotonic() + WARMING_TIMEOUT
    for res in fresh:
        name = eds_names.of(res)
        if name is None or name in s.warming:
            continue
        if not eds.pending and _holds(eds, name):
            continue  # Envoy already has this assignment (a variant sharing it): nothing to fetch
        s.warming[name] = deadline


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
    """True while routes must wait; arranges a wake-up at the earliest deadline."""
    if not s.warming:
        return False
    now = time.monotonic()
    assignments = cache.get(ENDPOINT, s.group).resources
    for name, deadline in list(s.warming.items()):
        if name not in assignments:
            del s.warming[name]  # no assignment to send: Envoy waits for its timeout whatever we do
        elif deadline <= now:
            log.warning("xDS node=%s did not ACK endpoints %r of a new cluster within %.0f s; routes no longer "
                        "held for it", s.node_id, name, WARMING_TIMEOUT)  # fmt: skip
            del s.warming[name]
    if not s.warming:
        return False
    asyncio.get_running_loop().call_later(min(s.warming.values()) - now, s.wake.set)
    return True


def _holds(eds: TypeState, name: str) -> bool:
    """Whether the client holds (as last sent) the assignment `name`."""
    sent: Mapping[str, Resource] = eds.sent
    return name in sent or name in eds.known
