"""Gateway API on the fleet, in Kubernetes mode (fake API servers, `meridian serve --kubeconfig`, a
real Envoy): routes from every cluster with backends merged across clusters (and failing over to
the remote one), status written by the leader with the spec's reasons, the conflict rule with an
Ingress on the same host and path, listeners on ports of their own (HTTP and HTTPS with SNI and a
catch-all certificate) with their conflicts, and two Gateways sharing a host."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.http import request
from tests.support.kubegateway import PRIMARY, KubeGateway
from tests.support.ports import free_ports
from tests.support.wait import wait_until

NS = "shop"
GROUP = "gateway.networking.k8s.io/v1"


def gateway_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "shop"}}},
        {"apiVersion": GROUP, "kind": "GatewayClass", "metadata": {"name": "meridian"},
         "spec": {"controllerName": "meridian.io/gateway-controller"}},
        {"apiVersion": GROUP, "kind": "GatewayClass", "metadata": {"name": "someone-else"},
         "spec": {"controllerName": "example.com/other"}},
        {"apiVersion": GROUP, "kind": "Gateway", "metadata": {"name": "web", "namespace": "infra", "generation": 1},
         "spec": {"gatewayClassName": "meridian", "listeners": [
             {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "*.example.com",
              "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "shop"}}}}},
             {"name": "odd", "protocol": "HTTPS", "port": 80}]}},
    ]  # fmt: skip


def route(name: str, hostnames: list[str], backend: dict[str, Any], path: str = "/") -> dict[str, Any]:
    return {"apiVersion": GROUP, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NS, "generation": 2,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"parentRefs": [{"name": "web", "namespace": "infra", "sectionName": "http"}],
                     "hostnames": hostnames,
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                "backendRefs": [backend]}]}}  # fmt: skip


def parents(gw: KubeGateway, name: str) -> dict[str, tuple[str, str]]:
    obj = gw.kubes[PRIMARY].get("HTTPRoute", NS, name) or {}
    ps = (obj.get("status") or {}).get("parents") or []
    return {c["type"]: (c["status"], c["reason"]) for p in ps for c in p.get("conditions") or []}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeGateway]:
    g = KubeGateway(Path(tmp_path_factory.mktemp("gatewayapi-kube")), remotes=("west",))
    try:
        g.start()
        g.register("west")
        g.backend("app", namespace=NS)
        g.backend("app", namespace=NS, cluster="west")
        g.backend("legacy", namespace=NS)
        g.apply(gateway_objects())
        yield g
    finally:
        g.stop()


def test_routes_serve_backends_merged_across_clusters_and_status_is_written(gw: KubeGateway) -> None:
    gw.apply(route("shop", ["shop.example.com"], {"name": "app", "port": 80}))
    gw.wait_served_by("shop.example.com", "/", "app")
    # One cluster name for the Service, endpoints of both clusters: as Ingress backends.
    gw.wait_clusters_served("shop.example.com", {PRIMARY, "west"})

    wait_until(lambda: parents(gw, "shop").get("Accepted") == ("True", "Accepted"), timeout=15,
               message=f"route never Accepted: {parents(gw, 'shop')}")  # fmt: skip
    assert parents(gw, "shop")["ResolvedRefs"] == ("True", "ResolvedRefs")
    fk = gw.kubes[PRIMARY]
    cls = fk.get("GatewayClass", None, "meridian") or {}
    assert [(c["type"], c["status"]) for c in cls["status"]["conditions"]] == [("Accepted", "True")]
    assert "status" not in (fk.get("GatewayClass", None, "someone-else") or {})  # not ours: untouched
    def gateway_conditions() -> dict[str, tuple[str, str]]:
        status = (fk.get("Gateway", "infra", "web") or {}).get("status") or {}
        return {c["type"]: (c["status"], c["message"]) for c in status.get("conditions") or []}

    # Programmed: the Envoy connected to this control plane has ACKed the listeners and routes.
    wait_until(lambda: gateway_conditions().get("Programmed", ("", ""))[0] == "True", timeout=15,
               message=f"Gateway never Programmed: {gateway_conditions()}")  # fmt: skip
    assert gateway_conditions()["Accepted"][0] == "True"
    assert "acknowledged by 1 gateway" in gateway_conditions()["Programmed"][1]
    status = (fk.get("Gateway", "infra", "web") or {})["status"]
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    listeners = {x["name"]: x for x in status["listeners"]}
    # Every route of these tests names this listener; it attaches unless its hostnames miss the listener's
    # (a route that lost its paths to an Ingress is attached, but Accepted=False, Conflicted).
    routes = gw.kubes[PRIMARY].objects("HTTPRoute")
    accepted = [parents(gw, r["metadata"]["name"]).get("Accepted", ("", "")) for r in routes]
    attached = sum(1 for status, reason in accepted if status == "True" or reason == "Conflicted")
    assert listeners["http"]["attachedRoutes"] == attached >= 1 and listeners["odd"]["attachedRoutes"] == 0
    assert {c["type"]: c["reason"] for c in listeners["odd"]["conditions"]}["Accepted"] == "PortUnavailable"


def test_status_reasons_for_routes_that_do_not_attach_or_resolve(gw: KubeGateway) -> None:
    gw.apply(route("elsewhere", ["shop.example.org"], {"name": "app", "port": 80}))
    gw.apply(route("missing", ["missing.example.com"], {"name": "nope", "port": 80}))
    gw.apply(route("foreign", ["foreign.example.com"], {"name": "app", "namespace": "infra", "port": 80}))
    for name, ctype, want in [("elsewhere", "Accepted", ("False", "NoMatchingListenerHostname")),
                              ("missing", "ResolvedRefs", ("False", "BackendNotFound")),
                              ("foreign", "ResolvedRefs", ("False", "RefNotPermitted"))]:  # fmt: skip
        wait_until(lambda n=name, c=ctype, w=want: parents(gw, n).get(c) == w, timeout=15,
                   message=f"{name}: {parents(gw, name)}")  # fmt: skip
    assert gw.wait_status("missing.example.com", "/", 500).status == 500  # the spec's answer


def test_an_older_ingress_wins_the_same_host_and_path_and_the_route_is_told(gw: KubeGateway) -> None:
    gw.apply({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
              "metadata": {"name": "legacy", "namespace": NS, "creationTimestamp": "2020-01-01T00:00:00Z"},
              "spec": {"rules": [{"host": "both.example.com", "http": {"paths": [
                  {"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "legacy", "port": {"number": 80}}}}]}}]}})  # fmt: skip
    gw.apply(route("newer", ["both.example.com"], {"name": "app", "port": 80}))
    gw.apply(route("newer-api", ["both.example.com"], {"name": "app", "port": 80}, path="/api"))
    gw.wait_served_by("both.example.com", "/api/x", "app")  # a path the Ingress does not claim
    # The Ingress and the routes come over separate watches, so the routes may be seen first and
    # serve "/" for a moment; once both are in, the older Ingress holds it.
    gw.wait_served_by("both.example.com", "/", "legacy")
    wait_until(lambda: parents(gw, "newer").get("Accepted") == ("False", "Conflicted"), timeout=15,
               message=f"newer: {parents(gw, 'newer')}")  # fmt: skip
    wait_until(lambda: parents(gw, "newer-api").get("Accepted") == ("True", "Accepted"), timeout=15,
               message=f"newer-api: {parents(gw, 'newer-api')}")  # fmt: skip


def test_an_older_httproute_wins_and_the_ingress_gets_a_conflict_event(gw: KubeGateway) -> None:
    old_route = route("first", ["first.example.com"], {"name": "app", "port": 80})
    old_route["metadata"]["creationTimestamp"] = "2019-01-01T00:00:00Z"
    gw.apply(old_route)
    gw.apply({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
              "metadata": {"name": "late", "namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"},
              "spec": {"rules": [{"host": "first.example.com", "http": {"paths": [
                  {"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "legacy", "port": {"number": 80}}}}]}}]}})  # fmt: skip
    gw.wait_served_by("first.example.com", "/", "app")

    def conflict_event() -> bool:
        return any(e.get("involvedObject", {}).get("name") == "late" and e.get("reason") == "Conflict"
                   and "HTTPRoute" in e.get("message", "") for e in gw.kubes[PRIMARY].objects("Event"))  # fmt: skip

    wait_until(conflict_event, timeout=15, message="no Conflict Event on the Ingress that lost")
    wait_until(lambda: parents(gw, "first").get("Accepted") == ("True", "Accepted"), timeout=15,
               message=f"first: {parents(gw, 'first')}")  # fmt: skip


def listener_status(gw: KubeGateway, gateway: str) -> dict[str, dict[str, Any]]:
    status = (gw.kubes[PRIMARY].get("Gateway", "infra", gateway) or {}).get("status") or {}
    return {x["name"]: {"attachedRoutes": x["attachedRoutes"],
                        **{c["type"]: (c["status"], c["reason"], c["message"]) for c in x["conditions"]}}
            for x in status.get("listeners") or []}  # fmt: skip


def test_listeners_on_ports_of_their_own_serve_http_and_https_and_report_conflicts(gw: KubeGateway) -> None:
    """A listener on another port than the fleet's is an Envoy listener of its own on that port: HTTP,
    and HTTPS with a certificate per SNI and a catch-all (listener without hostname) over SDS; a
    later Gateway's listener with another protocol on the same port is Conflicted, not served."""
    plain, secure = free_ports(2)
    named_ca, any_ca = make_ca("named"), make_ca("catch-all")
    named = issue_cert(named_ca, ["secure.example.com"])
    catch_all = issue_cert(any_ca, ["anything.example.net"])
    gw.apply([tls_secret("named", "infra", named.cert, named.key),
              tls_secret("catch-all", "infra", catch_all.cert, catch_all.key)])  # fmt: skip
    every_ns = {"namespaces": {"from": "All"}}
    gw.apply({"apiVersion": GROUP, "kind": "Gateway",
              "metadata": {"name": "ports", "namespace": "infra", "generation": 1,
                           "creationTimestamp": "2024-01-01T00:00:00Z"},
              "spec": {"gatewayClassName": "meridian", "listeners": [
                  {"name": "plain", "protocol": "HTTP", "port": plain, "allowedRoutes": every_ns},
                  {"name": "named", "protocol": "HTTPS", "port": secure, "hostname": "secure.example.com",
                   "allowedRoutes": every_ns, "tls": {"certificateRefs": [{"name": "named"}]}},
                  {"name": "any", "protocol": "HTTPS", "port": secure, "allowedRoutes": every_ns,
                   "tls": {"certificateRefs": [{"name": "catch-all"}]}}]}})  # fmt: skip
    gw.apply({"apiVersion": GROUP, "kind": "Gateway",
              "metadata": {"name": "late", "namespace": "infra", "generation": 1,
                           "creationTimestamp": "2025-01-01T00:00:00Z"},
              "spec": {"gatewayClassName": "meridian", "listeners": [
                  {"name": "clash", "protocol": "HTTPS", "port": plain,
                   "tls": {"certificateRefs": [{"name": "catch-all"}]}}]}})  # fmt: skip
    own = route("own", ["own.example.com", "secure.example.com"], {"name": "app", "port": 80})
    own["spec"]["parentRefs"] = [{"name": "ports", "namespace": "infra"}]
    gw.apply(own)

    def served(port: int, host: str, **kw: Any) -> Any:
        try:
            r = request("GET", port, "/", host=host, timeout=5, **kw)
        except OSError:
            return None  # not listening yet, or no certificate yet
        return r if r.status == 200 and r.json().get("service") == "app" else None

    wait_until(lambda: served(plain, "own.example.com"), timeout=20, message=f"port {plain} never served")
    # SNI secure.example.com gets the named listener's certificate (checked against its CA and name).
    wait_until(lambda: served(secure, "secure.example.com", tls=True, sni="secure.example.com", ca=named_ca.cert),
               timeout=20, message=f"port {secure} never served secure.example.com")  # fmt: skip
    # Any other SNI gets the catch-all's certificate; no route serves that host: 404, as the spec says.
    r = wait_until(lambda: _quietly(lambda: request("GET", secure, "/", host="other.example.org", tls=True,
                                                    sni="other.example.org", ca=any_ca.cert,
                                                    verify_hostname=False, timeout=5)),
                   timeout=20, message="the catch-all certificate was never served")  # fmt: skip
    assert r.status == 404

    def settled() -> bool:
        ports, late = listener_status(gw, "ports"), listener_status(gw, "late")
        # Statuses are written pass by pass: wait for every one asserted below, not only the first.
        return ("plain" in ports and ports["plain"].get("Programmed", ("",))[0] == "True"
                and ports["plain"].get("attachedRoutes") == 1 and ports.get("named", {}).get("attachedRoutes") == 1
                and "clash" in late and late["clash"].get("Conflicted", ("",))[0] == "True"
                and late["clash"].get("Programmed", ("",))[0] == "False")  # fmt: skip

    wait_until(settled, timeout=15, message=f"{listener_status(gw, 'ports')} {listener_status(gw, 'late')}")
    ports, late = listener_status(gw, "ports"), listener_status(gw, "late")
    assert f"its own Envoy listener on port {plain}" in ports["plain"]["Programmed"][2]
    assert ports["plain"]["attachedRoutes"] == ports["named"]["attachedRoutes"] == 1
    assert late["clash"]["Conflicted"][:2] == ("True", "ProtocolConflict")
    assert late["clash"]["Programmed"][:2] == ("False", "Invalid")
    assert not gw.nacks()


