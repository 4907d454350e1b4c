"""The Knative frontend through `compile` and through the incremental engine: which KIngresses are
ours, visibility, matches, splits and their headers, the probe contract, what status says, and the
engine serving exactly what a cold build serves through any sequence of KIngress and Service changes."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.compile import SourceObjects, compile
from controlplane.controller import GatewayConfig
from controlplane.ir import DirectResponse, Forward, IngressRef, Redirect
from controlplane.ir.policies import HostRewrite, RequestHeaderEdits, RequestTimeout, Retries
from controlplane.knative.build import KIngressInfo, go_duration, path_match
from controlplane.knative.frontend import claimed_service
from controlplane.knative.probe import compute_hash, expanded_hosts, go_json
from controlplane.knative.status import KnativeStatusSettings, knative_conditions, wanted_conditions
from controlplane.offline import snapshot_dict
from controlplane.sources.files import parse_manifests
from controlplane.store import KINGRESS
from controlplane.xds.resources import CLUSTER, SHORT_NAMES
from tests.support.gateway import dump_manifests
from tests.support.snapshots import cold_build, diff, engine, resources

CONFIG = GatewayConfig(http_port=18080, https_port=18443)
API = "networking.internal.knative.dev/v1alpha1"
OURS = {"networking.knative.dev/ingress.class": "meridian.ingress.networking.knative.dev"}


def service(name: str, port: int = 80, port_name: str = "http", app_protocol: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"name": port_name, "port": port}
    if app_protocol:
        p["appProtocol"] = app_protocol
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [p]}}  # fmt: skip


def kingress(name: str, rules: list[dict[str, Any]], annotations: dict[str, str] | None = None,
             **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": API, "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "generation": 2,
                         "annotations": OURS if annotations is None else annotations},
            "spec": {"rules": rules, **spec}}  # fmt: skip


def rule(hosts: list[str], paths: list[dict[str, Any]], visibility: str | None = "ExternalIP") -> dict[str, Any]:
    out: dict[str, Any] = {"hosts": hosts, "http": {"paths": paths}}
    if visibility:
        out["visibility"] = visibility
    return out


def split(name: str, percent: int | None = None, port: int | str = 80, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"serviceName": name, "serviceNamespace": "default", "servicePort": port}
    if percent is not None:
        out["percent"] = percent
    if headers:
        out["appendHeaders"] = headers
    return out


def objects(*docs: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    parsed, problems = parse_manifests(dump_manifests(docs))
    assert problems == []
    return {"c1": parsed}


def compiled(*docs: dict[str, Any]) -> Any:
    objs = objects(*docs)
    kinds: dict[str, list[Any]] = {}
    for kind, obj in objs["c1"]:
        kinds.setdefault(kind, []).append(obj)
    c = compile(SourceObjects({"c1": kinds}, primary="c1"), CONFIG)
    assert c.gateway.problems() == []
    return c


def routes(c: Any, host: str, table: str = "https") -> list[Any]:
    return [r for r in getattr(c.host_results[host], table).routes if not r.name.endswith("#probe")]


def test_files_read_a_kingress_apart_from_an_ingress() -> None:
    parsed, problems = parse_manifests(dump_manifests([kingress("k", [])]))
    assert problems == [] and [k for k, _ in parsed] == [KINGRESS]


def test_only_our_class_under_either_annotation_key() -> None:
    paths = [{"splits": [split("web")]}]
    c = compiled(service("web"),
                 kingress("new", [rule(["new.example.com"], paths)]),
                 kingress("old", [rule(["old.example.com"], paths)],
                          {"networking.knative.dev/ingress-class": "meridian.ingress.networking.knative.dev"}),
                 kingress("istio", [rule(["istio.example.com"], paths)],
                          {"networking.knative.dev/ingress.class": "istio.ingress.networking.knative.dev"}),
                 kingress("none", [rule(["none.example.com"], paths)], {}))  # fmt: skip
    assert set(c.knative.hosts) == {"new.example.com", "old.example.com"}
    assert {r.name for r in c.knative.ingresses} == {"new", "old"}


def test_visibility_decides_the_listener_and_cluster_local_names_expand() -> None:
    c = compiled(service("web"), service("hello"),
                 kingress("k", [rule(["pub.example.com"], [{"splits": [split("web")]}], visibility=None),
                                rule(["hello.default.svc.cluster.local"], [{"splits": [split("web")]}],
                                     "ClusterLocal")]))  # fmt: skip
    assert set(c.knative.hosts) == {"pub.example.com"}  # no visibility means ExternalIP
    assert set(c.knative.local) == {"hello.default", "hello.default.svc", "hello.default.svc.cluster.local"}
    east_west = {d for vh in c.gateway.route_tables[2].virtual_hosts for d in vh.domains}
    north_south = {d for t in c.gateway.route_tables[:2] for vh in t.virtual_hosts for d in vh.domains}
    assert "hello.default.svc.cluster.local" in east_west and "hello.default:80" in east_west
    assert not north_south & east_west
    # The Service "hello" gives its east-west names up to the KIngress; "web" keeps its own.
    owners = {d: vh.name for vh in c.gateway.route_tables[2].virtual_hosts for d in vh.domains}
    assert owners["hello.default"] == "knative:hello.default" and owners["web.default"] == "default/web:80"


def test_paths_are_literal_prefixes_in_spec_order_with_exact_headers() -> None:
    assert path_match("") == path_match("/")
    match = path_match("/a.b+")
    assert match is not None and match.kind == "string_prefix" and match.value == "/a.b+"
    assert path_match("nope") is None
    c = compiled(service("web"), service("tag"),
                 kingress("k", [rule(["h.example.com"], [
                     {"headers": {"Knative-Serving-Tag": {"exact": "v2"}}, "splits": [split("tag")]},
                     {"path": "/api", "splits": [split("web")]},
                     {"splits": [split("web")]}])]))  # fmt: skip
    rs = routes(c, "h.example.com")
    assert [(r.match.kind, [(h.name, h.exact) for h in r.headers]) for r in rs] == [
        ("prefix", [("knative-serving-tag", "v2")]), ("string_prefix", []), ("prefix", [])]  # fmt: skip


def test_splits_weights_and_headers() -> None:
    c = compiled(service("a"), service("b"),
                 kingress("k", [rule(["h.example.com"], [
                     {"appendHeaders": {"K-Path": "p"},
                      "splits": [split("a", 30, K_Rev="a"), split("b", 70, K_Rev="b"), split("a", 0)]},
                     {"path": "/one", "appendHeaders": {"K-Path": "p"}, "splits": [split("a", K_Rev="a")]},
                     {"path": "/even", "splits": [split("a"), split("b")]}])]))  # fmt: skip
    many, one, even = routes(c, "h.example.com")
    assert isinstance(many.action, Forward)
    assert [(w.cluster, w.weight, w.request_headers) for w in many.action.clusters] == [
        ("default/a:80", 30, (("K_Rev", "a"),)), ("default/b:80", 70, (("K_Rev", "b"),))]  # fmt: skip
    assert many.policy(RequestHeaderEdits).edits.set == (("K-Path", "p"),)
    # One backend: its headers become the route's (a plain cluster route).
    assert isinstance(one.action, Forward) and one.action.single == "default/a:80"
    assert one.policy(RequestHeaderEdits).edits.set == (("K-Path", "p"), ("K_Rev", "a"))
    assert isinstance(even.action, Forward) and [w.weight for w in even.action.clusters] == [1, 1]


def test_rewrite_host_older_timeouts_and_retries() -> None:
    assert go_duration("1m30s") == 90.0 and go_duration("500ms") == 0.5 and go_duration("soon") is None
    c = compiled(service("web"),
                 kingress("k", [rule(["h.example.com"], [
                     {"rewriteHost": "other.default.svc.cluster.local", "timeout": "48h0m0s",
                      "retries": {"attempts": 3, "perTryTimeout": "10s"}, "splits": [split("web")]}])]))  # fmt: skip
    (r,) = routes(c, "h.example.com")
    assert r.policy(HostRewrite) == HostRewrite("other.default.svc.cluster.local")
    assert r.policy(RequestTimeout) == RequestTimeout(172800.0, 10.0)
    retries = r.policy(Retries)
    assert retries is not None and retries.retries == 3
    # Without those fields: no timeout, no retries (streaming stays open; the retry test wants a 503 back).
    c = compiled(service("web"), kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}])]))
    (r,) = routes(c, "h.example.com")
    assert r.policy(RequestTimeout) is None and r.policy(Retries) is None


def test_http_option_redirected_answers_plain_http_with_301() -> None:
    c = compiled(service("web"), kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}])],
                                          httpOption="Redirected"))  # fmt: skip
    (http,) = routes(c, "h.example.com", "http")
    (https,) = routes(c, "h.example.com", "https")
    assert http.action == Redirect(code=301, scheme="https") and isinstance(https.action, Forward)


def test_h2c_ports_forward_over_http2() -> None:
    c = compiled(service("g1", 81, "http2"), service("g2", 82, "grpc-port", "kubernetes.io/h2c"), service("p"),
                 kingress("k", [rule(["h.example.com"], [{"path": "/1", "splits": [split("g1", port=81)]},
                                                         {"path": "/2", "splits": [split("g2", port=82)]},
                                                         {"splits": [split("p")]}])]))  # fmt: skip
    clusters = [w.cluster for r in routes(c, "h.example.com") for w in r.action.clusters]
    assert "~" in clusters[0] and "~" in clusters[1] and clusters[2] == "default/p:80"
    protocols = {sc.name: sc.policies for sc in c.gateway.clusters}
    assert protocols[clusters[0]][0].protocol == "GRPC" and protocols["default/p:80"] == ()


def test_problems_make_a_503_and_say_why() -> None:
    c = compiled(kingress("k", [rule(["h.example.com"], [{"splits": [split("ghost")]}])],
                          tls=[{"hosts": ["h.example.com"], "secretName": "missing"}]))  # fmt: skip
    (r,) = routes(c, "h.example.com")
    assert isinstance(r.action, DirectResponse) and r.action.status == 503
    (info,) = c.knative.ingresses.values()
    assert any("ghost" in p for p in info.problems) and any("missing" in p for p in info.problems)


def test_probe_twins_send_the_kingress_hash() -> None:
    k = kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}])])
    c = compiled(service("web"), k)
    probe, real = c.host_results["h.example.com"].https.routes
    assert probe.name.endswith("#probe") and not real.name.endswith("#probe")
    assert [(h.name, h.exact) for h in probe.headers] == [("k-network-hash", "override")]
    assert dict(probe.policy(RequestHeaderEdits).edits.set)["K-Network-Hash"] == compute_hash("default", "k", k["spec"])
    # Go's json.Marshal: struct order, omitempty, HTML-safe escapes.
    spec = {"rules": [{"hosts": ["a"], "http": {"paths": [{"splits": [{"serviceName": "s", "percent": 0}],
                                                             "appendHeaders": {"b": "<&>", "a": "1"}}]}}]}  # fmt: skip
    assert go_json(spec) == (b'{"rules":[{"hosts":["a"],"http":{"paths":[{"splits":[{"serviceNamespace":"",'
                             b'"serviceName":"s","servicePort":0}],"appendHeaders":{"a":"1",'
                             b'"b":"\\u003c\\u0026\\u003e"}}]}}]}')  # fmt: skip
    assert expanded_hosts(["x.ns.svc.cluster.local", "123"]) == ["x.ns", "x.ns.svc", "x.ns.svc.cluster.local"]


def test_claimed_service_names() -> None:
    assert claimed_service("hello.default") == ("default", "hello")
    assert claimed_service("hello.default.svc.cluster.local") == ("default", "hello")
    assert claimed_service("hello.example.com") is None


def test_status_conditions() -> None:
    info = KIngressInfo(IngressRef("c1", "default", "k", "KIngress"), 3, ("h",), ())
    lb = {c[0]: c[1:3] for c in wanted_conditions(info, (2, 1))}
    assert lb == {"NetworkConfigured": ("True", ""), "LoadBalancerReady": ("Unknown", "Pending"),
                  "Ready": ("Unknown", "Pending")}  # fmt: skip
    assert {c[0]: c[1] for c in wanted_conditions(info, (2, 2))}["Ready"] == "True"
    assert {c[0]: c[1] for c in wanted_conditions(info, (0, 0))}["Ready"] == "True"  # none connected here
    broken = KIngressInfo(info.ref, 3, (), (), ("no Service",))
    assert {c[0]: c[1] for c in wanted_conditions(broken, (1, 1))} == {
        "NetworkConfigured": "False", "LoadBalancerReady": "Unknown", "Ready": "False"}  # fmt: skip
    first = knative_conditions(wanted_conditions(info, (1, 0)), None)
    assert [c["type"] for c in first] == ["LoadBalancerReady", "NetworkConfigured", "Ready"]
    old = [dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in first]
    again = knative_conditions(wanted_conditions(info, (1, 1)), old)
    times = {c["type"]: c["lastTransitionTime"] for c in again}
    assert times["NetworkConfigured"] == "2020-01-01T00:00:00Z" and times["Ready"] != "2020-01-01T00:00:00Z"
    settings_ = KnativeStatusSettings("gw/meridian", "edge.example.internal")
    assert settings_.domain(settings_.public_service) == "meridian.gw.svc.cluster.local"
    assert settings_.domain(settings_.private_service) == "edge.example.internal"


BASE = [service("web"), service("api"), service("hello"),
        kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}]),
                       rule(["hello.default.svc.cluster.local"], [{"splits": [split("api")]}],
                            "ClusterLocal")])]  # fmt: skip


def _variants() -> list[dict[str, Any]]:
    local_gone = copy.deepcopy(BASE[3])
    local_gone["spec"]["rules"] = local_gone["spec"]["rules"][:1]
    moved = copy.deepcopy(BASE[3])
    moved["spec"]["rules"][1]["hosts"] = ["web.default"]
    redirected = copy.deepcopy(BASE[3])
    redirected["spec"]["httpOption"] = "Redirected"
    other = kingress("o", [rule(["o.example.com"], [{"splits": [split("api", 50), split("web", 50)]}])])
    return [local_gone, moved, redirected, other]


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=6))
def test_the_engine_follows_kingress_and_service_changes_as_a_cold_build(steps: list[tuple[int, bool]]) -> None:
    """Add, change and delete KIngresses (cluster-local names moving between Services) and Services:
    after each flush the engine serves exactly what compile serves for the objects that exist."""
    variants = _variants()
    with engine(["c1"], CONFIG) as e:
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for doc in BASE:
            live[(doc["kind"] + doc["apiVersion"], doc["metadata"]["name"])] = doc
        for which, delete in steps:
            doc = variants[which] if which < len(variants) else BASE[which - len(variants)]
            key = (doc["kind"] + doc["apiVersion"], doc["metadata"]["name"])
            if delete:
                live.pop(key, None)
            else:
                live[key] = doc
            parsed = objects(*live.values())["c1"]
            for kind in ("Service", KINGRESS):  # only what really changed reaches the engine
                e.stores["c1"].replace(kind, [obj for k, obj in parsed if k == kind])
            e.controller.flush()
            assert diff(resources(e.cache), cold_build(objects(*live.values()), CONFIG)) == ""


def test_external_name_services_are_resolved_by_envoy() -> None:
    ext = service("mapped")
    ext["spec"].update(type="ExternalName", externalName="meridian-gateway-local.meridian-system.svc.cluster.local")
    c = compiled(ext, kingress("k", [rule(["vanity.example.com"], [
        {"rewriteHost": "hello.default.svc.cluster.local", "splits": [split("mapped")]}])]))  # fmt: skip
    (r,) = routes(c, "vanity.example.com")
    (name,) = [w.cluster for w in r.action.clusters]
    (sc,) = [sc for sc in c.gateway.clusters if sc.name == name]
    assert sc.static_address == ("meridian-gateway-local.meridian-system.svc.cluster.local", 80)
    dumped = snapshot_dict(c.resources)
    (cluster,) = [x for x in dumped[SHORT_NAMES[CLUSTER]] if x["name"] == name]
    assert cluster["type"] == "STRICT_DNS" and cluster["dns_lookup_family"] == "V4_PREFERRED"


def test_a_status_write_does_not_rebuild_the_frontend() -> None:
    """The leader's own status writes come back as KIngress events: they must cost nothing."""
    k = kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}])])
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(service("web"), k)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        built = e.controller.knative.result
        written = copy.deepcopy(k)
        written["metadata"]["resourceVersion"] = "42"
        written["status"] = {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}
        e.stores["c1"].upsert(KINGRESS, written)
        e.controller.flush()
        assert e.controller.knative.result is built
        changed = copy.deepcopy(written)
        changed["metadata"]["generation"] = 3
        changed["spec"]["httpOption"] = "Redirected"
        e.stores["c1"].upsert(KINGRESS, changed)
        e.controller.flush()
        assert e.controller.knative.result is not built
        assert e.controller.knative.result.ingresses[next(iter(built.ingresses))].generation == 3


