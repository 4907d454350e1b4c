"""xDS responses: what a stream is due for one type, encoded as bytes straight from the cache.

Resources are never re-serialized: a response is assembled from each resource's pre-serialized
`Any` payload, so a resource is serialized once per version however many Envoys receive it.
A whole response is encoded once, too: streams due the same resources at the same version (a
fleet connecting, or taking one change) get the same bytes, nonce included (`SharedBodies`).
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from controlplane.protowire import varint
from controlplane.xds import chunking
from controlplane.xds.cache import Resource, SnapshotCache, TypeSnapshot, make_resource
from controlplane.xds.pinned import OnDemandListeners, PinnedClusters
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.xds.tracking import StreamState, TypeState
from controlplane.xds.views import Names, Subset, extend_names, sorted_names
from controlplane.xds.warming import EdsNames, note_new_clusters

# Types whose SotW responses may carry only the changed resources (Envoy keeps the others).
PARTIAL_SOTW = frozenset({ENDPOINT, ROUTE})

# --------------------------------------------------------------------------
# Wire encoding (proto3: tag byte = field_number << 3 | 2 for length-delimited)


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


class SharedBodies:
    """Encoded responses kept by what they contain, so N streams due the same content share one.

    A key names the exact resources (by object identity: the entry keeps them alive, so an id
    cannot be reused while its key exists), the version and the type; the body is a function of
    those alone, so a stream only ever gets bytes built from the resources its own view holds
    (an unauthenticated stream's keyless Secrets are other objects, hence other keys). The nonce
    is shared too: it only has to differ from the stream's previous nonce for the type, and a
    body whose nonce is the stream's last one is built afresh. Bounded by entries and bytes.
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._nonces = itertools.count(1)
        self._bodies: OrderedDict[tuple[object, ...], tuple[str, bytes, object]] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def next_nonce(self) -> str:
        return str(next(self._nonces))

    def get(
        self, key: tuple[object, ...], keepalive: object, last_nonce: str, build: Callable[[str], bytes]
    ) -> tuple[str, bytes]:
        """(nonce, body) for `key`, built with a fresh nonce when not kept or when it was `last_nonce`."""
        hit = self._bodies.get(key)
        if hit is not None and hit[0] != last_nonce:
            self._bodies.move_to_end(key)
            return hit[0], hit[1]
        nonce = self.next_nonce()
        body = build(nonce)
        if hit is not None:
            self._bytes -= len(hit[1])
        self._bodies[key] = (nonce, body, keepalive)
        self._bodies.move_to_end(key)
        self._bytes += len(body)
        while self._bodies and (len(self._bodies) > self._max_entries or self._bytes > self._max_bytes):
            _, (_, old, _) = self._bodies.popitem(last=False)
            self._bytes -= len(old)
        return nonce, body


class Responses:
    """Builds the next SotW or Delta response of one type for one stream, and records it as sent."""

    def __init__(self, cache: SnapshotCache, identifier: str, lineage: Callable[[str, str], str]) -> None:
        """`lineage(type_url, group)`: the group whose snapshot a stream in `group` reads."""
        self._cache = cache
        self._control_plane = encode_control_plane(identifier)
        self._shared = SharedBodies()
        self._lineage = lineage
        self._eds_names = EdsNames()
        self._all: OrderedDict[tuple[int, int], tuple[Mapping[str, Resource], Names | None, tuple[Resource, ...]]]
        self._all = OrderedDict()
        self._delta_chunk, self._chunk_above = chunking.limit_from_env()
        self.pinned = PinnedClusters(cache, lineage)
        self._on_demand_listeners = OnDemandListeners()
        self._on_demand: OrderedDict[tuple[int, int], tuple[Names, Names, Names]] = OrderedDict()

    def _on_demand_names(self, s: StreamState, st: TypeState) -> Names:
        """What an on-demand gateway's CDS subscription (wildcard plus the names its on_demand filter
        asked for) gets: the group's pinned clusters and those names. Shared by the streams alike."""
        pinned, asked = self.pinned.of(s.group), st.names
        key = (id(pinned), id(asked))
        hit = self._on_demand.get(key)
        if hit is not None and hit[0] is pinned and hit[1] is asked:
            self._on_demand.move_to_end(key)
            return hit[2]
        names = extend_names(pinned, asked)
        self._on_demand[key] = (pinned, asked, names)
        if len(self._on_demand) > 64:
            self._on_demand.popitem(last=False)
        return names

    def _sotw_body(self, st: TypeState, version: str, resources: Sequence[Resource]) -> tuple[str, bytes]:
        key = (st.type_url, version, *map(id, resources))
        return self._shared.get(key, resources, st.nonce, lambda nonce: encode_discovery_response(
            version, (r.any_bytes for r in resources), st.type_url, nonce, self._control_plane))  # fmt: skip

    def _sotw_subset_body(self, st: TypeState, version: str, subset: Subset) -> tuple[str, bytes]:
        """A response of all of `subset`, keyed by its (shared) mapping and name set instead of by its
        resources: N streams subscribed alike find it without listing 1,000 resources each."""
        key = (st.type_url, version, "subset", id(subset.resources), id(subset.names))
        keepalive = (subset.resources, subset.names)
        return self._shared.get(key, keepalive, st.nonce, lambda nonce: encode_discovery_response(
            version, (r.any_bytes for r in subset.values()), st.type_url, nonce, self._control_plane))  # fmt: skip

    def _delta_body(
        self,
        st: TypeState,
        version: str,
        changed: Sequence[Resource],
        removed: Sequence[str],
        everything: tuple[object, ...] = (),
    ) -> tuple[str, bytes]:
        """`everything`: the (mapping, names) `changed` is all of, which then keys the body instead
        of `changed`'s 1,000 resources (see `_everything`)."""
        if everything:
            key: tuple[object, ...] = (st.type_url, version, "all", *map(id, everything), *removed)
        else:
            key = (st.type_url, version, len(changed), *map(id, changed), *removed)
        return self._shared.get(key, (changed, everything), st.nonce, lambda nonce: encode_delta_response(
            version, changed, st.type_url, nonce, removed, self._control_plane))  # fmt: skip

    def _everything(self, resources: Mapping[str, Resource], only: Names | None) -> tuple[Resource, ...]:
        """What a new Delta client subscribed to `only` (None: wildcard) gets of `resources`, listed once
        for every stream asking the same of the same snapshot (a fleet connecting)."""
        key = (id(resources), id(only))
        hit = self._all.get(key)
        if hit is not None and hit[0] is resources and hit[1] is only:
            self._all.move_to_end(key)
            return hit[2]
        if only is None:
            changed = tuple(resources.values())
        else:
            changed = tuple(r for n in sorted_names(only) if (r := resources.get(n)) is not None)
        self._all[key] = (resources, only, changed)
        if len(self._all) > 32:
            self._all.popitem(last=False)
        return changed

    def sotw(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | None:
        if not st.wildcard and not st.names and not st.legacy_wildcard:
            # Nothing subscribed: Envoy ignores responses for a type it no longer watches.
            st.sent = {}
            st.current = max(st.current, snap.version)
            st.examined = snap.version
            return None
        if st.type_url in PARTIAL_SOTW and not (st.wildcard or st.force or st.nacked) and st.sent_cache_version:
            partial = self._partial_update(s, st, snap)
            if partial is not False:
                st.examined = snap.version
                return partial
        want: Mapping[str, Resource] = Subset(snap.resources, None if st.wildcard else st.names)
        if st.type_url == ENDPOINT and not st.wildcard:
            asked = list(st.subscribed_since) if st.sent_version else st.names  # names new to the client
            st.subscribed_since.clear()
            if asked and len(want) < len(st.names):
                want = _with_empty_assignments(want, asked, snap.resources)
        held: dict[str, Resource] = {}
        if st.type_url == CLUSTER and st.wildcard:
            gone = [n for n in st.sent if n not in want]
            if gone and not s.routes_settled(self._cache):
                held = {n: st.sent[n] for n in gone}
        # By reference, not copied: what the stream holds is the snapshot's (never mutated) mapping
        # limited to its (shared) names, unless clusters are held back.
        content: Mapping[str, Resource] = {**want, **held} if held else want
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
        if isinstance(content, Subset):
            nonce, body = self._sotw_subset_body(st, version, content)
        else:
            nonce, body = self._sotw_body(st, version, tuple(content.values()))
        if st.type_url == CLUSTER:
            before = st.sent
            note_new_clusters(s, (r for n, r in content.items() if n not in before), self._eds_names)
        st.sent = content
        st.record_sent(version, snap.version, nonce, len(content))
        return body

    def _partial_update(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | bool | None:
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
        for name in sorted(names & st.names):
            res = snap.resources.get(name)
            if res is None:
                continue  # its cluster is gone or going; nothing to send
            old = st.sent.get(name)
            if old is None or old.version != res.version:
                update[name] = res
        # Only the changed names can differ, so the client now holds the snapshot's (by reference).
        st.sent = Subset(snap.resources, st.names)
        if not update:
            st.current = max(st.current, snap.version)
            return None
        version = snap.digest
        nonce, body = self._sotw_body(st, version, tuple(update.values()))
        st.record_sent(version, snap.version, nonce, len(update))
        return body

    def delta(self, s: StreamState, st: TypeState, snap: TypeSnapshot) -> bytes | None:
        if s.on_demand and st.type_url == LISTENER:
            snap = self._on_demand_listeners.snapshot(snap)  # with the on_demand filter (`pinned.py`)
        resources = snap.resources
        lineage = self._lineage(st.type_url, s.group)
        known = st.known
        wildcard, subscribed = st.wildcard, st.names
        on_demand = s.on_demand and st.type_url == CLUSTER
        if on_demand:  # its wildcard gets the pinned clusters only (`pinned.py`)
            wildcard, subscribed = False, self._on_demand_names(s, st)
        look_at = self._delta_candidates(s, st, snap, lineage)
        if on_demand and known.only is not subscribed:
            look_at = None  # pinned or asked-for names moved: compare all of them (a few, not every cluster)
        look_at = chunking.next_names(st, look_at, resources, self._delta_chunk)
        only = None if wildcard else subscribed
        everything: tuple[object, ...] = ()
        missing: list[str] = []  # names asked for that do not exist: said as removed (below)
        if look_at is None and known.base is resources and known.only is only and not known.extra:
            changed, removed = [], []  # it holds exactly this snapshot already
        elif look_at is None and known.empty():  # a new client: everything it asks for
            everything = (resources, only)
            changed, removed = list(self._everything(resources, only)), []
            if st.type_url == ENDPOINT and only is not None and len(changed) < len(only):
                missing = sorted(n for n in only if n not in resources)
        elif look_at is None:  # everything
            if wildcard:
                changed = [r for n, r in resources.items() if st.known.get(n) != r.version]
                removed = [n for n in st.known if n not in resources]
            else:
                names = sorted_names(subscribed)
                changed = [r for n in names if (r := resources.get(n)) is not None and st.known.get(n) != r.version]
                removed = [n for n in st.known if n not in resources or n not in subscribed]
                if st.type_url == ENDPOINT:
                    missing = [n for n in names if n not in resources and n not in st.known]
        else:  # only names changed in the cache or subscribed since `known` was last reconciled
            wanted = [n for n in sorted(look_at) if wildcard or n in subscribed]
            changed = [r for n in wanted if (r := resources.get(n)) is not None and st.known.get(n) != r.version]
            removed = [n for n in wanted if n in st.known and n not in resources]
        changed, more = chunking.split(st, changed, self._delta_chunk, self._chunk_above)  # more: owed after it
        if st.type_url == CLUSTER and changed:
            fresh = changed if known.empty() else [r for r in changed if r.name not in known]
            note_new_clusters(s, fresh, self._eds_names)
        if st.type_url in (CLUSTER, ENDPOINT) and st.subscribed_since and not missing:
            # A name asked for that the snapshot lacks is said at once, as removed (the Delta protocol's
            # "does not exist"). A cluster (Envoy's on_demand filter, on any gateway): OdCdsApiImpl takes it
            # as missing, so the request fails now instead of at the filter's timeout. An assignment (its
            # cluster deleted right after it went out): Envoy's EDS takes it as an empty update and ends
            # the cluster's warming, instead of warming it and holding its CDS ACK (and with it every
            # listener, route and cluster change for this gateway) for the 15 s initial_fetch_timeout.
            # (Not routes: Envoy's RDS ignores a removal.) Unsynced, the full comparison above found them.
            missing = sorted(n for n in st.subscribed_since if n not in resources and n not in known)
        held = bool(removed) and st.type_url == CLUSTER and not s.routes_settled(self._cache)
        if held:
            removed = []  # until listeners and routes no longer use them
            st.examined = -1  # look again when routes settle, whatever the cache does
            for r in changed:
                known[r.name] = r.version
        elif more:
            chunking.sent_chunk(st, known, changed, removed, snap.version, lineage)
        else:
            st.examined = snap.version
            st.in_sync = True
            st.synced, st.synced_lineage = snap.version, lineage
            st.subscribed_since.clear()
            # Once this goes out the client holds exactly the snapshot: kept by reference.
            known.rebase(resources, only)
        removed = removed + missing if missing else removed
        if on_demand:
            st.examined = -1  # its pinned set follows listeners and routes too: look again on every push
        if not changed and not removed and not st.force:
            if not st.nacked and not held:
                st.current = max(st.current, snap.version)
            return None
        version = snap.digest + chunking.PART if more else snap.digest
        # A chunk is not all of `everything`: keyed by its own resources.
        nonce, body = self._delta_body(st, version, changed, removed, () if more else everything)
        # A chunk but the last leaves the sent cache version behind: its ACK does not make the stream current.
        st.record_sent(version, st.sent_cache_version if more else snap.version, nonce, len(changed))
        return body

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


def _with_empty_assignments(
    want: Mapping[str, Resource], asked: Iterable[str], resources: Mapping[str, Resource]
) -> Mapping[str, Resource]:
    """SotW EDS: `want` plus an assignment without endpoints for each name newly asked for that the
    snapshot lacks (a cluster deleted right after its CDS response went out). SotW has no "does not
    exist" for EDS: unanswered, Envoy warms that cluster for its 15 s initial_fetch_timeout and
    withholds the CDS ACK, and every later change to the gateway waits (make-before-break). A name
    the client already had keeps what it has, as before (its cluster's removal may be held until
    routes no longer use it)."""
    missing = sorted(n for n in asked if n not in resources)
    if not missing:
        return want
    return {**want, **{n: empty_assignment(n) for n in missing}}


@functools.lru_cache(maxsize=1024)
def empty_assignment(name: str) -> Resource:
    """A ClusterLoadAssignment of `name` without endpoints (what Envoy uses after the timeout anyway)."""
    from envoy.config.endpoint.v3 import endpoint_pb2

    return make_resource(name, ENDPOINT, endpoint_pb2.ClusterLoadAssignment(cluster_name=name))


def _same(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    if isinstance(a, Subset) and a.same_as(b):
        return True
    if len(a) != len(b):
        return False
    for name, res in a.items():
        other = b.get(name)
        if other is None or (other is not res and other.version != res.version):
            return False
    return True
