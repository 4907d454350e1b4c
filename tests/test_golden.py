"""Golden tests of the translator: manifests in, the Envoy resources and the report out.

Each directory under tests/golden/cases/ holds `input.yaml` (one cluster, id "local") or
`clusters/<id>/*.yaml` (several clusters; the first id in sorted order is the primary), an optional
`config.yaml` (`classes: [names]`, `watch_without_class: bool`, `route_partitions: N`; without it every Ingress is
translated, as `meridian translate` does), and the expected `expected.yaml` (snapshot_dict of
the built snapshot) and `report.txt` (`meridian translate --report`).

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

from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.metrics import Metrics
from controlplane.offline import snapshot_dict, translate_paths
from controlplane.report import format_report
from controlplane.sources.files import FileSource
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds.cache import SnapshotCache

CASES_DIR = Path(__file__).parent / "golden" / "cases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"


def case_config(case: Path) -> GatewayConfig:
    cfg_file = case / "config.yaml"
    if not cfg_file.exists():
        return GatewayConfig(classes=ClassPolicy(frozenset(), watch_without_class=True, accept_all=True))
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    return GatewayConfig(
        classes=ClassPolicy(
            frozenset(cfg.get("classes") or ()), watch_without_class=bool(cfg.get("watch_without_class"))
        ),
        route_partitions=cfg.get("route_partitions"),
    )


def translate_clusters(dirs: dict[str, Path], config: GatewayConfig) -> tuple[Controller, SnapshotCache]:
    """offline.translate_paths for several cluster directories (first sorted id is the primary)."""
    registry = ClusterRegistry()
    cache = SnapshotCache()
    controller = Controller(registry, cache, Metrics(), config)
    loop = asyncio.new_event_loop()
    try:
        controller.attach(loop)
        for i, (cid, d) in enumerate(sorted(dirs.items())):
            store = registry.add(ClusterStore(cid, primary=i == 0))
            FileSource(d, store).load_all()
        controller.flush()
    finally:
        loop.close()
    return controller, cache


def render(case: Path) -> tuple[str, str]:
    config = case_config(case)
    if (case / "clusters").is_dir():
        dirs = {d.name: d for d in (case / "clusters").iterdir() if d.is_dir()}
        controller, cache = translate_clusters(dirs, config)
    else:
        controller, cache = translate_paths([case / "input.yaml"], config)
    expected = yaml.safe_dump(snapshot_dict(cache), sort_keys=False, width=120)
    return expected, format_report(controller.ingress_reports())


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
    expected, report = render(case)
    compare(case / "expected.yaml", expected)
    compare(case / "report.txt", report)


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
