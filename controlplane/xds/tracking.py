"""Per-stream xDS bookkeeping: subscriptions, sent/ACKed/NACKed versions, convergence.

Kept free of gRPC and I/O so the protocol rules (what is an ACK, a NACK, a stale
request, a subscription change) can be read and tested on their own; the server
decides what to send from this state.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from controlplane.protowire import varint
from controlplane.xds.cache import DEFAULT_GROUP, Resource, SnapshotCache
from controlplane.xds.pinned import wants_on_demand
from controlplane.xds.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, LISTENER, ROUTE, SHORT_NAMES
from controlplane.xds.views import EMPTY_NAMES, Known, Names, extend_names, shared_names, without_names

SOTW = "sotw"
DELTA = "delta"

# What a request turned out to be.
STALE = "stale"  # response_nonce is not the latest one sent for the type
ACK = "ack"
NACK = "nack"
REQUEST = "request"  # first request for a type, or a subscription change without a nonce

WILDCARD = "*"
_MAX_PENDING_VERSIONS = 256


def short_name(type_url: str) -> str:
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Nack:
    version: str
    error: str
    at: float  # wall clock, for humans reading /debug/syncz


@dataclass(eq=False, slots=True)
class TypeState:
    """One resource type on one stream."""

    type_url: str
    requested: bool = False
    wildcard: bool = False
    legacy_wildcard: bool = False  # SotW: first request had no names
    names: Names = EMPTY_NAMES  # shared by every stream subscribed to the same names
    force: bool = False  # the client asked and must get an answer even if nothing changed
    pending: bool = False  # a response is out and neither ACKed nor NACKed yet
    nonce: str = ""
    sent_version: str = ""
    sent_cache_version: int = 0
    sent_at: float = 0.0
    # time.monotonic() of the last response sent and of the last ACK: with /debug/snapshot's
    # built_monotonic, where an update's time goes (bench/route_breakdown.py, same host).
    sent_monotonic: float = 0.0
    acked_monotonic: float = 0.0
    sent: Mapping[str, Resource] = field(default_factory=dict)  # SotW: what the client holds (a Subset view)
    known: Known = field(default_factory=Known)  # Delta: name -> version the client holds
    acked_version: str | None = None
    nacked: bool = False  # the last answer was a NACK
    nacked_cache_version: int = 0
    last_nack: Nack | None = None
    current: int = 0  # cache version this stream is known to be up to date with (for convergence)
    # Resources put on the wire on this stream so far: shows what a reconnecting Delta client,
    # whose initial_resource_versions match, was spared (it stays 0 when nothing differed).
    sent_resources: int = 0
    # Cache version at which nothing more was due and nothing was held back: until the cache or
    # the subscription moves, the type is skipped without looking at its (maybe 10,000) resources.
    examined: int = -1
    # Delta: cache version (and the group whose snapshot it was) that `known` was last reconciled
    # with; from there only names changed in the cache since, or subscribed since, need a look.
    # 0 means look at everything (first response, wildcard change, unsubscribe).
    synced: int = 0
    synced_lineage: str = ""
    subscribed_since: set[str] = field(default_factory=set)
    owed: tuple[str, ...] = ()  # Delta: names left for the next chunks of a chunked response (`chunking`)
    in_sync: bool = False  # Delta: a complete response (or none needed) reached it once: no more chunking
    # SotW: digest of the last request's resource_names as sent (see `names_digest`).
    names_digest: bytes = b""

    def record_sent(self, version: str, cache_version: int, nonce: str, count: int) -> None:
        self.sent_resources += count
        self.sent_version = version
        self.sent_cache_version = cache_version
        self.nonce = nonce
        self.sent_at = time.time()
        self.sent_monotonic = time.monotonic()
        self.pending = True
        self.force = False

    def answer(self, req: Any, version: str) -> str:
        """ACK/NACK bookkeeping for a request answering the response in flight."""
        self.pending = False
        if req.HasField("error_detail"):
            self.nacked = True
            self.nacked_cache_version = max(self.nacked_cache_version, self.sent_cache_version)
            self.last_nack = Nack(self.sent_version, req.error_detail.message, time.time())
            return NACK
        self.nacked = False
        self.acked_version = version
        self.acked_monotonic = time.monotonic()
        self.current = max(self.current, self.sent_cache_version)
        return ACK

    def syncz(self) -> dict[str, Any]:
        nack = self.last_nack
        return {
            "type_url": self.type_url,
            "sent_version": self.sent_version,
            "nonce": self.nonce,
            "pending": self.pending,
            "acked_version": self.acked_version,
            "current_version": self.current,  # cache version this proxy is known to be up to date with
            "last_nack": None if nack is None else {"version": nack.version, "error": nack.error, "at": nack.at},
            "wildcard": self.wildcard,
            "subscribed": len(self.names),
            "resources": len(self.sent) or len(self.known),
            "sent_resources": self.sent_resources,
            "sent_monotonic": self.sent_monotonic,
            "acked_monotonic": self.acked_monotonic,
        }


@dataclass(eq=False, slots=True)
class StreamState:
    """One ADS stream (one Envoy connection)."""

    id: int
    protocol: str
    peer: str
    wake: asyncio.Event  # set by the cache on change and by the reader on each request
    connected_at: float = field(default_factory=time.time)
    node_id: str = ""
    node_cluster: str = ""
    group: str = DEFAULT_GROUP
    identity: str = ""  # how the client authenticated and as whom (never a credential)
    keyless: bool = False  # unauthenticated (--xds-insecure): private keys are taken out
    on_demand: bool = False  # its bootstrap asked for on-demand clusters (`xds/pinned.py`)
    closed: bool = False
    types: dict[str, TypeState] = field(default_factory=dict)
    # EDS names of clusters new to this stream whose endpoints are not delivered yet, with the
    # time.monotonic() after which routes stop waiting for them and whether delivered means ACKed
    # (rather than written: see `warming`).
    warming: dict[str, tuple[float, bool]] = field(default_factory=dict)

    def state(self, type_url: str) -> TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeState(type_url)
        return st

    def set_node(self, node: Any) -> bool:
        """Take the node from the first message that has one; True if it was new."""
        if self.node_id or not node.id:
            return False
        self.node_id = node.id
        self.node_cluster = node.cluster
        self.group = node.cluster or DEFAULT_GROUP
        self.on_demand = self.protocol == DELTA and wants_on_demand(node)
        return True

    def routes_settled(self, cache: SnapshotCache) -> bool:
        """True once listeners and routes are ACKed at the current version (clusters may then go)."""
        for type_url in (LISTENER, ROUTE):
            st = self.types.get(type_url)
            if st is None or not st.requested:
                continue
            if st.pending or st.nacked or st.current < cache.get(type_url, self.group).version:
                return False
        return True

    def acked_at_least(self, required: Mapping[str, int]) -> bool:
        """True once this stream has ACKed, for every type it subscribes to, a cache version at least
        the one given (a version holding some change: what KIngress LoadBalancerReady waits for)."""
        for type_url, version in required.items():
            st = self.types.get(type_url)
            if st is not None and st.requested and st.current < version:
                return False
        return True

    def syncz(self) -> dict[str, Any]:
        return {
            "stream": self.id,
            "node_id": self.node_id,
            "node_cluster": self.node_cluster,
            "protocol": self.protocol,
            "peer": self.peer,
            "identity": self.identity,
            "connected_at": self.connected_at,
            "types": {short_name(t): st.syncz() for t, st in self.types.items() if st.requested},
        }

    def fleet_state(self) -> dict[str, Any]:
        """Of `syncz`, only the group and per type the current version and the last NACK's time."""
        types = {}
        for type_url, st in self.types.items():
            if st.requested:
                nack = st.last_nack
                types[short_name(type_url)] = {"current_version": st.current,
                                               "last_nack": None if nack is None else {"at": nack.at}}  # fmt: skip
        return {"node_cluster": self.node_cluster, "types": types}


