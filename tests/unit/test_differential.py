"""Differential property: the incremental engine serves exactly what a cold build of the final objects serves.

Random sequences of adds, edits and deletes of Ingresses (generated ones with TLS sections, conflicting
hosts and paths, timestamps that tie, annotations of many families; and the real-world manifests of
../shared/corpus/ingress), Knative KIngresses (splits over Services that come and go, public and
cluster-local), IngressClasses, Services, EndpointSlices and TLS Secrets (valid, invalid, deleted) over
two clusters are applied to one running controller, flushed after every event and in
random batches, with one route table and with 4 partitions, while about one flush in ten fails in
the real publish path (the batch after it must make up for it). Its resources (names, content
versions, bytes) must equal those of a fresh controller fed the final objects at once: what a new
replica or a restart would serve. After every flush, no route may name a cluster missing from the
snapshot (Envoy answers such a route 503 `no_cluster`).

The one deliberate history dependence is modelled, not ignored: a Secret that became invalid while
still the same object (same uid, not deleted) keeps serving the last good content the engine saw at
a flush (see controlplane/certificates.py); the cold build is given that content for it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from controlplane.controller import GatewayConfig
from controlplane.engine.invariants import snapshot_dangling_clusters
from controlplane.ingress.classes import ClassPolicy
from controlplane.ingress.secrets import decode_tls_secret
from controlplane.sources.files import parse_manifests
from controlplane.store import ENDPOINT_SLICE, INGRESS, INGRESS_CLASS, KINGRESS, SECRET, SERVICE, ClusterStore
from controlplane.translate import route_tables
from controlplane.translate.partitions import RouteTable
from tests.support.certs import issue_cert, make_ca, tls_secret
from tests.support.snapshots import FlakyCache, InjectedFailure, cold_build, diff, engine, resources, store_objects

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "ingress"

# Deterministic in CI (derandomize, no database); no shrink phase unless asked (HYPOTHESIS_SHRINK=1), so a
# failure costs seconds, and the failing sequence is printed as generated.
DIFFERENTIAL = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "30")),
    phases=(Phase.explicit, Phase.generate, *((Phase.shrink,) if os.environ.get("HYPOTHESIS_SHRINK") else ())),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CLUSTERS = ("east", "west")  # east is the primary; west's objects carry no uid (as in file mode)
NAMESPACES = ("default", "shop")
HOSTS = ("a.example.com", "b.example.com", "*.example.com", None)
PATHS = (("/", "Prefix"), ("/api", "Prefix"), ("/api/", "Prefix"), ("/api/v1", "Exact"),
         ("/x", "ImplementationSpecific"), ("/re(/|$)(.*)", "ImplementationSpecific"))  # fmt: skip
BACKENDS = (("web", 80), ("api", 8080), ("api", "http"), ("ghost", 80))
SECRET_NAMES = ("s1", "s2")
TIMES = (None, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
CLASSES = (None, "nginx", "pin-yi", "other")
FAMILIES: tuple[dict[str, str], ...] = (
    {"ssl-redirect": "false"},
    {"force-ssl-redirect": "true"},
    {"canary": "true", "canary-weight": "30"},
    {"canary": "true", "canary-by-header": "x-canary"},
    {"use-regex": "true", "rewrite-target": "/$2"},
    {"enable-cors": "true", "cors-allow-origin": "https://x.example.com"},
    {"load-balance": "ewma"},
    {"proxy-connect-timeout": "7"},
    {"upstream-hash-by": "$remote_addr"},
    {"affinity": "cookie", "session-cookie-name": "s"},
    {"limit-rps": "5"},
    {"whitelist-source-range": "10.0.0.0/8"},
    {"custom-http-errors": "404,503", "default-backend": "web"},
    {"ssl-passthrough": "true"},
    {"backend-protocol": "GRPC"},
    {"app-root": "/app"},
    {"permanent-redirect": "https://elsewhere.example.com"},
    {"proxy-body-size": "1k"},
    {"service-upstream": "true"},
    {"auth-url": "http://auth.default.svc.cluster.local/verify"},
    {"mirror-target": "http://api.default.svc.cluster.local:8080/m"},
    {"proxy-read-timeout": "abc"},  # invalid: reported, default used
)
MERIDIAN_CLASS = "meridian.io/ingress-controller"

# Valid certificates are made once per session (key generation is the slow part).
_CA = make_ca("differential CA")
_CERTS = (issue_cert(_CA, ["a.example.com", "*.example.com"]), issue_cert(_CA, ["b.example.com"]))


# -- the object pool ---------------------------------------------------------------------------------------
def _corpus() -> list[dict[str, Any]]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        objects, _problems = parse_manifests(path.read_text(encoding="utf-8"))
        out += [obj for kind, obj in objects if kind == INGRESS]
    return out


CORPUS_INGRESSES = _corpus()


def _corpus_references() -> tuple[list[tuple[str, str, Any]], list[tuple[str, str]]]:
    """(namespace, Service, port) backends and (namespace, Secret) TLS names the corpus Ingresses use."""
    services: set[tuple[str, str, Any]] = set()
    secrets: set[tuple[str, str]] = set()
    for obj in CORPUS_INGRESSES:
        ns = obj["metadata"]["namespace"]
        spec = obj.get("spec") or {}
        paths = [p for r in spec.get("rules") or [] for p in (r.get("http") or {}).get("paths") or []]
        backends = [p.get("backend") or {} for p in paths]
        backends.append(spec.get("defaultBackend") or spec.get("backend") or {})
        for b in backends:
            if "service" in b:
                port = b["service"].get("port") or {}
                services.add((ns, b["service"]["name"], port.get("number", port.get("name"))))
            elif "serviceName" in b:
                services.add((ns, b["serviceName"], b.get("servicePort")))
        for t in spec.get("tls") or []:
            if t.get("secretName"):
                secrets.add((ns, t["secretName"]))
    return sorted(services, key=str), sorted(secrets)


CORPUS_SERVICES, CORPUS_SECRETS = _corpus_references()
SERVICE_KEYS = sorted({(ns, n) for ns in NAMESPACES for n, _p in BACKENDS} | {(ns, n) for ns, n, _p in CORPUS_SERVICES})
SECRET_KEYS = sorted({(ns, n) for ns in NAMESPACES for n in SECRET_NAMES} | set(CORPUS_SECRETS))
CORPUS_PORTS: dict[tuple[str, str], set[Any]] = {}
for _ns, _name, _port in CORPUS_SERVICES:
    CORPUS_PORTS.setdefault((_ns, _name), set()).add(_port)


def _service(ns: str, name: str, variant: int) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    if variant == 1:  # the usual shape: every port the Ingresses name, numbered 80.. or by name
        ports = [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "alt", "port": 8080, "targetPort": "http"}]
        for p in sorted(CORPUS_PORTS.get((ns, name), ()), key=str):
            if isinstance(p, int) and p not in (80, 8080):
                ports.append({"name": f"p{p}", "port": p, "targetPort": p})
            elif isinstance(p, str) and p not in ("http", "alt") and not p.isdigit():
                ports.append({"name": p, "port": 9000 + len(ports), "targetPort": p})
    elif variant == 2:  # a single unnamed port
        ports = [{"port": 80, "targetPort": 8080}]
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if variant == 2:
        meta["annotations"] = {"meridian.io/failover": "true"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"ports": ports, "clusterIP": "10.96.0.10"}}  # fmt: skip


def _slice(ns: str, service: str, variant: int) -> dict[str, Any]:
    addresses = (("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", True))[: 1 + variant % 3]
    port_name = "http" if variant < 3 else None
    ports = [{"port": 8080, "protocol": "TCP", **({"name": port_name} if port_name else {})}]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in addresses]}  # fmt: skip


def _secret(ns: str, name: str, variant: str) -> dict[str, Any]:
    if variant == "invalid":
        return tls_secret(name, ns, b"not a certificate", _CERTS[0].key)
    if variant == "mismatch":  # a certificate with another certificate's key
        return tls_secret(name, ns, _CERTS[0].cert, _CERTS[1].key)
    cert = _CERTS[0] if variant == "valid-a" else _CERTS[1]
    return tls_secret(name, ns, cert.cert, cert.key)


def _ingress_class(name: str, default: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
            "spec": {"controller": MERIDIAN_CLASS}}  # fmt: skip


def _annotations(families: list[int], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in families:
        out.update({prefix + k: v for k, v in FAMILIES[i].items()})
    return out


@st.composite
def generated_ingress(draw: st.DrawFn) -> dict[str, Any]:
    def backend() -> dict[str, Any]:
        name, port = draw(st.sampled_from(BACKENDS))
        return {"service": {"name": name, "port": {"number": port} if isinstance(port, int) else {"name": port}}}

    rules = []
    for _ in range(draw(st.integers(0, 2))):
        paths = [{"path": p, "pathType": t, "backend": backend()}
                 for p, t in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True))]  # fmt: skip
        host = draw(st.sampled_from(HOSTS))
        rules.append({**({"host": host} if host else {}), "http": {"paths": paths}})
    spec: dict[str, Any] = {"rules": rules}
    if draw(st.integers(0, 4)) == 0:
        spec["defaultBackend"] = backend()
    tls = [{"hosts": draw(st.lists(st.sampled_from(HOSTS[:3]), min_size=1, max_size=2, unique=True)),
            **({"secretName": s} if (s := draw(st.sampled_from((*SECRET_NAMES, None)))) else {})}
           for _ in range(draw(st.integers(0, 2)))]  # fmt: skip
    if tls:
        spec["tls"] = tls
    cls = draw(st.sampled_from(CLASSES))
    if cls:
        spec["ingressClassName"] = cls
    families = draw(st.lists(st.integers(0, len(FAMILIES) - 1), max_size=3, unique=True))
    prefix = draw(st.sampled_from(("nginx.ingress.kubernetes.io/", "meridian.io/")))
    meta: dict[str, Any] = {"name": draw(st.sampled_from(("one", "two", "three", "four"))),
                            "namespace": draw(st.sampled_from(NAMESPACES)),
                            "annotations": _annotations(families, prefix)}  # fmt: skip
    if created := draw(st.sampled_from(TIMES)):
        meta["creationTimestamp"] = created
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


KNATIVE_CLASS = "networking.knative.dev/ingress.class"
OURS = "meridian.ingress.networking.knative.dev"
KN_BACKENDS = (("web", 80), ("api", 8080), ("api", "http"), ("web", "alt"), ("ghost", 80))
KN_HOSTS = ("k.example.com", "a.example.com", "web.{ns}.svc.cluster.local", "api.{ns}")
KN_NAMES = ("k1", "k2", "k3")


@st.composite
def generated_kingress(draw: st.DrawFn) -> dict[str, Any]:
    """A Knative KIngress (ours, or now and then another class's) splitting over the common Services,
    public or cluster-local (a cluster-local host of a Service's name takes over its east-west names)."""
    ns = draw(st.sampled_from(NAMESPACES))

    def split(percent: int) -> dict[str, Any]:
        name, port = draw(st.sampled_from(KN_BACKENDS))
        out: dict[str, Any] = {"serviceNamespace": ns, "serviceName": name, "servicePort": port, "percent": percent}
        if draw(st.booleans()):
            out["appendHeaders"] = {"Who-Are-You": f"{name}-{draw(st.integers(0, 3))}"}
        return out

    rules = []
    for _ in range(draw(st.integers(1, 2))):
        hosts = draw(st.lists(st.sampled_from(KN_HOSTS), min_size=1, max_size=2, unique=True))
        paths = []
        for path in draw(st.lists(st.sampled_from(("/", "/api")), min_size=1, max_size=2, unique=True)):
            first = draw(st.sampled_from((100, 70, 50)))
            paths.append({"path": path, "splits": [split(first)] + ([split(100 - first)] if first < 100 else [])})
        rules.append({"hosts": [h.format(ns=ns) for h in hosts], "http": {"paths": paths},
                      "visibility": draw(st.sampled_from(("ExternalIP", "ClusterLocal")))})  # fmt: skip
    spec: dict[str, Any] = {"rules": rules, "httpOption": draw(st.sampled_from(("Enabled", "Redirected")))}
    if draw(st.integers(0, 3)) == 0:
        spec["tls"] = [{"hosts": ["k.example.com"], "secretName": draw(st.sampled_from(SECRET_NAMES)),
                        "secretNamespace": ns}]  # fmt: skip
    cls = draw(st.sampled_from((OURS,) * 4 + ("kourier.ingress.networking.knative.dev",)))
    meta: dict[str, Any] = {"name": draw(st.sampled_from(KN_NAMES)), "namespace": ns,
                            "annotations": {KNATIVE_CLASS: cls}, "generation": draw(st.integers(1, 3))}  # fmt: skip
    if created := draw(st.sampled_from(TIMES)):
        meta["creationTimestamp"] = created
    return {"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress", "metadata": meta,
            "spec": spec}  # fmt: skip


@st.composite
def corpus_ingress(draw: st.DrawFn) -> dict[str, Any]:
    """A real-world manifest, as written or edited (extra annotations, an age)."""
    obj = copy.deepcopy(draw(st.sampled_from(CORPUS_INGRESSES)))
    if draw(st.booleans()):
        families = draw(st.lists(st.integers(0, len(FAMILIES) - 1), min_size=1, max_size=2, unique=True))
        obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}),
                                          **_annotations(families, "nginx.ingress.kubernetes.io/")}  # fmt: skip
    if created := draw(st.sampled_from(TIMES)):
        obj["metadata"]["creationTimestamp"] = created
    return obj


