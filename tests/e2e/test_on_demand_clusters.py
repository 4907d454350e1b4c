"""`meridian bootstrap --clusters on-demand`: a real Envoy holds a Service's cluster only once a request needs it.

One control plane, two Envoys in turn (they share the gateway's listener ports): first an eager one
(the default bootstrap: every cluster up front, and the same listeners, on_demand filter included),
then an on-demand one. The on-demand Envoy starts with only the pinned clusters (the external auth
service's), fetches a Service's cluster on its first request, takes endpoint changes for it, loses it
when the Service goes, and an auth-url host (a pinned cluster the auth filter calls) works.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controlplane.devtools.envoy_proc import EnvoyProcess
from controlplane.translate.listeners import ON_DEMAND_TIMEOUT
from tests.support.auth_server import AuthServer
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

P = "nginx.ingress.kubernetes.io/"
SERVICES = ("web", "api", "other")


def clusters(envoy: EnvoyProcess) -> set[str]:
    """Names of the clusters Envoy holds (admin /clusters), Meridian's own xDS cluster left out."""
    names = {line.split("::", 1)[0] for line in envoy.admin_get("/clusters").splitlines() if "::" in line}
    return names - {"meridian_xds"}


def has_on_demand_filter(envoy: EnvoyProcess) -> bool:
    return "envoy.filters.http.on_demand" in envoy.admin_get("/config_dump?resource=dynamic_listeners")


def served_pod(gw: Gateway, host: str, **kw: object) -> str:
    r = gw.get(host, "/", **kw)
    assert r.status == 200, (host, r.status, r.body[:200])
    return str(r.json()["pod"])


def test_on_demand_gateway_fetches_clusters_on_first_request(make_gateway: Callable[..., Gateway]) -> None:
    auth = AuthServer().start()
    gw = make_gateway(delta=True).start()  # the eager gateway: `meridian bootstrap` as printed by default
    try:
        for svc in (*SERVICES, "site", "errpages"):
            gw.backend(svc)
        mirror = gw.fleet.add(service="mirror", pod="mirror-0")
        rules = [rule(f"{svc}.example.com", ("/", "Prefix", svc, 80)) for svc in SERVICES]
        gw.write("ing.yaml", [
            ingress("plain", rules),
            ingress("ext", [rule("ext.example.com", ("/", "Prefix", "api", 80))],
                    annotations={P + "auth-url": f"http://127.0.0.1:{auth.port}/auth"}),
            # An error page from another Service (an internal redirect), and a mirror to a host:port.
            ingress("errors", [rule("errors.example.com", ("/", "Prefix", "site", 80))],
                    annotations={P + "default-backend": "errpages", P + "custom-http-errors": "404"}),
            ingress("mirror", [rule("mirror.example.com", ("/", "Prefix", "other", 80))],
                    annotations={P + "mirror-target": f"http://127.0.0.1:{mirror.port}$request_uri"}),
        ])  # fmt: skip
        gw.wait_served_by("web.example.com", "/", "web")
        assert gw.envoy is not None
        eager = gw.envoy
        held = clusters(eager)
        services = {f"default/{svc}:80" for svc in (*SERVICES, "site", "errpages")}
        assert services <= held, held  # every Service's cluster before any request to it
        pinned = held - services
        assert pinned, "the auth service has a cluster of its own"
        for svc in SERVICES:
            assert gw.get(f"{svc}.example.com").json()["service"] == svc
        assert gw.get("ext.example.com", headers={"Authorization": "Bearer good"}).status == 200
        assert gw.get("ext.example.com").status == 401
        assert not has_on_demand_filter(eager)  # eager gateways' listeners are as they were
        eager.stop()

        # The on-demand gateway on the same control plane and listeners.
        od = EnvoyProcess(gw.bootstrap("gw-od", clusters="on-demand"), workdir=gw.root / "envoy-od", drain_time_s=1)
        gw.envoy = od
        od.start().wait_ready(30)
        wait_until(lambda: gw.get("web.example.com").status == 200, timeout=30, message="on-demand gateway not up")
        assert has_on_demand_filter(od)
        assert clusters(od) >= {"default/web:80"}
        assert not {"default/api:80", "default/other:80"} & clusters(od), clusters(od)
        assert pinned <= clusters(od)
        assert gw.get("api.example.com").json()["service"] == "api"  # its first request, fetched then
        assert "default/api:80" in clusters(od)
        assert "default/other:80" not in clusters(od)
        # Pinned: the auth service, the mirror target, and default-backend's fallback (an aggregate of the
        # route's Service and the error Service's variant, which Envoy resolves inside the cluster).
        kinds = sorted(n.split(":")[0] if "|or|" not in n else "aggregate" for n in pinned)
        assert kinds == ["aggregate", "default/errpages", "extauth", "mirror"], pinned
        assert {"default/site:80"} <= clusters(od)  # an aggregate's member

        # An endpoint change reaches a fetched cluster.
        new = gw.fleet.add(service="web", pod="web-moved", namespace="default", cluster="c1")
        gw.publish("web", [new])
        wait_until(lambda: served_pod(gw, "web.example.com") == "web-moved", timeout=15,
                   message="endpoint change never reached the on-demand cluster")  # fmt: skip

        # The pinned auth cluster works before any Service's cluster is fetched for its host... and after.
        assert gw.get("ext.example.com").status == 401
        assert gw.get("ext.example.com", headers={"Authorization": "Bearer good"}).status == 200

        # An error page from another Service (an internal redirect to its route).
        r = gw.get("errors.example.com", "/missing", headers={"X-Echo-Status": "404"})
        assert r.status == 404 and r.json()["service"] == "errpages", (r.status, r.body[:200])
        # A mirror target: pinned (a missing shadow cluster would drop the copy silently).
        path = "/copy-me"
        assert gw.get("mirror.example.com", path).json()["service"] == "other"
        wait_until(lambda: [q for q in mirror.requests if q.path == path], timeout=10, message="no mirror copy")

        # A Service deleted: its cluster leaves the on-demand Envoy that fetched it.
        gw.remove("svc-default-web.yaml")
        wait_until(lambda: "default/web:80" not in clusters(od), timeout=15,
                   message="a deleted Service's cluster stayed on the on-demand gateway")  # fmt: skip
        t = time.monotonic()
        status = gw.get("web.example.com").status
        assert status == 503 and time.monotonic() - t < 2, status
    finally:
        auth.close()


