"""The fake API server, proven with the real `kubernetes` client through a real kubeconfig."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube


def svc(name: str, ns: str = "default", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}]},
    }


def ingress(name: str, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "meridian", "rules": [{"host": f"{name}.example.com"}]},
    }


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.1, history_size=50) as fk:
        yield fk


@pytest.fixture
def api(fake: FakeKube, tmp_path: Path) -> Iterator[client.ApiClient]:
    path = tmp_path / "kubeconfig"
    fake.kubeconfig(str(path))
    api_client = config.new_client_from_config(config_file=str(path))
    yield api_client
    api_client.close()


def wait_until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_kubeconfig_is_real_and_token_is_checked(fake: FakeKube, api: client.ApiClient, tmp_path: Path) -> None:
    assert client.VersionApi(api).get_code().git_version == fake.version
    bad = tmp_path / "bad"
    fake.kubeconfig(str(bad), token="wrong")
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(config.new_client_from_config(config_file=str(bad))).list_namespaced_service("x")
    assert err.value.status == 401


def test_list_namespaced_all_namespaces_and_paging(fake: FakeKube, api: client.ApiClient) -> None:
    for i in range(5):
        fake.apply(svc(f"s{i}", "a"))
    fake.apply(svc("other", "b"))
    core = client.CoreV1Api(api)
    everything = core.list_service_for_all_namespaces()
    assert sorted(s.metadata.name for s in everything.items) == ["other", "s0", "s1", "s2", "s3", "s4"]
    assert int(everything.metadata.resource_version) == fake.resource_version
    assert [s.metadata.name for s in core.list_namespaced_service("b").items] == ["other"]
    uids = {s.metadata.uid for s in everything.items}
    assert len(uids) == 6 and all(s.metadata.creation_timestamp for s in everything.items)

    page1 = core.list_namespaced_service("a", limit=2)
    assert len(page1.items) == 2 and page1.metadata._continue
    fake.apply(svc("s9", "a"))  # after the first page: a consistent list does not include it
    fake.delete("Service", "a", "s4")  # and still includes this one
    names = [s.metadata.name for s in page1.items]
    token = page1.metadata._continue
    while token:
        page = core.list_namespaced_service("a", limit=2, _continue=token)
        names += [s.metadata.name for s in page.items]
        assert page.metadata.resource_version == page1.metadata.resource_version
        token = page.metadata._continue
    assert names == ["s0", "s1", "s2", "s3", "s4"]


def test_list_items_have_no_kind_but_list_does(fake: FakeKube, api: client.ApiClient) -> None:
    import json

    fake.apply(ingress("web"))
    raw = client.NetworkingV1Api(api).list_ingress_for_all_namespaces(_preload_content=False)
    body = json.loads(raw.data)
    assert body["kind"] == "IngressList" and body["apiVersion"] == "networking.k8s.io/v1"
    assert "kind" not in body["items"][0] and body["items"][0]["metadata"]["name"] == "web"


def test_label_and_field_selectors(fake: FakeKube, api: client.ApiClient) -> None:
    fake.apply(svc("a", labels={"app": "web", "tier": "front"}))
    fake.apply(svc("b", labels={"app": "api"}))
    fake.apply(svc("c", labels={"app": "db", "tier": "back"}))
    fake.apply(svc("d", "other", labels={"app": "web"}))
    core = client.CoreV1Api(api)

    def names(**kw: Any) -> list[str]:
        return sorted(s.metadata.name for s in core.list_service_for_all_namespaces(**kw).items)

    assert names(label_selector="app=web") == ["a", "d"]
    assert names(label_selector="app==web,tier=front") == ["a"]
    assert names(label_selector="app!=web") == ["b", "c"]
    assert names(label_selector="app in (api, db)") == ["b", "c"]
    assert names(label_selector="app notin (api,db)") == ["a", "d"]
    assert names(label_selector="tier") == ["a", "c"]
    assert names(label_selector="!tier") == ["b", "d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.namespace=other") == ["d"]
    assert names(field_selector="metadata.namespace!=other,metadata.name!=a") == ["b", "c"]
    with pytest.raises(ApiException) as err:
        names(field_selector="spec.type=ClusterIP")
    assert err.value.status == 400

    for name, typ in (("tls", "kubernetes.io/tls"), ("opaque", "Opaque")):
        fake.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
                    "type": typ, "data": {}})
    tls = core.list_secret_for_all_namespaces(field_selector="type=kubernetes.io/tls").items
    assert [s.metadata.name for s in tls] == ["tls"]


def test_watch_resumes_after_version_with_bookmarks(fake: FakeKube, api: client.ApiClient) -> None:
    fake.apply(svc("before"))
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_service("default").metadata.resource_version

    def writer() -> None:
        wait_until(lambda: fake.active_watches("Service") == 1)
        fake.apply(svc("new"))
        fake.apply({**svc("new"), "spec": {"ports": [{"port": 81}]}})
        fake.delete("Service", "default", "new")

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    for ev in w.stream(core.list_namespaced_service, "default", resource_version=rv,
                       allow_watch_bookmarks=True, timeout_seconds=5):
        seen.append((ev["type"], ev["raw_object"]["metadata"].get("name", "")))
        if ev["type"] == "BOOKMARK" and any(s[0] == "DELETED" for s in seen):
            w.stop()
    t.join()
    events = [s for s in seen if s[0] != "BOOKMARK"]
    assert events == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]  # "before" not replayed
    assert w.resource_version == str(fake.resource_version)  # the bookmark advanced the version
    assert fake.watch_requests()[-1]["allowWatchBookmarks"] == "true"


def test_watch_without_version_sends_current_state_and_honours_timeout(
    fake: FakeKube, api: client.ApiClient
) -> None:
    fake.apply(ingress("one"))
    started = time.monotonic()
    seen = [
        (ev["type"], ev["object"].metadata.name)
        for ev in watch.Watch().stream(client.NetworkingV1Api(api).list_ingress_for_all_namespaces,
                                       timeout_seconds=1)
    ]
    assert seen == [("ADDED", "one")]
    assert 0.9 <= time.monotonic() - started < 4


def test_compacted_version_gets_410_as_watch_error(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_service("default").metadata.resource_version
    fake.apply(svc("x"))
    fake.compact()
    resp = core.list_namespaced_service("default", watch=True, resource_version=rv, _preload_content=False)
    import json

    lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    status = lines[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespaced_service, "default", resource_version=rv):
            pass
    assert err.value.status == 410


def test_bounded_history_expires_old_versions(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_service("default").metadata.resource_version
    for i in range(60):  # history_size is 50
        fake.apply(svc(f"s{i}"))
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespaced_service, "default", resource_version=rv,
                                      timeout_seconds=2):
            pass
    assert err.value.status == 410


def test_label_selected_watch_sees_objects_leave_the_selection(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    fake.apply(svc("s", labels={"pick": "yes"}))
    rv = core.list_namespaced_service("default").metadata.resource_version

    def writer() -> None:
        wait_until(lambda: fake.active_watches("Service") == 1)
        fake.apply(svc("s", labels={"pick": "no"}))
        fake.apply(svc("s", labels={"pick": "yes"}))

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_service, "default", label_selector="pick=yes",
                       resource_version=rv, timeout_seconds=5):
        seen.append(ev["type"])
        if len(seen) == 2:
            w.stop()
    t.join()
    assert seen == ["DELETED", "ADDED"]


def test_status_subresource_and_conflicts(fake: FakeKube, api: client.ApiClient) -> None:
    net = client.NetworkingV1Api(api)
    created = net.create_namespaced_ingress("default", ingress("web"))
    assert created.metadata.resource_version and created.metadata.uid
    body = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
            "spec": {"ingressClassName": "ignored"}}
    net.patch_namespaced_ingress_status("web", "default", body)
    stored = fake.get("Ingress", "default", "web")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1"}]
    assert stored["spec"]["ingressClassName"] == "meridian"  # the status write did not touch spec

    current = net.read_namespaced_ingress("web", "default")
    current.status.load_balancer.ingress[0].ip = "10.0.0.2"
    current.spec.ingress_class_name = "still-ignored"
    net.replace_namespaced_ingress_status("web", "default", current)
    stored = fake.get("Ingress", "default", "web")
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.2"}]
    assert stored["spec"]["ingressClassName"] == "meridian"

    with pytest.raises(ApiException) as err:
        net.replace_namespaced_ingress("web", "default", current)  # stale resourceVersion
    assert err.value.status == 409
    fresh = net.read_namespaced_ingress("web", "default")
    fresh.spec.ingress_class_name = "other"
    fresh.status.load_balancer.ingress = []
    net.replace_namespaced_ingress("web", "default", fresh)
    stored = fake.get("Ingress", "default", "web")
    assert stored is not None
    assert stored["spec"]["ingressClassName"] == "other"
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.2"}]  # main write kept status
    with pytest.raises(ApiException) as err:
        net.create_namespaced_ingress("default", ingress("web"))
    assert err.value.status == 409
    net.delete_namespaced_ingress("web", "default")
    assert fake.get("Ingress", "default", "web") is None
    with pytest.raises(ApiException) as err:
        net.read_namespaced_ingress("web", "default")
    assert err.value.status == 404


def test_leases_for_leader_election(fake: FakeKube, api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="meridian-leader", namespace="meridian-system"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    created = coord.create_namespaced_lease("meridian-system", lease)
    mine = coord.read_namespaced_lease("meridian-leader", "meridian-system")
    theirs = coord.read_namespaced_lease("meridian-leader", "meridian-system")
    mine.spec.holder_identity = "a"
    mine.spec.lease_transitions = 1
    coord.replace_namespaced_lease("meridian-leader", "meridian-system", mine)
    theirs.spec.holder_identity = "b"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("meridian-leader", "meridian-system", theirs)
    assert err.value.status == 409
    final = fake.get("Lease", "meridian-system", "meridian-leader")
    assert final is not None and final["spec"]["holderIdentity"] == "a"
    assert int(final["metadata"]["resourceVersion"]) > int(created.metadata.resource_version)


def test_events_are_recorded(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="web.", namespace="default"),
        involved_object=client.V1ObjectReference(kind="Ingress", name="web", namespace="default"),
        reason="Rejected",
        message="bad annotation",
        type="Warning",
    )
    core.create_namespaced_event("default", event)
    events = fake.events()
    assert len(events) == 1
    assert events[0]["metadata"]["name"].startswith("web.")
    assert events[0]["involvedObject"]["name"] == "web" and events[0]["reason"] == "Rejected"
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=web").items
    assert [e.reason for e in listed] == ["Rejected"]


def test_writes_are_logged_with_the_user_of_the_token(fake: FakeKube, api: client.ApiClient, tmp_path: Path) -> None:
    """Per-user tokens: tests can tell which replica wrote what (leader-only writes)."""
    path = tmp_path / "replica-a"
    fake.kubeconfig(str(path), token=fake.add_user("replica-a"))
    as_a = config.new_client_from_config(config_file=str(path))
    coord = client.CoordinationV1Api(as_a)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="meridian-leader", namespace="meridian-system"),
        spec=client.V1LeaseSpec(holder_identity="replica-a", lease_duration_seconds=15),
    )
    coord.create_namespaced_lease("meridian-system", lease)
    with pytest.raises(ApiException):
        coord.create_namespaced_lease("meridian-system", lease)  # 409, logged too
    fake.apply(ingress("web"))  # the test's own writes are not requests
    client.NetworkingV1Api(api).patch_namespaced_ingress_status(
        "web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}
    )
    client.CoreV1Api(as_a).list_namespaced_service("default")  # reads are not writes
    got = [(w.user, w.verb, w.kind, w.namespace, w.name, w.subresource, w.code, w.holder) for w in fake.writes()]
    assert got == [
        ("replica-a", "create", "Lease", "meridian-system", "meridian-leader", "", 201, "replica-a"),
        ("replica-a", "create", "Lease", "meridian-system", "meridian-leader", "", 409, None),
        ("admin", "patch", "Ingress", "default", "web", "status", 200, None),
    ]
    times = [w.at for w in fake.writes()]
    assert times == sorted(times)
    as_a.close()


def test_discovery_and_endpointslices(fake: FakeKube, api: client.ApiClient) -> None:
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io"} <= groups
    resources = client.DiscoveryV1Api(api).get_api_resources().resources
    assert [r.name for r in resources] == ["endpointslices"]
    fake.apply({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": True}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    })
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web"
    ).items
    assert slices[0].endpoints[0].addresses == ["10.1.0.1"]
    ic = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "meridian"},
          "spec": {"controller": "meridian.io/ingress-controller"}}
    fake.apply(ic)
    assert [c.metadata.name for c in client.NetworkingV1Api(api).list_ingress_class().items] == ["meridian"]


def test_stop_and_start_on_same_port_keeps_state(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    fake.apply(svc("kept"))
    port = fake.port
    fake.stop()
    with pytest.raises(Exception):  # noqa: B017 - connection refused surfaces as a urllib3 error
        core.list_namespaced_service("default", _request_timeout=2)
    fake.apply(svc("while-down"))
    fake.start()
    assert fake.port == port
    names = sorted(s.metadata.name for s in core.list_namespaced_service("default").items)
    assert names == ["kept", "while-down"]


def test_stop_cuts_open_watches(fake: FakeKube, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in watch.Watch().stream(core.list_namespaced_service, "default", resource_version="1",
                                          _request_timeout=(2, 10)):
                pass
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: fake.active_watches("Service") == 1)
    fake.stop()
    t.join(5)
    assert not t.is_alive() and errors  # the stream broke; it did not end cleanly
