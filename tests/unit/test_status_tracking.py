"""The status writer looks at a change only once the engine has built it.

A pass that runs between a store event and the engine's build of it must not use the change up:
it would compare the old IR, see nothing new and never look again (seen once in CI: a Secret made
unusable never became an Event). The engine's flush is driven by hand here, so the interleaving
that is rare on a real loop happens every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.ir import IngressRef
from controlplane.metrics import Metrics
from controlplane.status_tracking import ChangeTracker
from controlplane.store import INGRESS, SECRET, SERVICE, ClusterRegistry, ClusterStore
from controlplane.xds.cache import SnapshotCache
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import ingress, rule

SITE = IngressRef("c1", "default", "site")
NOTHING = frozenset()


class Rig:
    def __init__(self) -> None:
        self.registry = ClusterRegistry()
        self.controller = Controller(
            self.registry, SnapshotCache(), Metrics(), GatewayConfig(classes=ClassPolicy(watch_without_class=True))
        )
        self.store = self.registry.add(ClusterStore("c1", primary=True))
        self.loop = asyncio.new_event_loop()
        self.controller.attach(self.loop)  # the engine hears every event first, as in the app
        self.rechecks = 0
        self.tracker = ChangeTracker(self.controller.view, self.registry, self._recheck)
        self.registry.subscribe(self.tracker.note)
        self.store.mark_synced()

    def _recheck(self) -> None:
        self.rechecks += 1

    def dirty(self) -> list[IngressRef]:
        return self.tracker.dirty(NOTHING)[0]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.loop.close()


def _service(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}


def _site(path: str = "/") -> dict[str, Any]:
    obj = ingress("site", [rule("tls.example.com", (path, "Prefix", "web", 80))])
    obj["metadata"]["uid"] = "uid-site"
    obj["spec"]["tls"] = [{"hosts": ["tls.example.com"], "secretName": "site-tls"}]
    return obj


def _tls_findings(rig: Rig) -> list[str]:
    report = rig.controller.view.report(rig.controller.view.irs[SITE])
    return [str(f.get("message")) for f in report.get("findings") or () if str(f.get("key", "")).startswith("tls[")]


def test_a_secret_change_waits_for_the_engine_and_is_not_lost(rig: Rig) -> None:
    good = issue_cert(make_ca(), ["tls.example.com"])
    rig.store.upsert(SERVICE, _service("web"))
    rig.store.upsert(SECRET, tls_secret("site-tls", "default", good.cert, good.key))
    rig.store.upsert(INGRESS, _site())
    rig.controller.flush()
    assert rig.dirty() == [SITE]  # the first pass looks at everything
    assert rig.dirty() == []
    assert not _tls_findings(rig)

    rig.store.upsert(SECRET, tls_secret("site-tls", "default", b"not a certificate", good.key))
    assert rig.dirty() == []  # the engine has not built it: nothing to compare yet...
    assert rig.rechecks == 1  # ...so the writer is asked to look again
    rig.controller.flush()
    assert rig.dirty() == [SITE]  # and then the change is there, not used up by the early pass
    assert any("last good certificate" in m for m in _tls_findings(rig)), _tls_findings(rig)
    assert rig.dirty() == []


def test_an_ingress_edit_and_a_service_change_wait_for_the_engine(rig: Rig) -> None:
    rig.store.upsert(SERVICE, _service("web"))
    rig.store.upsert(INGRESS, _site())
    rig.controller.flush()
    assert rig.dirty() == [SITE]

    rig.store.upsert(INGRESS, _site("/v2"))
    rig.store.upsert(SERVICE, {**_service("web"), "spec": {"ports": [{"port": 80}, {"port": 81}]}})
    assert rig.dirty() == []
    rig.controller.flush()
    assert rig.dirty() == [SITE]
    assert rig.rechecks == 1


def test_events_built_in_an_earlier_batch_are_looked_at_while_later_ones_wait(rig: Rig) -> None:
    rig.store.upsert(SERVICE, _service("web"))
    rig.store.upsert(INGRESS, _site())
    rig.store.upsert(INGRESS, {**ingress("other", [rule("other.example.com", ("/", "Prefix", "web", 80))])})
    rig.controller.flush()
    assert sorted(rig.dirty()) == sorted([SITE, IngressRef("c1", "default", "other")])

    rig.store.upsert(INGRESS, _site("/v2"))
    rig.controller.flush()
    rig.store.upsert(INGRESS, ingress("other", [rule("other.example.com", ("/v3", "Prefix", "web", 80))]))
    assert rig.dirty() == [SITE]  # built: looked at now, while the later edit waits for its build
    rig.controller.flush()
    assert rig.dirty() == [IngressRef("c1", "default", "other")]
