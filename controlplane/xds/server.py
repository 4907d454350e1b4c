"""ADS server (State-of-the-World and Delta) over grpc.aio.

Responses are assembled as bytes straight from the cache's pre-serialized
`Any` payloads, so a resource is serialized once per version however many
Envoys receive it. Each stream runs as its own task that wakes on any cache
change or request and sends whatever its state says is due, always computed
from the latest snapshot: a slow stream coalesces versions and never blocks
others.

Protocol choices (see ../shared/docs/design.md, "xDS protocol rules"):
- One response per type in flight per stream (as go-control-plane): the next
  version of a type goes out after the previous one is ACKed or NACKed, which
  bounds what a slow Envoy can queue and coalesces bursts.
- Types go out in PUSH_ORDER (CDS, EDS, LDS, SRDS, RDS, SDS). While a CDS
  response is in flight and a newer CDS version waits behind it, listeners and
  routes are held back, so Envoy never sees a route before the cluster it names.
- A new EDS cluster warms until its first ClusterLoadAssignment, and a route
  naming a warming cluster answers 503 `no_cluster` (envoyproxy/envoy#5174). So
  listeners and routes also wait while an EDS cluster new to the stream has not
  had its endpoints written to the stream after it (Envoy applies one stream's
  responses in order and warms the cluster as it applies them; ACKed where that
  does not hold); bounded by Envoy's initial_fetch_timeout, and not at all for
  non-EDS clusters or names Envoy did not subscribe to (`warming`). Endpoints
  and secrets are never held: they are what warming waits for (holding EDS
  deadlocked a stream until Envoy's 15 s initial-fetch timeout; Envoy ACKs CDS
  only once the new clusters are warm). A new
  listener's SDS secrets need no such rule: Envoy warms the listener itself until
  they arrive and keeps serving from the old one meanwhile.
- A NACK leaves the type alone until a newer cache version with different
  content exists; the rejected content is never re-sent (a subscription change
  from the client is still answered).
- A stream's first large Delta response of a type goes out in chunks, one per ACK
  (`chunking`); listeners and routes wait until the last CDS chunk is out.
- Cluster removal: while listeners/routes of the stream are not yet ACKed at
  the current version, removed clusters stay in the CDS response (SotW; version
  "<v>+hold") or are left out of removed_resources (Delta). Once LDS/RDS are
  ACKed, the pure CDS (or the removal) is sent. This relies on the translator
  applying a cluster removal and the route change that drops it in one apply.
- SotW EDS/RDS responses carry only what changed since the last one (they are
  not full-state types); a response whose content equals the last one sent is
  skipped.
- version_info (Delta: system_version_info) is the type's content digest, not this
  process's change counter: replicas, and a restarted control plane, tell Envoy the
  same version for the same resources.
- Nothing is served until `cache.ready` is true, so a restarted control plane
  never wipes an Envoy's config with an empty snapshot.
- Nothing is served before the client is authenticated and its gateway group
  (`node.cluster` of its first request) authorized (see `auth`); with TLS the
  public port is the TLS front and gRPC listens behind it on a private Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache, TypeSnapshot
from controlplane.xds.keyless import KeylessView
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE
from controlplane.xds.responses import (  # noqa: F401 (encoders re-exported for tests and tools)
    Responses,
    encode_delta_response,
    encode_discovery_response,
    varint,
)
from controlplane.xds.tlsfront import TlsFiles, TlsFront
from controlplane.xds.tracking import (
    ACK,
    DELTA,
    NACK,
    SOTW,
    STALE,
    Convergence,
    StreamState,
    delta_ack,
    on_delta_request,
    on_sotw_request,
    short_name,
)
from controlplane.xds.warming import on_clusters_answered, on_endpoints_acked, still_warming

log = logging.getLogger("controlplane.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_NOT_READY_POLL = 0.05


def _identity(data: bytes) -> bytes:
    return data


def _sotw_request(data: bytes) -> tuple[Any, bytes]:
    """The parsed DiscoveryRequest and its bytes (an ACK's unchanged names are recognised by them)."""
    return discovery_pb2.DiscoveryRequest.FromString(data), data


def _delta_request(data: bytes) -> tuple[Any, bytes]:
    """A plain ACK (type_url and nonce only: one per stream per change) is read from its bytes."""
    return delta_ack(data) or discovery_pb2.DeltaDiscoveryRequest.FromString(data), b""


_GRPC_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # No BDP probing: it grows the window for what a client sends (ACKs and requests, small), and
    # costs a PING and its ACK (a send and a read) per stream on ~half of the ACKs it reads.
    ("grpc.http2.bdp_probe", 0),
    # Envoy pings every 30 s (bootstrap keepalive); do not answer with GOAWAY.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Notice Envoys that vanished without closing the connection.
    ("grpc.keepalive_time_ms", 60000),
    # A proxy applying a large snapshot can be slow to answer; don't cut it for that.
    ("grpc.keepalive_timeout_ms", 60000),
]