def names_digest(req: Any, raw: bytes) -> bytes:
    """A digest of the bytes between a request's version_info and its response_nonce, or b"".

    Envoy serializes fields in number order, so those bytes are its node (if sent), its
    resource_names and its type_url: equal bytes mean the same names in the same order. This
    spares each SotW ACK, which repeats every subscribed name (1,000 EDS names for 1,000
    clusters), turning them into a set to find they did not change. b"" (compare as a set) when
    the request is not laid out that way or is a NACK.
    """
    if req.HasField("error_detail"):
        return b""
    version, nonce = req.version_info.encode(), req.response_nonce.encode()
    head = b"\x0a" + varint(len(version)) + version if version else b""
    tail = b"\x2a" + varint(len(nonce)) + nonce if nonce else b""
    if not raw.startswith(head) or not raw.endswith(tail) or len(raw) < len(head) + len(tail):
        return b""
    return hashlib.sha256(memoryview(raw)[len(head) : len(raw) - len(tail)]).digest()[:16]


def on_sotw_request(stream: StreamState, req: Any, raw: bytes = b"") -> str:
    """Apply a DiscoveryRequest to the stream state; returns STALE, ACK, NACK or REQUEST.

    `raw`, the request's serialized bytes, lets an unchanged name list be recognised without
    parsing it into a set (see `names_digest`).

    As go-control-plane does, a request with a stale nonce is ignored entirely:
    the client will answer the newer response with its current subscription anyway.
    """
    st = stream.state(req.type_url)
    if req.response_nonce:
        if req.response_nonce != st.nonce:
            if st.requested and not st.wildcard and st.names and not req.resource_names:
                # Envoy dropped its last watch of this type (last cluster or certificate gone). It
                # will not answer the response in flight, so nothing is pending any more.
                st.names = EMPTY_NAMES
                st.names_digest = b""
                st.pending = False
                st.examined = -1
                return REQUEST
            return STALE
        # Envoy repeats the latest nonce when only its subscription changes.
        outcome = st.answer(req, req.version_info) if st.pending else REQUEST
    else:
        outcome = REQUEST
        st.pending = False
        st.force = True
    digest = names_digest(req, raw) if raw else b""
    if digest and digest == st.names_digest and st.requested:
        return outcome  # the same names as last time (every SotW ACK repeats them): nothing to redo
    st.names_digest = digest
    names = set(req.resource_names)
    if not st.requested:
        st.requested = True
        st.legacy_wildcard = not names
        wildcard = not names or WILDCARD in names
    else:
        if names and WILDCARD not in names:
            st.legacy_wildcard = False
        wildcard = WILDCARD in names or (st.legacy_wildcard and not names)
    names.discard(WILDCARD)
    if wildcard != st.wildcard or names != st.names:
        st.force = True  # respond for the new subscription set
        st.examined = -1
        if req.type_url == ENDPOINT and st.sent_version:  # what is new to the client (`responses.sotw`)
            st.subscribed_since |= names - st.names
    st.wildcard = wildcard
    if names != st.names:
        st.names = shared_names(names)  # N streams subscribed alike share one set
    return outcome


