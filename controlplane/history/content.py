"""Content-addressed resource store: N versions cost one manifest plus what changed.

A manifest maps type URL -> resource name -> content id (the cache's content version, or a
certificate fingerprint for a Secret, whose bytes — they hold a private key — are never kept).
The timeline keeps the manifest of its oldest version (`base`) and one delta per later version;
resource bytes are kept once per content id and reference-counted over the base and the deltas,
so a bytes object dropped by every kept version is freed. For the current version the bytes are
the very objects the snapshot cache holds: keeping them costs nothing extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

Manifest = dict[str, dict[str, str]]  # type URL -> name -> content id
Delta = dict[str, dict[str, str | None]]  # type URL -> name -> content id, None = removed


def bucket(cid: str) -> str:
    """The shard a blob lives in when persisted (first hex digit of its id)."""
    return cid[-1] if cid else "0"


class Timeline:
    def __init__(self) -> None:
        self.base_version = 0
        self.base: Manifest = {}
        self.deltas: dict[int, Delta] = {}  # insertion order = version order
        self.head: Manifest = {}
        self.head_version = 0
        self.blobs: dict[str, bytes] = {}
        # The same blobs by persistence bucket: a save rewrites a changed bucket without looking at
        # every blob (~30,000 at 10,000 Services: a scan cost the event loop ~5 ms per save).
        self.by_bucket: dict[str, dict[str, bytes]] = {}
        self._refs: Counter[str] = Counter()
        self.dirty_buckets: set[str] = set()

    # -- writing ---------------------------------------------------------------------------
    def add(self, version: int, delta: Delta, blobs: Mapping[str, bytes]) -> None:
        """Record `delta` as `version` (greater than every kept version); `blobs` holds the bytes
        of content ids not stored yet (Secrets have none)."""
        if version <= self.head_version:
            raise ValueError(f"version {version} is not after {self.head_version}")
        if not self.deltas and not self.base and self.head_version == 0:
            self.base_version = version - 1
        for type_url, entries in delta.items():
            head = self.head.setdefault(type_url, {})
            for name, cid in entries.items():
                if cid is None:
                    head.pop(name, None)
                    continue
                head[name] = cid
                self._incref(cid, blobs.get(cid))
        self.deltas[version] = delta
        self.head_version = version

    def trim(self, keep: int) -> list[int]:
        """Fold the oldest deltas into the base until at most `keep` remain; returns dropped versions."""
        dropped = []
        while len(self.deltas) > max(1, keep):
            version = next(iter(self.deltas))
            delta = self.deltas.pop(version)
            for type_url, entries in delta.items():
                base = self.base.setdefault(type_url, {})
                for name, cid in entries.items():
                    old = base.pop(name, None)
                    if old is not None:
                        self._decref(old)
                    if cid is not None:
                        base[name] = cid  # the delta's reference now belongs to the base
            self.base_version = version
            dropped.append(version)
        return dropped

    def _incref(self, cid: str, data: bytes | None) -> None:
        self._refs[cid] += 1
        if data is not None and cid not in self.blobs:
            self.blobs[cid] = data
            b = bucket(cid)
            self.by_bucket.setdefault(b, {})[cid] = data
            self.dirty_buckets.add(b)

    def _decref(self, cid: str) -> None:
        self._refs[cid] -= 1
        if self._refs[cid] <= 0:
            del self._refs[cid]
            if self.blobs.pop(cid, None) is not None:
                b = bucket(cid)
                self.by_bucket[b].pop(cid, None)
                self.dirty_buckets.add(b)

    # -- reading -----------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return list(self.deltas)

    def manifest_at(self, version: int) -> Manifest | None:
        """The full manifest of `version`, or None if it is no longer (or not yet) kept."""
        if version == self.head_version:
            return {t: dict(m) for t, m in self.head.items()}
        if version not in self.deltas and version != self.base_version:
            return None
        out = {t: dict(m) for t, m in self.base.items()}
        for v, delta in self.deltas.items():
            if v > version:
                break
            for type_url, entries in delta.items():
                m = out.setdefault(type_url, {})
                for name, cid in entries.items():
                    if cid is None:
                        m.pop(name, None)
                    else:
                        m[name] = cid
        return out

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """The timeline without blobs, JSON-able."""
        return {
            "base_version": self.base_version,
            "base": {t: dict(m) for t, m in self.base.items()},  # copied: trim() changes it later
            "deltas": [[v, d] for v, d in self.deltas.items()],
        }

    @staticmethod
    def load(state: Mapping[str, object], blobs: Mapping[str, bytes]) -> Timeline:
        tl = Timeline()
        tl.base_version = int(state.get("base_version") or 0)  # type: ignore[call-overload]
        base = state.get("base") or {}
        assert isinstance(base, dict)
        tl.base = {t: dict(m) for t, m in base.items()}
        tl.head = {t: dict(m) for t, m in tl.base.items()}
        tl.head_version = tl.base_version
        for m in tl.base.values():
            for cid in m.values():
                tl._incref(cid, blobs.get(cid))
        for v, delta in state.get("deltas") or []:  # type: ignore[attr-defined]
            tl.add(int(v), delta, blobs)
        tl.dirty_buckets.clear()
        return tl
