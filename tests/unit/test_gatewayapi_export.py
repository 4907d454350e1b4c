"""`meridian translate --to gateway-api` over the golden inputs and the shared corpus, offline: the
export is valid Gateway API that Meridian accepts, never names a pseudo-header, and wherever the IR
of both frontends routes differently (controlplane/gatewayapi/verify.py, a fast model of Envoy's
route choice) the per-Ingress report says what was not carried over (never silently different).
The replay through real Envoys (`--verify`) and the corpus table: tests/e2e/test_gatewayapi_migration.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controlplane.config import GatewayConfig
from controlplane.gatewayapi.verify import verify
from controlplane.ingress.classes import ClassPolicy
from controlplane.offline import export_gateway_api_paths
from controlplane.sources.files import parse_manifests

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "ingress"
GOLDEN = sorted((REPO / "tests" / "golden" / "cases").glob("*/input.yaml"))
INPUTS = GOLDEN + sorted(CORPUS.glob("*.yaml"))
# As `meridian translate` without --ingress-class: every Ingress, whatever its class.
EVERY_CLASS = GatewayConfig(classes=ClassPolicy(frozenset(), watch_without_class=True, accept_all=True))


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.parent.name if p.parent != CORPUS else p.stem)
def test_export_is_accepted_and_never_silently_different(path: Path) -> None:
    original, out, exported = export_gateway_api_paths([path], EVERY_CLASS)
    text = yaml.safe_dump_all(out.objects, sort_keys=False)
    parsed, problems = parse_manifests(text)
    assert not problems and len(parsed) == len(out.objects)
    names = [h["name"] for o in out.objects if o["kind"] == "HTTPRoute" for rule in o["spec"]["rules"]
             for m in rule.get("matches", []) for h in m.get("headers", [])]  # fmt: skip
    assert not [n for n in names if n.startswith(":")], "a pseudo-header (:path, :authority) is no Gateway API header"
    for ref, status in exported.gateway_api.routes.items():  # every exported route attaches
        for parent in status.parents:
            assert dict((c[0], c[1]) for c in parent.conditions)["Accepted"] == "True", (ref, parent)
    for ref, verdict in verify(original, exported).items():
        if not verdict.ok:
            levels = {f.level for f in out.findings.get(ref, [])}
            assert levels & {"unsupported", "warning"}, (ref, verdict.differences)
