"""Readable diffs: Envoy resources as YAML (Secrets as name + fingerprint), unified diff per
type and name; or the Kubernetes-object view (which objects changed between two versions)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from controlplane.history.content import Manifest
from controlplane.history.records import HistoryRecord
from controlplane.xds import resources as rt

BlobLookup = Callable[[str], bytes | None]


def resource_yaml(type_url: str, name: str, cid: str | None, blob: BlobLookup) -> list[str]:
    if cid is None:
        return []
    if type_url == rt.SECRET:  # the bytes hold a private key: never shown, never stored
        doc: Any = {"name": name, "certificate_fingerprint": cid, "private_key": "[redacted]"}
    else:
        data = blob(cid)
        doc = rt.decode(type_url, data) if data is not None else {"name": name, "content": f"{cid} (not stored)"}
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def manifest_diff(
    a_label: str, a: Manifest, b_label: str, b: Manifest, blob: BlobLookup, *, context: int = 3
) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """(unified diff text, {type: {added|removed|changed: [names]}}) from `a` to `b`."""
    out: list[str] = []
    summary: dict[str, dict[str, list[str]]] = {}
    for type_url in rt.PUSH_ORDER:
        short = rt.SHORT_NAMES[type_url]
        left, right = a.get(type_url, {}), b.get(type_url, {})
        for name in sorted(set(left) | set(right)):
            lc, rc = left.get(name), right.get(name)
            if lc == rc:
                continue
            kind = "added" if lc is None else "removed" if rc is None else "changed"
            summary.setdefault(short, {}).setdefault(kind, []).append(name)
            lines = difflib.unified_diff(
                resource_yaml(type_url, name, lc, blob),
                resource_yaml(type_url, name, rc, blob),
                fromfile=f"{a_label} {short} {name}" + ("" if lc else " (absent)"),
                tofile=f"{b_label} {short} {name}" + ("" if rc else " (absent)"),
                n=context,
            )
            out.extend(line if line.endswith("\n") else line + "\n" for line in lines)
    return "".join(out), summary


def summary_lines(summary: dict[str, dict[str, list[str]]]) -> list[str]:
    lines = []
    for short, kinds in summary.items():
        parts = [f"{len(names)} {kind}" for kind, names in sorted(kinds.items())]
        lines.append(f"{short}: " + ", ".join(parts))
    return lines or ["no differences"]


def sources_view(records: Iterable[HistoryRecord]) -> str:
    """The Kubernetes objects that changed in each of `records`, with Ingress spec/annotation diffs."""
    out: list[str] = []
    for rec in records:
        state = "" if rec.served else "  [pending, not served]"
        out.append(f"version {rec.version}: {rec.trigger_count} object(s) changed{state}\n")
        if rec.note:
            out.append(f"  note: {rec.note}\n")
        for t in rec.triggers:
            out.append(f"  {t.action:8} {t.label()}\n")
            out.extend(f"      {line}\n" for line in t.diff)
        hidden = rec.trigger_count - len(rec.triggers)
        if hidden > 0:
            out.append(f"  ... {hidden} more\n")
    return "".join(out)
