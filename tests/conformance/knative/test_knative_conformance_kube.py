"""The transcribed Knative ingress conformance in Kubernetes mode: the objects go to a fake API server
(the real kubernetes client's list/watch protocol) that `meridian serve --kubeconfig` watches, and a case
is ready when, as upstream's CreateIngressReady waits for, the KIngress status Meridian's leader writes
says Ready for its generation, with its load balancers (targets.py). So the status is checked as upstream
checks it: TestUpdate's sentinel must be served as soon as the update is Ready, TestIngressClass's other
classes must be left untouched, the visibility tests' private load balancer must be named.

Only the cases whose upstream assertions involve the status run here by default; the data plane is the same
as in file mode (test_knative_conformance.py runs every case). KNATIVE_CONFORMANCE_KUBE=all runs every case
here too."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conformance.knative.runner import CASES, run_case
from tests.conformance.knative.targets import KubeTarget
from tests.support.knative_images import ImageFleet
from tests.support.kubegateway import KubeGateway

STATUS_CASES = ("TestBasics", "TestIngressClass", "TestRewriteHost", "TestUpdate", "TestVisibility",
                "TestVisibilityPath")  # fmt: skip
KUBE_CASES = tuple(sorted(CASES)) if os.environ.get("KNATIVE_CONFORMANCE_KUBE") == "all" else STATUS_CASES


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeTarget, ImageFleet]]:
    gw = KubeGateway(tmp_path_factory.mktemp("knative-conformance-kube"), serve_args=KubeTarget.serve_args)
    fleet = ImageFleet()
    try:
        gw.start()
        yield KubeTarget(gw), fleet
    finally:
        gw.stop()
        fleet.close()


@pytest.mark.parametrize("name", KUBE_CASES)
def test_knative_conformance_kube(kube_env: tuple[KubeTarget, ImageFleet], name: str) -> None:
    run_case(*kube_env, name)