@dataclass(frozen=True)
class Op:
    cluster: str
    kind: str
    key: tuple[str, str]  # (namespace, name)
    obj: dict[str, Any] | None = field(default=None, compare=False)  # None: delete

    def __repr__(self) -> str:  # short enough to read a failing sequence
        what = "delete" if self.obj is None else "upsert"
        return f"{what} {self.cluster} {self.kind} {'/'.join(self.key)}"


@dataclass(frozen=True)
class Step:
    op: Op
    flush: bool  # flush after it (when batching)
    fail: bool  # that flush's publish fails (the next flush must then publish what a cold build would)

    def __repr__(self) -> str:
        return f"{self.op!r}{' | flush' if self.flush else ''}{' (fails)' if self.fail else ''}"


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def _upsert(cluster: str, kind: str, obj: Any) -> Op:
    return Op(cluster, kind, _key(obj), obj)


clusters = st.sampled_from(CLUSTERS)
COMMON_SERVICES = [(ns, n) for ns in NAMESPACES for n in ("web", "api")]
COMMON_SECRETS = [(ns, n) for ns in NAMESPACES for n in SECRET_NAMES]
# Keys the generated objects use most, or any key of the pool (the corpus's own Services and Secrets).
service_keys = st.one_of(*[st.sampled_from(COMMON_SERVICES)] * 2, st.sampled_from(SERVICE_KEYS))
secret_keys = st.one_of(*[st.sampled_from(COMMON_SECRETS)] * 3, st.sampled_from(SECRET_KEYS))
secret_variants = st.sampled_from(("valid-a", "valid-b", "invalid", "mismatch"))
generated_upserts = st.builds(_upsert, clusters, st.just(INGRESS), generated_ingress())
kingress_upserts = st.builds(_upsert, clusters, st.just(KINGRESS), generated_kingress())
secret_upserts = st.builds(lambda c, k, v: _upsert(c, SECRET, _secret(*k, v)), clusters, secret_keys, secret_variants)
upserts = st.one_of(
    generated_upserts,
    generated_upserts,
    st.builds(_upsert, clusters, st.just(INGRESS), corpus_ingress()),
    kingress_upserts,
    st.builds(lambda c, k, v: _upsert(c, SERVICE, _service(*k, v)), clusters, service_keys, st.integers(0, 2)),
    st.builds(lambda c, k, v: _upsert(c, ENDPOINT_SLICE, _slice(*k, v)), clusters, service_keys, st.integers(0, 3)),
    secret_upserts,
    secret_upserts,
    st.builds(lambda c, n, d: _upsert(c, INGRESS_CLASS, _ingress_class(n, d)), clusters,
              st.sampled_from(("pin-yi", "mine")), st.booleans()),
)  # fmt: skip
GENERATED_KEYS = [(ns, n) for ns in NAMESPACES for n in ("one", "two", "three", "four")]
deletable = st.one_of(
    st.tuples(st.just(INGRESS), st.sampled_from(GENERATED_KEYS)),
    st.tuples(st.just(INGRESS), st.sampled_from([_key(o) for o in CORPUS_INGRESSES])),
    st.tuples(st.just(KINGRESS), st.sampled_from([(ns, n) for ns in NAMESPACES for n in KN_NAMES])),
    st.tuples(st.sampled_from((SERVICE, ENDPOINT_SLICE)), service_keys).map(
        lambda kk: (kk[0], kk[1] if kk[0] == SERVICE else (kk[1][0], f"{kk[1][1]}-x"))
    ),
    st.tuples(st.just(SECRET), secret_keys),
    st.tuples(st.just(INGRESS_CLASS), st.sampled_from((("", "pin-yi"), ("", "mine")))),
)
deletes = st.one_of(
    st.builds(lambda c, kk: Op(c, kk[0], kk[1]), clusters, deletable),
    st.builds(lambda c, k: Op(c, SECRET, k), clusters, secret_keys),  # the case most likely to leave traces
)


