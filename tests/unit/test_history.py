"""History records, the content timeline, persistence and the pin, driven through the real controller."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controlplane.controller import Controller, GatewayConfig
from controlplane.history.backends import FileBackend
from controlplane.history.content import bucket
from controlplane.history.persist import Persister
from controlplane.history.recorder import History
from controlplane.history.secrets import SecretFinder
from controlplane.history.service import HistoryService, RollbackRefused
from controlplane.ingress.classes import ClassPolicy
from controlplane.metrics import Metrics
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import ingress, rule, service_manifests
from tests.support.snapshots import InjectedFailure
from tests.support.wait import wait_until_async


class Harness:
    """Controller -> history service -> served cache, on a private loop; optionally persisted."""

    def __init__(self, state: Path | None = None, *, size: int = 200, max_age: float = 86400.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.registry = ClusterRegistry()
        self.served = SnapshotCache()
        self.svc = HistoryService(self.served, Metrics(), size=size, max_age=max_age)
        self.svc.find_secret = SecretFinder(self.registry).find
        self.controller = Controller(
            self.registry, self.svc.sources, Metrics(), GatewayConfig(classes=ClassPolicy(watch_without_class=True))
        )
        self.store = self.registry.add(ClusterStore("c1", primary=True))
        self.controller.attach(self.loop)
        self.persister = Persister(FileBackend(state)) if state else None
        self.run(self.svc.start(self.persister))
        self.store.mark_synced()
        self.controller.flush()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def apply(self, *objs: dict[str, Any]) -> int:
        for o in objs:
            self.store.upsert(o["kind"], o)
        self.controller.flush()
        return self.svc.history.latest

    def delete(self, kind: str, name: str) -> int:
        self.store.delete(kind, "default", name)
        self.controller.flush()
        return self.svc.history.latest

    def served_versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: r.version for n, r in self.served.get(t).resources.items()} for t in rt.PUSH_ORDER}

    def source_versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: r.version for n, r in self.svc.sources.get(t).resources.items()} for t in rt.PUSH_ORDER}

    def close(self) -> None:
        self.run(self.svc.stop())
        self.loop.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def backend() -> list[dict[str, Any]]:
    return service_manifests("web", [SimpleNamespace(port=18080)])  # type: ignore[list-item]


def web(service: str = "web", host: str = "web.example.com") -> dict[str, Any]:
    return ingress("web", [rule(host, ("/", "Prefix", service, 80))])


def test_every_publish_is_recorded_with_its_trigger_and_resource_changes(harness: Harness) -> None:
    v_good = harness.apply(*backend(), web())
    v_bad = harness.apply(web("wbe"))
    assert v_bad == v_good + 1
    rec = harness.svc.history.get(v_bad)
    assert rec is not None and rec.served
    assert [(t.kind, t.name, t.action) for t in rec.triggers] == [("Ingress", "web", "changed")]
    assert "spec.rules[0].http.paths[0].backend.service.name: web -> wbe" in rec.triggers[0].diff
    changed = {(r.type, r.name) for r in rec.resources}
    assert ("RDS", "http") in changed and all(r.action == "changed" for r in rec.resources)
    assert rec.counts["CDS"] == len(harness.svc.sources.get(rt.CLUSTER).resources)
    # A batch that changes nothing Envoy sees records nothing.
    assert harness.apply(web("wbe")) == v_bad
    # The served view followed the sources, and the record knows which served version it was.
    assert harness.served_versions() == harness.source_versions()
    assert harness.svc.history.served_versions[v_bad] == harness.served.version


def test_records_are_written_after_the_change_is_served_in_order_and_before_any_read(harness: Harness) -> None:
    """On the event loop a change is served at once and recorded a moment later (off the path to
    Envoy's ACK), from the sources as they were when it was applied; reading the history first
    writes what is waiting, so no reader ever sees it behind what is served."""
    first = harness.apply(*backend())

    async def two_changes() -> tuple[int, int, int]:
        harness.store.upsert("Ingress", web())
        harness.controller.flush()
        clusters_then = len(harness.svc.sources.get(rt.CLUSTER).resources)
        harness.store.upsert("Service", service_manifests("api", [SimpleNamespace(port=18081)])[0])
        harness.controller.flush()
        served = harness.served.version
        waiting = len(harness.svc._waiting)  # served, not recorded yet
        assert harness.served_versions() == harness.source_versions()
        assert harness.svc._history.latest == first
        assert harness.svc.history.latest == first + 2  # a read writes them first
        return clusters_then, waiting, served

    clusters_then, waiting, served = harness.run(two_changes())
    assert waiting == 2
    ingress_rec, service_rec = harness.svc.history.get(first + 1), harness.svc.history.get(first + 2)
    assert ingress_rec is not None and service_rec is not None
    assert [t.kind for t in ingress_rec.triggers] == ["Ingress"]
    assert [t.kind for t in service_rec.triggers] == ["Service"]
    assert ingress_rec.counts["CDS"] == clusters_then < service_rec.counts["CDS"]
    assert harness.svc.history.served_versions[first + 2] == served

    async def one_change_then_wait() -> None:
        harness.store.upsert("Ingress", web(host="later.example.com"))
        harness.controller.flush()
        assert harness.svc._waiting
        # The timer writes it without any reader (probing `_history`, not the draining property).
        await wait_until_async(lambda: harness.svc._history.latest == first + 3, timeout=5, message="recorded")
        assert not harness.svc._waiting

    harness.run(one_change_then_wait())


def test_history_size_keeps_the_last_n_and_frees_what_only_they_used() -> None:
    h = Harness(size=3)
    try:
        h.apply(*backend())
        states = {}
        for i in range(8):
            v = h.apply(web(host=f"h{i}.example.com"))
            states[v] = h.source_versions()
        kept = h.svc.history.timeline.versions()
        assert kept == sorted(states)[-3:] and list(h.svc.history.records) == kept
        for v in kept:  # every kept version can be rebuilt exactly
            assert h.svc.history.manifest(v) == {t: m for t, m in states[v].items() if m}, v
        route_blobs = {c for c in h.svc.history.timeline.blobs}
        oldest_route = states[min(states)][rt.ROUTE]["http"]
        assert oldest_route not in route_blobs  # the first host's route table is gone with its version
        # The per-bucket index a save reads holds exactly the kept blobs, each under its bucket.
        tl = h.svc.history.timeline
        assert {c: d for m in tl.by_bucket.values() for c, d in m.items()} == tl.blobs
        assert all(bucket(c) == b for b, m in tl.by_bucket.items() for c in m)
    finally:
        h.close()


def test_secrets_appear_as_a_fingerprint_and_are_never_stored(tmp_path: Path) -> None:
    ca = make_ca()
    cert = issue_cert(ca, ["tls.example.com"])
    h = Harness(tmp_path)
    try:
        tls_ing = ingress("web", [rule("tls.example.com", ("/", "Prefix", "web", 80))],
                          tls=[{"hosts": ["tls.example.com"], "secretName": "tls"}])  # fmt: skip
        v = h.apply(*backend(), tls_secret("tls", "default", cert.cert, cert.key), tls_ing)
        sds = [r for r in h.svc.history.get(v).resources if r.type == "SDS"]
        assert sds and sds[0].version.startswith("sha256:")
        h.run(h.svc.flush())
        key_b64 = base64.b64encode(cert.key).decode()
        for blob in h.svc.history.timeline.blobs.values():
            assert cert.key not in blob
        for f in (tmp_path).iterdir():
            data = f.read_bytes()
            assert cert.key not in data and key_b64.encode() not in data
            import zlib

            try:
                data = zlib.decompress(data)
            except zlib.error:
                continue
            assert b"PRIVATE KEY" not in data
    finally:
        h.close()


def test_rollback_serves_the_old_version_records_pending_and_resume_catches_up(harness: Harness) -> None:
    good = harness.apply(*backend(), web())
    good_state = harness.served_versions()
    bad = harness.apply(web("wbe"))
    assert harness.served_versions() != good_state
    result = harness.run(harness.svc.rollback(good, "typo in service", yes=False))
    assert result["pin"]["version"] == good
    assert harness.served_versions() == good_state  # exactly the good version is served
    before = harness.served.version
    pending = harness.apply(web("web", host="other.example.com"))  # sources keep syncing
    assert pending == bad + 1 and not harness.svc.history.get(pending).served
    assert harness.served.version == before and harness.served_versions() == good_state
    assert harness.svc.gauge._value.get() == 1
    out = harness.run(harness.svc.resume())
    assert out == {"resumed_from": good, "serving": pending}
    assert harness.served_versions() == harness.source_versions()
    assert [e.action for e in harness.svc.history.pin_events] == ["rollback", "resume"]
    assert harness.svc.gauge._value.get() == 0


def test_rollback_refuses_unknown_old_or_incomplete_versions_without_yes(tmp_path: Path) -> None:
    ca = make_ca()
    first, second = issue_cert(ca, ["tls.example.com"]), issue_cert(ca, ["tls.example.com"])
    h = Harness(max_age=3600)
    try:
        tls_ing = ingress("web", [rule("tls.example.com", ("/", "Prefix", "web", 80))],
                          tls=[{"hosts": ["tls.example.com"], "secretName": "tls"}])  # fmt: skip
        v1 = h.apply(*backend(), tls_secret("tls", "default", first.cert, first.key), tls_ing)
        v2 = h.apply(tls_secret("tls", "default", second.cert, second.key))
        assert v2 == v1 + 1
        with pytest.raises(RollbackRefused) as err:
            h.run(h.svc.rollback(999))
        assert err.value.status == 404
        # v1's certificate is no longer in any Secret: its key is not stored, so this needs --yes.
        with pytest.raises(RollbackRefused) as err:
            h.run(h.svc.rollback(v1))
        assert err.value.status == 409 and "no current Secret has certificate" in err.value.reasons[0]
        assert h.svc.pin is None
        # Put the old certificate back under another name: the rollback finds it by fingerprint.
        h.apply(tls_secret("tls-old", "default", first.cert, first.key))
        h.run(h.svc.rollback(v1))
        served = h.served.get(rt.SECRET).resources
        assert list(served) == [n for n in h.svc.history.manifest(v1)[rt.SECRET]]
        h.run(h.svc.resume())
        # Too old needs --yes too.
        h.svc.max_age = 0
        with pytest.raises(RollbackRefused) as err:
            h.run(h.svc.rollback(v2))
        assert "old" in err.value.reasons[0]
        assert h.run(h.svc.rollback(v2, yes=True))["confirmed"]
    finally:
        h.close()


def test_history_and_pin_survive_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    good = h.apply(*backend(), web())
    good_state = h.served_versions()
    h.apply(web("wbe"))
    h.run(h.svc.rollback(good, "bad deploy"))
    h.close()

    again = Harness(tmp_path)  # a new process: empty sources until they are read again
    try:
        assert again.svc.pin is not None and again.svc.pin.version == good
        assert list(again.svc.history.records)[: good] == list(range(1, good + 1))
        again.apply(*backend(), web("wbe"))
        again.svc.sources.ready = True
        assert again.served_versions() == good_state  # the pin, never the sources
        new = [r for v, r in again.svc.history.records.items() if v > good + 1]
        assert new and not any(r.served for r in new)  # recorded while pinned: pending
        assert new[0].note.startswith("first publish after")  # diffed against the stored history
    finally:
        again.close()


def test_persistence_shards_under_the_limit_and_loads_back(tmp_path: Path) -> None:
    h = Harness()
    try:
        h.apply(*backend())
        for i in range(30):
            h.apply(web(host=f"h{i}.example.com"))
        persister = Persister(FileBackend(tmp_path), limit=1024)
        assert persister.save(h.svc.history)
        files = {f.name: f.stat().st_size for f in tmp_path.iterdir()}
        assert all(size <= 1024 for size in files.values()), files
        assert len([n for n in files if n.startswith("index-")]) > 1
        assert any(n.endswith("-1") and n.startswith("blobs-") for n in files)  # a bucket needed two shards
        loaded = History()
        blobs: dict[str, bytes] = {}
        assert Persister(FileBackend(tmp_path), limit=1024).load(loaded, blobs)
        mine = h.svc.history
        assert [r.to_dict() for r in loaded.records.values()] == [r.to_dict() for r in mine.records.values()]
        for v in mine.records:
            assert loaded.manifest(v) == mine.manifest(v)
        assert loaded.timeline.blobs == mine.timeline.blobs
    finally:
        h.close()


def test_fleet_counts_acks_and_nacks_per_group_from_syncz(harness: Harness) -> None:
    v = harness.apply(*backend(), web())
    served_at = harness.svc.history.served_versions[v]
    rec = harness.svc.history.get(v)
    types = {r.type for r in rec.resources}
    acked = {t: {"current_version": served_at, "last_nack": None} for t in types}
    behind = {t: {"current_version": served_at - 1, "last_nack": None} for t in types}
    nacked = {**behind, "RDS": {"current_version": served_at - 1, "last_nack": {"at": rec.at + 1, "error": "bad"}}}
    streams = [
        {"node_cluster": "edge", "types": acked},
        {"node_cluster": "edge", "types": nacked},
        {"node_cluster": "internal", "types": behind},
    ]
    assert harness.svc.history.update_fleet(streams)
    fleet = harness.svc.history.get(v).fleet
    assert fleet == {
        "edge": {"streams": 2, "acked": 1, "nacked": 1},
        "internal": {"streams": 1, "acked": 0, "nacked": 0},
    }
    # An Envoy that disconnects does not take its ACK back.
    assert not harness.svc.history.update_fleet(streams[1:])
    assert harness.svc.history.get(v).fleet["edge"]["acked"] == 1


def test_diff_shows_secrets_as_fingerprints_only(harness: Harness) -> None:
    from controlplane.history.render import manifest_diff

    ca = make_ca()
    first, second = issue_cert(ca, ["tls.example.com"]), issue_cert(ca, ["tls.example.com"])
    tls_ing = ingress("web", [rule("tls.example.com", ("/", "Prefix", "web", 80))],
                      tls=[{"hosts": ["tls.example.com"], "secretName": "tls"}])  # fmt: skip
    v1 = harness.apply(*backend(), tls_secret("tls", "default", first.cert, first.key), tls_ing)
    v2 = harness.apply(tls_secret("tls", "default", second.cert, second.key))
    h = harness.svc.history
    text, summary = manifest_diff("a", h.manifest(v1), "b", h.manifest(v2), h.blob)
    assert summary == {"SDS": {"changed": ["c1/default/tls"]}}, summary  # only the certificate changed
    assert "certificate_fingerprint: sha256:" in text and "[redacted]" in text
    for pem in (first.key, second.key, first.cert, second.cert):
        assert pem.decode().splitlines()[1] not in text


def test_pinned_version_keeps_live_endpoints(harness: Harness) -> None:
    """A rollback pins configuration, not pod addresses: endpoints keep following the sources."""
    good = harness.apply(*backend(), web(), *service_manifests("api", [SimpleNamespace(port=18090)]))  # type: ignore[list-item]
    harness.apply(web("wbe"))
    harness.run(harness.svc.rollback(good))
    routes = harness.served_versions()[rt.ROUTE]
    moved = service_manifests("web", [SimpleNamespace(port=18081)])  # type: ignore[list-item]
    harness.apply(*moved)  # the pods moved while pinned
    served = harness.served_versions()
    assert served[rt.ENDPOINT] == harness.source_versions()[rt.ENDPOINT]  # the new endpoints are served
    assert served[rt.ROUTE] == routes  # the pinned routes are not
    # A version whose Service is gone since needs --yes: its recorded endpoints may be stale.
    harness.run(harness.svc.resume())
    harness.delete("Service", "api")
    harness.delete("EndpointSlice", "api-0")
    with pytest.raises(RollbackRefused) as err:
        harness.run(harness.svc.rollback(good))
    assert any(r.startswith("EDS default/api:80: its Service is gone") for r in err.value.reasons), err.value.reasons
    harness.run(harness.svc.rollback(good, yes=True))
    assert "default/api:80" in harness.served_versions()[rt.ENDPOINT]


def test_a_malformed_stored_pin_is_ignored_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "pin").write_text('{"version": "not a number"}')
    h = Harness(tmp_path)
    try:
        assert h.svc.pin is None and "stored pin is malformed" in caplog.text
        v = h.apply(*backend(), web())
        assert h.served_versions() == h.source_versions() and v >= 1  # serving the sources
    finally:
        h.close()


def test_the_rebuild_after_a_failed_batch_records_the_changes_behind_it_not_every_object(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    v_good = harness.apply(*backend(), web())
    real_apply = harness.svc.sources.apply
    failures = [InjectedFailure("injected apply failure")]

    def flaky(changes: Any, **kw: Any) -> int:
        if failures:
            raise failures.pop()
        return real_apply(changes, **kw)

    monkeypatch.setattr(harness.svc.sources, "apply", flaky)
    assert harness.apply(web("wbe")) == v_good  # the batch failed: nothing recorded, nothing served
    assert not failures
    api = ingress("api", [rule("api.example.com", ("/", "Prefix", "web", 80))])
    v_rebuilt = harness.apply(api)  # the full rebuild: every object is re-read
    assert v_rebuilt == v_good + 1
    rec = harness.svc.history.get(v_rebuilt)
    assert rec is not None and rec.served
    # Its trigger is the failed batch's change and this batch's, not every object the rebuild read.
    assert sorted((t.kind, t.name, t.action) for t in rec.triggers) == [
        ("Ingress", "api", "added"),
        ("Ingress", "web", "changed"),
    ]
    assert rec.trigger_count == 2
    web_change = next(t for t in rec.triggers if t.name == "web")
    assert "spec.rules[0].http.paths[0].backend.service.name: web -> wbe" in web_change.diff
    assert harness.served_versions() == harness.source_versions()


class FakeClock:
    """time.monotonic / time.sleep for `controlplane.history.waiting`: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_save_steps_aside_while_a_change_is_being_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.history import waiting

    clock = FakeClock()
    monkeypatch.setattr(waiting, "time", clock)
    h = Harness(tmp_path)
    try:
        assert h.persister is not None
        clock.now += 1.0
        h.persister.step_aside()
        assert clock.slept == []  # nothing served lately: the save goes on at once
        h.apply(*backend())  # a change served now: its record (and the save) wait, and so does a save's next step
        clock.now += waiting.SERVE_QUIET / 3
        h.persister.step_aside()
        assert clock.slept == [pytest.approx(waiting.SERVE_QUIET * 2 / 3)]
        h.persister.step_aside()  # quiet since: no more waiting
        assert len(clock.slept) == 1
    finally:
        h.close()


def test_a_save_offers_to_step_aside_before_each_bucket_and_before_the_index(tmp_path: Path) -> None:
    h = Harness()
    try:
        h.apply(*backend(), web())
        steps: list[int] = []
        persister = Persister(FileBackend(tmp_path), step_aside=lambda: steps.append(1))
        plan = persister.snapshot(h.svc.history)
        assert plan is not None and len(plan.buckets) > 1
        persister.write(plan)
        assert len(steps) == len(plan.buckets) + 1
        assert Persister(FileBackend(tmp_path)).load(History(), {})  # what it wrote is whole
    finally:
        h.close()


def test_a_history_unreadable_at_start_is_not_written_over_until_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An API server that blinks while a replica starts must not cost the stored history: the writer
    keeps what it cannot read untouched, and takes it over once it can."""
    h = Harness(tmp_path)
    stored = h.apply(*backend(), web())
    h.close()
    head_before = (tmp_path / "head").read_bytes()

    real_read = FileBackend.read
    broken = {"on": True}

    def read(self: FileBackend, name: str) -> bytes | None:
        if broken["on"] and name != "pin":  # the pin was read (a replica that cannot read it does not start)
            raise OSError("connection refused")
        return real_read(self, name)

    monkeypatch.setattr(FileBackend, "read", read)
    again = Harness(tmp_path)
    try:
        assert "stored history could not be read" in caplog.text
        again.apply(*backend(), web("other"))
        again.run(again.svc._tick())
        again.run(again.svc.flush())
        assert (tmp_path / "head").read_bytes() == head_before  # nothing written over it
        broken["on"] = False
        again.run(again.svc._tick())  # readable again: taken over, then saved with the new change
        again.run(again.svc.flush())
        assert list(again.svc.history.records)[:stored] == list(range(1, stored + 1))
        assert again.svc.history.latest > stored
        reloaded = History()
        assert Persister(FileBackend(tmp_path)).load(reloaded, {})
        assert list(reloaded.records)[:stored] == list(range(1, stored + 1)) and reloaded.latest > stored
    finally:
        again.close()