def _quietly(call: Any) -> Any:
    try:
        return call()
    except OSError:
        return None


def test_two_gateways_on_one_host_share_its_virtual_host(gw: KubeGateway) -> None:
    """Two Gateways (and so two listeners) accepting one hostname on the fleet's HTTP port: their
    routes share the host's one virtual host, ordered by the spec's precedence across both."""
    gw.apply({"apiVersion": GROUP, "kind": "Gateway", "metadata": {"name": "second", "namespace": "infra"},
              "spec": {"gatewayClassName": "meridian", "listeners": [
                  {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "twice.example.com",
                   "allowedRoutes": {"namespaces": {"from": "All"}}}]}})  # fmt: skip
    broad = route("via-web", ["twice.example.com"], {"name": "legacy", "port": 80})
    narrow = route("via-second", ["twice.example.com"], {"name": "app", "port": 80}, path="/narrow")
    narrow["spec"]["parentRefs"] = [{"name": "second", "namespace": "infra"}]
    gw.apply([broad, narrow])
    gw.wait_served_by("twice.example.com", "/narrow/x", "app")  # the longer prefix, from the other Gateway
    gw.wait_served_by("twice.example.com", "/other", "legacy")
    for name in ("via-web", "via-second"):
        wait_until(lambda n=name: parents(gw, n).get("Accepted") == ("True", "Accepted"), timeout=15,
                   message=f"{name}: {parents(gw, name)}")  # fmt: skip
    dump = _route_dump(gw)  # what Envoy holds
    # (the HTTPS listener's table has the host too: the default certificate answers any SNI)
    hosts = [vh for rc in dump if rc.get("name") == "http" for vh in rc.get("virtual_hosts", [])
             if "twice.example.com" in vh.get("domains", [])]  # fmt: skip
    assert len(hosts) == 1, hosts  # one virtual host, both Gateways' routes in it


