"""KubeSource against the fake API server: list, watch, bookmarks, 410 relists, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from controlplane.metrics import Metrics
from controlplane.sources.kube import Backoff, KubeconfigError, KubeSource, api_client_from_kubeconfig
from controlplane.store import KINDS, ClusterStore, StoreEvent
from tests.fakekube import FakeKube
from tests.support.wait import wait_until_async

FAST = Backoff(initial=0.02, cap=0.2)


async def eventually(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    await wait_until_async(cond, timeout=timeout, interval=0.01)


def service(name: str, ns: str = "default", port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": port}]}}


def slice_(name: str, ips: list[str], ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"port": 8080}],
    }


def ingress(name: str, ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": ns},
            "spec": {"rules": [{"host": f"{name}.example.com"}]}}


def secret(name: str, typ: str = "kubernetes.io/tls", ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "type": typ,
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}


INGRESS_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "meridian"},
                 "spec": {"controller": "meridian.io/ingress-controller"}}


def snapshot(store: ClusterStore) -> dict[str, dict[tuple[str, str], str]]:
    return {k: {key: o["metadata"]["resourceVersion"] for key, o in store.items(k)} for k in KINDS}


def truth(fake: FakeKube) -> dict[str, dict[tuple[str, str], str]]:
    out: dict[str, dict[tuple[str, str], str]] = {}
    for kind in KINDS:
        objs = fake.objects(kind)
        if kind == "Secret":
            objs = [o for o in objs if o.get("type") == "kubernetes.io/tls"]
        out[kind] = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                     for o in objs}
    return out


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    fk = FakeKube(bookmark_interval=0.05)
    await asyncio.to_thread(fk.start)
    yield fk
    await asyncio.to_thread(fk.close)


@pytest.fixture
def seeded(fake: FakeKube) -> FakeKube:
    for i in range(5):
        fake.apply(service(f"svc{i}"))
        fake.apply(slice_(f"svc{i}", [f"10.0.0.{i}"]))
    fake.apply(ingress("web"))
    fake.apply(INGRESS_CLASS)
    fake.apply(secret("cert"))
    fake.apply(secret("not-tls", "Opaque"))
    return fake


async def start_source(fake: FakeKube, store: ClusterStore, **kw: Any) -> KubeSource:
    source = KubeSource("c1", fake.kubeconfig(), store, backoff=FAST, page_size=2, **kw)
    await source.start()
    assert await source.wait_synced(10)
    return source


async def test_lists_and_watches_every_kind(seeded: FakeKube) -> None:
    fake = seeded
    store = ClusterStore("c1")
    source = await start_source(fake, store)
    try:
        assert store.status.state == "synced" and store.status.last_sync
        assert snapshot(store) == truth(fake)
        assert store.get("Secret", "default", "not-tls") is None  # only TLS Secrets are watched
        obj = store.get("Service", "default", "svc1")
        assert obj is not None and obj["kind"] == "Service" and obj["apiVersion"] == "v1"
        assert store.get("IngressClass", "", "meridian") is not None

        fake.apply(ingress("shop"))
        fake.apply(slice_("svc0", ["10.0.0.0", "10.0.1.0"]))
        fake.delete("Service", "default", "svc4")
        fake.apply(secret("cert2"))
        fake.apply({**INGRESS_CLASS, "spec": {"controller": "other"}})
        fake.apply(secret("still-not-tls", "Opaque"))
        await eventually(lambda: snapshot(store) == truth(fake))
        eps = store.get("EndpointSlice", "default", "svc0")
        assert eps is not None and len(eps["endpoints"]) == 2
    finally:
        await source.stop()


async def test_namespace_restriction(seeded: FakeKube) -> None:
    seeded.apply(service("elsewhere", "other"))
    store = ClusterStore("c1")
    source = await start_source(seeded, store, namespace="other")
    try:
        assert [o["metadata"]["name"] for o in store.list("Service")] == ["elsewhere"]
        assert store.count("IngressClass") == 1  # cluster-scoped kinds are still watched
    finally:
        await source.stop()


async def test_bookmarks_advance_the_resume_version(seeded: FakeKube) -> None:
    fake = seeded
    store = ClusterStore("c1")
    source = await start_source(fake, store)
    try:
        ing = source.reflectors["Ingress"]
        listed_at = int(ing.resource_version or 0)
        for i in range(3):
            fake.apply(service(f"more{i}"))  # other kinds move the global resourceVersion
        target = fake.resource_version
        await eventually(lambda: int(ing.resource_version or 0) >= target)
        assert target > listed_at
        assert store.count("Ingress") == 1
        # a reconnect resumes from the bookmarked version instead of relisting
        relists = ing.relists
        fake.stop()
        await eventually(lambda: store.status.state == "stale")
        fake.start()
        await eventually(lambda: store.status.state == "synced")
        await eventually(lambda: any(
            r["kind"] == "Ingress" and int(r.get("resourceVersion") or 0) >= target
            for r in fake.watch_requests()[-2 * len(KINDS):]  # one watch per kind, after the restart
        ))
        assert ing.relists == relists
        ingress_watches = [r for r in fake.watch_requests() if r["kind"] == "Ingress"]
        assert all(r["allowWatchBookmarks"] == "true" for r in ingress_watches)
    finally:
        await source.stop()


async def test_deletes_during_a_gap_are_reconciled_after_410(seeded: FakeKube) -> None:
    fake = seeded
    store = ClusterStore("c1")
    events: list[StoreEvent] = []
    store.subscribe(events.append)
    source = await start_source(fake, store)
    try:
        relists = {k: r.relists for k, r in source.reflectors.items()}
        events.clear()
        fake.stop()
        await eventually(lambda: store.status.state == "stale")
        fake.delete("Service", "default", "svc1")
        fake.delete("EndpointSlice", "default", "svc1")
        fake.delete("Secret", "default", "cert")
        fake.apply(service("svc2", port=8080))
        fake.apply(ingress("added-in-gap"))
        fake.compact()  # the history of the gap is gone: resuming must fail with 410
        fake.start()
        await eventually(lambda: snapshot(store) == truth(fake) and store.status.state == "synced")
        assert source.reflectors["Service"].relists > relists["Service"]
        deleted = {(e.ref.kind, e.ref.name) for e in events if e.new is None}
        assert deleted == {("Service", "svc1"), ("EndpointSlice", "svc1"), ("Secret", "cert")}
        changed = {(e.ref.kind, e.ref.name) for e in events if e.new is not None}
        assert changed == {("Service", "svc2"), ("Ingress", "added-in-gap")}  # nothing else re-emitted
    finally:
        await source.stop()


async def test_outage_keeps_objects_then_resyncs(seeded: FakeKube) -> None:
    fake = seeded
    store = ClusterStore("c1")
    metrics = Metrics()
    source = await start_source(fake, store, metrics=metrics)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"cluster": "c1"})

    try:
        before = snapshot(store)
        assert gauge("meridian_source_cluster_up") == 1
        fake.stop()
        await eventually(lambda: store.status.state == "stale")
        assert store.status.stale_since is not None
        assert any(k.startswith("watch/") for k in store.status.errors)
        assert snapshot(store) == before  # last-known objects keep serving
        assert gauge("meridian_source_cluster_stale") == 1 and gauge("meridian_source_cluster_up") == 0
        assert (gauge("meridian_source_errors_total") or 0) >= 1
        await asyncio.sleep(0.3)  # several failed reconnects must not drop anything either
        assert snapshot(store) == before and store.status.state == "stale"

        fake.apply(slice_("svc3", ["10.9.9.9"]))
        fake.start()
        await eventually(lambda: store.status.state == "synced" and snapshot(store) == truth(fake))
        eps = store.get("EndpointSlice", "default", "svc3")
        assert eps is not None and eps["endpoints"][0]["addresses"] == ["10.9.9.9"]
        assert store.status.stale_since is None and not store.status.errors
        assert gauge("meridian_source_cluster_stale") == 0 and gauge("meridian_source_cluster_up") == 1
    finally:
        await source.stop()


async def test_unreachable_from_the_start_is_an_error_and_recovers(fake: FakeKube) -> None:
    fake.apply(service("a"))
    kubeconfig = fake.kubeconfig()
    fake.stop()
    store = ClusterStore("c1")
    source = KubeSource("c1", kubeconfig, store, backoff=FAST)
    await source.start()
    try:
        assert not await source.wait_synced(0.3)
        assert store.status.state == "error" and store.status.errors
        fake.start()
        assert await source.wait_synced(10)
        assert store.status.state == "synced" and store.count("Service") == 1
    finally:
        await source.stop()


async def test_stop_is_bounded_and_final(seeded: FakeKube) -> None:
    store = ClusterStore("c1")
    source = await start_source(seeded, store)
    started = time.monotonic()
    await source.stop()
    assert time.monotonic() - started < 2.0
    assert all(not r._thread.is_alive() for r in source.reflectors.values())
    seeded.apply(service("after-stop"))
    await asyncio.sleep(0.2)
    assert store.get("Service", "default", "after-stop") is None
    await eventually(lambda: seeded.active_watches() == 0)


async def test_invalid_kubeconfig_is_rejected_without_leaking_it() -> None:
    with pytest.raises(KubeconfigError) as err:
        api_client_from_kubeconfig("clusters: [oops\n  token: s3cr3t-value")
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(KubeconfigError):
        api_client_from_kubeconfig("apiVersion: v1\nkind: Config\n")
    text = ("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
            "users: [{name: u, user: {token: s3cr3t-token-value}}]\n"
            "contexts: [{name: x, context: {cluster: c, user: missing}}]\ncurrent-context: nope\n")
    with pytest.raises(KubeconfigError) as err:
        api_client_from_kubeconfig(text)
    assert "s3cr3t" not in str(err.value)


async def test_gateway_api_kinds_are_watched_when_served_and_skipped_when_not() -> None:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "default"}, "spec": {"rules": [{}]}}  # fmt: skip
    for served in (True, False):
        fk = FakeKube(bookmark_interval=0.05, gateway_api=served)
        await asyncio.to_thread(fk.start)
        try:
            fk.apply(ingress("web"))
            if served:
                fk.apply(route)
            store = ClusterStore("c1")
            source = await start_source(fk, store)  # a missing API group must not block the sync
            try:
                assert store.get("Ingress", "default", "web") is not None
                assert ("HTTPRoute" in source.kinds) is served
                if served:
                    assert store.get("HTTPRoute", "default", "r") is not None
                    fk.delete("HTTPRoute", "default", "r")
                    await eventually(lambda s=store: s.get("HTTPRoute", "default", "r") is None)
            finally:
                await source.stop()
        finally:
            await asyncio.to_thread(fk.close)


async def test_kingresses_are_watched_when_knative_is_served_and_skipped_when_not() -> None:
    kingress = {"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
                "metadata": {"name": "k", "namespace": "default"}, "spec": {"rules": []}}  # fmt: skip
    for served in (True, False):
        fk = FakeKube(bookmark_interval=0.05, knative=served)
        await asyncio.to_thread(fk.start)
        try:
            fk.apply(ingress("web"))
            if served:
                fk.apply(kingress)
            store = ClusterStore("c1")
            source = await start_source(fk, store)  # Knative not installed must not block the sync
            try:
                assert store.get("Ingress", "default", "web") is not None
                assert ("KIngress" in source.kinds) is served
                if served:  # the KIngress is its own kind beside networking.k8s.io's Ingress
                    assert store.get("KIngress", "default", "k") is not None
                    assert store.get("Ingress", "default", "k") is None
                    fk.delete("KIngress", "default", "k")
                    await eventually(lambda s=store: s.get("KIngress", "default", "k") is None)
            finally:
                await source.stop()
        finally:
            await asyncio.to_thread(fk.close)
