"""History in Kubernetes mode, against the fake API server through the real kubernetes client:
the 1 MiB ConfigMap limit, sharding, followers reading the leader's history, a leader change
while pinned, and a new replica starting while pinned."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.app import MeridianApp, ServeOptions
from controlplane.history.backends import LABEL, MAX_DOCUMENT, PREFIX, ConfigMapBackend
from controlplane.history.persist import Persister
from controlplane.history.recorder import History
from controlplane.sources.kube import api_client_from_kubeconfig
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource
from tests.fakekube import FakeKube
from tests.support.gateway import ingress, rule, service_manifests
from tests.support.wait import wait_until_async

NS = "meridian-system"


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.1) as fk:
        yield fk


@pytest.fixture
def api(fake: FakeKube) -> Iterator[k8s.ApiClient]:
    client = api_client_from_kubeconfig(fake.kubeconfig())
    yield client
    client.close()


def test_fake_api_server_enforces_the_configmap_size_limit(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    import base64

    big = {"metadata": {"name": "big"}, "binaryData": {"data": base64.b64encode(os.urandom(1024 * 1024)).decode()}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, big)
    assert err.value.status == 422 and "Too long" in err.value.body
    ok = {"metadata": {"name": "ok"}, "binaryData": {"data": base64.b64encode(os.urandom(MAX_DOCUMENT)).decode()}}
    core.create_namespaced_config_map(NS, ok)


def test_history_is_sharded_into_configmaps_under_the_limit(fake: FakeKube, api: k8s.ApiClient) -> None:
    """Several MiB of incompressible resources: many shards, each accepted by the API server."""
    history = History(size=50)
    sources = SimpleNamespace(get=lambda _t: SimpleNamespace(resources={}))
    for v in range(12):
        blob = os.urandom(400 * 1024)
        res = Resource(f"table-{v % 3}", f"{v:015x}{v % 16:x}", blob)
        history.record({rt.ROUTE: {res.name: res}}, sources)  # type: ignore[arg-type]
    persister = Persister(ConfigMapBackend(api, NS), writer="a")
    assert persister.save(history)
    maps = [o for o in fake.objects("ConfigMap") if o["metadata"]["name"].startswith(PREFIX)]
    assert all(o["metadata"]["labels"][LABEL] == "true" for o in maps)
    assert len([o for o in maps if "-blobs-" in o["metadata"]["name"]]) >= 12
    loaded = History()
    assert Persister(ConfigMapBackend(api, NS), writer="b").load(loaded, {})
    assert loaded.timeline.blobs == history.timeline.blobs
    assert [r.to_dict() for r in loaded.records.values()] == [r.to_dict() for r in history.records.values()]


# -- replicas -------------------------------------------------------------------------------------
def options(fake: FakeKube, tmp: Path, name: str) -> ServeOptions:
    token = tmp / "token"
    token.write_text("s3cret\n")
    kubeconfig = tmp / f"{name}.kubeconfig"
    fake.kubeconfig(str(kubeconfig))
    return ServeOptions(
        kubeconfig=str(kubeconfig), cluster_id="primary", namespace=NS,
        xds_address="127.0.0.1:0", admin_address="127.0.0.1:0", watch_ingress_without_class=True,
        lease_duration=4.0, lease_renew_interval=0.1, admin_token_file=str(token),  # steady under load
    )  # fmt: skip


def served(app: MeridianApp) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in app.cache.get(t).resources.items()} for t in rt.PUSH_ORDER if t != rt.SECRET}


def manifest(app: MeridianApp, version: int) -> dict[str, dict[str, str]]:
    m = app.history.history.manifest(version) or {}
    return {t: m.get(t, {}) for t in rt.PUSH_ORDER if t != rt.SECRET}


def leader(apps: list[MeridianApp]) -> MeridianApp | None:
    leaders = [a for a in apps if a.history._writing]
    return leaders[0] if len(leaders) == 1 else None


async def start(fake: FakeKube, tmp: Path, name: str) -> MeridianApp:
    app = MeridianApp(options(fake, tmp, name))
    app.history.poll_interval = 0.05
    # Replicas in one process: each its own leader-election identity, as pods have (POD_NAME).
    old = os.environ.get("POD_NAME")
    os.environ["POD_NAME"] = f"meridian-{name}"
    try:
        await app.start()
    finally:
        if old is None:
            os.environ.pop("POD_NAME", None)
        else:
            os.environ["POD_NAME"] = old
    return app


async def test_leader_writes_followers_follow_and_the_pin_survives_a_leader_change(
    fake: FakeKube, tmp_path: Path
) -> None:
    for obj in service_manifests("web", [SimpleNamespace(port=18080)]):  # type: ignore[list-item]
        fake.apply(obj)
    fake.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))]))
    a = await start(fake, tmp_path, "a")
    b = await start(fake, tmp_path, "b")
    apps = [a, b]
    try:
        first = await wait_until_async(lambda: leader(apps), timeout=15, message="no history writer")
        follower = b if first is a else a
        await wait_until_async(lambda: first.history.history.latest >= 1 and fake.get("ConfigMap", NS, PREFIX + "head"),
                               timeout=10, message="leader never stored the history")  # fmt: skip
        good = first.history.history.latest
        fake.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "wbe", 80))]))
        bad = await wait_until_async(lambda: first.history.history.latest > good and first.history.history.latest,
                                     timeout=10, message="bad change not recorded")  # fmt: skip
        # The follower shows the leader's history, and serves what the leader serves.
        # (the leader may publish more after `bad`, e.g. retiring an old route table layout)
        await wait_until_async(
            lambda: follower.history.history.latest == first.history.history.latest >= bad
            and served(follower) == served(first) == manifest(first, first.history.history.latest),
            timeout=10, message=f"follower lags (leader {first.history.history.latest}, bad {bad})",
        )  # fmt: skip
        fr, lr = follower.history.history.get(bad), first.history.history.get(bad)
        assert fr == lr, (fr.at, lr.at, fr.trigger_count, lr.trigger_count)

        # A rollback asked of the follower pins every replica (through the pin ConfigMap).
        first.history.poll_interval = 600  # from now on the leader hears of the pin only through its watch
        first.history._wake()
        result = await follower.history.rollback(good, "typo", by="test")
        assert result["pin"]["version"] == good
        assert served(follower) == manifest(follower, good)
        await wait_until_async(lambda: served(first) == manifest(first, good), timeout=15, message="leader not pinned")
        await wait_until_async(
            lambda: [e for e in fake.objects("Event") if e["involvedObject"]["name"] == PREFIX + "pin"],
            timeout=10, message="no Warning Event",
        )  # fmt: skip
        events = [e for e in fake.objects("Event") if e["involvedObject"]["name"] == PREFIX + "pin"]
        assert events[0]["type"] == "Warning" and f"version {good}" in events[0]["message"]

        # The leader goes away; the other replica takes over, keeps the pin and records as pending.
        await first.stop()
        apps.remove(first)
        await wait_until_async(lambda: leader(apps) is follower, timeout=15, message="no takeover")
        fake.apply(ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))], annotations={"x": "1"}))
        fake.apply(ingress("api", [rule("api.example.com", ("/", "Prefix", "web", 80))]))
        h = follower.history.history
        await wait_until_async(lambda: h.latest > bad and h.get(h.latest) and not h.get(h.latest).served,
                               timeout=10, message="change while pinned not recorded as pending")  # fmt: skip
        assert served(follower) == manifest(follower, good)
        assert follower.history.pin is not None and follower.history.pin.version == good

        # A new replica starting while pinned serves the pinned version from its first snapshot.
        c = await start(fake, tmp_path, "c")
        apps.append(c)
        await wait_until_async(lambda: c.cache.ready, timeout=15, message="new replica never ready")
        assert c.history.pin is not None and served(c) == manifest(follower, good)
        assert c.metrics.registry.get_sample_value("meridian_config_pinned") == 1

        # Resume: everyone serves the sources again.
        await follower.history.resume()
        await wait_until_async(lambda: c.history.pin is None and served(c) == served(follower), timeout=10,
                               message="resume did not reach the other replica")  # fmt: skip
        assert served(follower) == {t: m for t, m in manifest(follower, h.latest).items()}
    finally:
        for app in apps:
            await app.stop()

