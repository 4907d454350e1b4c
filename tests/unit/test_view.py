"""The IngressView: a live, read-only window on what the engine serves (what status and admin read)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.store import INGRESS, SERVICE
from tests.support.gateway import ingress, rule
from tests.support.snapshots import engine


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def test_view_follows_the_engine_and_cannot_change_it() -> None:
    with engine() as e:
        view, store = e.controller.view, e.stores["c1"]
        assert not view.irs and not view.built_once()
        store.upsert(SERVICE, service("web"))
        store.upsert(INGRESS, ingress("old", [rule("a.example.com", ("/", "Prefix", "web", 80))],
                                      created="2024-01-01T00:00:00Z"))  # fmt: skip
        store.upsert(INGRESS, ingress("new", [rule("a.example.com", ("/", "Prefix", "web", 80))],
                                      created="2024-02-01T00:00:00Z"))  # fmt: skip
        e.controller.flush()
        assert view.built_once() and {r.name for r in view.irs} == {"old", "new"}
        ref = next(r for r in view.irs if r.name == "new")
        assert view.built_from(ref) is store.get(INGRESS, "default", "new")
        report = view.report(view.irs[ref])
        assert any("served by" in w for w in report["warnings"])  # the host's conflict finding
        assert view.reports() == e.controller.ingress_reports()
        with pytest.raises(TypeError):
            view.irs[ref] = view.irs[ref]  # type: ignore[index]
        with pytest.raises(TypeError):
            view.host_results["x"] = view.host_results["a.example.com"]  # type: ignore[index]

        store.delete(INGRESS, "default", "old")
        e.controller.flush()
        assert {r.name for r in view.irs} == {"new"}  # the same view shows the next batch
        assert not any("served by" in w for w in view.report(view.irs[ref])["warnings"])
