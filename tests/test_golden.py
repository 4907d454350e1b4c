"""Golden tests in two stages, as Envoy Gateway's: manifests -> IR, and IR -> Envoy resources.

Each directory under tests/golden/cases/ holds `input.yaml` (one cluster, id "local") or
`clusters/<id>/*.yaml` (several clusters; the first id in sorted order is the primary), an optional
`config.yaml` (`classes: [names]`, `watch_without_class: bool`, `route_partitions: N`,
`default_ssl_certificate: NS/NAME`; without it every Ingress is translated, as `meridian translate` does),
and the expected outputs:

- `ir.yaml`: the GatewayIR that `compile` builds from the manifests (stage 1, readable);
- `expected.yaml`: snapshot_dict of the Envoy resources translated from `ir.yaml` as read back
  (stage 2), which must equal what `compile` gives for the manifests directly;
- `report.txt`: `meridian translate --report`.

The incremental Controller, fed the same manifests, must produce exactly the same resources.

Regenerate after an intended change: `UPDATE_GOLDENS=1 .venv/bin/pytest tests/test_golden.py`,
then read the diff before committing it (see tests/golden/README.md).
"""

from __future__ import annotations

import asyncio
import difflib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.compile import Compiled
from controlplane.config import GatewayConfig
from controlplane.controller import Controller
from controlplane.default_certificate import parse_secret_ref
from controlplane.ingress.classes import ClassPolicy
from controlplane.ir.gateway import GatewayIR
from controlplane.ir.serialize import from_data, to_data
from controlplane.metrics import Metrics
from controlplane.offline import load_paths, snapshot_dict, translate_clusters, translate_paths
from controlplane.report import format_report
from controlplane.store import KINDS, ClusterRegistry, ClusterStore
from controlplane.translate.gateway import translate_gateway
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache, make_resource

CASES_DIR = Path(__file__).parent / "golden" / "cases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"


def case_config(case: Path) -> GatewayConfig:
    cfg_file = case / "config.yaml"
    if not cfg_file.exists():
        return GatewayConfig(classes=ClassPolicy(frozenset(), watch_without_class=True, accept_all=True))
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    default_cert = cfg.get("default_ssl_certificate")
    return GatewayConfig(
        classes=ClassPolicy(
            frozenset(cfg.get("classes") or ()), watch_without_class=bool(cfg.get("watch_without_class"))
        ),
        route_partitions=cfg.get("route_partitions"),
        default_certificate=parse_secret_ref(default_cert) if default_cert else None,
    )


def case_dirs(case: Path) -> dict[str, Path]:
    if (case / "clusters").is_dir():
        return {d.name: d for d in (case / "clusters").iterdir() if d.is_dir()}
    return {}


def compiled(case: Path) -> Compiled:
    config = case_config(case)
    dirs = case_dirs(case)
    return translate_clusters(dirs, config) if dirs else translate_paths([case / "input.yaml"], config)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def render(case: Path) -> tuple[str, str, str]:
    """(ir.yaml, expected.yaml, report.txt) as compile gives them."""
    out = compiled(case)
    assert out.gateway.problems() == []
    return dump(to_data(out.gateway)), dump(snapshot_dict(out.resources)), format_report(out.reports)


def stage_two(ir_text: str) -> str:
    """expected.yaml from an IR file alone."""
    gw = from_data(GatewayIR, yaml.safe_load(ir_text))
    body = translate_gateway(gw)
    return dump(snapshot_dict({t: {n: make_resource(n, t, m) for n, m in by.items()} for t, by in body.items()}))


def incremental(case: Path) -> str:
    """expected.yaml as the incremental Controller builds it from the same objects."""
    config = case_config(case)
    dirs = case_dirs(case) or {"local": case / "input.yaml"}
    registry = ClusterRegistry()
    cache = SnapshotCache()
    controller = Controller(registry, cache, Metrics(), config)
    loop = asyncio.new_event_loop()
    try:
        controller.attach(loop)
        for i, (cid, d) in enumerate(sorted(dirs.items())):
            loaded = load_paths([d], cid, primary=i == 0)
            store = registry.add(ClusterStore(cid, primary=i == 0))
            for kind in KINDS:
                for obj in loaded.list(kind):
                    store.upsert(kind, obj)
            store.mark_synced()
        controller.flush()
    finally:
        loop.close()
    return dump(snapshot_dict({t: cache.get(t).resources for t in rt.PUSH_ORDER}))


def compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: run UPDATE_GOLDENS=1 pytest tests/test_golden.py"
    want = path.read_text()
    if want != actual:
        diff = "".join(
            difflib.unified_diff(want.splitlines(True), actual.splitlines(True), f"{path} (expected)", "actual")
        )
        pytest.fail(f"golden mismatch, regenerate with UPDATE_GOLDENS=1 if intended:\n{diff}", pytrace=False)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    case = CASES_DIR / name
    ir_text, expected, report = render(case)
    compare(case / "ir.yaml", ir_text)
    compare(case / "expected.yaml", expected)
    compare(case / "report.txt", report)
    assert stage_two((case / "ir.yaml").read_text()) == (case / "expected.yaml").read_text()


@pytest.mark.parametrize("name", CASES)
def test_incremental_controller_agrees_with_compile(name: str) -> None:
    assert incremental(CASES_DIR / name) == (CASES_DIR / name / "expected.yaml").read_text()


def test_goldens_are_deterministic() -> None:
    """Two translations of the same input give byte-identical output (no ordering or timing leaks)."""
    for name in ("merge-and-conflict", "multicluster", "tls"):
        assert render(CASES_DIR / name) == render(CASES_DIR / name)


def _load(case: str) -> dict[str, Any]:
    return yaml.safe_load((CASES_DIR / case / "expected.yaml").read_text())


def test_golden_semantics_spot_checks() -> None:
    """A few facts read from the goldens, so a blindly regenerated golden cannot hide a regression."""
    routes = {r["name"]: r for r in _load("path-types")["RDS"]}["http"]["virtual_hosts"][0]["routes"]
    kinds = [next(k for k in ("path", "path_separated_prefix", "prefix", "safe_regex") if k in r["match"])
             for r in routes]  # fmt: skip
    assert kinds[0] == "path", kinds  # Exact first
    prefixes = [r["match"].get("path_separated_prefix") or r["match"].get("prefix") for r in routes[1:]]
    assert prefixes == sorted(prefixes, key=len, reverse=True), prefixes  # longer prefixes first
    assert prefixes[-1] == "/"

    eds = {c["cluster_name"]: c for c in _load("multicluster")["EDS"]}["default/shared:80"]
    assert sorted(e["locality"]["region"] for e in eds["endpoints"]) == ["east", "west"], eds

    fo = {c["cluster_name"]: c for c in _load("failover")["EDS"]}["default/db:80"]["endpoints"]
    assert sorted((e["locality"]["region"], e.get("priority", 0)) for e in fo) == [("east", 0), ("west", 1)], fo

    report = (CASES_DIR / "merge-and-conflict" / "report.txt").read_text()
    assert "conflict" in report and "default/newer" in report