def _service_with_slice(cluster: str, ns: str, name: str) -> list[Op]:
    return [_upsert(cluster, SERVICE, _service(ns, name, 1)), _upsert(cluster, ENDPOINT_SLICE, _slice(ns, name, 1))]


def _corpus_bundle(cluster: str, obj: dict[str, Any]) -> list[Op]:
    """A real-world Ingress with the Services, EndpointSlices and valid Secrets it names."""
    ns = obj["metadata"]["namespace"]
    ops = [_upsert(cluster, INGRESS, obj)]
    for sns, name, _port in CORPUS_SERVICES:
        if sns == ns:
            ops += _service_with_slice(cluster, ns, name)
    ops += [_upsert(cluster, SECRET, _secret(ns, name, "valid-a")) for sns, name in CORPUS_SECRETS if sns == ns]
    return ops


@st.composite
def scenarios(draw: st.DrawFn) -> list[Step]:
    """A populated world built step by step (so that most Ingresses are served), then random changes;
    after each, maybe a flush (batches), and maybe a failure of that flush's publish."""
    ops: list[Op] = []
    for cluster in draw(st.sampled_from((("east",), ("east", "west")))):
        for ns, name in COMMON_SERVICES:
            ops += _service_with_slice(cluster, ns, name)
        ops += [_upsert(cluster, SECRET, _secret(ns, name, "valid-a")) for ns, name in COMMON_SECRETS]
    ops.append(_upsert("east", INGRESS_CLASS, _ingress_class("pin-yi", False)))
    for _ in range(draw(st.integers(1, 4))):
        ops += _corpus_bundle(draw(clusters), draw(corpus_ingress()))
    ops += draw(st.lists(st.builds(_upsert, clusters, st.just(INGRESS), generated_ingress()), min_size=2, max_size=6))
    ops += draw(st.lists(kingress_upserts, max_size=3))
    ops += draw(st.lists(st.one_of(upserts, upserts, deletes), min_size=5, max_size=40))
    flushes = draw(st.lists(st.booleans(), min_size=len(ops), max_size=len(ops)))
    fails = draw(st.lists(st.integers(0, 9).map(lambda i: i == 0), min_size=len(ops), max_size=len(ops)))
    return [Step(*s) for s in zip(ops, flushes, fails, strict=True)]


