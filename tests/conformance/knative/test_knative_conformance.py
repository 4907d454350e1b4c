"""Knative ingress conformance (knative/networking test/conformance/ingress), transcribed (README.md here):
every case against file-mode Meridian and a real Envoy. runner.py says how a case runs; targets.py how
readiness is known in file mode (Knative's probes, then every Envoy ACKed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conformance.knative.kingress_hash import compute_hash
from tests.conformance.knative.runner import CASES, run_case
from tests.conformance.knative.targets import FileTarget
from tests.support.gateway import Gateway
from tests.support.knative_images import ImageFleet

# Upstream tests not run, and why (README.md): none needs more than file mode and one Envoy.
NOT_RUN: dict[str, str] = {}
# Upstream tests Meridian fails, and why (README.md). Strict: one that starts passing fails the run, to be
# taken off this list.
EXPECTED_FAILURES: dict[str, str] = {}


def cases(not_run: dict[str, str], expected_failures: dict[str, str], names: list[str] | None = None) -> list[Any]:
    out: list[Any] = []
    for name in names or sorted(CASES):
        if name in not_run:
            out.append(pytest.param(name, marks=pytest.mark.skip(reason=not_run[name])))
        elif name in expected_failures:
            out.append(pytest.param(name, marks=pytest.mark.xfail(reason=expected_failures[name], strict=True)))
        else:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileTarget, ImageFleet]]:
    gw = Gateway(tmp_path_factory.mktemp("knative-conformance"), serve_args=FileTarget.serve_args)
    fleet = ImageFleet()
    try:
        gw.start()
        yield FileTarget(gw), fleet
    finally:
        gw.stop()
        fleet.close()


@pytest.mark.parametrize("name", cases(NOT_RUN, EXPECTED_FAILURES))
def test_knative_conformance(env: tuple[FileTarget, ImageFleet], name: str) -> None:
    run_case(*env, name)


def test_kingress_hash_matches_upstream() -> None:
    """The runner's ComputeHash port reproduces upstream's own expected hashes (pkg/ingress TestInsertProbe)."""
    ing: dict[str, Any] = {"metadata": {"name": ""}, "spec": {"rules": [
        {"hosts": ["example.com"], "http": {"paths": [{"splits": [{"serviceName": "blah"}]}]}}]}}  # fmt: skip
    assert compute_hash(ing) == "a25000a350642c8abef53078b329bd043e18758f6063c1172d53b04e14fcf5c1"
    ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["appendHeaders"] = {"Foo": "bar"}
    assert compute_hash(ing) == "6b652c7abed871354affd4a9cb699d33816f24541fac942149b91ad872fe63ca"