def test_on_demand_gateway_fails_fast_and_keeps_fetched_clusters_without_its_control_plane(
    make_gateway: Callable[..., Gateway],
) -> None:
    """A host whose Service does not exist answers 503 at once; with the control plane gone, a fetched
    Service keeps working and an unfetched one gets a 503 after the on_demand timeout, not a hang; a
    control plane started afresh resynchronises the gateway and serves its next fetch."""
    gw = make_gateway(delta=True, envoy=False).start()
    gw.backend("web")
    gw.backend("api")
    rules = [rule(f"{svc}.example.com", ("/", "Prefix", svc, 80)) for svc in ("web", "api", "ghost")]
    gw.write("ing.yaml", [ingress("apps", rules)])
    od = EnvoyProcess(gw.bootstrap("gw-od", clusters="on-demand"), workdir=gw.root / "envoy-od", drain_time_s=1)
    gw.envoy = od
    od.start().wait_ready(30)
    wait_until(lambda: gw.get("web.example.com").status == 200, timeout=30, message="on-demand gateway not up")
    t = time.monotonic()
    assert gw.get("ghost.example.com").status == 503  # no such Service: no cluster to wait for
    assert time.monotonic() - t < 1

    gw.kill_control_plane()
    wait_until(lambda: od.stat("control_plane.connected_state") == 0, timeout=15, message="xDS stream still up")
    assert gw.get("web.example.com").json()["service"] == "web"  # fetched before: kept
    t = time.monotonic()
    status = gw.get("api.example.com", timeout=30).status
    waited = time.monotonic() - t
    assert status == 503, status
    assert ON_DEMAND_TIMEOUT - 0.5 <= waited < ON_DEMAND_TIMEOUT + 5, waited  # the filter's timeout, then 503
    assert "default/api:80" not in clusters(od)

    # A control plane started afresh: the gateway resynchronises what it fetched and fetches the rest.
    gw.start_control_plane()
    wait_until(lambda: od.stat("control_plane.connected_state") == 1, timeout=30, message="xDS stream not back")
    wait_until(lambda: gw.get("api.example.com").status == 200, timeout=15, message="no fetch after the restart")
    assert gw.get("web.example.com").json()["service"] == "web"
    assert {"default/web:80", "default/api:80"} <= clusters(od)


def test_on_demand_gateway_fetches_each_weighted_canary_cluster(make_gateway: Callable[..., Gateway]) -> None:
    """A canary by weight is one route to two clusters (weighted_clusters): the on_demand filter sees the
    cluster Envoy picked for each request, so each side is fetched when first picked, and no request
    fails on the way."""
    gw = make_gateway(delta=True, envoy=False).start()
    gw.backend("web")
    gw.backend("api")
    gw.write("ing.yaml", [
        ingress("main", [rule("canary.example.com", ("/", "Prefix", "web", 80))]),
        ingress("canary", [rule("canary.example.com", ("/", "Prefix", "api", 80))],
                annotations={P + "canary": "true", P + "canary-weight": "50"}),
    ])  # fmt: skip
    od = EnvoyProcess(gw.bootstrap("gw-od", clusters="on-demand"), workdir=gw.root / "envoy-od", drain_time_s=1)
    gw.envoy = od
    od.start().wait_ready(30)
    wait_until(lambda: has_on_demand_filter(od), timeout=30, message="on-demand listeners not served")
    assert not {"default/web:80", "default/api:80"} & clusters(od)
    answers: list[tuple[int, str]] = []

    def both_sides_answered() -> bool:
        r = gw.get("canary.example.com")
        answers.append((r.status, str(r.json()["service"]) if r.status == 200 else r.text[:200]))
        return {"web", "api"} <= {svc for status, svc in answers if status == 200}

    wait_until(both_sides_answered, timeout=30, message="a canary side was never served")
    assert all(status == 200 for status, _ in answers), answers  # never a 503 while a side is fetched
    assert {"default/web:80", "default/api:80"} <= clusters(od)