# -- running a sequence ----------------------------------------------------------------------------------------
class LastGood:
    """The documented exception, as a model: per Secret, the content it keeps serving while invalid."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str, str], dict[str, Any]] = {}

    def after_flush(self, stores: Mapping[str, ClusterStore], touched: set[tuple[str, str, str]],
                    deleted: set[tuple[str, str, str]]) -> None:  # fmt: skip
        for cid, ns, name in touched:
            skey = (cid, ns, name)
            obj = stores[cid].get(SECRET, ns, name)
            last = self.kept.pop(skey, None)
            if obj is None:
                continue
            try:
                decode_tls_secret(obj)
            except ValueError:
                if last is not None and skey not in deleted and _uid(last) == _uid(obj):
                    self.kept[skey] = last
                continue
            self.kept[skey] = obj

    def effective(self, objects: dict[str, list[tuple[str, Any]]]) -> dict[str, list[tuple[str, Any]]]:
        """The final objects, with each invalid Secret replaced by the last good content it still serves."""
        out: dict[str, list[tuple[str, Any]]] = {}
        for cid, objs in objects.items():
            out[cid] = [(kind, self.kept.get((cid, *_key(obj)), obj) if kind == SECRET else obj) for kind, obj in objs]
        return out


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


CONFIG = GatewayConfig(classes=ClassPolicy(frozenset({"meridian", "nginx"}), watch_without_class=False))


class _RouteTableNoLinger(RouteTable):
    def __init__(self, base: str, **kw: Any) -> None:
        super().__init__(base, **{**kw, "linger": 0.0})


def run(steps: list[Step], every_event: bool, config: GatewayConfig = CONFIG) -> None:
    uids = itertools.count(1)
    cache = FlakyCache()
    # An old partition layout stays published for draining listeners (RETIRED_LINGER_S, time-bound by
    # design); compare at a time after that, as a cold build is.
    with mock.patch.object(route_tables, "RouteTable", _RouteTableNoLinger), engine(CLUSTERS, config, cache) as e:
        model = LastGood()
        touched: set[tuple[str, str, str]] = set()
        deleted: set[tuple[str, str, str]] = set()

        def flush(fail: bool = False) -> None:
            cache.armed = fail
            e.controller.flush()
            # Whatever the order of the changes, a route never names a cluster its snapshot lacks.
            dangling = snapshot_dangling_clusters(e.cache)
            assert not dangling, f"routes name clusters missing from the snapshot: {dangling}"
            # An injected failure is in the publish, after the certificates were read: the model follows too.
            model.after_flush(e.stores, touched, deleted)
            touched.clear()
            deleted.clear()

        for step in steps:
            op = step.op
            store = e.stores[op.cluster]
            if op.kind == SECRET:
                touched.add((op.cluster, *op.key))
            if op.obj is None:
                if op.kind == SECRET and store.get(SECRET, *op.key) is not None:
                    deleted.add((op.cluster, *op.key))
                store.delete(op.kind, *op.key)
            else:
                obj = copy.deepcopy(op.obj)
                if op.cluster == "east":  # the API server gives each object a uid when it is created
                    old = store.get(op.kind, *op.key)
                    obj["metadata"]["uid"] = old["metadata"]["uid"] if old else f"uid-{next(uids)}"
                store.upsert(op.kind, obj)
            if every_event or step.flush:
                flush(step.fail)
        flush()
        got = resources(e.cache)
        want = cold_build(model.effective(store_objects(e.stores)), config)
        assert got == want, "incremental != cold build:\n" + diff(got, want)


@pytest.fixture(scope="module")
def no_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the controller (it logs and swallows a failing batch): there must be none."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("controlplane")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_pool_uses_the_corpus() -> None:
    assert len(CORPUS_INGRESSES) >= 40 and CORPUS_SECRETS and CORPUS_SERVICES


@pytest.mark.parametrize("partitions", [None, 4], ids=["one-table", "4-partitions"])
@DIFFERENTIAL
@given(steps=scenarios())
def test_incremental_equals_cold_build(
    partitions: int | None, steps: list[Step], no_errors: list[logging.LogRecord]
) -> None:
    config = dataclasses.replace(CONFIG, route_partitions=partitions)
    try:
        run(steps, every_event=True, config=config)
        run(steps, every_event=False, config=config)
        unexpected = [r for r in no_errors if not (r.exc_info and isinstance(r.exc_info[1], InjectedFailure))]
        assert not unexpected, f"the controller failed: {unexpected[0].getMessage()}"
    finally:
        no_errors.clear()


def test_kingress_tls_secret_made_invalid_keeps_its_last_good_certificate() -> None:
    """Found by the property with KIngress tls sections: a KIngress's Secret turned invalid (same object)
    stopped being served, where an Ingress's keeps its last good certificate (certificates.py) and a
    cold build, given that content, serves it."""
    kingress = {"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
                "metadata": {"name": "k2", "namespace": "default", "annotations": {KNATIVE_CLASS: OURS}},
                "spec": {"rules": [{"hosts": ["k.example.com"], "visibility": "ClusterLocal", "http": {"paths": [
                    {"path": "/", "splits": [{"serviceNamespace": "default", "serviceName": "web",
                                              "servicePort": 80, "percent": 100}]}]}}],
                         "tls": [{"hosts": ["k.example.com"], "secretName": "s1"}]}}  # fmt: skip
    steps = [Step(_upsert("west", KINGRESS, kingress), flush=True, fail=False),
             Step(_upsert("west", SECRET, _secret("default", "s1", "valid-a")), flush=True, fail=True),
             Step(_upsert("west", SECRET, _secret("default", "s1", "invalid")), flush=False, fail=False)]  # fmt: skip
    run(steps, every_event=False)
