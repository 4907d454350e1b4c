"""The ConformanceReport `--gateway-conformance-report` writes (conftest.py): cases counted per
profile, core or extended by their features, combined over the test functions that ran them."""

from __future__ import annotations

from tests.conformance.gatewayapi.conftest import case_result, conformance_report


def test_a_case_passes_when_one_of_its_tests_passed_and_none_failed() -> None:
    assert case_result(["skipped", "passed"]) == "passed"
    assert case_result(["passed", "failed"]) == "failed"
    assert case_result(["skipped"]) == case_result([]) == "skipped"


def test_report_counts_per_profile_core_and_extended() -> None:
    features = {
        "HTTPRouteSimpleSameNamespace": ["Gateway", "HTTPRoute"],
        "HTTPRouteReferenceGrant": ["Gateway", "HTTPRoute", "ReferenceGrant"],
        "HTTPRouteMultipleGateways": ["Gateway", "HTTPRoute"],
        "HTTPRouteQueryParamMatching": ["Gateway", "HTTPRoute", "HTTPRouteQueryParamMatching"],
        "HTTPRouteRedirectPortAndScheme": ["Gateway", "HTTPRoute", "HTTPRoutePortRedirect", "GatewayPort8080"],
        "GRPCExactMethodMatching": ["Gateway", "GRPCRoute"],
        "GRPCRouteNamedRule": ["Gateway", "GRPCRoute", "GRPCRouteNamedRouteRule"],
    }
    outcomes = {"HTTPRouteSimpleSameNamespace": ["passed"], "HTTPRouteReferenceGrant": ["passed"],
                "HTTPRouteMultipleGateways": ["skipped"], "HTTPRouteQueryParamMatching": ["passed"],
                "HTTPRouteRedirectPortAndScheme": ["failed"], "GRPCExactMethodMatching": ["passed"],
                "GRPCRouteNamedRule": ["passed"]}  # fmt: skip
    report = conformance_report(features, outcomes)
    assert report["kind"] == "ConformanceReport" and report["gatewayAPIVersion"] == "v1.6.1"
    http, grpc = report["profiles"]
    assert http["name"] == "GATEWAY-HTTP" and grpc["name"] == "GATEWAY-GRPC"
    assert http["core"] == {"result": "success", "statistics": {"Failed": 0, "Passed": 2, "Skipped": 1}}
    assert http["extended"]["statistics"] == {"Failed": 1, "Passed": 1, "Skipped": 0}
    assert http["extended"]["result"] == "failure"
    assert http["extended"]["supportedFeatures"] == ["HTTPRouteQueryParamMatching"]
    assert http["extended"]["unsupportedFeatures"] == ["GatewayPort8080", "HTTPRoutePortRedirect"]
    assert grpc["core"]["statistics"]["Passed"] == 1 and grpc["extended"]["supportedFeatures"] == [
        "GRPCRouteNamedRouteRule"]  # fmt: skip