class DeltaAck:
    """A DeltaDiscoveryRequest holding only type_url and response_nonce: a plain ACK, the one
    message every Delta stream sends per response (see `delta_ack`). Reads as the parsed message
    would for what the protocol code looks at."""

    __slots__ = ("response_nonce", "type_url")
    resource_names_subscribe: tuple[str, ...] = ()
    resource_names_unsubscribe: tuple[str, ...] = ()
    initial_resource_versions: Mapping[str, str] = {}

    def __init__(self, type_url: str, response_nonce: str) -> None:
        self.type_url = type_url
        self.response_nonce = response_nonce

    def HasField(self, name: str) -> bool:  # the protobuf method it stands in for
        return False


_TYPE_URL_TAG, _NONCE_TAG = 0x12, 0x32  # DeltaDiscoveryRequest fields 2 and 6, length-delimited
_TYPE_URLS: dict[bytes, str] = {}


def delta_ack(raw: bytes) -> DeltaAck | None:
    """The request as a `DeltaAck` when its bytes are exactly `type_url` then `response_nonce`, or None.

    Every change brings one such ACK per stream and type; recognising it from its bytes spares
    parsing it and, in `on_delta_request`, the subscription bookkeeping a real request needs.
    """
    size = len(raw)
    if size < 4 or raw[0] != _TYPE_URL_TAG or raw[1] >= 0x80:
        return None
    end = 2 + raw[1]
    if end + 2 > size or raw[end] != _NONCE_TAG or raw[end + 1] >= 0x80 or end + 2 + raw[end + 1] != size:
        return None
    key = raw[2:end]
    type_url = _TYPE_URLS.get(key)
    try:
        if type_url is None:
            type_url = key.decode()
            if len(_TYPE_URLS) < 64:
                _TYPE_URLS[key] = sys.intern(type_url)
        return DeltaAck(type_url, raw[end + 2 :].decode())
    except UnicodeDecodeError:
        return None  # the parser will say what is wrong with it


