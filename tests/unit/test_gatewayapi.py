"""The Gateway API frontend through `compile` and through the incremental engine: attachment,
matches and filters in the IR, the spec's status reasons, the conflict rule with Ingresses, and the
engine serving exactly what a cold build serves."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.compile import SourceObjects, compile
from controlplane.controller import GatewayConfig
from controlplane.gatewayapi.build import intersect
from controlplane.gatewayapi.status import gateway_programmed
from controlplane.ir import DirectResponse, Forward, Redirect
from controlplane.ir.policies import PathRewrite, RequestHeaderEdits, RequestTimeout
from controlplane.sources.files import parse_manifests
from controlplane.xds import resources as rt
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.gateway import dump_manifests
from tests.support.snapshots import cold_build, diff, engine, resources

CONFIG = GatewayConfig(http_port=18080, https_port=18443)

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meridian}
spec: {controllerName: meridian.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: Same}}}
  - {name: web, protocol: HTTP, port: 80, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: odd, protocol: HTTP, port: 443}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: apps}
spec: {ports: [{port: 80}]}
"""

ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: main, namespace: infra, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2/}, headers: [{name: Version, value: two}], method: GET,
                queryParams: [{name: q, value: x}]}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: a}], remove: [x-b]}}
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}
    timeouts: {request: 10s}
    backendRefs: [{name: v1, port: 8080, weight: 3}, {name: v2, port: 8080, weight: 1}]
  - name: redirect
    matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example.org, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: nowhere, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-ns, namespace: apps, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: web}]
  hostnames: [shop.example.com, other.org]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: app, port: 80}, {name: v1, namespace: infra, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: lost, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: web}]
  hostnames: [elsewhere.org]
  rules: [{backendRefs: [{name: app, port: 80}]}]