FULL = kingress("full", [
    rule(["h.example.com"], [
        {"path": "/a", "headers": {"x-tag": {"exact": "v"}}, "appendHeaders": {"x-a": "1"}, "rewriteHost": "r.example",
         "timeout": "10s", "retries": {"attempts": 2, "perTryTimeout": "1s"},
         "splits": [split("web", 60, x_s="1"), split("api", 40)]}]),
    rule(["full.default.svc.cluster.local"], [{"splits": [split("api")]}], "ClusterLocal")],
    httpOption="Redirected",
    tls=[{"hosts": ["h.example.com"], "secretName": "s", "secretNamespace": "default"}])  # fmt: skip
JUNK = st.one_of(st.none(), st.integers(-5, 70000), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.booleans())  # fmt: skip


def _mutate(doc: Any, draw: Any) -> Any:
    """`doc` with one value somewhere replaced by junk (as a file in file mode may hold)."""
    if isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(doc, key=str)))
        return {**doc, key: draw(JUNK) if draw(st.booleans()) else _mutate(doc[key], draw)}
    if isinstance(doc, list) and doc:
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate(doc[i], draw), *doc[i + 1:]]
    return draw(JUNK)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_malformed_kingresses_never_break_the_build(data: st.DataObject) -> None:
    """Whatever a KIngress holds (file mode has no CRD schema), both engines build, agree, and the IR
    is consistent."""
    broken = {**FULL, "spec": _mutate(FULL["spec"], data.draw)}
    docs = [service("web"), service("api"), service("full"), broken]
    c = compiled(*docs)
    assert c.gateway.problems() == []
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(*docs)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        assert diff(resources(e.cache), cold_build(objects(*docs), CONFIG)) == ""


