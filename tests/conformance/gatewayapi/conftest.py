"""`--gateway-conformance-report PATH`: after the run, write what the transcribed Gateway API
conformance tests did as an upstream ConformanceReport (gateway-api v1.6.1
conformance/apis/v1/conformancereport.go): per profile (GATEWAY-HTTP, GATEWAY-GRPC) the core and
extended tests passed, skipped and failed, and the extended features whose tests all passed.

A case is one upstream test (cases/<ShortName>.yaml), whichever test function ran it here (file
mode through Envoy, status-only, or Kubernetes mode); it passed when one of them passed and none
failed, and counts as skipped when all of them were skipped (not run here: see README.md).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
# Upstream's profiles (conformance/utils/suite/profiles.go): their core features; a test of the
# profile is extended when it needs any other feature.
PROFILES = {
    "GATEWAY-HTTP": {"Gateway", "ReferenceGrant", "HTTPRoute"},
    "GATEWAY-GRPC": {"Gateway", "ReferenceGrant", "GRPCRoute"},
}
_PARAM = re.compile(r"\[([A-Za-z0-9]+)\]$")
_OUTCOMES: dict[str, list[str]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gateway-conformance-report", default=None, metavar="PATH",
                     help="write the Gateway API conformance results as an upstream ConformanceReport")  # fmt: skip


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    found = _PARAM.search(report.nodeid)
    if found is None or "conformance/gatewayapi/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES.setdefault(found.group(1), []).append(report.outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--gateway-conformance-report", default=None)
    if path and not hasattr(session.config, "workerinput"):  # the controller writes it (pytest-xdist)
        cases = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((HERE / "cases").glob("*.yaml"))}
        features = {name: case.get("features") or [] for name, case in cases.items()}
        Path(path).write_text(yaml.safe_dump(conformance_report(features, _OUTCOMES), sort_keys=False))


def case_result(outcomes: Iterable[str]) -> str:
    seen = set(outcomes)
    if "failed" in seen:
        return "failed"
    return "passed" if "passed" in seen else "skipped"


def conformance_report(features: Mapping[str, list[str]], outcomes: Mapping[str, list[str]]) -> dict[str, Any]:
    """The ConformanceReport of the cases (name -> features) given each one's test outcomes."""
    profiles = []
    for profile, core in PROFILES.items():
        route = next(iter(core - {"Gateway", "ReferenceGrant"}))
        stats = {part: {"Failed": 0, "Passed": 0, "Skipped": 0} for part in ("core", "extended")}
        supported: set[str] = set()
        unsupported: set[str] = set()
        for name, needs in sorted(features.items()):
            if route not in needs:
                continue
            extra = set(needs) - core
            result = case_result(outcomes.get(name, ["skipped"]))
            stats["extended" if extra else "core"][result.capitalize()] += 1
            (supported if result == "passed" else unsupported).update(extra)
        supported -= unsupported
        part = {k: {"result": "failure" if s["Failed"] else "success", "statistics": s} for k, s in stats.items()}
        part["extended"]["supportedFeatures"] = sorted(supported)
        if unsupported:
            part["extended"]["unsupportedFeatures"] = sorted(unsupported)
        summary = " ".join(f"{k.capitalize()} tests {'failed' if s['Failed'] else 'succeeded'}"
                           f" ({s['Passed']} passed, {s['Skipped']} skipped)." for k, s in stats.items())  # fmt: skip
        profiles.append({"name": profile, **part, "summary": summary})
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ConformanceReport",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gatewayAPIVersion": "v1.6.1",
        "gatewayAPIChannel": "standard",
        "implementation": {"organization": "meridian", "project": "meridian",
                           "url": "https://github.com/meridian", "version": "transcribed", "contact": []},
        "mode": "transcribed (file-mode Meridian and a real Envoy; see tests/conformance/gatewayapi)",
        "profiles": profiles,
    }  # fmt: skip