"""


def objects(*texts: str) -> dict[str, list[tuple[str, Any]]]:
    out: list[tuple[str, Any]] = []
    for text in texts:
        parsed, problems = parse_manifests(text)
        assert not problems, problems
        out += parsed
    return {"c1": out}


def compiled(*texts: str) -> Any:
    objs = objects(*texts)
    by_kind: dict[str, list[Any]] = {}
    for kind, obj in objs["c1"]:
        by_kind.setdefault(kind, []).append(obj)
    return compile(SourceObjects({"c1": by_kind}, "c1"), CONFIG)


def conditions(result: Any, name: str, namespace: str = "infra") -> list[dict[str, tuple[str, str]]]:
    (status,) = [s for r, s in result.routes.items() if (r.namespace, r.name) == (namespace, name)]
    return [{c[0]: (c[1], c[2]) for c in p.conditions} for p in status.parents]


def test_hostname_intersection_follows_the_spec() -> None:
    assert intersect(None, []) == [""]
    assert intersect("*.example.com", []) == ["*.example.com"]
    assert intersect("*.example.com", ["a.example.com", "a.b.example.com", "example.com"]) == [
        "a.example.com", "a.b.example.com"]  # fmt: skip
    assert intersect("a.example.com", ["*.example.com"]) == ["a.example.com"]
    assert intersect("a.example.com", ["b.example.com"]) == []


def test_routes_in_the_ir_with_precedence_filters_and_backends() -> None:
    c = compiled(BASE, ROUTES)
    vhost = c.host_results[""].http
    names = [r.name for r in vhost.routes]
    # Exact first, then the longest prefix first.
    assert names[0].endswith("#rules[0].matches[0]") and names[0].startswith("HTTPRoute:c1/infra/main")
    assert [r.match.value for r in vhost.routes] == ["/one", "/missing", "/old", "/v2"]
    first = vhost.routes[3]
    assert first.match.value == "/v2" and {h.name for h in first.headers} == {":method", "version"}
    assert [(q.name, q.exact) for q in first.query] == [("q", "x")]
    assert isinstance(first.action, Forward) and [(w.cluster, w.weight) for w in first.action.clusters] == [
        ("infra/v1:8080", 3), ("infra/v2:8080", 1)]  # fmt: skip
    assert first.policy(PathRewrite) == PathRewrite(prefix="/new")
    assert first.policy(RequestTimeout) == RequestTimeout(10.0, None)
    edits = first.policy(RequestHeaderEdits)
    assert edits is not None and edits.edits.set == (("X-A", "a"),) and edits.edits.remove == ("x-b",)
    by_name = {r.name.rpartition("#")[2]: r for r in vhost.routes}
    assert by_name["redirect.matches[0]"].action == Redirect(code=301, host="new.example.org")
    assert by_name["rules[3].matches[0]"].action == DirectResponse(500)  # BackendNotFound
    # The route from another namespace is not allowed on the Same listener: not in the table.
    assert not any("other-ns" in n for n in names)
    # The Gateway API routes are rendered (HTTP only: no HTTPS listener).
    assert any("infra/main" in n for n in str(c.resources).split("'"))


def test_status_reasons() -> None:
    c = compiled(BASE, ROUTES)
    gw = c.gateway_api
    (main,) = conditions(gw, "main")
    assert main["Accepted"] == ("True", "Accepted") and main["ResolvedRefs"] == ("False", "BackendNotFound")
    (other,) = conditions(gw, "other-ns", "apps")
    assert other["Accepted"] == ("False", "NotAllowedByListeners")
    (web,) = conditions(gw, "web", "apps")
    assert web["ResolvedRefs"] == ("False", "RefNotPermitted")  # infra/v1 without a ReferenceGrant
    (lost,) = conditions(gw, "lost", "apps")
    assert lost["Accepted"] == ("False", "NoMatchingListenerHostname")
    (info,) = gw.gateways.values()
    assert {lst.name: lst.table for lst in info.listeners} == {"http": "http", "web": "http", "odd": None}
    assert {lst.name: lst.conditions[0][2] for lst in info.listeners if lst.conditions} == {"odd": "PortUnavailable"}
    assert gw.attached[(info.ref, "http")] == 1 and gw.attached[(info.ref, "web")] == 1
    # shop.example.com only: other.org does not meet the listener's wildcard.
    assert "shop.example.com" in gw.hosts and "other.org" not in gw.hosts


def test_reference_grant_permits_the_cross_namespace_backend() -> None:
    grant = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-apps, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"""
    c = compiled(BASE, ROUTES, grant)
    (web,) = conditions(c.gateway_api, "web", "apps")
    assert web["ResolvedRefs"] == ("True", "ResolvedRefs")
    (route,) = c.host_results["shop.example.com"].http.routes
    assert isinstance(route.action, Forward) and len(route.action.clusters) == 2


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: apps, creationTimestamp: "%s"}
spec:
  ingressClassName: meridian
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
      - {path: /ingress-only, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: meridian}
