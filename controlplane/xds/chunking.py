"""Delta: a large response goes out in chunks of at most `limit` resources, one chunk per ACK.

Envoy decodes a whole DeltaDiscoveryResponse at once: 10,000 clusters in one message means the
message, its decoded protos and the per-resource copies are alive together, and the pages they
leave behind stay fragmented in tcmalloc (BENCHMARKS.md, "Envoy's memory", round 3). In chunks,
Envoy holds one chunk's transient copies at a time.

The rest of a chunked response is owed to the stream as "subscribed since" names (see
`Responses._delta_candidates`): the next push after the chunk's ACK looks at them only. A chunk
that is not the last does not advance the type's sent cache version, so an ACK of it does not
make the stream current (convergence, `routes_settled`), and listeners and routes stay held while
clusters remain to be sent (make-before-break, `XdsServer._push`). Removals go with the first
chunk. State-of-the-World never chunks: a SotW CDS/LDS response must carry every resource.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from controlplane.xds.cache import Resource
from controlplane.xds.tracking import TypeState
from controlplane.xds.views import Known

# Resources per Delta response; 0 sends every response whole. MERIDIAN_XDS_DELTA_CHUNK overrides
# it (benchmarks compare sizes with it).
DEFAULT_LIMIT = 0
PART = "+part"  # system_version_info suffix of a chunk that is not the last


def limit_from_env() -> int:
    value = os.environ.get("MERIDIAN_XDS_DELTA_CHUNK", "")
    if not value:
        return DEFAULT_LIMIT
    limit = int(value)
    if limit < 0:
        raise ValueError(f"MERIDIAN_XDS_DELTA_CHUNK must be >= 0, not {value!r}")
    return limit


def split(changed: Sequence[Resource], limit: int) -> tuple[Sequence[Resource], set[str]]:
    """(the chunk to send now, names of the resources left for later chunks)."""
    if not limit or len(changed) <= limit:
        return changed, set()
    return changed[:limit], {r.name for r in changed[limit:]}


def sent_chunk(st: TypeState, known: Known, chunk: Sequence[Resource], removed: Sequence[str], rest: set[str],
               cache_version: int, lineage: str) -> None:  # fmt: skip
    """Record that `chunk` (and the removals) went out and `rest` is still owed at `cache_version`."""
    for res in chunk:
        known[res.name] = res.version
    for name in removed:
        known.discard(name)
    st.examined = -1  # look again once this chunk is answered
    st.synced, st.synced_lineage = cache_version, lineage
    st.subscribed_since.clear()
    st.subscribed_since.update(rest)