def _route_dump(gw: KubeGateway) -> list[dict[str, Any]]:
    assert gw.envoy is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.envoy.admin_port}/config_dump?resource=dynamic_route_configs",
                                timeout=5) as resp:  # fmt: skip
        body = json.loads(resp.read())
    return [c["route_config"] for c in body.get("configs", []) if "route_config" in c]


def test_route_backends_fail_over_to_the_remote_cluster(gw: KubeGateway) -> None:
    """An HTTPRoute's Service with `meridian.io/failover`: the primary's endpoints first, the remote
    cluster's only when none of them is ready, exactly as for Ingress backends."""
    failover = {"meridian.io/failover": "true"}
    local = gw.backend("fo", namespace=NS, replicas=2, annotations=failover)
    gw.backend("fo", namespace=NS, cluster="west", replicas=2, annotations=failover)
    gw.apply(route("failover", ["fo.example.com"], {"name": "fo", "port": 80}))
    gw.wait_clusters_served("fo.example.com", {PRIMARY}, n=20)
    gw.publish("fo", local, namespace=NS, ready=[False, False], annotations=failover)
    gw.wait_clusters_served("fo.example.com", {"west"}, n=20)
    gw.publish("fo", local, namespace=NS, annotations=failover)
    gw.wait_clusters_served("fo.example.com", {PRIMARY}, n=20)
