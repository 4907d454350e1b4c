"""History and pin <-> documents in a backend, sharded under the per-document size limit.

Layout (every name is a document: a file, or a ConfigMap `meridian-history-<name>`):
- `blobs-<b>-<k>`: resource bytes whose content id ends in hex digit b, compressed one by one
  and packed into shards of at most MAX_DOCUMENT bytes. Only buckets whose blobs changed are
  rewritten, so one change costs one bucket, not the whole history.
- `index-<k>`: the records and the timeline (names -> content ids), zlib-compressed JSON cut
  into chunks.
- `head`: written last; says how many chunks and shards there are and a digest per bucket, so a
  reader loads a consistent set and a follower re-reads only what changed.
- `pin`: the served-version pin (absent when not pinned); written by any replica, read by all.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from controlplane.history.backends import MAX_DOCUMENT, Backend
from controlplane.history.content import bucket
from controlplane.history.recorder import History

BUCKETS = "0123456789abcdef"


def frame(cid: str, data: bytes) -> bytes:
    """One (content id, compressed bytes) entry of a shard."""
    cid_b = cid.encode()
    return struct.pack(">H", len(cid_b)) + cid_b + struct.pack(">I", len(data)) + data


def pack(blobs: Iterator[tuple[str, bytes]], limit: int = MAX_DOCUMENT) -> list[bytes]:
    """(content id, compressed bytes) pairs -> shards of at most `limit` bytes each."""
    return pack_frames(((cid, frame(cid, data)) for cid, data in blobs), limit)


def pack_frames(entries: Iterator[tuple[str, bytes]], limit: int = MAX_DOCUMENT) -> list[bytes]:
    """(content id, framed entry) pairs -> shards of at most `limit` bytes each."""
    shards: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for cid, entry in entries:
        if len(entry) > limit:
            raise ValueError(f"resource content {cid} is {len(entry)} bytes compressed, over {limit}")
        if parts and size + len(entry) > limit:
            shards.append(b"".join(parts))
            parts, size = [], 0
        parts.append(entry)
        size += len(entry)
    if parts:
        shards.append(b"".join(parts))
    return shards


def unpack(shard: bytes) -> Iterator[tuple[str, bytes]]:
    pos = 0
    while pos < len(shard):
        (n,) = struct.unpack_from(">H", shard, pos)
        cid = shard[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        (m,) = struct.unpack_from(">I", shard, pos)
        yield cid, shard[pos + 4 : pos + 4 + m]
        pos += 4 + m


@dataclass(frozen=True)
class SavePlan:
    generation: int
    buckets: dict[str, list[tuple[str, bytes]]]  # changed buckets -> every blob now in them
    document: dict[str, Any]


@dataclass
class Persister:
    backend: Backend
    writer: str = ""
    limit: int = MAX_DOCUMENT
    _compressed: dict[str, bytes] = field(default_factory=dict)  # content id -> framed zlib bytes
    _written: dict[str, set[str]] = field(default_factory=dict)  # bucket -> content ids last written in it
    _head: dict[str, Any] = field(default_factory=dict)  # the last head written or read
    _saved_generation: int = -1
    skipped: set[str] = field(default_factory=set)  # content too big to persist (rollback to it refused)
    # Called by `write` (in its worker thread) between steps: may wait while the control plane serves a change.
    step_aside: Callable[[], None] = lambda: None

    # -- writing (the leader, or the only process in file mode) ------------------------------------
    def snapshot(self, history: History, *, force: bool = False) -> SavePlan | None:
        """On the event loop: what to write (copies, so the history may change while it is written)."""
        if history.generation == self._saved_generation and not force:
            return None
        tl = history.timeline
        dirty = set(BUCKETS) if force or not self._head.get("buckets") else set(tl.dirty_buckets)
        tl.dirty_buckets.clear()
        blobs = {b: list(tl.by_bucket.get(b, {}).items()) for b in dirty}
        self._saved_generation = history.generation
        return SavePlan(history.generation, blobs, history.document())

    def write(self, plan: SavePlan) -> None:
        """In a worker thread: blobs of the changed buckets, then the index, then the head."""
        buckets: dict[str, list[Any]] = dict(self._head.get("buckets") or {})
        live: set[str] = set()
        for b, entries in sorted(plan.buckets.items()):
            self.step_aside()
            entries.sort()
            live.update(c for c, _ in entries)
            try:
                shards = pack_frames(((c, self._framed(c, d)) for c, d in entries), self.limit)
            except ValueError:
                shards = pack_frames(((c, self._framed(c, d)) for c, d in self._fitting(entries)), self.limit)
            old_n = int((buckets.get(b) or [0])[0])
            for k, shard in enumerate(shards):
                self.backend.write(f"blobs-{b}-{k}", shard)
            for k in range(len(shards), old_n):
                self.backend.delete(f"blobs-{b}-{k}")
            buckets[b] = [len(shards), hashlib.sha256(b"".join(shards)).hexdigest()[:16]]
        # Compressed copies of what left the rewritten buckets; only those buckets' ids are looked at.
        for b in plan.buckets:
            for c in self._written.get(b, set()) - live:
                self._compressed.pop(c, None)
            self._written[b] = {c for c, _ in plan.buckets[b]}
        # Level 1: the index (~1 MB of JSON at 10,000 Services) compresses in a few ms instead of
        # ~30 ms at level 6, for a slightly larger document; a save runs up to 4 times a second.
        self.step_aside()
        index = zlib.compress(orjson.dumps(plan.document), 1)
        chunks = [index[i : i + self.limit] for i in range(0, len(index), self.limit)] or [b""]
        for k, chunk in enumerate(chunks):
            self.backend.write(f"index-{k}", chunk)
        for k in range(len(chunks), int(self._head.get("index_chunks") or 0)):
            self.backend.delete(f"index-{k}")
        self._head = {
            "generation": plan.generation,
            "writer": self.writer,
            "index_chunks": len(chunks),
            "index_digest": hashlib.sha256(index).hexdigest()[:16],
            "buckets": buckets,
        }
        self.backend.write("head", orjson.dumps(self._head))

    def save(self, history: History, *, force: bool = False) -> bool:
        """Snapshot and write in one go (tests, shutdown)."""
        plan = self.snapshot(history, force=force)
        if plan is None:
            return False
        self.write(plan)
        return True

    def _framed(self, cid: str, data: bytes) -> bytes:
        """The blob compressed and framed as a shard entry, made once per content id."""
        entry = self._compressed.get(cid)
        if entry is None:
            entry = self._compressed[cid] = frame(cid, zlib.compress(data, 6))
        return entry

    def _fitting(self, entries: list[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
        for c, data in entries:
            if len(self._framed(c, data)) > self.limit:
                self.skipped.add(c)
                continue
            yield c, data

    # -- reading ----------------------------------------------------------------------------------
    def read_head(self) -> dict[str, Any] | None:
        data = self.backend.read("head")
        return orjson.loads(data) if data else None

    def changed(self, head: Mapping[str, Any]) -> bool:
        keys = ("writer", "generation", "index_digest")
        return any(head.get(k) != self._head.get(k) for k in keys)

    def load(self, history: History, blobs: dict[str, bytes], head: Mapping[str, Any] | None = None) -> bool:
        """Replace `history` with the stored one; `blobs` is updated in place (only changed buckets
        are read again). False if nothing is stored or the stored set is inconsistent (retry)."""
        head = head if head is not None else self.read_head()
        if not head:
            return False
        parts = []
        for k in range(int(head.get("index_chunks") or 0)):
            chunk = self.backend.read(f"index-{k}")
            if chunk is None:
                return False
            parts.append(chunk)
        index = b"".join(parts)
        if hashlib.sha256(index).hexdigest()[:16] != head.get("index_digest"):
            return False  # written while we read: the next poll gets a consistent set
        old_buckets = self._head.get("buckets") or {}
        for b, (n, digest) in (head.get("buckets") or {}).items():
            if old_buckets.get(b) == [n, digest] and self._head:
                continue
            shards = [self.backend.read(f"blobs-{b}-{k}") for k in range(int(n))]
            if any(s is None for s in shards):
                return False
            for c in [c for c in blobs if bucket(c) == b]:
                del blobs[c]
            for shard in shards:
                for cid, z in unpack(shard or b""):
                    blobs[cid] = zlib.decompress(z)
        history.load(orjson.loads(zlib.decompress(index)), blobs)
        self._head = dict(head)
        self._saved_generation = history.generation
        return True

    # -- the pin ------------------------------------------------------------------------------------
    def read_pin(self) -> dict[str, Any] | None:
        data = self.backend.read("pin")
        doc = orjson.loads(data) if data else None  # orjson.JSONDecodeError is a ValueError
        if doc is not None and not isinstance(doc, dict):
            raise ValueError("pin document is not a JSON object")
        return doc

    def write_pin(self, pin: Mapping[str, Any] | None) -> None:
        if pin is None:
            self.backend.delete("pin")
        else:
            self.backend.write("pin", orjson.dumps(dict(pin)))
