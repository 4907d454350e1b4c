"""Remote clusters from kubeconfig Secrets, against real fake API servers (one per cluster)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controlplane.metrics import Metrics
from controlplane.remote_secret import create_remote_secret, secret_name
from controlplane.sources.kube import Backoff, api_client_from_kubeconfig
from controlplane.sources.remote import PROBLEM_KEY, RemoteClusterManager
from controlplane.store import KINDS, ClusterRegistry, ClusterStore, StoreEvent
from tests.fakekube import FakeKube
from tests.support.wait import wait_until_async

NS = "meridian-system"
FAST = Backoff(initial=0.02, cap=0.2)


async def eventually(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    await wait_until_async(cond, timeout=timeout, interval=0.01)


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}}


def slice_(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"port": 8080}]}


def kube_secret(name: str, clusters: dict[str, str], *, ns: str = NS, created: str | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns,
                            "labels": {"meridian.io/cluster": "true"} if labels is None else labels}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in clusters.items()}}


class Env:
    def __init__(self) -> None:
        self.primary = FakeKube(bookmark_interval=0.05)
        self.east = FakeKube(bookmark_interval=0.05)
        self.west = FakeKube(bookmark_interval=0.05)
        self.registry = ClusterRegistry()
        self.metrics = Metrics()
        self.manager: RemoteClusterManager | None = None

    def fakes(self) -> list[FakeKube]:
        return [self.primary, self.east, self.west]

    async def start(self) -> RemoteClusterManager:
        self.manager = RemoteClusterManager(self.primary.kubeconfig(), self.registry, NS, "primary",
                                            self.metrics, backoff=FAST)
        await self.manager.start()
        assert await self.manager.wait_idle(10)
        return self.manager

    def names(self, cluster_id: str, kind: str = "Service") -> list[str]:
        store = self.registry.get(cluster_id)
        return sorted(o["metadata"]["name"] for o in store.list(kind)) if store else []

    def state(self, cluster_id: str) -> str | None:
        assert self.manager is not None
        return self.manager.clusters().get(cluster_id, {}).get("state")

    def errors(self, cluster: str) -> float:
        return self.metrics.registry.get_sample_value("meridian_source_errors_total", {"cluster": cluster}) or 0


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    for fk in e.fakes():
        await asyncio.to_thread(fk.start)
    e.east.apply(service("common"))
    e.east.apply(slice_("common", "10.1.0.1"))
    e.east.apply(service("east-only"))
    e.west.apply(service("common"))
    e.west.apply(slice_("common", "10.2.0.1"))
    e.west.apply(service("west-only"))
    yield e
    if e.manager is not None:
        await e.manager.stop()
    for fk in e.fakes():
        await asyncio.to_thread(fk.close)


async def test_added_secret_registers_cluster_with_its_objects(env: Env) -> None:
    manager = await env.start()
    assert manager.clusters() == {}
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    await eventually(lambda: env.state("east") == "synced")
    assert env.names("east") == ["common", "east-only"]
    assert manager.clusters()["east"]["secret"] == f"{NS}/remote-east"
    env.east.apply(service("later"))
    await eventually(lambda: "later" in env.names("east"))


async def test_istio_label_is_accepted_and_other_secrets_are_ignored(env: Env) -> None:
    env.primary.apply(kube_secret("istio", {"east": env.east.kubeconfig()},
                                  labels={"istio/multiCluster": "true"}))
    env.primary.apply(kube_secret("wrong-ns", {"west": env.west.kubeconfig()}, ns="default"))
    env.primary.apply(kube_secret("unlabelled", {"west": env.west.kubeconfig()}, labels={}))
    env.primary.apply(kube_secret("label-false", {"west": env.west.kubeconfig()},
                                  labels={"meridian.io/cluster": "false"}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    assert list(manager.clusters()) == ["east"]
    assert env.registry.get("west") is None


async def test_same_kubeconfig_update_does_not_restart(env: Env) -> None:
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    # "synced" means every kind is listed; the watches that follow the lists open just after.
    await eventually(lambda: env.east.active_watches() == len(KINDS))
    store = env.registry.get("east")
    watches = len(env.east.watch_requests())
    updated = kube_secret("remote-east", {"east": env.east.kubeconfig()})
    updated["metadata"]["annotations"] = {"touched": "yes"}
    env.primary.apply(updated)
    # a later, observable change: once it is handled, the update above was handled too (events are ordered)
    env.primary.apply(kube_secret("remote-west", {"west": env.west.kubeconfig()}))
    await eventually(lambda: env.state("west") == "synced")
    assert manager.clusters()["east"]["state"] == "synced"
    assert env.registry.get("east") is store
    assert len(env.east.watch_requests()) == watches  # no new list/watch: nothing restarted
    assert env.east.active_watches() == len(KINDS)


async def test_changed_kubeconfig_swaps_without_gap(env: Env) -> None:
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    store = env.registry.get("east")
    assert store is not None
    events: list[StoreEvent] = []
    sizes: list[int] = []

    def record(ev: StoreEvent) -> None:
        events.append(ev)
        sizes.append(store.count("Service"))

    store.subscribe(record)
    # the same cluster ID now points at another API server (e.g. a moved control plane)
    env.primary.apply(kube_secret("remote-east", {"east": env.west.kubeconfig()}))
    await eventually(lambda: env.names("east") == ["common", "west-only"] and not manager.clusters()["east"]
                     ["updating"] and env.names("east", "EndpointSlice") == ["common"])
    assert env.registry.get("east") is store  # same live store, contents swapped
    deleted = {(e.ref.kind, e.ref.name) for e in events if e.new is None}
    assert deleted == {("Service", "east-only")}  # "common" exists in both: never deleted
    assert min(sizes) >= 1
    eps = store.get("EndpointSlice", "default", "common")
    assert eps is not None and eps["endpoints"][0]["addresses"] == ["10.2.0.1"]
    await eventually(lambda: env.east.active_watches() == 0)  # the old watchers are gone
    env.west.apply(service("fed-by-new-source"))
    await eventually(lambda: "fed-by-new-source" in env.names("east"))
    assert env.state("east") == "synced"


async def test_changed_kubeconfig_that_never_syncs_keeps_the_old_one_serving(env: Env) -> None:
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig(token="revoked")}))
    await eventually(lambda: manager.clusters()["east"]["updating"])
    await asyncio.sleep(0.2)  # the new credentials keep failing (401) meanwhile
    assert manager.clusters()["east"]["state"] == "synced"
    env.east.apply(service("still-watched"))  # the old watchers still feed the store
    await eventually(lambda: "still-watched" in env.names("east"))
    # reverting the Secret abandons the pending switch
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    await eventually(lambda: not manager.clusters()["east"]["updating"])
    assert env.east.active_watches() == len(KINDS)


async def test_removed_key_and_deleted_secret_remove_clusters(env: Env) -> None:
    env.primary.apply(kube_secret("remotes", {"east": env.east.kubeconfig(), "west": env.west.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced" and env.state("west") == "synced")
    west = env.registry.get("west")
    assert west is not None
    deleted: list[str] = []
    west.subscribe(lambda ev: deleted.append(ev.ref.name) if ev.new is None else None)
    env.primary.apply(kube_secret("remotes", {"east": env.east.kubeconfig()}))
    await eventually(lambda: env.registry.get("west") is None)
    assert "west-only" in deleted and "common" in deleted  # its objects (and endpoints) are withdrawn
    assert list(manager.clusters()) == ["east"]
    await eventually(lambda: env.west.active_watches() == 0)
    env.primary.delete("Secret", NS, "remotes")
    await eventually(lambda: env.registry.get("east") is None)
    assert manager.clusters() == {}
    await eventually(lambda: env.east.active_watches() == 0)


async def test_duplicate_cluster_id_first_wins(env: Env) -> None:
    env.primary.apply(kube_secret("b-newer", {"east": env.west.kubeconfig()}, created="2024-02-01T00:00:00Z"))
    env.primary.apply(kube_secret("a-older", {"east": env.east.kubeconfig()}, created="2024-01-01T00:00:00Z"))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    assert env.names("east") == ["common", "east-only"]
    assert manager.clusters()["east"]["secret"] == f"{NS}/a-older"
    problems = manager.problems()
    assert len(problems) == 1 and problems[0]["secret"] == f"{NS}/b-newer" and problems[0]["cluster"] == "east"
    assert "duplicate" in problems[0]["reason"]
    store = env.registry.get("east")
    assert store is not None and "b-newer" in store.status.errors[PROBLEM_KEY]
    assert env.errors("east") >= 1
    # the winner leaves: the other Secret's kubeconfig takes over
    env.primary.delete("Secret", NS, "a-older")
    await eventually(lambda: env.names("east") == ["common", "west-only"])
    assert manager.problems() == []


async def test_primary_cluster_id_is_refused(env: Env) -> None:
    primary_store = env.registry.add(ClusterStore("primary", primary=True))
    primary_store.upsert("Service", service("primary-svc"))
    env.primary.apply(kube_secret("hijack", {"primary": env.east.kubeconfig(), "west": env.west.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("west") == "synced")
    assert "primary" not in manager.clusters()
    assert env.names("primary") == ["primary-svc"]
    assert [p["cluster"] for p in manager.problems()] == ["primary"]
    assert PROBLEM_KEY in primary_store.status.errors
    assert env.east.active_watches() == 0


async def test_invalid_kubeconfig_and_unreachable_server_are_reported_alone(env: Env) -> None:
    down = FakeKube()
    await asyncio.to_thread(down.start)
    unreachable = down.kubeconfig()
    await asyncio.to_thread(down.close)
    bad = "apiVersion: v1\nkind: Config\nclusters: [\n  token: top-s3cret\n"
    env.primary.apply(kube_secret("remotes", {"east": env.east.kubeconfig(), "bad": bad, "gone": unreachable}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced" and env.state("gone") == "error")
    clusters = manager.clusters()
    assert clusters["bad"]["state"] == "error"
    assert "kubeconfig" in clusters["bad"]["errors"]
    assert "top-s3cret" not in str(clusters) and "top-s3cret" not in str(manager.problems())
    assert clusters["gone"]["errors"]
    assert env.errors("bad") >= 1 and env.errors("gone") >= 1
    assert env.names("east") == ["common", "east-only"]
    # fixing the bad kubeconfig brings the cluster up
    env.primary.apply(kube_secret("remotes", {"east": env.east.kubeconfig(), "bad": env.west.kubeconfig()}))
    await eventually(lambda: env.state("bad") == "synced" and "gone" not in manager.clusters())
    assert env.names("bad") == ["common", "west-only"]
    assert "kubeconfig" not in manager.clusters()["bad"]["errors"]


async def test_unreachable_remote_keeps_last_known_objects(env: Env) -> None:
    env.primary.apply(kube_secret("remote-east", {"east": env.east.kubeconfig()}))
    manager = await env.start()
    await eventually(lambda: env.state("east") == "synced")
    await asyncio.to_thread(env.east.stop)
    await eventually(lambda: env.state("east") == "stale")
    assert env.names("east") == ["common", "east-only"]
    env.east.apply(slice_("common", "10.1.0.99"))
    await asyncio.to_thread(env.east.start)
    await eventually(lambda: env.state("east") == "synced")
    store = env.registry.get("east")
    assert store is not None
    await eventually(lambda: store.get("EndpointSlice", "default", "common")["endpoints"][0]["addresses"]
                     == ["10.1.0.99"])
    assert manager.problems() == []


# -- create-remote-secret --------------------------------------------------
def test_create_remote_secret_embeds_files_and_selects_context(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA-PEM")
    (tmp_path / "token").write_text("file-token\n")
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "c1", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.crt"}},
                     {"name": "c2", "cluster": {"server": "https://10.0.0.2:6443"}}],
        "users": [{"name": "u1", "user": {"tokenFile": "token"}}, {"name": "u2", "user": {"token": "x"}}],
        "contexts": [{"name": "mine", "context": {"cluster": "c1", "user": "u1"}},
                     {"name": "other", "context": {"cluster": "c2", "user": "u2"}}],
    })
    out = yaml.safe_load(create_remote_secret(kubeconfig, "east-1", context="mine", base_dir=str(tmp_path)))
    assert out["kind"] == "Secret" and out["metadata"]["name"] == "meridian-remote-secret-east-1"
    assert out["metadata"]["namespace"] == "meridian-system"
    assert out["metadata"]["labels"] == {"meridian.io/cluster": "true"}
    assert out["metadata"]["annotations"] == {"meridian.io/cluster-id": "east-1"}
    embedded = yaml.safe_load(out["stringData"]["east-1"])
    assert [c["name"] for c in embedded["clusters"]] == ["east-1"]
    cluster = embedded["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA-PEM"
    assert "certificate-authority" not in cluster
    assert embedded["users"][0]["user"] == {"token": "file-token"}
    assert embedded["current-context"] == "east-1"
    with pytest.raises(ValueError):
        create_remote_secret(kubeconfig, "bad id!")
    assert secret_name("East_1.a") == "meridian-remote-secret-east-1-a"


async def test_create_remote_secret_round_trips_into_a_working_cluster(env: Env) -> None:
    text = create_remote_secret(env.east.kubeconfig(context="admin@east"), "east", namespace=NS)
    secret = yaml.safe_load(text)
    embedded = secret["stringData"]["east"]
    api = api_client_from_kubeconfig(embedded)
    try:
        names = [s.metadata.name for s in client.CoreV1Api(api).list_namespaced_service("default").items]
    finally:
        api.close()
    assert sorted(names) == ["common", "east-only"]
    manager = await env.start()
    env.primary.apply(secret)  # as `kubectl apply` would; the API server folds stringData into data
    await eventually(lambda: env.state("east") == "synced")
    assert env.names("east") == ["common", "east-only"]
    assert manager.clusters()["east"]["secret"] == f"{NS}/meridian-remote-secret-east"
