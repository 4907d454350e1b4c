"""A crash while translating one Ingress or one host must cost that Ingress/host only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress import convert as ingress_builder
from controlplane.ingress.classes import ClassPolicy
from controlplane.ir import Route, VirtualHost
from controlplane.metrics import Metrics
from controlplane.store import INGRESS, SERVICE, ClusterRegistry, ClusterStore
from controlplane.translate.features import Feature
from controlplane.translate.policies import FEATURES
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache
from tests.support.gateway import ingress, rule


class Boom(Feature):
    name = "boom-test"

    def patch_route(self, route: Route, pb: Any, vhost: VirtualHost) -> None:
        if "bad.example.com" in vhost.domains:
            raise RuntimeError("feature bug")


def _service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def controller() -> tuple[Controller, ClusterStore]:
    registry, cache = ClusterRegistry(), SnapshotCache()
    ctl = Controller(registry, cache, Metrics(), GatewayConfig(classes=ClassPolicy(watch_without_class=True)))
    store = registry.add(ClusterStore("c1", primary=True))
    loop = asyncio.new_event_loop()
    ctl.attach(loop)
    store.mark_synced()
    yield ctl, store
    loop.close()


def _routes(ctl: Controller) -> bytes:
    return ctl.cache.get(rt.ROUTE).resources["http"].any_bytes


def test_feature_crash_on_one_host_keeps_its_routes_and_updates_others(controller):
    ctl, store = controller
    store.upsert(SERVICE, _service("web"))
    store.upsert(INGRESS, ingress("bad", [rule("bad.example.com", ("/", "Prefix", "web", 80))]))
    ctl.flush()
    before = _routes(ctl)
    assert b"bad.example.com" in before
    FEATURES.append(Boom())
    try:
        store.upsert(INGRESS, ingress("bad", [rule("bad.example.com", ("/v2", "Prefix", "web", 80))]))
        store.upsert(INGRESS, ingress("good", [rule("good.example.com", ("/", "Prefix", "web", 80))]))
        ctl.flush()
    finally:
        FEATURES.remove(next(f for f in FEATURES if f.name == "boom-test"))
    after = _routes(ctl)
    assert b"good.example.com" in after  # the batch was not lost
    assert b"/v2" not in after and b"bad.example.com" in after  # the broken host kept its last good routes
    report = next(r for r in ctl.ingress_reports() if r["name"] == "bad")
    assert any("internal error building host bad.example.com" in w for w in report["warnings"])


def test_builder_crash_rejects_only_that_ingress(controller, monkeypatch):
    ctl, store = controller
    store.upsert(SERVICE, _service("web"))
    real = ingress_builder.build_ingress

    def flaky(obj, ref, **kw):
        if ref.name == "crash":
            raise ValueError("builder bug")
        return real(obj, ref, **kw)

    monkeypatch.setattr("controlplane.engine.ingresses.build_ingress", flaky)
    store.upsert(INGRESS, ingress("crash", [rule("crash.example.com", ("/", "Prefix", "web", 80))]))
    store.upsert(INGRESS, ingress("fine", [rule("fine.example.com", ("/", "Prefix", "web", 80))]))
    ctl.flush()
    assert b"fine.example.com" in _routes(ctl)
    report = {r["name"]: r for r in ctl.ingress_reports()}
    assert report["crash"]["accepted"] is False
    assert any("internal error translating this Ingress: builder bug" in r for r in report["crash"]["reasons"])
    assert report["fine"]["accepted"] is True
