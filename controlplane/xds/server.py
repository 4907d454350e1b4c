"""ADS server (State-of-the-World and Delta) over grpc.aio.

Responses are assembled as bytes straight from the cache's pre-serialized
`Any` payloads, so a resource is serialized once per version however many
Envoys receive it. Each stream runs as its own task that wakes on any cache
change or request and sends whatever its state says is due, always computed
from the latest snapshot: a slow stream coalesces versions and never blocks
others.

Protocol choices (see design.md "xDS protocol rules"):
- One response per type in flight per stream (as go-control-plane): the next
  version of a type goes out after the previous one is ACKed or NACKed, which
  bounds what a slow Envoy can queue and coalesces bursts.
- Types go out in PUSH_ORDER (CDS, EDS, LDS, SRDS, RDS, SDS). While a CDS
  response is in flight and a newer CDS version waits behind it, listeners and
  routes are held back, so Envoy never sees a route before the cluster it names.
  Endpoints and secrets are never held: Envoy needs them to finish warming the
  clusters it was sent, and ACKs a CDS response only once those are warm
  (holding EDS too deadlocked a stream until Envoy's 15 s initial-fetch timeout).
- A NACK leaves the type alone until a newer cache version with different
  content exists; the rejected content is never re-sent (a subscription change
  from the client is still answered).
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
  public port is the TLS front and gRPC listens on loopback behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import DEFAULT_GROUP, Resource, SnapshotCache, TypeSnapshot
from controlplane.xds.keyless import KeylessView
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE
from controlplane.xds.tlsfront import TlsFiles, TlsFront
from controlplane.xds.tracking import (
    ACK,
    DELTA,
    NACK,
    SOTW,
    STALE,
    Convergence,
    StreamState,
    TypeState,
    on_delta_request,
    on_sotw_request,
    short_name,
)

log = logging.getLogger("controlplane.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_NOT_READY_POLL = 0.05

# --------------------------------------------------------------------------
# Wire encoding (proto3: tag byte = field_number << 3 | 2 for length-delimited)


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field_number: int, data: bytes, parts: list[bytes]) -> None:
    parts.append(varint(field_number << 3 | 2))
    parts.append(varint(len(data)))
    parts.append(data)


def _s(field_number: int, text: str, parts: list[bytes]) -> None:
    if text:  # proto3 leaves empty strings off the wire
        _ld(field_number, text.encode(), parts)


def encode_control_plane(identifier: str) -> bytes:
    """envoy.config.core.v3.ControlPlane{identifier}."""
    parts: list[bytes] = []
    _s(1, identifier, parts)
    return b"".join(parts)


def encode_discovery_response(
    version_info: str, resources: Iterable[bytes], type_url: str, nonce: str, control_plane: bytes = b""
) -> bytes:
    """DiscoveryResponse bytes from serialized Any payloads, in field-number order."""
    parts: list[bytes] = []
    _s(1, version_info, parts)
    for any_bytes in resources:
        _ld(2, any_bytes, parts)
    _s(4, type_url, parts)
    _s(5, nonce, parts)
    if control_plane:
        _ld(6, control_plane, parts)
    return b"".join(parts)


def encode_resource(res: Resource) -> bytes:
    """envoy.service.discovery.v3.Resource{version=1, resource=2, name=3}."""
    parts: list[bytes] = []
    _s(1, res.version, parts)
    _ld(2, res.any_bytes, parts)
    _s(3, res.name, parts)
    return b"".join(parts)


def encode_delta_response(
    system_version_info: str,
    resources: Iterable[Resource],
    type_url: str,
    nonce: str,
    removed: Sequence[str] = (),
    control_plane: bytes = b"",
) -> bytes:
    """DeltaDiscoveryResponse bytes, in field-number order."""
    parts: list[bytes] = []
    _s(1, system_version_info, parts)
    for res in resources:
        _ld(2, encode_resource(res), parts)
    _s(4, type_url, parts)
    _s(5, nonce, parts)
    for name in removed:
        _ld(6, name.encode(), parts)
    if control_plane:
        _ld(7, control_plane, parts)
    return b"".join(parts)


def _identity(data: bytes) -> bytes:
    return data


# --------------------------------------------------------------------------


# Types whose SotW responses may carry only the changed resources (Envoy keeps the others).
_PARTIAL_SOTW = frozenset({ENDPOINT, ROUTE})
# Types whose resources name clusters (held while newer clusters wait to be sent).
_NAME_CLUSTERS = frozenset({LISTENER, SCOPED_ROUTE, ROUTE})


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
        self._keyless = KeylessView()
        self._control_plane = encode_control_plane(identifier)
        self._streams: dict[int, StreamState] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self._convergence = Convergence(metrics.convergence)
        self._server: grpc.aio.Server | None = None
        self.grpc_port = 0  # behind the TLS front: the loopback port only the front should dial
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------
    async def start(self, address: str) -> int:
        """Bind and start serving; returns the bound port (address may use port 0)."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                # Envoy pings every 30 s (bootstrap keepalive); do not answer with GOAWAY.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_ping_strikes", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                # Notice Envoys that vanished without closing the connection.
                ("grpc.keepalive_time_ms", 60000),
                # A proxy applying a large snapshot can be slow to answer; don't cut it for that.
                ("grpc.keepalive_timeout_ms", 60000),
            ]
        )
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        # Behind the TLS front gRPC itself only listens on loopback.
        port = server.add_insecure_port("127.0.0.1:0" if self._front is not None else address)
        if not port:
            raise OSError(f"cannot bind xDS server to {address}")
        await server.start()
        self._server = server
        self.grpc_port = port
        if self._front is not None:
            port = await self._front.start(address, port)
        self._watcher = asyncio.create_task(self._watch_versions(), name="xds-convergence")
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
            await self._front.stop()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # -- introspection -----------------------------------------------------
    def connected(self) -> int:
        return len(self._streams)

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
        requests = aiter(requests)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        node_id, group = (first.node.id, first.node.cluster) if first.HasField("node") else ("", "")
        await self._auth.authorize(context, peer, node_id, group, client)
        s = StreamState(id=next(self._ids), protocol=protocol, peer=client, wake=self._cache.waiter(),
                        identity=peer.describe(), keyless=not peer.authenticated)  # fmt: skip
        self._on_request(s, first)
        self._streams[s.id] = s
        self._metrics.connected_proxies.labels(protocol).inc()
        reader = asyncio.create_task(self._read(s, requests), name=f"xds-read-{s.id}")
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
            self._metrics.connected_proxies.labels(protocol).dec()
            log.info("xDS stream closed: node=%s group=%s protocol=%s", s.node_id, s.node_cluster, protocol)
            self._convergence.forget(s)

    async def _read(self, s: StreamState, requests: AsyncIterator[Any]) -> None:
        try:
            async for req in requests:
                self._on_request(s, req)
                s.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream is going away; the handler logs the close
            log.debug("xDS stream %d read ended: %r", s.id, exc)
        finally:
            s.closed = True
            s.wake.set()

    def _on_request(self, s: StreamState, req: Any) -> None:
        if req.HasField("node") and s.set_node(req.node):
            log.info(
                "xDS stream connected: node=%s group=%s protocol=%s peer=%s identity=%s",
                s.node_id,
                s.node_cluster,
                s.protocol,
                s.peer,
                s.identity,
            )
        if not req.type_url:
            log.warning("xDS request without type_url from node=%s ignored", s.node_id)
            return
        outcome = on_sotw_request(s, req) if s.protocol == SOTW else on_delta_request(s, req)
        kind = short_name(req.type_url)
        if outcome == ACK:
            self._metrics.acks.labels(kind).inc()
            self._convergence.update(s, self._lineage)
        elif outcome == NACK:
            self._metrics.nacks.labels(kind).inc()
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

    # -- sending -----------------------------------------------------------
    async def _push(self, s: StreamState, context: grpc.aio.ServicerContext) -> None:
        """Send every type that is due, in push order."""
        order = PUSH_ORDER + tuple(t for t in s.types if t not in PUSH_ORDER)
        clusters_due = False
        for type_url in order:
            st = s.types.get(type_url)
            if st is None or not st.requested:
                continue
            if clusters_due and type_url in _NAME_CLUSTERS:
                continue  # make-before-break: these wait for the clusters they may name
            snap = self._cache.get(type_url, s.group)
            if st.pending:
                if type_url == CLUSTER and snap.version > st.sent_cache_version:
                    clusters_due = True
                continue
            if snap.version == st.examined and not st.force:
                continue  # nothing due at this version: skip without touching its resources
            if s.keyless:
                snap = self._keyless.snapshot(type_url, snap)
            respond = self._sotw_response if s.protocol == SOTW else self._delta_response
            before = st.sent_resources
            body = respond(s, st, snap)
            if body is None:
                continue
            self._metrics.pushes.labels(short_name(type_url)).inc()
            self._metrics.resources_sent.labels(short_name(type_url)).inc(st.sent_resources - before)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("xDS %s response node=%s %s nonce=%s version=%s", s.protocol, s.node_id,
                          short_name(type_url), st.nonce, st.sent_version)  # fmt: skip
            await context.write(body)
            if s.closed:
                return

    def _next_nonce(self) -> str:
        return str(next(self._nonces))

    def _sotw_response(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | None:
        if not st.wildcard and not st.names and not st.legacy_wildcard:
            # Nothing subscribed: Envoy ignores responses for a type it no longer watches.
            st.sent = {}
            st.current = max(st.current, snap.version)
            st.examined = snap.version
            return None
        if st.type_url in _PARTIAL_SOTW and not (st.wildcard or st.force or st.nacked) and st.sent_cache_version:
            partial = self._sotw_partial_update(s, st, snap)
            if partial is not False:
                st.examined = snap.version
                return partial
        want: Mapping[str, Resource]
        if st.wildcard:
            want = snap.resources
        else:
            want = {n: r for n in sorted(st.names) if (r := snap.resources.get(n)) is not None}
        held: dict[str, Resource] = {}
        if st.type_url == CLUSTER and st.wildcard:
            gone = [n for n in st.sent if n not in want]
            if gone and not s.routes_settled(self._cache):
                held = {n: st.sent[n] for n in gone}
        content = {**want, **held} if held else dict(want)
        # Held clusters must be looked at again (when routes settle) even if the cache stays put.
        st.examined = -1 if held else snap.version
        if not st.force:
            if _same(content, st.sent):  # with held clusters: Envoy keeps what it has for now
                if not st.nacked and not held:
                    st.current = max(st.current, snap.version)
                return None
            if st.nacked and snap.version <= st.nacked_cache_version:
                return None
        version = f"{snap.digest}+hold" if held else snap.digest
        nonce = self._next_nonce()
        st.sent = content
        st.record_sent(version, snap.version, nonce, len(content))
        return encode_discovery_response(
            version, (r.any_bytes for r in content.values()), st.type_url, nonce, self._control_plane
        )

    def _sotw_partial_update(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | bool | None:
        """Only the ClusterLoadAssignments / RouteConfigurations changed since the last response.

        In SotW, EDS and RDS are not full-state types: a response may carry a subset of the
        subscribed resources and omitted ones are kept by Envoy. One EndpointSlice change then
        costs one CLA on the wire instead of every subscribed one, and one host change one route
        table partition. Returns False when the change history does not reach back far enough
        (the caller sends the full set).
        """
        names = self._cache.changed_since(st.type_url, s.group, st.sent_cache_version)
        if names is None:
            return False
        update: dict[str, Resource] = {}
        for name in names & st.names:
            res = snap.resources.get(name)
            if res is None:
                st.sent.pop(name, None)  # its cluster is gone or going; nothing to send
                continue
            old = st.sent.get(name)
            if old is None or old.version != res.version:
                update[name] = res
        if not update:
            st.current = max(st.current, snap.version)
            return None
        st.sent.update(update)
        version = snap.digest
        nonce = self._next_nonce()
        st.record_sent(version, snap.version, nonce, len(update))
        return encode_discovery_response(
            version, (r.any_bytes for r in update.values()), st.type_url, nonce, self._control_plane
        )

    def _delta_response(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | None:
        resources = snap.resources
        lineage = self._lineage(st.type_url, s.group)
        look_at = self._delta_candidates(s, st, snap, lineage)
        if look_at is None:  # everything
            if st.wildcard:
                changed = [r for n, r in resources.items() if st.known.get(n) != r.version]
                removed = [n for n in st.known if n not in resources]
            else:
                changed = [
                    r for n in sorted(st.names) if (r := resources.get(n)) is not None and st.known.get(n) != r.version
                ]
                removed = [n for n in st.known if n not in resources or n not in st.names]
        else:  # only names changed in the cache or subscribed since `known` was last reconciled
            wanted = [n for n in sorted(look_at) if st.wildcard or n in st.names]
            changed = [r for n in wanted if (r := resources.get(n)) is not None and st.known.get(n) != r.version]
            removed = [n for n in wanted if n in st.known and n not in resources]
        held = bool(removed) and st.type_url == CLUSTER and not s.routes_settled(self._cache)
        if held:
            removed = []  # until listeners and routes no longer use them
            st.examined = -1  # look again when routes settle, whatever the cache does
        else:
            st.examined = snap.version
            st.synced, st.synced_lineage = snap.version, lineage
            st.subscribed_since.clear()
        if not changed and not removed and not st.force:
            if not st.nacked and not held:
                st.current = max(st.current, snap.version)
            return None
        for r in changed:
            st.known[r.name] = r.version
        for n in removed:
            del st.known[n]
        version = snap.digest
        nonce = self._next_nonce()
        st.record_sent(version, snap.version, nonce, len(changed))
        return encode_delta_response(version, changed, st.type_url, nonce, removed, self._control_plane)

    def _delta_candidates(self, s: StreamState, st: TypeState, snap: TypeSnapshot, lineage: str) -> set[str] | None:
        """Names that can differ between `known` and `snap`, or None when all must be compared.

        Since `known` was last reconciled with version `synced` of the same group's snapshot,
        only names the cache changed after it, and names subscribed since, can differ: a change
        to one of 10,000 clusters then costs one comparison, not 10,000.
        """
        if st.force or not st.synced or st.synced_lineage != lineage:
            return None
        names = self._cache.changed_since(st.type_url, s.group, st.synced) if snap.version > st.synced else set()
        if names is None:  # the cache's history does not reach back that far
            return None
        return names | st.subscribed_since if st.subscribed_since else names

    # -- convergence -------------------------------------------------------
    def _lineage(self, type_url: str, group: str) -> str:
        """The group whose snapshot of `type_url` a stream in `group` actually reads."""
        if group == DEFAULT_GROUP:
            return DEFAULT_GROUP
        own = self._cache.get(type_url, group)
        return DEFAULT_GROUP if own is self._cache.get(type_url, DEFAULT_GROUP) else group

    async def _watch_versions(self) -> None:
        """Register each new version while proxies are connected, to time its convergence."""
        ev = self._cache.waiter()
        seen: dict[tuple[str, str], int] = {}

        def changed() -> list[tuple[tuple[str, str], TypeSnapshot]]:
            out = []
            for group in self._cache.groups():
                for type_url in PUSH_ORDER:
                    snap = self._cache.get(type_url, group)
                    key = (type_url, self._lineage(type_url, group))
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
                if not self._streams:
                    continue
                for key, snap in fresh:
                    self._convergence.note(key, snap.version, snap.changed_at, self._streams.values(), self._lineage)
        finally:
            self._cache.drop_waiter(ev)


def _same(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    if len(a) != len(b):
        return False
    for name, res in a.items():
        other = b.get(name)
        if other is None or (other is not res and other.version != res.version):
            return False
    return True