def on_delta_request(stream: StreamState, req: Any) -> str:
    """Apply a DeltaDiscoveryRequest; returns STALE, ACK, NACK or REQUEST.

    Unlike SotW, subscribe/unsubscribe lists are incremental, so they are applied
    even when the ACK part of the request is stale (ignoring them would lose them).
    """
    if type(req) is DeltaAck:  # a plain ACK of a type already requested: no subscription to apply
        known = stream.types.get(req.type_url)
        if known is not None and known.requested:
            if req.response_nonce != known.nonce:
                return STALE
            return known.answer(req, known.sent_version) if known.pending else REQUEST
    st = stream.state(req.type_url)
    outcome = REQUEST
    if req.response_nonce:
        if req.response_nonce == st.nonce and st.pending:
            outcome = st.answer(req, st.sent_version)
        elif req.response_nonce != st.nonce:
            outcome = STALE
    subscribe = set(req.resource_names_subscribe)
    if not st.requested:
        st.requested = True
        st.force = True
        versions = dict(req.initial_resource_versions)
        versions.pop(WILDCARD, None)
        st.known = Known(versions)
        st.wildcard = WILDCARD in subscribe or (not subscribe and req.type_url in FULL_STATE_TYPES)
        st.synced = 0
    elif WILDCARD in subscribe and not st.wildcard:
        st.wildcard = True
        st.synced = 0
    subscribe.discard(WILDCARD)
    if subscribe or req.resource_names_unsubscribe:
        st.examined = -1
        # Unsynced, the next push compares everything anyway (`_delta_candidates`). Cluster names are
        # kept regardless: a name asked for that has no cluster is answered from them (`responses.py`).
        if st.synced or st.type_url == CLUSTER:
            st.subscribed_since |= subscribe - st.names
    if req.resource_names_unsubscribe:
        st.synced = 0
    if not subscribe <= st.names:
        st.names = extend_names(st.names, subscribe)
    if req.resource_names_unsubscribe:
        names = st.names
        gone: set[str] = set()
        for name in req.resource_names_unsubscribe:
            if name == WILDCARD:
                st.wildcard = False
                for known in [n for n in st.known if n not in names or n in gone]:
                    st.known.discard(known)
                continue
            gone.add(name)
            if not st.wildcard:
                st.known.discard(name)
        st.names = without_names(names, gone)
    return outcome


class Convergence:
    """Times each (type, version) from `changed_at` until every interested stream is current.

    Keys are (type_url, lineage) where lineage is the group whose snapshot a stream
    reads (its own, or the default group it falls back to). When a version is noted,
    the streams that still have to catch up are remembered; each stream event then
    costs O(pending versions), not O(streams). A newer version being ACKed satisfies
    older ones too; a stream that disconnects is no longer waited for.
    """

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # key -> version -> (changed_at, ids of streams not yet current)
        self._pending: dict[tuple[str, str], dict[int, tuple[float, set[int]]]] = {}

    def note(
        self,
        key: tuple[str, str],
        version: int,
        changed_at: float,
        streams: Iterable[StreamState],
        lineage: Callable[[str, str], str],
    ) -> None:
        type_url, lin = key
        relevant = [
            (s.id, st.current)
            for s in streams
            if (st := s.types.get(type_url)) is not None and st.requested and lineage(type_url, s.group) == lin
        ]
        if not relevant:  # nobody to wait for: nothing meaningful to time
            return
        waiting = {sid for sid, current in relevant if current < version}
        if not waiting:
            self._histogram.observe(max(0.0, time.monotonic() - changed_at))
            return
        versions = self._pending.setdefault(key, {})
        versions[version] = (changed_at, waiting)
        if len(versions) > _MAX_PENDING_VERSIONS:
            del versions[min(versions)]

    def pending(self) -> dict[tuple[str, str], list[int]]:
        return {k: sorted(v) for k, v in self._pending.items() if v}

    def update(self, stream: StreamState, lineage: Callable[[str, str], str], answered: str = "") -> None:
        """Re-check the versions this stream was holding back (after an ACK of type `answered`, or a
        push cycle: every type)."""
        if not self._pending:
            return
        if answered:
            acked = stream.types.get(answered)
            if acked is not None:
                key = (answered, lineage(answered, stream.group))
                versions = self._pending.get(key)
                if versions:
                    self._settle(key, versions, stream.id, acked.current)
            return
        for type_url, st in stream.types.items():
            key = (type_url, lineage(type_url, stream.group))
            versions = self._pending.get(key)
            if versions:
                self._settle(key, versions, stream.id, st.current)

    def forget(self, stream: StreamState) -> None:
        """The stream is gone; stop waiting for it."""
        for key, versions in list(self._pending.items()):
            self._settle(key, versions, stream.id, None)

    def _settle(
        self, key: tuple[str, str], versions: dict[int, tuple[float, set[int]]], sid: int, current: int | None
    ) -> None:
        """Stream `sid` is current up to `current` (None: it is gone): it no longer holds those versions.

        Costs O(pending versions) per stream event, whatever the number of streams waited for.
        """
        now = time.monotonic()
        for version in sorted(versions):
            if current is not None and current < version:
                break  # newer versions are still ahead of this stream
            changed_at, waiting = versions[version]
            waiting.discard(sid)
            if not waiting:
                del versions[version]
                self._histogram.observe(max(0.0, now - changed_at))
        if not versions:
            del self._pending[key]
