"""Gateway API in file mode: no API server takes a status, so `/debug/gateways` shows the statuses the
leader would write (README, Gateway API), and they agree with what a real Envoy serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway
from tests.support.wait import wait_until

GW_API = "gateway.networking.k8s.io/v1"
REPO = Path(__file__).resolve().parents[2]


def route(name: str, hostname: str, backend: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": GW_API, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "web", "namespace": "infra"}], "hostnames": [hostname],
                     "rules": [{"backendRefs": [{"port": 80, **backend}]}]}}  # fmt: skip


GATEWAY_OBJECTS = [
    {"apiVersion": GW_API, "kind": "GatewayClass", "metadata": {"name": "meridian"},
     "spec": {"controllerName": "meridian.io/gateway-controller"}},
    {"apiVersion": GW_API, "kind": "Gateway", "metadata": {"name": "web", "namespace": "infra"},
     "spec": {"gatewayClassName": "meridian", "listeners": [
         {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "*.example.com",
          "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
    route("shop", "shop.example.com", {"name": "api"}),
    route("cross", "cross.example.com", {"name": "other", "namespace": "other"}),
    route("elsewhere", "shop.example.org", {"name": "api"}),
]  # fmt: skip

GRANT = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
         "metadata": {"name": "allow-shop", "namespace": "other"},
         "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                  "to": [{"group": "", "kind": "Service"}]}}  # fmt: skip


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gwapi-status"), serve_args=())
    try:
        g.start()
        g.backend("api", namespace="shop")
        g.backend("other", namespace="other")
        g.write("gateway.yaml", GATEWAY_OBJECTS)
        yield g
    finally:
        g.stop()


def statuses(gw: Gateway) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["kind"], s["name"]): s["status"] for s in gw.admin("/debug/gateways")}


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    """(status, reason) of condition `kind` of a route's one parent (or of a Gateway / GatewayClass)."""
    conds = status["parents"][0]["conditions"] if "parents" in status else status["conditions"]
    (c,) = [c for c in conds if c["type"] == kind]
    return c["status"], c["reason"]


def test_debug_gateways_shows_the_statuses_file_mode_cannot_write(gw: Gateway) -> None:
    gw.wait_served_by("shop.example.com", "/", "api")
    got = wait_until(lambda: (s := statuses(gw)) and ("HTTPRoute", "elsewhere") in s and s,
                     timeout=15, message="no HTTPRoute status in /debug/gateways")  # fmt: skip
    assert condition(got[("GatewayClass", "meridian")], "Accepted") == ("True", "Accepted")
    gateway = got[("Gateway", "web")]
    assert condition(gateway, "Accepted") == ("True", "Accepted")
    assert condition(gateway, "Programmed")[0] == "True"
    assert gateway["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]  # the harness's --publish-address
    (listener,) = gateway["listeners"]
    assert listener["attachedRoutes"] == 2  # shop and cross; elsewhere matches no listener hostname
    assert condition(got[("HTTPRoute", "shop")], "Accepted") == ("True", "Accepted")
    assert condition(got[("HTTPRoute", "shop")], "ResolvedRefs") == ("True", "ResolvedRefs")
    assert condition(got[("HTTPRoute", "cross")], "ResolvedRefs") == ("False", "RefNotPermitted")
    assert condition(got[("HTTPRoute", "elsewhere")], "Accepted") == ("False", "NoMatchingListenerHostname")
    gw.wait_status("cross.example.com", "/", 500)  # a rule with no usable backend answers 500


def test_debug_gateways_follows_a_reference_grant(gw: Gateway) -> None:
    gw.write("grant.yaml", [GRANT])
    try:
        gw.wait_served_by("cross.example.com", "/", "other")
        wait_until(lambda: condition(statuses(gw)[("HTTPRoute", "cross")], "ResolvedRefs") == ("True", "ResolvedRefs"),
                   timeout=15, message="cross's ResolvedRefs did not follow the ReferenceGrant")  # fmt: skip
    finally:
        gw.remove("grant.yaml")
    gw.wait_status("cross.example.com", "/", 500)
    wait_until(lambda: condition(statuses(gw)[("HTTPRoute", "cross")], "ResolvedRefs") == ("False", "RefNotPermitted"),
               timeout=15, message="cross's ResolvedRefs did not follow the ReferenceGrant's removal")  # fmt: skip


def test_an_invalid_backend_of_a_weighted_rule_is_left_out_of_the_split(gw: Gateway) -> None:
    """README, Gateway API "Backends": its share goes to the valid backend (the spec would answer 500)."""
    split = route("split", "split.example.com", {"name": "api", "weight": 1})
    split["spec"]["rules"][0]["backendRefs"].append({"name": "missing", "port": 80, "weight": 1})
    gw.write("split.yaml", [split])
    try:
        gw.wait_served_by("split.example.com", "/", "api")
        assert {gw.get("split.example.com", "/").status for _ in range(20)} == {200}
        missing = ("False", "BackendNotFound")
        wait_until(lambda: condition(statuses(gw)[("HTTPRoute", "split")], "ResolvedRefs") == missing, timeout=15,
                   message="split's ResolvedRefs does not name the missing backend")  # fmt: skip
    finally:
        gw.remove("split.yaml")

def test_a_selector_listener_reads_namespace_labels_from_the_manifests(gw: Gateway) -> None:
    """README, Gateway API table: `Selector` in file mode matches the labels of Namespace objects in the files."""
    listener = {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "sel.example.org",
                "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"gw": "yes"}}}}}
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"gw": "yes"}}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b", "labels": {"gw": "no"}}},
            {"apiVersion": GW_API, "kind": "Gateway", "metadata": {"name": "sel", "namespace": "infra"},
             "spec": {"gatewayClassName": "meridian", "listeners": [listener]}}]  # fmt: skip
    for team in ("team-a", "team-b"):
        r = route(team, "sel.example.org", {"name": "api", "namespace": "shop"})
        r["metadata"]["namespace"] = team
        r["spec"]["parentRefs"] = [{"name": "sel", "namespace": "infra"}]
        r["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": f"/{team}"}}]
        grant = {**GRANT, "metadata": {"name": f"allow-{team}", "namespace": "shop"},
                 "spec": {**GRANT["spec"], "from": [{**GRANT["spec"]["from"][0], "namespace": team}]}}  # fmt: skip
        objs += [r, grant]
    gw.write("selector.yaml", objs)
    try:
        gw.wait_served_by("sel.example.org", "/team-a", "api")
        assert gw.get("sel.example.org", "/team-b").status == 404
        got = statuses(gw)
        assert condition(got[("HTTPRoute", "team-b")], "Accepted") == ("False", "NotAllowedByListeners")
    finally:
        gw.remove("selector.yaml")

def readme_gateway_api_example() -> str:
    """The YAML block of README's "Gateway API" section, as a user copies it."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Gateway API", 1)[1].split("\n## ", 1)[0]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_as_written_serves_in_file_mode(tmp_path: Path) -> None:
    with Gateway(tmp_path, serve_args=()) as g:
        g.backend("api", namespace="shop")
        g.backend("api-v2", namespace="shop")
        g.write("example.yaml", readme_gateway_api_example())
        seen = {g.wait_status("shop.example.com", "/api/x", 200, headers={"x-version": "2"}).json()["service"]}
        seen |= {g.get("shop.example.com", "/api/x", headers={"x-version": "2"}).json()["service"] for _ in range(20)}
        assert seen <= {"api", "api-v2"} and "api-v2" in seen  # weights 90 / 10
        assert g.get("shop.example.com", "/api/x").status == 404  # the rule matches x-version: 2 only
