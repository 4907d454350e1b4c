"""Ingress status and Events: a real control plane (in-process) against fake API servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.app import MeridianApp, ServeOptions
from controlplane.status import StatusWriter, event_name, parse_addresses, service_addresses
from tests.fakekube import FakeKube
from tests.support.wait import wait_until_async

NS = "meridian-system"
ADDRESS = "203.0.113.10"
OTHER_CONTROLLER = [{"ip": "198.51.100.1"}]


def service(name: str, ns: str = "default", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80}], **extra.pop("spec", {})}, **extra}


def ingress(
    name: str,
    host: str,
    *,
    cls: str = "meridian",
    annotations: dict[str, str] | None = None,
    created: str | None = None,
    paths: tuple[str, ...] = ("/",),
    status: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    if created:
        meta["creationTimestamp"] = created
    if labels:
        meta["labels"] = labels
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "ingressClassName": cls,
            "rules": [{"host": host, "http": {"paths": [
                {"path": p, "pathType": "Prefix", "backend": backend} for p in paths
            ]}}],
        },
    }
    if status is not None:
        obj["status"] = {"loadBalancer": {"ingress": status}}
    return obj


def kubectl_apply(fake: FakeKube, obj: dict[str, Any]) -> None:
    """Change an object as a user would: the status subresource stays, a spec change bumps the generation."""
    meta = obj["metadata"]
    old = fake.get(obj["kind"], meta.get("namespace", "default"), meta["name"])
    if old is not None:
        if "status" in old and "status" not in obj:
            obj = {**obj, "status": old["status"]}
        generation = old["metadata"].get("generation", 1) + (obj.get("spec") != old.get("spec"))
        obj = {**obj, "metadata": {**meta, "generation": generation}}
    fake.apply(obj)


def lb(fake: FakeKube, name: str) -> list[dict[str, str]] | None:
    obj = fake.get("Ingress", "default", name)
    assert obj is not None, name
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")


def rv(fake: FakeKube, name: str) -> str:
    obj = fake.get("Ingress", "default", name)
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    return await wait_until_async(cond, timeout=timeout, message=what)


def writes(app: MeridianApp, kind: str, result: str = "ok") -> float:
    value = app.metrics.registry.get_sample_value("meridian_status_writes_total", {"kind": kind, "result": result})
    return value or 0.0


def writer(app: MeridianApp) -> StatusWriter:
    w = app.kube.status_writer
    assert isinstance(w, StatusWriter)
    return w


Starter = Callable[..., Any]


@pytest.fixture
async def start_cp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Starter]:
    """start_cp(fake, identity, **options) -> a started MeridianApp in Kubernetes mode."""
    apps: list[MeridianApp] = []

    async def start(fake: FakeKube, identity: str = "cp-a", **kw: Any) -> MeridianApp:
        path = tmp_path / f"{identity}.kubeconfig"
        fake.kubeconfig(str(path))
        monkeypatch.setenv("POD_NAME", identity)
        options: dict[str, Any] = {
            "kubeconfig": str(path), "namespace": NS, "xds_address": "127.0.0.1:0", "admin_address": "127.0.0.1:0",
            "publish_address": ADDRESS, "lease_duration": 2.0, "lease_renew_interval": 0.1,
        }
        options.update(kw)
        app = MeridianApp(ServeOptions(**options))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        await app.stop()


@pytest.fixture
def fake() -> Any:
    with FakeKube(bookmark_interval=0.1) as fk:
        yield fk


def test_address_parsing() -> None:
    assert parse_addresses("10.0.0.1, gw.example.com,::1") == [
        {"ip": "10.0.0.1"}, {"hostname": "gw.example.com"}, {"ip": "::1"}
    ]
    lb_svc = service("gw", status={"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}},
                     spec={"clusterIP": "10.96.0.5"})
    assert service_addresses(lb_svc) == [{"hostname": "lb.example.com"}]
    assert service_addresses(service("gw", spec={"clusterIP": "10.96.0.5", "externalIPs": ["192.0.2.4"]})) == [
        {"ip": "192.0.2.4"}
    ]
    assert service_addresses(service("gw", spec={"clusterIP": "10.96.0.5"})) == [{"ip": "10.96.0.5"}]
    assert service_addresses(service("gw", spec={"clusterIP": "None"})) == []
    assert service_addresses(None) == []
    assert event_name("web", "u1", 1, "Conflict", "m") == event_name("web", "u1", 1, "Conflict", "m")
    assert event_name("web", "u1", 1, "Conflict", "m") != event_name("web", "u1", 2, "Conflict", "m")


async def test_status_written_cleared_and_not_rewritten(fake: FakeKube, start_cp: Starter) -> None:
    fake.apply(service("web"))
    kubectl_apply(fake, ingress("web", "web.example.com"))
    kubectl_apply(fake, ingress("theirs", "theirs.example.com", cls="nginx", status=OTHER_CONTROLLER))
    app = await start_cp(fake)
    w = writer(app)
    assert await w.elector.wait_leader(5)
    mine = [{"ip": ADDRESS}]
    await until(lambda: lb(fake, "web") == mine and writes(app, "status") == 1, what="status on the served Ingress")

    # Unchanged desired status: no write, even when the Ingress itself changes (labels, no spec change).
    before = writes(app, "status")
    kubectl_apply(fake, ingress("web", "web.example.com", labels={"team": "a"}))
    web_rv = rv(fake, "web")
    kubectl_apply(fake, ingress("sentinel", "s.example.com"))  # a write we can wait for, after the label change
    await until(lambda: lb(fake, "sentinel") == mine and writes(app, "status") > before, what="sentinel status")
    assert writes(app, "status") == before + 1
    assert rv(fake, "web") == web_rv
    assert lb(fake, "theirs") == OTHER_CONTROLLER  # another controller's Ingress is never touched

    # Leaving Meridian's class clears it; coming back writes it again.
    kubectl_apply(fake, ingress("web", "web.example.com", cls="nginx"))
    await until(lambda: lb(fake, "web") is None, what="status cleared")
    obj = fake.get("Ingress", "default", "web")
    assert obj is not None and obj["status"] == {"loadBalancer": {}}
    kubectl_apply(fake, ingress("web", "web.example.com"))
    await until(lambda: lb(fake, "web") == mine, what="status back")

    # Rejected (an invalid allow-list): no longer served, status cleared.
    kubectl_apply(fake, ingress("web", "web.example.com",
                       annotations={"nginx.ingress.kubernetes.io/whitelist-source-range": "nope"}))
    await until(lambda: lb(fake, "web") is None, what="status cleared on rejection")
    assert lb(fake, "sentinel") == mine and lb(fake, "theirs") == OTHER_CONTROLLER

    # Deleting an Ingress is not an error; writes settle (no storm): counts stay put afterwards.
    fake.delete("Ingress", "default", "sentinel")
    kubectl_apply(fake, ingress("last", "l.example.com"))
    await until(lambda: lb(fake, "last") == mine, what="last status")
    settled = {n: rv(fake, n) for n in ("web", "last", "theirs")}
    kubectl_apply(fake, ingress("last2", "l2.example.com"))
    await until(lambda: lb(fake, "last2") == mine, what="last2 status")
    assert {n: rv(fake, n) for n in settled} == settled
    assert writes(app, "status", "error") == 0


async def test_events_for_warning_conflict_and_rejection_deduplicated(fake: FakeKube, start_cp: Starter) -> None:
    fake.apply(service("web"))
    kubectl_apply(fake, ingress("warned", "a.example.com", created="2024-01-01T00:00:00Z", annotations={
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "abc",
        "nginx.ingress.kubernetes.io/rewrite-target": "/",  # converted: no Event
    }))
    kubectl_apply(fake, ingress("loser", "a.example.com", created="2024-02-01T00:00:00Z"))
    kubectl_apply(fake, ingress("bad", "b.example.com",
                       annotations={"nginx.ingress.kubernetes.io/whitelist-source-range": "nope"}))
    kubectl_apply(fake, ingress("elsewhere", "c.example.com", cls="nginx",
                       annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": "abc"}))
    app = await start_cp(fake)

    def by_object() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for ev in fake.events():
            out.setdefault(ev["involvedObject"]["name"], []).append(ev)
        return out

    events = await until(
        lambda: (e := by_object()) and len(e) == 3 and writes(app, "event") == 3 and e, what="Events on 3 Ingresses"
    )
    uids = {n: (fake.get("Ingress", "default", n) or {})["metadata"]["uid"] for n in ("warned", "loser", "bad")}
    assert {n: [(e["type"], e["reason"]) for e in evs] for n, evs in events.items()} == {
        "warned": [("Warning", "AnnotationInvalid")],
        "loser": [("Warning", "Conflict")],
        "bad": [("Warning", "Rejected")],
    }
    assert "proxy-read-timeout" in events["warned"][0]["message"] and "abc" in events["warned"][0]["message"]
    assert "served by" in events["loser"][0]["message"]
    assert "nope" in events["bad"][0]["message"]
    for name, evs in events.items():
        involved = evs[0]["involvedObject"]
        assert involved["kind"] == "Ingress" and involved["uid"] == uids[name]
        assert evs[0]["metadata"]["namespace"] == "default"
        assert evs[0]["reportingInstance"] == "cp-a" and evs[0]["count"] == 1

    # A change that does not bump the generation (a label) re-checks the Ingress but emits nothing new.
    created = writes(app, "event")
    warned_annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "abc",
        "nginx.ingress.kubernetes.io/rewrite-target": "/",
    }
    kubectl_apply(fake, ingress("warned", "a.example.com", created="2024-01-01T00:00:00Z", labels={"x": "y"},
                                annotations=warned_annotations))
    kubectl_apply(fake, ingress("sentinel", "s.example.com"))
    await until(lambda: lb(fake, "sentinel") == [{"ip": ADDRESS}] and writes(app, "status") == 3, what="sentinel")
    assert len(fake.events()) == 3 and writes(app, "event") == created

    # A new generation with the same finding may say it again, once.
    kubectl_apply(fake, ingress("warned", "a.example.com", created="2024-01-01T00:00:00Z", paths=("/", "/v2"),
                                annotations=warned_annotations))
    await until(lambda: len(by_object()["warned"]) == 2, what="re-emitted for generation 2")

    # An older Ingress claims the same host: "warned" (not changed itself) now loses, and says so.
    kubectl_apply(fake, ingress("oldest", "a.example.com", created="2023-01-01T00:00:00Z"))
    await until(lambda: [e["reason"] for e in by_object()["warned"]].count("Conflict") == 1, what="conflict")
    assert "oldest" not in by_object()
    await until(lambda: len(by_object()["loser"]) == 2, what="the loser's conflict names the new winner")
    await app.stop()

    # Another term (a restarted replica): the same findings are not emitted twice.
    again = await start_cp(fake, identity="cp-b")
    kubectl_apply(fake, ingress("sentinel2", "s2.example.com"))
    await until(lambda: lb(fake, "sentinel2") == [{"ip": ADDRESS}], what="new leader writes")
    await until(lambda: writes(again, "event", "exists") == 4, what="re-created Events answered 409")
    assert len(fake.events()) == 6 and writes(again, "event") == 0


async def test_only_the_leader_writes(fake: FakeKube, start_cp: Starter) -> None:
    fake.apply(service("web"))
    kubectl_apply(fake, ingress("web", "web.example.com"))
    a = await start_cp(fake, "cp-a")
    assert await writer(a).elector.wait_leader(5)
    b = await start_cp(fake, "cp-b")
    await until(lambda: lb(fake, "web") == [{"ip": ADDRESS}], what="status")
    await until(lambda: writer(b).elector.holder == "cp-a", what="the follower sees the leader")
    kubectl_apply(fake, ingress("more", "more.example.com",
                       annotations={"nginx.ingress.kubernetes.io/proxy-read-timeout": "abc"}))
    await until(lambda: writes(a, "status") == 2 and writes(a, "event") == 1, what="leader writes")
    assert lb(fake, "more") == [{"ip": ADDRESS}] and len(fake.events()) == 1
    assert not writer(b).is_leader
    assert writes(b, "status") == 0 and writes(b, "event") == 0 and writes(a, "status") == 2
    assert a.metrics.registry.get_sample_value("meridian_leader") == 1
    assert b.metrics.registry.get_sample_value("meridian_leader") == 0
    assert {e["reportingInstance"] for e in fake.events()} == {"cp-a"}

    await a.stop()  # hands the lease over; the follower becomes the writer
    assert await writer(b).elector.wait_leader(5)
    kubectl_apply(fake, ingress("later", "later.example.com"))
    await until(lambda: lb(fake, "later") == [{"ip": ADDRESS}] and writes(b, "status") >= 1, what="new leader")
    assert writes(b, "status") == 1  # only "later": the others were already right


async def test_publish_service_and_remote_cluster(fake: FakeKube, start_cp: Starter) -> None:
    with FakeKube(bookmark_interval=0.1) as remote:
        fake.apply(service("gateway", NS, status={"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}))
        fake.apply(service("web"))
        kubectl_apply(fake, ingress("local", "local.example.com"))
        remote.apply(service("web"))
        kubectl_apply(remote, ingress("far", "far.example.com"))
        app = await start_cp(fake, publish_address=None, publish_service=f"{NS}/gateway")
        fake.apply({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "remote-east", "namespace": NS, "labels": {"meridian.io/cluster": "true"}},
            "stringData": {"east": remote.kubeconfig()},
        })
        hostname = [{"hostname": "lb.example.com"}]
        await until(lambda: lb(fake, "local") == hostname, what="local status from the Service")
        await until(lambda: lb(remote, "far") == hostname, what="remote Ingress status in its own cluster")
        assert fake.get("Ingress", "default", "far") is None

        # The Service's address changes: every served Ingress follows.
        fake.apply(service("gateway", NS, status={"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}]}}))
        await until(lambda: lb(fake, "local") == [{"ip": "192.0.2.50"}], what="local follows the Service")
        await until(lambda: lb(remote, "far") == [{"ip": "192.0.2.50"}], what="remote follows the Service")
        kubectl_apply(remote, ingress("far", "far.example.com", cls="other"))
        await until(lambda: lb(remote, "far") is None, what="remote status cleared")
        assert writes(app, "status", "error") == 0
        await app.stop()


async def test_tls_secret_problems_become_events(fake: FakeKube, start_cp: Starter) -> None:
    from controlplane.xds.resources import SECRET
    from tests.support.certs import issue_cert, make_ca, tls_secret

    good = issue_cert(make_ca(), ["tls.example.com"])
    fake.apply(service("web"))
    fake.apply(tls_secret("site-tls", "default", good.cert, good.key))
    site = ingress("site", "tls.example.com")
    site["spec"]["tls"] = [{"hosts": ["tls.example.com"], "secretName": "site-tls"}]
    kubectl_apply(fake, site)
    app = await start_cp(fake)
    await until(lambda: lb(fake, "site") == [{"ip": ADDRESS}], what="site status")
    assert not fake.events()
    own_default = "primary/meridian-system/meridian-default-certificate"  # made by the leader (no flag given)
    await until(lambda: own_default in app.cache.get(SECRET).resources, what="the leader's default certificate")

    def about_secret() -> list[dict[str, Any]]:
        return [e for e in fake.events() if "site-tls" in e["message"]]

    # A bad edit of the same Secret: the last good certificate stays, and the Event says so.
    fake.apply(tls_secret("site-tls", "default", b"not a certificate", good.key))
    events = await until(about_secret, what="Event for the unusable Secret")
    assert events[0]["reason"] == "TLSSecretUnusable", events
    assert "last good certificate is still served" in events[0]["message"], events
    assert app.cache.get(SECRET).resources

    # Deleted: no longer served, and said: the host now gets the default certificate (the Secret the
    # leader created in Meridian's namespace).
    fake.delete("Secret", "default", "site-tls")
    await until(lambda: any("not found" in e["message"] and "served with the default certificate" in e["message"]
                            for e in about_secret()), what="Event for the deleted Secret")  # fmt: skip
    assert set(app.cache.get(SECRET).resources) == {own_default}