# A change pushed to a stream keeps ~18 objects alive at its peak (its write and read futures, their
# coroutines, its push's lists). The cyclic GC's young generation is collected once this many per
# connected stream more exist than were freed, so pushing one change to the whole fleet triggers no
# collection. At Python's 700, 1,000 streams ran ~26 young, ~2.5 middle and every ~5 changes a full
# collection per change, which found no garbage (BENCHMARKS.md "Fleet fan-out", round 5). Below
# 100 streams the process's own threshold stays.
GC_YOUNG_PER_STREAM = 50
_GC_STEP = 100  # streams: the threshold moves in steps, not on every connect
_GC_FLOOR = gc.get_threshold()[0]  # the process's own (Python's 700 unless set before this import)


def young_gc_threshold(streams: int, floor: int) -> int:
    """The young generation's threshold for `streams` connected streams: never under `floor` (what the
    process had), so a few gateways see no change."""
    return max(floor, GC_YOUNG_PER_STREAM * _GC_STEP * (streams // _GC_STEP))


def fit_young_gc(streams: int, floor: int = _GC_FLOOR) -> None:
    young, *older = gc.get_threshold()
    wanted = young_gc_threshold(streams, floor)
    if wanted != young:
        gc.set_threshold(wanted, *older)


# Types whose resources name clusters (held while newer clusters wait to be sent).
_NAME_CLUSTERS = frozenset({LISTENER, SCOPED_ROUTE, ROUTE})
_PUSH_TYPES = frozenset(PUSH_ORDER)


@dataclass(frozen=True, slots=True)
class _TypeCounters:
    kind: str
    pushes: Any
    resources_sent: Any
    acks: Any
    nacks: Any


class _Counters(dict[str, _TypeCounters]):
    """Each type's metric children, looked up once: `labels()` costs ~3 µs, three times per stream
    per change."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def __missing__(self, type_url: str) -> _TypeCounters:
        kind, m = short_name(type_url), self._metrics
        counters = self[type_url] = _TypeCounters(
            kind, m.pushes.labels(kind), m.resources_sent.labels(kind), m.acks.labels(kind), m.nacks.labels(kind)
        )
        return counters


class _SharedKeyless:
    """The keyless view of each type's current snapshot, made once for every unauthenticated stream.

    A fresh view per push cost each plaintext stream a pass over 1,000 clusters when connecting,
    and a mapping of its own to remember them by (what it holds is otherwise the snapshot's own,
    shared by reference)."""

    def __init__(self, view: KeylessView) -> None:
        self._view = view
        self._last: dict[str, tuple[TypeSnapshot, TypeSnapshot]] = {}

    def snapshot(self, type_url: str, snap: TypeSnapshot) -> TypeSnapshot:
        last = self._last.get(type_url)
        if last is not None and last[0] is snap:
            return last[1]
        view = self._view.snapshot(type_url, snap)
        self._last[type_url] = (snap, view)
        return view


def _push_order(types: Mapping[str, Any]) -> tuple[str, ...]:
    """PUSH_ORDER, then the stream's other types (none Meridian serves, but asked for)."""
    return PUSH_ORDER + tuple(t for t in types if t not in _PUSH_TYPES)


def _may_be_due(s: StreamState, cache: SnapshotCache) -> bool:
    """Whether `_push` could find anything to send. An ACK usually leaves nothing due (every type
    already looked at in this cache version): then the stream's task is not woken, which at 1,000
    streams spares a task switch and a pass over the types per stream per change."""
    get, group = cache.get, s.group
    for type_url, st in s.types.items():
        if st.requested and not st.pending and (st.force or st.examined != get(type_url, group).version):
            return True
    return False


class XdsServer:
    """Serves the SnapshotCache to Envoys over ADS (SotW and Delta)."""

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        *,
        auth: XdsAuth,
        tls: TlsFiles | None = None,
        identifier: str = "meridian",
    ) -> None:
        if tls is None and not auth.insecure:
            raise ValueError("plaintext xDS needs an explicit insecure XdsAuth (--xds-insecure)")
        self._cache = cache
        self._metrics = metrics
        self._auth = auth
        self._front = TlsFront(tls, auth.refused) if tls is not None else None
        auth.front = self._front
        self._keyless = _SharedKeyless(KeylessView())
        self._lineage = lineage_of(cache)
        self._responses = Responses(cache, identifier, self._lineage)
        self._streams: dict[int, StreamState] = {}
        self._ids = itertools.count(1)
        self._convergence = Convergence(metrics.convergence)
        self._server: grpc.aio.Server | None = None
        self.grpc_address = ""  # where gRPC itself listens (behind the TLS front: a Unix socket only it dials)
        self._watcher: asyncio.Task[None] | None = None
        self._counters = _Counters(metrics)

    # -- lifecycle ---------------------------------------------------------
    async def start(self, address: str) -> int:
        """Bind and start serving; returns the bound port (address may use port 0)."""
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=_sotw_request,
                response_serializer=_identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=_delta_request,
                response_serializer=_identity,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        # Behind the TLS front gRPC itself listens only on a Unix socket in a private directory.
        grpc_address = self._front.backend.grpc_address if self._front is not None else address
        port = server.add_insecure_port(grpc_address)
        if not port:
            raise OSError(f"cannot bind xDS server to {grpc_address}")
        await server.start()
        self._server = server
        self.grpc_address = grpc_address
        if self._front is not None:
            port = await self._front.start(address)
        self._watcher = asyncio.create_task(
            watch_versions(self._cache, self._convergence, self._lineage, self._streams), name="xds-convergence"
        )
        mode = "TLS" if self._front is not None else "PLAINTEXT (--xds-insecure)"
        log.info("xDS server listening on %s (port %d, %s)", address, port, mode)
        return port

    async def stop(self, grace: float = 0) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._front is not None:
            await self._front.stop()  # closes the relayed connections, removes gRPC's socket directory
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # -- introspection -----------------------------------------------------
    def connected(self) -> int:
        return len(self._streams)

    def fleet_settled(self) -> tuple[int, bool]:
        """(gateways connected to this server, whether every one has ACKed the current listeners and
        routes): what Gateway API `Programmed` reports."""
        streams = [s for s in self._streams.values() if s.node_id and not s.closed]
        return len(streams), all(s.routes_settled(self._cache) for s in streams)

    def served_versions(self) -> dict[str, int]:
        """The served cache's version of each type but endpoints (which change without any object
        of a frontend changing): a change is served to a gateway once it ACKed at least these."""
        return {t: self._cache.get(t).version for t in PUSH_ORDER if t != ENDPOINT}

    def fleet_acked(self, required: Mapping[str, int]) -> tuple[int, int]:
        """(gateways connected to this server, how many of them have ACKed at least `required`)."""
        streams = [s for s in self._streams.values() if s.node_id and not s.closed]
        return len(streams), sum(1 for s in streams if s.acked_at_least(required))

    def fleet_states(self) -> list[dict[str, Any]]:
        """/debug/syncz's group, current versions and NACK times without what costs: the history
        reads it every second, at 1,000 streams too."""
        return [s.fleet_state() for s in self._streams.values()]

    def syncz(self) -> list[dict[str, Any]]:
        """Per stream and type: sent/ACKed versions, nonce, last NACK (for /debug/syncz)."""
        return [s.syncz() for s in sorted(self._streams.values(), key=lambda s: s.id)]

    # -- stream handlers ---------------------------------------------------
    async def _sotw(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await self._serve(SOTW, requests, context)

    async def _delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await self._serve(DELTA, requests, context)

    async def _serve(self, protocol: str, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        peer, client = await self._auth.authenticate(context)
        message = await context.read()  # not gRPC's `requests` iterator: two coroutine hops fewer per ACK
        if message is grpc.aio.EOF:
            return
        first, first_raw = message
        node_id, group = (first.node.id, first.node.cluster) if first.HasField("node") else ("", "")
        await self._auth.authorize(context, peer, node_id, group, client)
        s = StreamState(id=next(self._ids), protocol=protocol, peer=client, wake=self._cache.waiter(),
                        identity=peer.describe(), keyless=not peer.authenticated)  # fmt: skip
        self._on_request(s, first, first_raw)
        del first, first_raw, message, requests  # not kept for the stream's life (see `_read`)
        self._streams[s.id] = s
        fit_young_gc(len(self._streams))
        self._metrics.connected_proxies.labels(protocol).inc()
        reader = asyncio.create_task(self._read(s, context), name=f"xds-read-{s.id}")
        try:
            while True:
                s.wake.clear()
                if self._cache.ready:
                    await self._push(s, context)
                    self._convergence.update(s, self._lineage)
                if s.closed:
                    break
                if self._cache.ready:
                    await s.wake.wait()
                else:  # readiness flips without a wake-up; poll until it does
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(s.wake.wait(), _NOT_READY_POLL)
        finally:
            reader.cancel()
            self._cache.drop_waiter(s.wake)
            del self._streams[s.id]
            fit_young_gc(len(self._streams))
            self._metrics.connected_proxies.labels(protocol).dec()
            log.info("xDS stream closed: node=%s group=%s protocol=%s", s.node_id, s.node_cluster, protocol)
            self._convergence.forget(s)

    async def _read(self, s: StreamState, context: grpc.aio.ServicerContext) -> None:
        try:
            while (message := await context.read()) is not grpc.aio.EOF:
                outcome = self._on_request(s, *message)
                # Not held while waiting for the next one: a SotW ACK repeats every subscribed name
                # (1,000 EDS names: ~30 KiB, and its parsed form more), ~140 KiB per idle stream.
                del message
                if outcome != ACK or _may_be_due(s, self._cache):
                    s.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream is going away; the handler logs the close
            log.debug("xDS stream %d read ended: %r", s.id, exc)
        finally:
            s.closed = True
            s.wake.set()

    def _on_request(self, s: StreamState, req: Any, raw: bytes = b"") -> str | None:
        if req.HasField("node") and s.set_node(req.node):
            log.info("xDS stream connected: node=%s group=%s protocol=%s peer=%s identity=%s",
                     s.node_id, s.node_cluster, s.protocol, s.peer, s.identity)  # fmt: skip
        if not req.type_url:
            log.warning("xDS request without type_url from node=%s ignored", s.node_id)
            return None
        outcome = on_sotw_request(s, req, raw) if s.protocol == SOTW else on_delta_request(s, req)
        counters = self._counters[req.type_url]
        kind = counters.kind
        if outcome in (ACK, NACK) and req.type_url == CLUSTER:
            on_clusters_answered(s)
        elif outcome == ACK and req.type_url == ENDPOINT:
            on_endpoints_acked(s)
        if outcome == ACK:
            counters.acks.inc()
            self._convergence.update(s, self._lineage, req.type_url)
        elif outcome == NACK:
            counters.nacks.inc()
            st = s.types[req.type_url]
            log.warning(
                "xDS NACK: node=%s group=%s type=%s version=%s error=%s",
                s.node_id,
                s.node_cluster,
                kind,
                st.sent_version,
                req.error_detail.message,
            )
        elif outcome == STALE:
            log.debug("xDS stale nonce %r for %s from node=%s ignored", req.response_nonce, kind, s.node_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("xDS %s request node=%s %s nonce=%r version=%r names=%d+%d/-%d -> %s", s.protocol, s.node_id,
                      kind, req.response_nonce, getattr(req, "version_info", ""),
                      len(getattr(req, "resource_names", ())), len(getattr(req, "resource_names_subscribe", ())),
                      len(getattr(req, "resource_names_unsubscribe", ())), outcome)  # fmt: skip
        return outcome

    # -- sending -----------------------------------------------------------
    async def _push(self, s: StreamState, context: grpc.aio.ServicerContext) -> None:
        """Send every type that is due, in push order."""
        types = s.types
        order = PUSH_ORDER if types.keys() <= _PUSH_TYPES else _push_order(types)
        clusters_due = False
        warming: bool | None = None  # looked at once, after clusters and endpoints went out
        # One view of the cache for the whole push: a batch built while a response is awaited must not
        # reach a later type before an earlier one (routes naming clusters this push found up to date).
        get, group = self._cache.get, s.group  # every type of `order`: the reader may add one meanwhile
        view = {type_url: get(type_url, group) for type_url in order}
        for type_url in order:
            st = types.get(type_url)
            if st is None or not st.requested:
                continue
            if type_url in _NAME_CLUSTERS:
                if warming is None:
                    warming = still_warming(s, self._cache)
                if clusters_due or warming:
                    continue  # make-before-break: these wait for the clusters they may name
            snap = view[type_url]
            if st.pending:
                if type_url == CLUSTER and snap.version > st.sent_cache_version:
                    clusters_due = True
                continue
            if snap.version == st.examined and not st.force:
                continue  # nothing due at this version: skip without touching its resources
            if s.keyless:
                snap = self._keyless.snapshot(type_url, snap)
            respond = self._responses.sotw if s.protocol == SOTW else self._responses.delta
            before = st.sent_resources
            body = respond(s, st, snap)
            if body is None:
                continue
            if type_url == CLUSTER and st.sent_cache_version < snap.version:
                clusters_due = True  # a Delta chunk (`chunking`): more clusters follow it
            counters = self._counters[type_url]
            counters.pushes.inc()
            counters.resources_sent.inc(st.sent_resources - before)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("xDS %s response node=%s %s nonce=%s version=%s", s.protocol, s.node_id,
                          short_name(type_url), st.nonce, st.sent_version)  # fmt: skip
            await context.write(body)
            if s.closed:
                return


def lineage_of(cache: SnapshotCache) -> Callable[[str, str], str]:
    """For a stream in `group`: the group whose snapshot of `type_url` it actually reads."""

    return cache.lineage


async def watch_versions(
    cache: SnapshotCache,
    convergence: Convergence,
    lineage: Callable[[str, str], str],
    streams: Mapping[int, StreamState],
) -> None:
    """Register each new version while proxies are connected, to time its convergence."""
    ev = cache.waiter()
    seen: dict[tuple[str, str], int] = {}

    def changed() -> list[tuple[tuple[str, str], TypeSnapshot]]:
        out = []
        for group in cache.groups():
            for type_url in PUSH_ORDER:
                snap = cache.get(type_url, group)
                key = (type_url, lineage(type_url, group))
                if snap.version > seen.get(key, 0):
                    seen[key] = snap.version
                    out.append((key, snap))
        return out

    changed()  # what exists at start is not a change to time
    try:
        while True:
            await ev.wait()
            ev.clear()
            fresh = changed()
            if not streams:
                continue
            for key, snap in fresh:
                convergence.note(key, snap.version, snap.changed_at, streams.values(), lineage)
    finally:
        cache.drop_waiter(ev)