def test_a_secret_that_appears_later_is_picked_up() -> None:
    """A KIngress is rebuilt when a Secret it names changes, though the KIngress itself did not."""
    from tests.support.certs import issue_cert, make_ca, tls_secret

    k = kingress("k", [rule(["h.example.com"], [{"splits": [split("web")]}])],
                 tls=[{"hosts": ["h.example.com"], "secretName": "cert"}])  # fmt: skip
    cert = issue_cert(make_ca(), ["h.example.com"])
    with engine(["c1"], CONFIG) as e:
        for kind, obj in objects(service("web"), k)["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        (info,) = e.controller.knative.result.ingresses.values()
        assert any("cert" in p for p in info.problems)
        for kind, obj in objects(tls_secret("cert", "default", cert.cert, cert.key))["c1"]:
            e.stores["c1"].upsert(kind, obj)
        e.controller.flush()
        (info,) = e.controller.knative.result.ingresses.values()
        assert info.problems == ()
        assert diff(resources(e.cache), cold_build(objects(service("web"), k, tls_secret(
            "cert", "default", cert.cert, cert.key)), CONFIG)) == ""  # fmt: skip


class _Fleet:
    """Two connected gateways at the ACKed versions given (what XdsServer.fleet_acked counts)."""

    def __init__(self) -> None:
        self.served = {"routes": 5}
        self.acked = [5, 4]

    def served_versions(self) -> dict[str, int]:
        return dict(self.served)

    def fleet_acked(self, required: dict[str, int]) -> tuple[int, int]:
        return len(self.acked), sum(1 for v in self.acked if v >= required["routes"])


def test_status_plan_waits_for_acks_the_built_generation_and_a_rollback_pin() -> None:
    from controlplane.knative.build import KnativeResult
    from controlplane.knative.status import KnativeStatusWriter
    from controlplane.store import ClusterRegistry, ClusterStore

    registry = ClusterRegistry()
    store = registry.add(ClusterStore("c1", primary=True))
    obj = kingress("k", [])  # generation 2
    store.upsert(KINGRESS, obj)
    ref = IngressRef("c1", "default", "k", "KIngress")
    result = KnativeResult(ingresses={ref: KIngressInfo(ref, 2, ("h",), ())})
    fleet, pinned = _Fleet(), [True]
    writer = KnativeStatusWriter(registry, lambda: result, KnativeStatusSettings("gw/pub", "gw/priv"), lambda: True,
                                 lambda c: None, acks=lambda: fleet, pinned=lambda: pinned[0])  # fmt: skip

    def lb() -> tuple[str, str]:
        (_, _, _, status), = writer.plan()
        (cond,) = [c for c in status["conditions"] if c["type"] == "LoadBalancerReady"]
        return cond["status"], cond.get("message", "")

    assert lb()[0] == "Unknown" and "rollback pin" in lb()[1] and writer.required == {}
    pinned[0] = False
    assert lb() == ("Unknown", "1 of 2 connected gateway(s) acknowledged generation 2")
    assert writer.required == {(ref, 2): {"routes": 5}}
    fleet.served = {"routes": 9}  # later versions: what this generation needs was recorded already
    fleet.acked = [5, 5]
    assert lb() == ("True", "acknowledged by 2 gateway(s)")
    # The stored object is newer than what the engine built: nothing is written until it catches up.
    store.upsert(KINGRESS, {**obj, "metadata": {**obj["metadata"], "generation": 3}})
    assert writer.plan() == [] and writer.required == {}
