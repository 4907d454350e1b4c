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


def test_routes_name_backends_whose_service_is_missing_and_tls_hosts_whose_secret_is() -> None:
    """Exported from the Ingresses alone (Services and Secrets elsewhere), the routes still name the
    Service ports and the Gateway the certificate Secrets, as the Ingresses do; ssl-redirect is a
    RequestRedirect to https with 308 on the HTTP listener."""
    _original, out, _exported = export_gateway_api_paths([CORPUS / "037-almyty-hsts.yaml"], EVERY_CLASS)
    routes = [o for o in out.objects if o["kind"] == "HTTPRoute"]
    backends = {(b["name"], b["port"]) for r in routes for rule in r["spec"]["rules"]
                for b in rule.get("backendRefs", [])}  # fmt: skip
    assert backends == {("almyty-api", 3000), ("almyty-frontend", 8080)}
    gateway = next(o for o in out.objects if o["kind"] == "Gateway")
    certs = {lst["hostname"]: lst["tls"]["certificateRefs"][0]["name"] for lst in gateway["spec"]["listeners"]
             if lst["protocol"] == "HTTPS"}  # fmt: skip
    assert certs == {"api.almyty.com": "api-almyty-com-tls", "app.almyty.com": "app-almyty-com-tls"}
    redirects = [f["requestRedirect"] for r in routes for rule in r["spec"]["rules"] for f in rule.get("filters", [])
                 if f["type"] == "RequestRedirect"]  # fmt: skip
    assert redirects and all(r["scheme"] == "https" and r["statusCode"] == 308 for r in redirects)
    https_parents = {p["sectionName"] for r in routes if r["metadata"]["name"].endswith("-https")
                     for p in r["spec"]["parentRefs"]}  # fmt: skip
    assert https_parents == {"https-0", "https-1"}, "the HTTPS rules attach to the HTTPS listeners, not to http"


def test_a_grpc_ingress_becomes_a_grpcroute() -> None:
    """backend-protocol: GRPC on "/" is a GRPCRoute (HTTP/2 to the backend, every method); with a
    rewrite it stays an HTTPRoute and the protocol is reported lost."""
    original, out, exported = export_gateway_api_paths([CORPUS / "013-simplebank-grpc.yaml"], EVERY_CLASS)
    kinds = {o["kind"] for o in out.objects}
    assert "GRPCRoute" in kinds and "HTTPRoute" not in kinds
    [ref] = [r for r, ir in original.irs.items() if ir.served]
    assert ("converted", "backend-protocol") in {(f.level, f.key) for f in out.findings[ref]}
    grpc = [r for r in exported.gateway_api.routes if r.kind == "GRPCRoute"]
    assert grpc and all(dict((c[0], c[1]) for c in p.conditions)["Accepted"] == "True"
                        for r in grpc for p in exported.gateway_api.routes[r].parents)  # fmt: skip
    _original, out, _exported = export_gateway_api_paths([CORPUS / "014-rms-orders-grpc.yaml"], EVERY_CLASS)
    assert "GRPCRoute" not in {o["kind"] for o in out.objects}
    assert any(f.key == "backend-protocol" and f.level == "unsupported" for fs in out.findings.values() for f in fs)
