"""Delta: a stream's first large response of a type goes out in chunks, one chunk per ACK (over 1,000
resources: 100 at a time).

Envoy decodes a whole DeltaDiscoveryResponse at once: 10,000 clusters in one message means the
message, its decoded protos and the per-resource copies are alive together, and the pages they
leave behind stay fragmented in tcmalloc (BENCHMARKS.md, "Envoy's memory", round 3). In chunks,
Envoy holds one chunk's transient copies at a time.

Only a type's first response on a stream is chunked (a new Envoy, or a reconnecting one's
differences): that is where the big messages are. A large change on a stream that is already in
sync (endpoints of thousands of Services moving when a cluster fails over) goes out whole, as
fast as before: chunks would add one round trip per 100 resources to exactly the update that must
not wait.

What a chunked response leaves for later is owed to the stream (`TypeState.owed`, in send order);
the next push after the chunk's ACK looks at the next `limit` owed names that still differ, plus
whatever the cache changed meanwhile, so a chunk costs O(limit), not O(resources). A chunk that
is not the last does not advance the type's sent cache version: its ACK does not make the stream
current (convergence, `routes_settled`), and listeners and routes stay held while clusters are
still owed (make-before-break, `XdsServer._push`). Removals go with the chunk that found them.
A full comparison (a new subscription set, a reconnect, a gap in the cache's history) starts
over from what the client holds. State-of-the-World never chunks: a SotW CDS/LDS response must
carry every resource.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from controlplane.xds.cache import Resource
from controlplane.xds.tracking import TypeState
from controlplane.xds.views import Known

# A Delta response due more than CHUNK_ABOVE resources goes out LIMIT at a time: at 10,000 Services
# Envoy then holds ~100 MiB less (BENCHMARKS.md); up to 1,000 (a fleet of small gateways) nothing
# changes. MERIDIAN_XDS_DELTA_CHUNK=K chunks every first response of more than K resources by K (0:
# never; benchmarks compare sizes with it).
LIMIT = 100
CHUNK_ABOVE = 1000
PART = "+part"  # system_version_info suffix of a chunk that is not the last


def limit_from_env() -> tuple[int, int]:
    """(resources per chunk, chunk only responses of more than this many resources); 0: never chunk."""
    value = os.environ.get("MERIDIAN_XDS_DELTA_CHUNK", "")
    if not value:
        return LIMIT, CHUNK_ABOVE
    limit = int(value)
    if limit < 0:
        raise ValueError(f"MERIDIAN_XDS_DELTA_CHUNK must be >= 0, not {value!r}")
    return limit, limit


def next_names(st: TypeState, look_at: set[str] | None, resources: Mapping[str, Resource],
               limit: int) -> set[str] | None:  # fmt: skip
    """The names to look at for the next response: `look_at` plus the next `limit` owed names that
    still differ from what the client holds (None: compare everything, which drops what was owed)."""
    if look_at is None or not st.owed:
        st.owed = ()
        return look_at
    owed, known, taken, i = st.owed, st.known, 0, 0
    extra: set[str] = set()
    while i < len(owed) and taken < limit:
        name = owed[i]
        i += 1
        res = resources.get(name)
        if (res.version if res is not None else None) != known.get(name):  # changed, added or removed
            extra.add(name)
            taken += 1
    st.owed = owed[i:]
    return look_at | extra


def split(st: TypeState, changed: Sequence[Resource], limit: int, above: int) -> tuple[Sequence[Resource], bool]:
    """(the chunk to send now, whether more is owed after it). A type's first response on the
    stream of more than `above` resources (or any while others are owed) goes `limit` at a time,
    those past the chunk owed first."""
    first = not st.in_sync  # the stream has not yet held all of this type it asked for
    if limit and len(changed) > limit and ((first and len(changed) > above) or st.owed):
        st.owed = tuple(r.name for r in changed[limit:]) + st.owed
        changed = changed[:limit]
    return changed, bool(st.owed)


def sent_chunk(st: TypeState, known: Known, chunk: Sequence[Resource], removed: Sequence[str],
               cache_version: int, lineage: str) -> None:  # fmt: skip
    """Record that `chunk` (and the removals) went out at `cache_version`, more being owed."""
    for res in chunk:
        known[res.name] = res.version
    for name in removed:
        known.discard(name)
    st.examined = -1  # look again once this chunk is answered
    st.synced, st.synced_lineage = cache_version, lineage
    st.subscribed_since.clear()
