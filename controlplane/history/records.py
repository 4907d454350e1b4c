"""History records: what one published version was, why it happened and how the fleet took it.

Plain frozen dataclasses with JSON round-trips, so the same record is what `/debug/history`
shows, what is persisted and what the CLI reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from controlplane.store import INGRESS, SECRET, StoreEvent

ADDED, CHANGED, DELETED = "added", "changed", "deleted"
MAX_TRIGGERS = 200  # objects listed per record (a cold start lists thousands; the count stays exact)
MAX_DIFF_LINES = 40
MAX_RESOURCE_ROWS = 500  # resource changes listed per record (the timeline keeps all of them)


@dataclass(frozen=True)
class ObjectChange:
    """One Kubernetes object that changed in the batch behind a version."""

    cluster: str
    kind: str
    namespace: str
    name: str
    action: str  # added | changed | deleted
    diff: tuple[str, ...] = ()  # Ingresses: spec/annotation lines "path: old -> new"

    def label(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.cluster}:{self.kind}/{ns}{self.name}"


@dataclass(frozen=True)
class ResourceChange:
    """One xDS resource added, changed or removed; `version` is its content version (or the
    certificate fingerprint for a Secret, whose bytes are never stored)."""

    type: str  # short name: CDS, EDS, LDS, SRDS, RDS, SDS
    name: str
    action: str
    version: str | None


@dataclass(frozen=True)
class PinEvent:
    """A rollback or a resume, in the order they happened."""

    action: str  # rollback | resume
    version: int | None  # the version pinned (rollback) or served again (resume: the latest)
    at: float
    reason: str = ""


@dataclass(frozen=True)
class HistoryRecord:
    version: int
    at: float  # wall clock of the publish
    triggers: tuple[ObjectChange, ...]
    trigger_count: int  # objects changed, including those not listed
    resources: tuple[ResourceChange, ...]
    counts: Mapping[str, int]  # resources per type after this version
    served: bool = True  # False: recorded while a pin was set ("pending, not served")
    note: str = ""  # e.g. "resync after restart"
    fleet: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # group -> acked/nacked/streams
    resource_total: int = -1  # resources changed, including those not listed (-1: all are listed)

    @property
    def resource_changes(self) -> int:
        return len(self.resources) if self.resource_total < 0 else self.resource_total

    def summary(self) -> str:
        if self.note and not self.triggers:
            return self.note
        if not self.triggers:
            return "-"
        first = self.triggers[0]
        text = f"{first.kind} {first.namespace + '/' if first.namespace else ''}{first.name} {first.action}"
        more = self.trigger_count - 1
        return text + (f" (+{more} more)" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["counts"] = dict(self.counts)
        out["fleet"] = {g: dict(v) for g, v in self.fleet.items()}
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> HistoryRecord:
        return HistoryRecord(
            version=int(d["version"]),
            at=float(d["at"]),
            triggers=tuple(ObjectChange(**{**t, "diff": tuple(t.get("diff") or ())}) for t in d.get("triggers") or ()),
            trigger_count=int(d.get("trigger_count") or 0),
            resources=tuple(ResourceChange(**r) for r in d.get("resources") or ()),
            counts=dict(d.get("counts") or {}),
            served=bool(d.get("served", True)),
            note=str(d.get("note") or ""),
            fleet={g: dict(v) for g, v in (d.get("fleet") or {}).items()},
            resource_total=int(d.get("resource_total", -1)),
        )


def triggers_of(events: Iterable[StoreEvent]) -> tuple[tuple[ObjectChange, ...], int]:
    """Collapse a batch of store events into one change per object (first old, last new)."""
    first_old: dict[Any, Any] = {}
    last_new: dict[Any, Any] = {}
    for ev in events:
        if ev.ref not in first_old:
            first_old[ev.ref] = ev.old
        last_new[ev.ref] = ev.new
    out: list[ObjectChange] = []
    count = 0
    for ref in sorted(first_old, key=str):
        old, new = first_old[ref], last_new[ref]
        if old is None and new is None:
            continue
        action = ADDED if old is None else DELETED if new is None else CHANGED
        if action == CHANGED and _relevant(ref.kind, old) == _relevant(ref.kind, new):
            continue  # status or bookkeeping only
        count += 1
        if len(out) >= MAX_TRIGGERS:
            continue
        diff = ingress_diff(old, new) if ref.kind == INGRESS else ()
        out.append(ObjectChange(ref.cluster, ref.kind, ref.namespace, ref.name, action, diff))
    return tuple(out), count


def _relevant(kind: str, obj: Mapping[str, Any] | None) -> Any:
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    if kind == SECRET:  # compared, never kept
        body = {"data": obj.get("data"), "stringData": obj.get("stringData")}
    return (meta.get("labels"), meta.get("annotations"), body)


def ingress_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Lines `path: old -> new` over an Ingress's annotations and spec."""
    a, b = _flatten(_ingress_view(old)), _flatten(_ingress_view(new))
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {_show(a.get(key))} -> {_show(b.get(key))}")
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more lines"]
    return tuple(lines)


def _ingress_view(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    meta = obj.get("metadata") or {}
    return {"annotations": meta.get("annotations") or {}, "spec": obj.get("spec") or {}}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = f"{prefix}.{k}" if prefix and "." not in str(k) else f"{prefix}[{k}]" if prefix else str(k)
            out.update(_flatten(v, key))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) and not value else str(value)
