"""The first build waits for every cluster that is known to exist, so a cold start builds once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controlplane.controller import Controller, GatewayConfig
from controlplane.engine import first_build
from controlplane.ingress.classes import ClassPolicy
from controlplane.metrics import Metrics
from controlplane.store import SERVICE, ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache
from tests.support.wait import wait_until_async


def _service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}


def _setup() -> tuple[Controller, ClusterRegistry, list[int]]:
    registry = ClusterRegistry()
    ctl = Controller(registry, SnapshotCache(), Metrics(), GatewayConfig(classes=ClassPolicy(watch_without_class=True)))
    builds: list[int] = []
    ctl.add_built_listener(lambda: builds.append(len(ctl.cache.get(rt.CLUSTER).resources)))
    return ctl, registry, builds


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_first_build_waits_for_remote_discovery_and_every_clusters_list() -> None:
    ctl, registry, builds = _setup()
    primary = registry.add(ClusterStore("c1", primary=True))
    ctl.attach(asyncio.get_running_loop())
    registry.discovering("remote Secrets")  # as the remote-cluster manager does before its first list
    primary.upsert(SERVICE, _service("a"))
    primary.mark_synced()
    await _turns()
    assert builds == [] and not registry.all_synced()
    remote = registry.add(ClusterStore("c2"))
    registry.discovered("remote Secrets")
    remote.upsert(SERVICE, _service("b"))
    await _turns()
    assert builds == [] and not registry.all_synced()  # c2 is known and still listing
    remote.mark_synced()
    await wait_until_async(lambda: builds, timeout=5, message="the first build")
    assert builds == [2] and ctl.ready.is_set()  # one build, with both clusters' Services
    remote.upsert(SERVICE, _service("c"))  # after the first build every change builds at once
    await wait_until_async(lambda: len(builds) == 2, timeout=5, message="the next build")


async def test_a_cluster_that_fails_its_first_list_does_not_hold_the_build() -> None:
    ctl, registry, builds = _setup()
    primary = registry.add(ClusterStore("c1", primary=True))
    remote = registry.add(ClusterStore("c2"))
    ctl.attach(asyncio.get_running_loop())
    primary.upsert(SERVICE, _service("a"))
    primary.mark_synced()
    await _turns()
    assert builds == []
    remote.status.state = "error"
    remote.status.errors["watch/Service"] = "connection refused"
    remote.status_changed()
    await wait_until_async(lambda: builds, timeout=5, message="the build without the broken cluster")
    assert builds == [1]


async def test_a_slow_cluster_is_waited_for_at_most_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(first_build, "FIRST_BUILD_GRACE_S", 0.2)
    ctl, registry, builds = _setup()
    primary = registry.add(ClusterStore("c1", primary=True))
    registry.add(ClusterStore("c2"))  # never lists
    ctl.attach(asyncio.get_running_loop())
    primary.upsert(SERVICE, _service("a"))
    primary.mark_synced()
    await _turns()
    assert builds == []
    await wait_until_async(lambda: builds, timeout=5, message="the build once the grace is over")
    assert builds == [1] and ctl.ready.is_set()
