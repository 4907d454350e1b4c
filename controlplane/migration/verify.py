"""Per Ingress: do the exported Gateway API objects answer every derived request as the Ingress does,
through real Envoys? (`meridian translate --to gateway-api --verify`)

For each set of manifests: complete them (standins), export them, serve the original and the
export side by side (stage), replay every probe against both Envoys and compare the answers. The
verdict of an Ingress is `equal` (every request answered alike), `differs` (with the first
difference) or `not converted` (Meridian does not serve it, so there is nothing to export).
Requests no backend answered on either side (an upstream reset on both: see `replay`) count as
answered alike and are also counted apart, so a reader knows the backend never spoke.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.compile import SourceObjects, compile
from controlplane.config import GatewayConfig
from controlplane.ingress.classes import ingress_class_of
from controlplane.ir import Finding, IngressRef
from controlplane.migration.probes import derive
from controlplane.migration.replay import Client, compare, unanswered
from controlplane.migration.stage import Stage
from controlplane.migration.standins import complete, endpoint_slices
from controlplane.offline import export_gateway_api_objects, load_paths
from controlplane.store import INGRESS, INGRESS_CLASS, KINDS, KubeObject


@dataclass
class Verdict:
    ref: IngressRef
    requests: int = 0
    equal: int = 0
    unanswered: int = 0  # of `equal`: no backend answered on either side (an upstream reset on both)
    differences: list[tuple[str, str]] = field(default_factory=list)  # (request, "field: Ingress's vs Gateway API's")
    not_converted: str | None = None  # why, when Meridian does not serve the Ingress
    findings: list[Finding] = field(default_factory=list)  # the export's report for this Ingress

    @property
    def state(self) -> str:
        if self.not_converted is not None:
            return "not converted"
        return "equal" if self.equal == self.requests else "differs"


@dataclass
class SetResult:
    """One set of manifests (a `-f` list, or one corpus file)."""

    name: str
    verdicts: dict[IngressRef, Verdict]
    notes: list[str]
    exported: list[dict[str, Any]]


@dataclass(frozen=True)
class ManifestSet:
    name: str
    paths: tuple[Path, ...]


def _objects(paths: Iterable[Path]) -> dict[str, list[KubeObject]]:
    store = load_paths(list(paths))
    return {k: store.list(k) for k in KINDS}


def classes_of(sets: Iterable[ManifestSet]) -> set[str]:
    """Every class name an Ingress of `sets` asks for (offline, every Ingress is translated)."""
    return {c for s in sets for ing in _objects(s.paths)[INGRESS] if (c := ingress_class_of(ing))}


def verify_sets(
    sets: Sequence[ManifestSet],
    config: GatewayConfig,
    *,
    namespace: str = "default",
    classes: Iterable[str] | None = None,
) -> list[SetResult]:
    """Verify each set in turn on one stage (two Meridians, two Envoys, reused). `classes`: the
    Ingress classes to serve (None: all, as `translate` without --ingress-class)."""
    serve_all = classes is None
    with Stage(classes_of(sets) if serve_all else classes or (), watch_without_class=serve_all) as stage:
        return [_verify_one(stage, s, config, namespace) for s in sets]


def _verify_one(stage: Stage, mset: ManifestSet, config: GatewayConfig, namespace: str) -> SetResult:
    objects = _objects(mset.paths)
    done = complete(objects, compile(SourceObjects({"local": objects}, "local"), config).irs)
    original, out, _exported = export_gateway_api_objects(done.objects, config, namespace=namespace)
    slices = endpoint_slices(stage.echo_ports(done.backends))
    ingress_side = [o for kind in KINDS for o in done.objects.get(kind, [])] + slices
    gateway_side = [o for kind in KINDS if kind not in (INGRESS, INGRESS_CLASS)
                    for o in done.objects.get(kind, [])] + slices + out.objects  # fmt: skip
    stage.load({"ingress": ingress_side, "gateway-api": gateway_side})
    probes = derive(original.irs)
    mine, theirs = asyncio.run(_replay_both(stage, probes))
    verdicts = {ref: Verdict(ref, findings=list(out.findings.get(ref, []))) for ref in original.irs}
    for ref, ir in original.irs.items():
        if not ir.served:
            why = "rejected" if ir.rejected else "its class is not served"
            verdicts[ref].not_converted = f"not served by Meridian ({why}); nothing to export"
    for ref, v in verdicts.items():
        if v.not_converted is None and not any(p.source == ref for p in probes):
            v.not_converted = "no rule to derive a request from"
    for probe, a, b, difference in zip(probes, mine, theirs, compare(mine, theirs), strict=True):
        v = verdicts[probe.source]
        v.requests += 1
        if difference is None:
            v.equal += 1
            v.unanswered += unanswered(a, b)
        else:
            v.differences.append((str(probe), difference))
    return SetResult(mset.name, verdicts, done.notes, out.objects)


async def _replay_both(stage: Stage, probes: list[Any]) -> tuple[list[Any], list[Any]]:
    ingress, gateway = (Client(s.http_port, s.https_port) for s in stage.sides)
    mine, theirs = await asyncio.gather(ingress.replay(probes), gateway.replay(probes))
    return mine, theirs


def summary_line(results: Sequence[SetResult]) -> str:
    verdicts = [v for r in results for v in r.verdicts.values()]
    states = {s: sum(1 for v in verdicts if v.state == s) for s in ("equal", "differs", "not converted")}
    requests, equal = sum(v.requests for v in verdicts), sum(v.equal for v in verdicts)
    return (f"total: {len(verdicts)} Ingresses: {states['equal']} equal, {states['differs']} differ, "
            f"{states['not converted']} not converted; {equal}/{requests} requests answered alike"
            + unanswered_note(sum(v.unanswered for v in verdicts)))  # fmt: skip


def unanswered_note(count: int) -> str:
    """What to say of requests no backend answered on either side ("" when there are none)."""
    if not count:
        return ""
    return f"; {count} unanswered: an upstream reset on both sides, the backend never answered"


def format_results(results: Sequence[SetResult], *, every_difference: bool = False) -> str:
    lines: list[str] = []
    for r in results:
        lines.extend(f"note: {n}" for n in r.notes)
        for ref, v in sorted(r.verdicts.items()):
            if v.state == "not converted":
                lines.append(f"{ref}  not converted: {v.not_converted}")
            elif v.state == "equal":
                lines.append(f"{ref}  equal ({v.requests} requests{unanswered_note(v.unanswered)})")
            else:
                first = ": ".join(v.differences[0])
                lines.append(f"{ref}  DIFFERS ({v.requests - v.equal} of {v.requests} requests"
                             f"{unanswered_note(v.unanswered)}): {first}")
                lines.extend(f"  ! {r}: {d}" for r, d in (v.differences[1:] if every_difference else []))
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


def regressions(results: Sequence[SetResult], baseline: Mapping[str, str]) -> list[str]:
    """Ingresses (by "set: ref") whose verdict is worse than `baseline` says it was."""
    rank = {"equal": 0, "differs": 1, "not converted": 2}
    out = []
    for r in results:
        for ref, v in sorted(r.verdicts.items()):
            key = f"{r.name}: {ref}"
            was = baseline.get(key)
            if was is not None and rank[v.state] > rank[was]:
                why = ": ".join(v.differences[0]) if v.differences else v.not_converted
                out.append(f"{key}: {was} -> {v.state} ({why})")
    return out


def difference_kind(difference: str) -> str:
    """What kind of difference "field: Ingress's vs Gateway API's" is, for summaries."""
    what, _, values = difference.partition(": ")
    if what == "location":
        mine, _, theirs = values.partition(" vs ")
        if mine.strip("'").rstrip("/") == theirs.strip("'").rstrip("/"):
            return "HTTPS redirect keeps a trailing \"/\" (ssl-redirect)"
        if "?" in theirs and mine.strip("'") == theirs.strip("'").partition("?")[0]:
            return "redirect keeps the query string"
        return "Location"
    if what == "status":
        return f"status {values}"
    if what == "error":
        return f"no HTTP answer: {values}"
    if what == "upstream path":
        return "path the backend gets (rewrite-target)"
    return what
