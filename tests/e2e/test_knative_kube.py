"""KIngresses in Kubernetes mode (fake API servers, `meridian serve --kubeconfig`, two real Envoys):
served from every registered cluster with a split Service's endpoints merged across clusters, and
the status the leader writes: Ready only once every connected gateway has ACKed the generation (a
paused Envoy holds it back; a disconnected one does not), observedGeneration, and the load
balancers named by --knative-public-service / --knative-private-service."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.wait import wait_until

API = "networking.internal.knative.dev/v1alpha1"
CLASS = {"networking.knative.dev/ingress.class": "meridian.ingress.networking.knative.dev"}
HOST = "hello.default.example.com"


def kingress(generation: int, path: str = "/", cluster: str = PRIMARY, name: str = "hello",
             host: str = HOST) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": API, "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "generation": generation, "annotations": CLASS},
            "spec": {"rules": [{"hosts": [host], "visibility": "ExternalIP",
                                "http": {"paths": [{"path": path, "splits": [
                                    {"serviceName": "hello-00001", "serviceNamespace": "default",
                                     "servicePort": 80, "percent": 100}]}]}}]}}  # fmt: skip


def status(gw: KubeGateway, name: str = "hello", cluster: str = PRIMARY) -> dict[str, Any]:
    obj = gw.kubes[cluster].get("KIngress", "default", name) or {}
    return obj.get("status") or {}


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("message", "")) for c in st.get("conditions") or []}


def wait_condition(gw: KubeGateway, generation: int, ready: str, message: str, name: str = "hello",
                   cluster: str = PRIMARY) -> dict[str, Any]:  # fmt: skip
    def check() -> dict[str, Any] | None:
        st = status(gw, name, cluster)
        lb = conditions(st).get("LoadBalancerReady")
        ok = st.get("observedGeneration") == generation and lb == (ready, message)
        return st if ok else None

    return wait_until(check, timeout=20, message=f"never generation {generation} {ready} {message!r}: "
                                                 f"{status(gw, name, cluster)}")  # fmt: skip


@pytest.fixture(scope="module", params=["sotw", "delta"])
def gw(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
       ) -> Iterator[tuple[KubeGateway, EnvoyProcess]]:  # fmt: skip
    """Both xDS protocols: the ACKs LoadBalancerReady waits for are tracked for each."""
    root = Path(tmp_path_factory.mktemp("knative-kube"))
    g = KubeGateway(root, remotes=("west",), delta=request.param == "delta", serve_args=(
        "--knative-public-service", "meridian-system/meridian-gateway",
        "--knative-private-service", "meridian-system/meridian-east-west"))  # fmt: skip
    second: EnvoyProcess | None = None
    try:
        g.start()
        g.register("west")
        g.backend("hello-00001")
        g.backend("hello-00001", cluster="west")
        second = EnvoyProcess(g.bootstrap("gw-2"), workdir=root / "gw-2", drain_time_s=1)
        second.start().wait_ready(30)
        yield g, second
    finally:
        if second is not None:
            if second.running():
                os.kill(second.pid, signal.SIGCONT)  # type: ignore[arg-type]
            second.stop()
        g.stop()


def test_ready_after_both_gateways_acked_and_split_merged_across_clusters(
    gw: tuple[KubeGateway, EnvoyProcess],
) -> None:
    g, _ = gw
    g.apply(kingress(1))
    st = wait_condition(g, 1, "True", "acknowledged by 2 gateway(s)")
    assert conditions(st)["Ready"][0] == "True" and conditions(st)["NetworkConfigured"][0] == "True"
    public, private = (f"meridian-{n}.meridian-system.svc.cluster.local" for n in ("gateway", "east-west"))
    assert st["publicLoadBalancer"] == {"ingress": [{"domainInternal": public}]}
    assert st["privateLoadBalancer"] == {"ingress": [{"domainInternal": private}]}
    # The split's Service exists in both clusters: one cluster, the endpoints of both.
    g.wait_clusters_served(HOST, {PRIMARY, "west"})


def test_a_connected_gateway_that_has_not_acked_holds_ready_back(gw: tuple[KubeGateway, EnvoyProcess]) -> None:
    g, second = gw
    g.apply(kingress(1))
    wait_condition(g, 1, "True", "acknowledged by 2 gateway(s)")
    assert second.proc is not None
    os.kill(second.proc.pid, signal.SIGSTOP)  # connected, but it answers nothing
    try:
        g.apply(kingress(2, path="/v2"))
        st = wait_condition(g, 2, "Unknown", "1 of 2 connected gateway(s) acknowledged generation 2")
        assert conditions(st)["Ready"][0] == "Unknown"
    finally:
        os.kill(second.proc.pid, signal.SIGCONT)
    st = wait_condition(g, 2, "True", "acknowledged by 2 gateway(s)")
    assert conditions(st)["Ready"][0] == "True"


def test_a_disconnected_gateway_does_not_count(gw: tuple[KubeGateway, EnvoyProcess]) -> None:
    g, second = gw
    second.stop()
    g.apply(kingress(3, path="/v3"))
    st = wait_condition(g, 3, "True", "acknowledged by 1 gateway(s)")
    assert conditions(st)["Ready"][0] == "True"
    g.wait_served_by(HOST, "/v3", "hello-00001")


def test_kingress_of_a_remote_cluster_gets_its_status_there(gw: tuple[KubeGateway, EnvoyProcess]) -> None:
    g, _ = gw
    g.apply(kingress(1, name="remote", host="remote.default.example.com"), cluster="west")
    g.wait_served_by("remote.default.example.com", "/", "hello-00001")
    wait_condition(g, 1, "True", "acknowledged by 1 gateway(s)", name="remote", cluster="west")


def test_missing_backend_is_not_network_configured(gw: tuple[KubeGateway, EnvoyProcess]) -> None:
    g, _ = gw
    broken = kingress(1, name="broken", host="broken.default.example.com")
    broken["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["serviceName"] = "nowhere"
    g.apply(broken)

    def check() -> dict[str, tuple[str, str]] | None:
        c = conditions(status(g, "broken"))
        return c if c.get("NetworkConfigured", ("",))[0] == "False" else None

    c = wait_until(check, timeout=20, message=f"never NetworkConfigured=False: {status(g, 'broken')}")
    assert c["Ready"][0] == "False" and "nowhere" in c["NetworkConfigured"][1]
    # A KIngress of another class is never touched.
    other = kingress(1, name="istio", host="istio.default.example.com")
    other["metadata"]["annotations"] = {"networking.knative.dev/ingress.class": "istio.ingress.networking.knative.dev"}
    g.apply(other)
    g.apply(kingress(1, name="after", host="after.default.example.com"))
    wait_condition(g, 1, "True", "acknowledged by 1 gateway(s)", name="after")  # a pass ran after both
    assert status(g, "istio") == {}
