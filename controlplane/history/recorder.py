"""The in-memory history: records, their content timeline, pin events and fleet ACK/NACK counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from controlplane.history.content import Delta, Manifest, Timeline
from controlplane.history.records import (
    ADDED,
    CHANGED,
    DELETED,
    MAX_RESOURCE_ROWS,
    HistoryRecord,
    PinEvent,
    ResourceChange,
    triggers_of,
)
from controlplane.history.secrets import Fingerprints
from controlplane.store import StoreEvent
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, TypeSnapshot

Changes = Mapping[str, Mapping[str, Resource | None]]


class Sources(Protocol):
    """What a record reads from the sources: a SnapshotCache, or its types as they were at a change."""

    def get(self, type_url: str) -> TypeSnapshot: ...


FLEET_WINDOW = 20  # the newest records whose fleet counts are still refreshed
MAX_PIN_EVENTS = 200


class History:
    def __init__(self, size: int = 200) -> None:
        self.size = max(1, size)
        self.records: dict[int, HistoryRecord] = {}
        self.timeline = Timeline()
        self.pin_events: list[PinEvent] = []
        self.fingerprints = Fingerprints()
        self.served_versions: dict[int, int] = {}  # history version -> served cache version (this replica)
        self.generation = 0  # bumped on every change, so persistence knows what to write
        self._dicts: dict[int, dict[str, Any]] = {}  # record -> its JSON form (records never change in place)

    @property
    def latest(self) -> int:
        return self.timeline.head_version

    # -- recording ---------------------------------------------------------------------------
    def record(
        self,
        changes: Changes,
        sources: Sources,
        events: Iterable[StoreEvent] = (),
        *,
        served: bool = True,
        note: str = "",
    ) -> HistoryRecord | None:
        """Record one published change (already applied to `sources`); None if nothing changed."""
        delta: Delta = {}
        blobs: dict[str, bytes] = {}
        rows: list[ResourceChange] = []
        head = self.timeline.head
        for type_url in rt.PUSH_ORDER:
            entries = changes.get(type_url) or {}
            short = rt.SHORT_NAMES[type_url]
            have = head.get(type_url, {})
            for name in sorted(entries):
                res = entries[name]
                cid = None if res is None else self._content_id(type_url, res)
                old = have.get(name)
                if cid == old:
                    continue
                delta.setdefault(type_url, {})[name] = cid
                if res is not None and type_url != rt.SECRET:
                    blobs[cid] = res.any_bytes  # type: ignore[index]
                action = DELETED if cid is None else ADDED if old is None else CHANGED
                rows.append(ResourceChange(short, name, action, cid))
        if not delta:
            return None
        triggers, count = triggers_of(events)
        version = self.latest + 1
        self.timeline.add(version, delta, blobs)
        counts = {rt.SHORT_NAMES[t]: len(sources.get(t).resources) for t in rt.PUSH_ORDER}
        total = len(rows)
        rows = rows[:MAX_RESOURCE_ROWS]
        rec = HistoryRecord(version, time.time(), triggers, count, tuple(rows), counts, served, note, {}, total)
        self.records[version] = rec
        for dropped in self.timeline.trim(self.size):
            self.records.pop(dropped, None)
            self._dicts.pop(dropped, None)
            self.served_versions.pop(dropped, None)
        self.generation += 1
        return rec

    def resync(
        self, sources: Sources, *, served: bool, note: str, events: Iterable[StoreEvent] = ()
    ) -> HistoryRecord | None:
        """Record the difference between the last recorded version and what `sources` holds now."""
        changes: dict[str, dict[str, Resource | None]] = {}
        for type_url in rt.PUSH_ORDER:
            now = sources.get(type_url).resources
            have = self.timeline.head.get(type_url, {})
            entries: dict[str, Resource | None] = {n: None for n in have if n not in now}
            entries.update(now)
            changes[type_url] = entries
        return self.record(changes, sources, events, served=served, note=note)

    def _content_id(self, type_url: str, res: Resource) -> str:
        return self.fingerprints.of(res) if type_url == rt.SECRET else res.version

    def note_pin(self, event: PinEvent) -> None:
        self.pin_events = [*self.pin_events, event][-MAX_PIN_EVENTS:]
        self.generation += 1

    # -- reading -----------------------------------------------------------------------------
    def get(self, version: int) -> HistoryRecord | None:
        return self.records.get(version)

    def manifest(self, version: int) -> Manifest | None:
        return self.timeline.manifest_at(version)

    def blob(self, cid: str) -> bytes | None:
        return self.timeline.blobs.get(cid)

    def pinned_resources(
        self,
        version: int,
        live_secrets: Mapping[str, Resource],
        find_secret: Callable[[str], tuple[bytes, bytes] | None] | None = None,
        *,
        current: Callable[[str], Mapping[str, Resource]] | None = None,
        live_endpoints: Mapping[str, Resource] | None = None,
        build: bool = True,
    ) -> tuple[dict[str, dict[str, Resource]], list[str]]:
        """The resources of `version` ready to serve, and what is missing from them.

        Secrets come from the current ones with the same certificate fingerprint (keys are never
        stored); a certificate no current Secret carries is reported missing and left out. A
        resource whose content is what `current` (type -> name -> Resource) holds is that very
        object, so rolling back one change of 10,000 Ingresses allocates almost nothing.
        Endpoints are discovery state, not configuration: a ClusterLoadAssignment the sources still
        have (`live_endpoints`) is served as it is now, so a rollback never sends traffic to pods
        that are gone; one whose Service is gone is served as recorded, and reported.
        `build=False` only checks what would be missing.
        """
        manifest = self.manifest(version)
        if manifest is None:
            return {}, [f"version {version} is no longer kept (oldest is {self.oldest})"]
        by_fp = self.fingerprints.index(live_secrets)
        out: dict[str, dict[str, Resource]] = {}
        missing: list[str] = []
        blobs = self.timeline.blobs
        for type_url, entries in manifest.items():
            dest = out.setdefault(type_url, {})
            have = current(type_url) if current is not None and type_url != rt.SECRET else {}
            for name, cid in entries.items():
                if type_url == rt.ENDPOINT and live_endpoints is not None:
                    live = live_endpoints.get(name)
                    if live is not None:
                        dest[name] = live
                        continue
                    missing.append(f"EDS {name}: its Service is gone; serving the endpoints recorded in {version}")
                if type_url == rt.SECRET:
                    secret = live_secrets.get(name)
                    if secret is not None and self.fingerprints.of(secret) == cid:
                        dest[name] = secret
                    elif cid in by_fp:
                        dest[name] = _renamed(by_fp[cid], name)
                    elif find_secret is not None and (pair := find_secret(cid)) is not None:
                        dest[name] = _from_pair(name, *pair)
                    else:
                        missing.append(f"SDS {name}: no current Secret has certificate {cid}")
                    continue
                res = have.get(name)
                if res is not None and res.version == cid:
                    dest[name] = res
                    continue
                data = blobs.get(cid)
                if data is None:
                    missing.append(f"{rt.SHORT_NAMES.get(type_url, type_url)} {name}: content {cid} not stored")
                elif build:
                    dest[name] = Resource(name, cid, data)
        return out, missing

    @property
    def oldest(self) -> int | None:
        return next(iter(self.records), None)

    def update_fleet(self, streams: list[dict[str, Any]]) -> bool:
        """Refresh ACK/NACK counts per gateway group of the newest served records from /debug/syncz
        (or the server's lighter `fleet_states`, same shape). Each stream is reduced once per set of
        types the records touch (its lowest current version, its latest NACK among them), not once
        per record: at 1,000 gateways this ran every second for ~100 ms."""
        compact = [(s.get("node_cluster") or "*", [(short, int(t.get("current_version") or 0),
                    (t["last_nack"].get("at") or 0) if t.get("last_nack") else None)
                    for short, t in (s.get("types") or {}).items()]) for s in streams]  # fmt: skip
        per_types: dict[frozenset[str], list[tuple[str, int | None, float | None]]] = {}
        changed = False
        for version in list(self.records)[-FLEET_WINDOW:]:
            rec = self.records[version]
            served_at = self.served_versions.get(version)
            if served_at is None:
                continue
            types = frozenset(r.type for r in rec.resources)
            reduced = per_types.get(types)
            if reduced is None:
                reduced = per_types[types] = [(group, *_floor_and_nack(states, types)) for group, states in compact]
            fleet: dict[str, dict[str, int]] = {}
            for group, floor, nacked_at in reduced:
                counts = fleet.setdefault(group, {"streams": 0, "acked": 0, "nacked": 0})
                counts["streams"] += 1
                if floor is not None and floor >= served_at:
                    counts["acked"] += 1
                elif nacked_at is not None and nacked_at >= rec.at:
                    counts["nacked"] += 1
            merged = {g: v for g, v in rec.fleet.items()}
            for g, v in fleet.items():  # counts only grow: a disconnected Envoy's ACK still happened
                old = merged.get(g, {})
                merged[g] = {k: max(v[k], int(old.get(k, 0))) for k in v}
            if merged != rec.fleet:
                self.records[version] = _with_fleet(rec, merged)
                changed = True
        if changed:
            self.generation += 1
        return changed

    def record_dict(self, rec: HistoryRecord) -> dict[str, Any]:
        d = self._dicts.get(rec.version)
        if d is None or d["_id"] != id(rec):
            d = self._dicts[rec.version] = {**rec.to_dict(), "_id": id(rec)}
        return {k: v for k, v in d.items() if k != "_id"}

    # -- persistence -------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "records": [self.record_dict(r) for r in self.records.values()],
            "timeline": self.timeline.state(),
            "pin_events": [e.__dict__ for e in self.pin_events],
        }

    def load(self, doc: Mapping[str, Any], blobs: Mapping[str, bytes]) -> None:
        self.timeline = Timeline.load(doc.get("timeline") or {}, blobs)
        self.records = {r.version: r for r in (HistoryRecord.from_dict(d) for d in doc.get("records") or ())}
        self.pin_events = [PinEvent(**e) for e in doc.get("pin_events") or ()]
        self.served_versions = {}
        self.generation += 1


def _floor_and_nack(
    states: list[tuple[str, int, float | None]], types: frozenset[str]
) -> tuple[int | None, float | None]:
    """A stream's lowest current version over `types` (None: it has none of them) and its latest
    NACK time among them (None: no NACK)."""
    floor: int | None = None
    nacked_at: float | None = None
    for short, current, nack in states:
        if short in types:
            floor = current if floor is None else min(floor, current)
            if nack is not None:
                nacked_at = nack if nacked_at is None else max(nacked_at, nack)
    return floor, nacked_at


def _with_fleet(rec: HistoryRecord, fleet: dict[str, dict[str, int]]) -> HistoryRecord:
    from dataclasses import replace

    return replace(rec, fleet=fleet)


def _renamed(res: Resource, name: str) -> Resource:
    """A current Secret's certificate served under the name an old listener refers to."""
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from google.protobuf import any_pb2

    from controlplane.xds.cache import make_resource

    msg = secret_pb2.Secret.FromString(any_pb2.Any.FromString(res.any_bytes).value)
    msg.name = name
    return make_resource(name, rt.SECRET, msg)


def _from_pair(name: str, cert: bytes, key: bytes) -> Resource:
    """An SDS Secret built from a current Kubernetes Secret's certificate and key."""
    from controlplane.ir import CertificateSecret
    from controlplane.translate.resources import certificate_secret
    from controlplane.xds.cache import make_resource

    return make_resource(name, rt.SECRET, certificate_secret(CertificateSecret(name, cert, key)))
