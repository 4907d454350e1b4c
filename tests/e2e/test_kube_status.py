"""Issue 3, test 5: `meridian serve --kubeconfig` writes Ingress status, and clears it when the Ingress
leaves Meridian's class; with two control plane replicas only the elected leader writes.

Two real `meridian serve` subprocesses watch one fake API server; replica A also drives a real Envoy,
so the test sees the Ingress served and then not served, next to its status.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.leader import LEASE_NAME
from tests.fakekube import FakeKube
from tests.support.gateway import Gateway, service_manifests
from tests.support.wait import wait_until

NS = "meridian-system"
ADDRESS = "203.0.113.7"
PUBLISHED = [{"ip": ADDRESS}]


class KubeReplica(Gateway):
    """One `meridian serve --kubeconfig` replica (pod name `identity`), with or without an Envoy."""

    def __init__(self, root: Path, kubeconfig: Path, identity: str, *, envoy: bool) -> None:
        # A long lease keeps leadership stable on a loaded machine; the takeover below is by release (SIGTERM).
        super().__init__(
            root,
            clusters=(),
            envoy=envoy,
            serve_args=(
                "--kubeconfig", str(kubeconfig), "--namespace", NS, "--publish-address", ADDRESS,
                "--lease-duration", "10", "--lease-renew-interval", "0.3",
            ),
        )  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        self.identity = identity

    def start_control_plane(self) -> None:
        old = os.environ.get("POD_NAME")
        os.environ["POD_NAME"] = self.identity  # the child inherits it, as the downward API would set it
        try:
            super().start_control_plane()
        finally:
            if old is None:
                os.environ.pop("POD_NAME", None)
            else:
                os.environ["POD_NAME"] = old

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def ingress(name: str, host: str, cls: str = "meridian") -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "ingressClassName": cls,
            "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}],
        },
    }


def change(fake: FakeKube, obj: dict[str, Any]) -> None:
    """A user's edit: spec changes, the status subresource stays as the controller left it."""
    old = fake.get(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
    if old is not None and "status" in old:
        obj = {**obj, "status": old["status"]}
    fake.apply(obj)


def lb(fake: FakeKube, name: str) -> Any:
    obj = fake.get("Ingress", "default", name) or {}
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")


def lease_holder(fake: FakeKube) -> str | None:
    lease = fake.get("Lease", NS, LEASE_NAME) or {}
    return (lease.get("spec") or {}).get("holderIdentity")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeKube, KubeReplica, KubeReplica]]:
    root = tmp_path_factory.mktemp("kube-status")
    with FakeKube(bookmark_interval=0.2) as fake:
        kubeconfig = root / "kubeconfig"
        fake.kubeconfig(str(kubeconfig))
        a = KubeReplica(root / "a", kubeconfig, "replica-a", envoy=True)
        b = KubeReplica(root / "b", kubeconfig, "replica-b", envoy=False)
        try:
            a.start()
            wait_until(lambda: lease_holder(fake) == "replica-a", timeout=10, message="replica-a never led")
            b.start()
            servers = [a.fleet.add(service="web", pod="web-0", namespace="default", cluster="primary")]
            for obj in service_manifests("web", servers):
                fake.apply(obj)
            yield fake, a, b
        finally:
            b.stop()
            a.stop()


def test_status_written_and_cleared_when_the_ingress_leaves_the_class(
    cluster: tuple[FakeKube, KubeReplica, KubeReplica],
) -> None:
    fake, a, _ = cluster
    change(fake, ingress("shop", "shop.example.com"))
    a.wait_served_by("shop.example.com", "/", "web")
    wait_until(lambda: lb(fake, "shop") == PUBLISHED, timeout=10, message="status never written")

    change(fake, ingress("shop", "shop.example.com", cls="someone-else"))
    a.wait_status("shop.example.com", "/", 404)
    wait_until(lambda: lb(fake, "shop") is None, timeout=10, message="status never cleared")
    obj = fake.get("Ingress", "default", "shop")
    assert obj is not None and obj["status"] == {"loadBalancer": {}}

    change(fake, ingress("shop", "shop.example.com"))
    a.wait_served_by("shop.example.com", "/", "web")
    wait_until(lambda: lb(fake, "shop") == PUBLISHED, timeout=10, message="status not restored")
    assert a.get("shop.example.com", "/").status == 200
    streams = a.admin("/debug/syncz")
    assert streams and all(not t.get("last_nack") for st in streams for t in st["types"].values())


def test_only_the_leader_writes_and_the_other_replica_takes_over(
    cluster: tuple[FakeKube, KubeReplica, KubeReplica],
) -> None:
    fake, a, b = cluster
    change(fake, ingress("blog", "blog.example.com"))
    wait_until(lambda: lb(fake, "blog") == PUBLISHED, timeout=10, message="status never written")
    wait_until(lambda: a.metric("meridian_status_writes_total", kind="status", result="ok") >= 1, timeout=5)
    assert lease_holder(fake) == "replica-a"
    assert a.metric("meridian_leader") == 1 and b.metric("meridian_leader") == 0
    assert b.metric("meridian_status_writes_total") == 0  # the follower serves, but never writes
    # Both replicas see (and would serve) the same Ingress.
    assert b.ingress_report("blog", cluster="primary")["accepted"] is True  # type: ignore[index]

    # The leader goes away (SIGTERM releases the lease): the follower takes over and writes.
    assert a.proc is not None
    a.proc.terminate()
    a.proc.wait(10)
    a.proc = None
    wait_until(lambda: lease_holder(fake) == "replica-b", timeout=10, message="replica-b never took over")
    wait_until(lambda: b.metric("meridian_leader") == 1, timeout=5)
    change(fake, ingress("blog", "blog.example.com", cls="someone-else"))
    wait_until(lambda: lb(fake, "blog") is None, timeout=10, message="new leader did not clear the status")
    # The patch is visible in the API server a moment before b counts it (after the HTTP response).
    wait_until(lambda: b.metric("meridian_status_writes_total", kind="status", result="ok") >= 1, timeout=5,
               message="the new leader never counted its status write")  # fmt: skip