spec: {controller: meridian.io/ingress-controller}
"""


def test_conflict_with_an_ingress_older_object_wins() -> None:
    older_ingress = compiled(BASE, ROUTES, INGRESS % "2023-01-01T00:00:00Z")
    result = older_ingress.host_results["shop.example.com"]
    names = [r.name for r in result.http.routes]
    assert not any(n.startswith("HTTPRoute:") for n in names), names
    assert any(ref.kind == "HTTPRoute" and f.level == "conflict" for ref, f in result.findings)

    newer_ingress = compiled(BASE, ROUTES, INGRESS % "2025-01-01T00:00:00Z")
    result = newer_ingress.host_results["shop.example.com"]
    names = [r.name for r in result.http.routes]
    assert names[0].endswith("ingress-only") is False and any(n.startswith("HTTPRoute:") for n in names)
    assert any("ingress-only" in n or "paths[1]" in n for n in names)  # the Ingress keeps its other path
    (loser,) = [(ref, f) for ref, f in result.findings if f.level == "conflict"]
    assert loser[0].kind == "Ingress" and loser[0].name == "shop"


def test_the_engine_serves_what_compile_serves() -> None:
    steps = [BASE, ROUTES, INGRESS % "2025-01-01T00:00:00Z"]
    with engine(["c1"], CONFIG) as e:
        applied: list[str] = []
        for text in steps:
            applied.append(text)
            for kind, obj in objects(text)["c1"]:
                e.stores["c1"].upsert(kind, obj)
            e.controller.flush()
            assert diff(resources(e.cache), cold_build(objects(*applied), CONFIG)) == ""
        for kind, obj in objects(ROUTES)["c1"]:
            meta = obj["metadata"]
            e.stores["c1"].delete(kind, meta.get("namespace", ""), meta["name"])
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, INGRESS % "2025-01-01T00:00:00Z"), CONFIG)) == ""


def test_https_listeners_bind_certificates_in_both_engines() -> None:
    ca = make_ca()
    leaf = issue_cert(ca, ["secure.example.com", "plain.example.com"])
    secret = dump_manifests([tls_secret("cert", "infra", leaf.cert, leaf.key)])
    https = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: named, protocol: HTTPS, port: 443, hostname: secure.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: any, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: cert}]}}
  - {name: broken, protocol: HTTPS, port: 443, hostname: x.example.com, tls: {certificateRefs: [{name: nope}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: infra}
spec:
  parentRefs: [{name: tls}]
  hostnames: [secure.example.com, plain.example.com]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
"""
    c = compiled(BASE, https, secret)
    (tls_gw,) = [g for g in c.gateway_api.gateways.values() if g.ref.name == "tls"]
    broken = {lst.name: lst for lst in tls_gw.listeners}["broken"]
    assert broken.table is None and broken.conditions[0][2] == "InvalidCertificateRef"
    hosts = {h for t in c.gateway.tls_hosts for h in t.hosts}
    # The listener without a hostname serves its certificate for any SNI: "*", a chain without server_names.
    assert hosts == {"secure.example.com", "plain.example.com", "*"}
    https_listener = listener_pb2.Listener()
    any_msg = any_pb2.Any.FromString(c.resources[rt.LISTENER]["https"].any_bytes)
    assert any_msg.Unpack(https_listener)
    chains = https_listener.filter_chains
    assert [list(ch.filter_chain_match.server_names) for ch in chains] == [
        ["plain.example.com", "secure.example.com"], []]
    assert [r.name for r in c.host_results["plain.example.com"].https.routes]
    assert not c.host_results["plain.example.com"].http.routes  # HTTPS listeners only
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(BASE, https, secret)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, https, secret), CONFIG)) == ""
        e.stores["c1"].delete("Secret", "infra", "cert")
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, https), CONFIG)) == ""


JUNK = st.one_of(st.none(), st.integers(-5, 70000), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.booleans())  # fmt: skip


def _mutate(doc: Any, draw: Any) -> Any:
    """`doc` with one value somewhere replaced by junk (as a file in file mode may hold)."""
    if isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(doc, key=str)))
        out = dict(doc)
        out[key] = draw(JUNK) if draw(st.booleans()) else _mutate(doc[key], draw)
        return out
    if isinstance(doc, list) and doc:
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate(doc[i], draw), *doc[i + 1:]]
    return draw(JUNK)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_malformed_gateway_api_objects_never_break_the_build(data: st.DataObject) -> None:
    """Whatever a Gateway or an HTTPRoute holds, both engines build, agree, and the IR is consistent."""
    parsed = [obj for _kind, obj in objects(BASE, ROUTES, GRPC)["c1"]]
    kinds = ("Gateway", "HTTPRoute", "GRPCRoute")
    i = data.draw(st.sampled_from([n for n, o in enumerate(parsed) if o["kind"] in kinds]))
    spec_ = _mutate(parsed[i].get("spec"), data.draw)
    parsed[i] = {**parsed[i], "spec": spec_}
    text = dump_manifests(parsed)
    objs = objects(text)
    c = compiled(text)
    assert c.gateway.problems() == []
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objs["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objs, CONFIG)) == ""


def test_programmed_waits_for_the_connected_gateways_to_acknowledge() -> None:
    assert gateway_programmed((2, False))[1:3] == ("False", "Pending")
    assert gateway_programmed((2, True))[1:3] == ("True", "Programmed")
    assert gateway_programmed((0, True))[1:3] == ("True", "Programmed")


GRPC = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}, headers: [{name: x-pool, value: b}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{method: {service: echo.Echo}}, {method: {type: RegularExpression, method: "S.*"}}]
    backendRefs: [{name: v1, port: 8080}]
