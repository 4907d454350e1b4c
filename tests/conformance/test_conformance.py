"""The Kubernetes Ingress conformance scenarios (../shared/conformance/ingress/*.feature) as pytest tests.

One gateway (file mode, real Envoy, echo backends, --watch-ingress-without-class) serves every
scenario; each feature gets its own random namespace. A feature's Background runs once, when its
first scenario runs, and the feature's objects are removed before the next feature starts (two
features use a catch-all defaultBackend, which would otherwise conflict).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.gherkin import Case, load_cases
from tests.conformance.steps import FeatureWorld, ScenarioState, run_step, self_signed_tls_secret
from tests.support.gateway import Gateway, ingress, rule

REPO = Path(__file__).resolve().parents[2]
FEATURES = REPO.parent / "shared" / "conformance" / "ingress"

if not FEATURES.is_dir():
    raise RuntimeError(f"conformance features not found at {FEATURES} (clone `shared/` beside the repository)")

CASES = load_cases(FEATURES)


class Suite:
    """The shared gateway and the world of the feature currently set up on it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.world: FeatureWorld | None = None
        self.background_error: BaseException | None = None

    def enter(self, case: Case) -> FeatureWorld:
        key = case.feature.path.stem
        if self.world is not None and self.world.key == key:
            if self.background_error is not None:
                pytest.fail(f"Background of {key} failed: {self.background_error}")
            return self.world
        if self.world is not None:
            self.world.cleanup()
        self.world = FeatureWorld(self.gw, key)
        self.background_error = None
        state = ScenarioState(self.world)
        try:
            for st in case.feature.background:
                run_step(st, state)
        except BaseException as exc:
            self.background_error = exc
            raise
        return self.world


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    gw = Gateway(tmp_path_factory.mktemp("conformance"))
    try:
        gw.start()
        # Objects that outlive every feature. When the last cluster (or the last certificate) goes away,
        # Envoy drops its EDS (SDS) subscription and never ACKs the push already on the wire, so
        # /debug/syncz keeps that type pending and the stream never looks converged (reported to the
        # xDS server's owner). A sentinel Service and TLS host keep both subscriptions alive.
        ns = "conformance-sentinel"
        gw.backend("sentinel", namespace=ns)
        secret, _cert = self_signed_tls_secret("sentinel-tls", ns, "sentinel.invalid")
        sentinel = ingress("sentinel", [rule("sentinel.invalid", ("/", "Prefix", "sentinel", 80))], namespace=ns,
                           tls=[{"hosts": ["sentinel.invalid"], "secretName": "sentinel-tls"}])  # fmt: skip
        gw.write("sentinel.yaml", [secret, sentinel])
        gw.wait_report("sentinel", lambda r: r["accepted"], namespace=ns)
        gw.wait_converged()
        yield Suite(gw)
    finally:
        gw.stop()


def test_all_scenarios_collected() -> None:
    """25 scenarios in the features (30 runs once outline rows are expanded)."""
    assert len({(c.feature.path.stem, c.line) for c in CASES}) == 25
    assert len(CASES) == len({c.test_id for c in CASES}) == 30


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_scenario(suite: Suite, case: Case) -> None:
    world = suite.enter(case)
    state = ScenarioState(world)
    for st in case.steps[len(case.feature.background) :]:
        run_step(st, state)
