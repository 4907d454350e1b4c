"""Delta: one decision per change for the streams in lockstep (`Responses.delta`).

A fleet that took the last change holds the same snapshot, reconciled at the same version, and is
subscribed to the same (shared) names: the next change is due to each of them as the same response.
Working it out once instead of once per stream spares each of 1,000 streams the change's candidate
names, their comparison and the response's lookup. A stream with anything of its own (differences,
names owed or subscribed since, a NACK, a forced answer, an on-demand gateway, clusters, whose
responses also depend on the stream's warming and routes) is worked out on its own, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from controlplane.xds.cache import Resource, TypeSnapshot
from controlplane.xds.resources import CLUSTER
from controlplane.xds.tracking import StreamState, TypeState
from controlplane.xds.views import Names

_MAX_DECISIONS = 64


def lockstep_key(s: StreamState, st: TypeState, snap: TypeSnapshot, lineage: str) -> tuple[object, ...] | None:
    """What a Delta response is a function of for a stream in lockstep, or None when the stream is
    not: it must hold exactly the snapshot it was last reconciled with (no differences of its own,
    nothing owed, nothing forced, no subscription since, no NACK), and the type must not be
    clusters (whose responses also depend on the stream's warming and routes) nor an on-demand
    gateway's (whose names and listeners are its own)."""
    known = st.known
    if (
        st.force
        or not st.synced
        or st.synced_lineage != lineage
        or st.owed
        or not st.in_sync
        or st.subscribed_since
        or st.nacked
        or known.extra
        or s.on_demand
        or st.type_url == CLUSTER
    ):
        return None
    return (st.type_url, id(snap), st.synced, lineage, id(known.base), id(known.only), st.wildcard, id(st.names))


class Decision:
    """One Delta decision shared by the streams in the same state (see `Responses.delta`): the
    objects its key names by id (kept alive here, so the ids cannot be reused) and what was due."""

    __slots__ = ("base", "body", "count", "names", "nonce", "only", "snap", "version")

    def __init__(self, snap: TypeSnapshot, base: Mapping[str, Resource], only: frozenset[str] | None, names: Names,
                 body: bytes | None, nonce: str, version: str, count: int) -> None:  # fmt: skip
        self.snap, self.base, self.only, self.names = snap, base, only, names
        self.body, self.nonce, self.version, self.count = body, nonce, version, count

    def fits(self, snap: TypeSnapshot, st: TypeState) -> bool:
        known = st.known
        return self.snap is snap and self.base is known.base and self.only is known.only and self.names is st.names

    def apply(self, st: TypeState, snap: TypeSnapshot, lineage: str) -> bytes | None:
        """What `Responses._delta` does to a stream in this state, without working it out again."""
        st.examined = snap.version
        st.synced, st.synced_lineage = snap.version, lineage
        st.owed = ()
        st.known.rebase(snap.resources, None if st.wildcard else st.names)
        if self.body is None:
            st.current = max(st.current, snap.version)
            return None
        st.record_sent(self.version, snap.version, self.nonce, self.count)
        return self.body


class Before:
    """What a stream held before its response was worked out (the decision is keyed by it)."""

    __slots__ = ("base", "names", "nonce", "only", "sent")

    def __init__(self, st: TypeState) -> None:
        self.base, self.only, self.names = st.known.base, st.known.only, st.names
        self.nonce, self.sent = st.nonce, st.sent_resources


class Decisions:
    """The latest decisions by key, bounded."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[object, ...], Decision] = OrderedDict()

    def find(self, key: tuple[object, ...], st: TypeState, snap: TypeSnapshot) -> Decision | None:
        """The decision for a stream in this state; None if there is none, or if its (shared) nonce is
        the stream's last one (a response must carry a new nonce: worked out afresh)."""
        hit = self._kept.get(key)
        if hit is None or not hit.fits(snap, st) or hit.nonce == st.nonce:
            return None
        self._kept.move_to_end(key)
        return hit

    def remember(
        self, key: tuple[object, ...], before: Before, st: TypeState, snap: TypeSnapshot, body: bytes | None
    ) -> bytes | None:
        """Keep what the full path did to a stream, if it ended as `Decision.apply` would leave it
        (whole, reconciled with `snap`, nothing held or owed); returns `body`."""
        if st.synced != snap.version or st.examined != snap.version or st.owed or st.known.base is not snap.resources:
            return body
        if body is None:
            decision = Decision(snap, before.base, before.only, before.names, None, "", "", 0)
        elif st.nonce != before.nonce:
            decision = Decision(snap, before.base, before.only, before.names, body, st.nonce, st.sent_version,
                                st.sent_resources - before.sent)  # fmt: skip
        else:
            return body
        self._kept[key] = decision
        self._kept.move_to_end(key)
        if len(self._kept) > _MAX_DECISIONS:
            self._kept.popitem(last=False)
        return body