"""


def test_grpcroute_matches_and_http2_clusters_in_both_engines() -> None:
    c = compiled(BASE, GRPC)
    routes = [r for r in c.host_results[""].http.routes if r.source.kind == "GRPCRoute"]
    assert [(r.match.kind, r.match.value) for r in routes] == [
        ("exact", "/echo.Echo/Say"), ("regex", "/[^/]+/S.*"), ("prefix", "/echo.Echo")]  # fmt: skip
    assert [h.name for h in routes[0].headers] == ["x-pool"]
    (variant,) = {wc.cluster for r in routes if isinstance(r.action, Forward) for wc in r.action.clusters
                  if wc.cluster.startswith("infra/v2")}  # fmt: skip
    assert "~" in variant  # the GRPC upstream variant: HTTP/2 to the backend
    (cluster,) = [sc for sc in c.gateway.clusters if sc.name == variant]
    assert cluster.policies[0].protocol == "GRPC"
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(BASE, GRPC)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, GRPC), CONFIG)) == ""
        e.stores["c1"].delete("GRPCRoute", "infra", "echo")  # its HTTP/2 clusters go with it
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE), CONFIG)) == ""


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_the_engine_follows_any_sequence_of_changes(data: st.DataObject) -> None:
    """Adds and deletes of Gateway API objects (listeners on the shared ports and on ports of their
    own), Ingresses, Services and Secrets in any order, flushed one by one or in batches: the engine
    always serves what a cold build of the objects that exist serves."""
    leaf = issue_cert(make_ca(), ["shop.example.com", "plain.example.com"])
    secret = dump_manifests([tls_secret("cert", "infra", leaf.cert, leaf.key)])
    https = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - name: any
    protocol: HTTPS
    port: 443
    allowedRoutes: {namespaces: {from: All}}
    tls: {certificateRefs: [{name: cert}]}
"""
    own_ports = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: own, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: plain, protocol: HTTP, port: 9080, allowedRoutes: {namespaces: {from: All}}}
  - {name: tls, protocol: HTTPS, port: 9443, allowedRoutes: {namespaces: {from: All}},
     tls: {certificateRefs: [{name: cert}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-own, namespace: apps}
spec:
  parentRefs: [{name: own, namespace: infra}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: app, port: 80}]}]
"""
    pool = [o for _kind, o in objects(BASE, ROUTES, GRPC, INGRESS % "2024-06-01T00:00:00Z", https, secret,
                                      own_ports)["c1"]]  # fmt: skip
    present: dict[int, dict[str, Any]] = {}
    with engine(["c1"], CONFIG) as e:
        for _ in range(data.draw(st.integers(4, 14))):
            i = data.draw(st.integers(0, len(pool) - 1))
            obj = pool[i]
            meta = obj["metadata"]
            if i in present and data.draw(st.booleans()):
                e.stores["c1"].delete(obj["kind"], meta.get("namespace", ""), meta["name"])
                del present[i]
            else:
                e.stores["c1"].upsert(obj["kind"], obj)
                present[i] = obj
            if data.draw(st.booleans()):
                e.controller.flush()
                want = cold_build({"c1": [(o["kind"], o) for o in present.values()]}, CONFIG)
                assert diff(resources(e.cache), want) == ""
        e.controller.flush()
        assert diff(resources(e.cache), cold_build({"c1": [(o["kind"], o) for o in present.values()]}, CONFIG)) == ""


OWN_PORTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ports, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: plain, protocol: HTTP, port: 9080}
  - {name: tls, protocol: HTTPS, port: 9443, hostname: secure.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: again, protocol: HTTP, port: 9080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: late, namespace: infra, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: clash, protocol: HTTPS, port: 9080, tls: {certificateRefs: [{name: cert}]}}
  - {name: more, protocol: HTTP, port: 9080, hostname: more.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-ports, namespace: infra}
spec:
  parentRefs: [{name: ports}, {name: late, sectionName: more}]
  hostnames: [secure.example.com, more.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /away}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - backendRefs: [{name: v1, port: 8080}]
"""


