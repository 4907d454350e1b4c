"""Transcribed Gateway API conformance tests that need an API server (README.md here): run in
Kubernetes mode against the protocol-faithful fake API server (tests/fakekube), which bumps
`metadata.generation` on a spec change as a live one does, with the leader writing status.

HTTPRouteObservedGenerationBump: the route's conditions name its latest generation; after a patch of
its spec (through the real `kubernetes` client, as upstream's `client.Patch`) the generation
changed, the route is still Accepted with its references resolved, and every condition of our
parent names the new generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.conformance.gatewayapi.test_gatewayapi_conformance import BACKENDS, CASES, HERE
from tests.conformance.steps import self_signed_tls_secret
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.wait import wait_until

NS = "gateway-conformance-infra"
CLASS = "meridian-conformance"


@pytest.fixture(scope="module")
def kgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeGateway]:
    g = KubeGateway(Path(tmp_path_factory.mktemp("gatewayapi-conformance-kube")))
    try:
        g.start()
        for ns, services in BACKENDS.items():
            for svc in services:
                g.backend(svc, namespace=ns, port=8080)
        secret, _ = self_signed_tls_secret("tls-validity-checks-certificate", NS, "second-example.org")
        g.apply([d for d in yaml.safe_load_all((HERE / "base.yaml").read_text()) if d] + [secret])
        yield g
    finally:
        g.stop()


def _route(kgw: KubeGateway, name: str) -> dict[str, Any]:
    return kgw.kubes[PRIMARY].get("HTTPRoute", NS, name) or {}


def _latest_conditions(route: dict[str, Any], gateway: str) -> dict[str, str] | None:
    """Upstream's HTTPRouteMustHaveLatestConditions for our parent: the condition statuses when every
    condition names the route's current generation, else None."""
    generation = route.get("metadata", {}).get("generation")
    parents = [p for p in (route.get("status") or {}).get("parents") or [] if p["parentRef"]["name"] == gateway]
    conds = [c for p in parents for c in p.get("conditions") or []]
    if not conds or any(c.get("observedGeneration") != generation for c in conds):
        return None
    return {c["type"]: c["status"] for c in conds}


@pytest.mark.parametrize("name", ["HTTPRouteObservedGenerationBump"])  # (names the case in the report)
def test_httproute_observed_generation_bump(kgw: KubeGateway, name: str) -> None:
    case = CASES[name]
    route = "observed-generation-bump"
    kgw.apply([d for d in yaml.safe_load_all(case["manifests"].replace("{GATEWAY_CLASS_NAME}", CLASS)) if d])
    settled = wait_until(lambda: _latest_conditions(_route(kgw, route), "same-namespace"), timeout=20,
                         message=f"no latest conditions: {_route(kgw, route).get('status')}")  # fmt: skip
    assert settled["Accepted"] == "True" and settled["ResolvedRefs"] == "True"
    original = _route(kgw, route)["metadata"]["generation"]

    api = k8s_config.new_client_from_config(str(kgw.kubeconfig_path))
    try:
        patch = {"spec": {"rules": [{"backendRefs": [{"name": "infra-backend-v2", "port": 8080}]}]}}
        k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NS, "httproutes", route, patch)  # fmt: skip
    finally:
        api.close()

    def bumped() -> dict[str, str] | None:
        obj = _route(kgw, route)
        if obj["metadata"]["generation"] == original:
            return None
        return _latest_conditions(obj, "same-namespace")

    after = wait_until(bumped, timeout=20, message=f"conditions never caught up: {_route(kgw, route).get('status')}")
    assert after["Accepted"] == "True" and after["ResolvedRefs"] == "True"
    kgw.wait_served_by(None, "/", "infra-backend-v2")  # and the patched route is what is served
