"""Bad input through a real Envoy: each problem is reported, everything else keeps serving, no NACK.

Malformed YAML (new file, and a good file turned bad: its last good content stays served), an
Ingress naming a missing Service, an invalid pathType, a Service port that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("bad")))
    try:
        g.start()
        g.backend("good")
        g.write("good.yaml", [ingress("good", [rule("good.example.com", ("/", "Prefix", "good", 80))])])
        g.wait_served_by("good.example.com", "/", "good")
        yield g
    finally:
        g.stop()


def file_errors(gw: Gateway) -> dict[str, str]:
    c1 = next(c for c in gw.admin("/debug/clusters") if c.get("cluster") == "c1")
    return c1["errors"]


def assert_healthy(gw: Gateway) -> None:
    """The untouched Ingress still answers and Envoy accepted every version sent."""
    for _ in range(3):
        r = gw.get("good.example.com", "/")
        assert r.status == 200 and r.json()["service"] == "good"
    gw.wait_converged()
    for stream in gw.admin("/debug/syncz"):
        assert all(t["last_nack"] is None for t in stream["types"].values()), stream


def findings(report: dict[str, Any]) -> list[str]:
    return [f"{f['level']} {f['key']} {f['message']}" for f in report["findings"]]


def test_malformed_yaml_file_is_reported(gw: Gateway) -> None:
    path = gw.write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x\n  - nope: [\n")
    errors = wait_until(lambda: file_errors(gw).get(str(path)), timeout=15, message="malformed file not reported")
    assert "invalid YAML" in errors
    assert_healthy(gw)
    gw.remove("broken.yaml")
    wait_until(lambda: str(path) not in file_errors(gw), timeout=15, message="error not cleared on removal")


def test_file_turned_malformed_keeps_last_good_content(gw: Gateway) -> None:
    gw.backend("keep")
    path = gw.write("keep.yaml", [ingress("keep", [rule("keep.example.com", ("/", "Prefix", "keep", 80))])])
    gw.wait_served_by("keep.example.com", "/", "keep")
    path.write_text(path.read_text().replace("rules:", "rules: [\n"))  # now malformed
    wait_until(lambda: "invalid YAML" in file_errors(gw).get(str(path), ""), timeout=15, message="not reported")
    assert gw.ingress_report("keep") is not None
    assert_healthy(gw)
    r = gw.get("keep.example.com", "/")
    assert r.status == 200 and r.json()["service"] == "keep"  # last good content still served
    # Fixed again: the error goes away and a change in it takes effect.
    gw.write("keep.yaml", [ingress("keep", [rule("keep.example.com", ("/v2", "Prefix", "keep", 80))])])
    wait_until(lambda: str(path) not in file_errors(gw), timeout=15, message="error not cleared")
    gw.wait_status("keep.example.com", "/", 404)
    gw.wait_served_by("keep.example.com", "/v2", "keep")


def test_missing_service_is_reported_then_served_when_created(gw: Gateway) -> None:
    gw.write("ghost.yaml", [ingress("ghost", [rule("ghost.example.com", ("/", "Prefix", "ghost", 80))])])
    rep = gw.wait_report("ghost", lambda r: bool(r["warnings"]))
    assert any("service default/ghost not found" in w for w in rep["warnings"]), rep
    gw.wait_status("ghost.example.com", "/", 503)
    assert_healthy(gw)
    # The Ingress depends on the Service: creating it makes the route work with no Ingress change.
    gw.backend("ghost")
    gw.wait_served_by("ghost.example.com", "/", "ghost")
    gw.wait_report("ghost", lambda r: not r["warnings"])


def test_invalid_path_type_is_reported_other_paths_served(gw: Gateway) -> None:
    gw.backend("paths")
    gw.write(
        "paths.yaml",
        [ingress("paths", [rule("paths.example.com", ("/ok", "Prefix", "paths", 80), ("/bad", "Regex", "paths", 80))])],
    )
    gw.wait_served_by("paths.example.com", "/ok", "paths")
    rep = gw.wait_report("paths", lambda r: bool(r["reasons"]))
    assert any("invalid pathType 'Regex'" in f for f in findings(rep)), rep
    assert gw.get("paths.example.com", "/bad").status == 404
    assert_healthy(gw)


def test_missing_service_port_is_reported(gw: Gateway) -> None:
    gw.backend("ports")  # port 80 only
    gw.write("ports.yaml", [ingress("ports", [rule("ports.example.com", ("/", "Prefix", "ports", 81))])])
    rep = gw.wait_report("ports", lambda r: bool(r["warnings"]))
    assert any("service default/ports has no port 81" in w for w in rep["warnings"]), rep
    gw.wait_status("ports.example.com", "/", 503)
    assert_healthy(gw)


def test_service_with_wrongly_typed_fields_does_not_block_other_changes(gw: Gateway) -> None:
    """A file is validated by no API server: a Service whose `spec.ports` is a string is refused where it
    is read (reported like bad YAML). Before, it reached the build, which failed on every change, so no
    other object's change was served any more."""
    bad = "apiVersion: v1\nkind: Service\nmetadata: {name: typo, namespace: default}\nspec: {ports: '80'}\n"
    path = gw.write("typo.yaml", bad)
    errors = wait_until(lambda: file_errors(gw).get(str(path)), timeout=15, message="bad Service not reported")
    assert "Service typo): spec.ports: expected a list, got a string" in errors
    gw.backend("after")  # a change after the bad file: it must be served
    gw.write("after.yaml", [ingress("after", [rule("after.example.com", ("/", "Prefix", "after", 80))])])
    gw.wait_served_by("after.example.com", "/", "after")
    assert_healthy(gw)
    gw.remove("typo.yaml")
    wait_until(lambda: str(path) not in file_errors(gw), timeout=15, message="error not cleared on removal")