def _message(c: Any, type_url: str, name: str, message: Any) -> Any:
    any_msg = any_pb2.Any.FromString(c.resources[type_url][name].any_bytes)
    assert any_msg.Unpack(message)
    return message


def test_listeners_on_ports_of_their_own_in_both_engines() -> None:
    """Listeners on other ports than the fleet's become Envoy listeners of their own (one per port,
    with its own route table); a second protocol on a port is Conflicted; both engines agree."""
    from envoy.config.route.v3 import route_pb2

    ca = make_ca()
    leaf = issue_cert(ca, ["secure.example.com"])
    secret = dump_manifests([tls_secret("cert", "infra", leaf.cert, leaf.key)])
    c = compiled(BASE, OWN_PORTS, secret)
    infos = {g.ref.name: {lst.name: lst for lst in g.listeners} for g in c.gateway_api.gateways.values()}
    assert infos["ports"]["plain"].table == "http" and not infos["ports"]["plain"].shared
    assert infos["ports"]["again"].conditions[-1][:3] == ("Conflicted", "True", "HostnameConflict")
    assert infos["late"]["clash"].conditions[-1][:3] == ("Conflicted", "True", "ProtocolConflict")
    assert infos["late"]["clash"].table is None and infos["late"]["more"].table == "http"
    assert set(c.resources[rt.LISTENER]) >= {"gateway_9080", "gateway_9443"}
    plain = _message(c, rt.LISTENER, "gateway_9080", listener_pb2.Listener())
    assert plain.address.socket_address.port_value == 9080
    table = _message(c, rt.ROUTE, "gateway_9080", route_pb2.RouteConfiguration())
    # Both Gateways' listeners on 9080 share its table: each host one virtual host.
    assert sorted(vh.name for vh in table.virtual_hosts) == ["more.example.com", "secure.example.com"]
    (vh,) = [vh for vh in table.virtual_hosts if vh.name == "more.example.com"]
    # A redirect without scheme and port keeps the listener's port (not the Host header's).
    assert vh.routes[0].redirect.port_redirect == 9080
    tls = _message(c, rt.LISTENER, "gateway_9443", listener_pb2.Listener())
    assert [list(ch.filter_chain_match.server_names) for ch in tls.filter_chains] == [["secure.example.com"]]
    assert "c1/infra/cert" in c.resources[rt.SECRET]
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(BASE, OWN_PORTS, secret)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, OWN_PORTS, secret), CONFIG)) == ""
        e.stores["c1"].delete("Secret", "infra", "cert")  # the HTTPS port has no certificate left
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE, OWN_PORTS), CONFIG)) == ""
        assert "gateway_9443" not in resources(e.cache)[rt.LISTENER]
        for kind, obj in objects(OWN_PORTS)["c1"]:
            e.stores["c1"].delete(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(BASE), CONFIG)) == ""
        assert not [n for n in resources(e.cache)[rt.LISTENER] if n.startswith("gateway_")]


def test_privileged_and_reserved_ports_are_unavailable() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: low, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: smtp, protocol: HTTP, port: 25}
  - {name: east-west, protocol: HTTP, port: 15080}
  - {name: fine, protocol: HTTP, port: 1024}
"""
    c = compiled(BASE, text)
    (info,) = [g for g in c.gateway_api.gateways.values() if g.ref.name == "low"]
    reasons = {lst.name: (lst.table, lst.conditions[0][2] if lst.conditions else None) for lst in info.listeners}
    assert reasons == {"smtp": (None, "PortUnavailable"), "east-west": (None, "PortUnavailable"),
                       "fine": ("http", None)}  # fmt: skip
    assert "gateway_1024" in c.resources[rt.LISTENER] and "gateway_25" not in c.resources[rt.LISTENER]
