"""Fuzzing the annotation families and the Ingress builder with hypothesis.

Generated annotation values (every known key, both prefixes, adversarial values) and Ingress specs
(odd hosts, paths, pathTypes, backends, TLS entries) must never raise, never crash a family (a
crash becomes an "internal error" rejection), and never change the config of another Ingress on a
different host. Whether Envoy accepts the generated config is checked on a sample in
tests/e2e/test_fuzz_envoy.py. Deterministic: derandomized, bounded example counts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress.annotations.base import MERIDIAN_PREFIX, NGINX_PREFIX
from controlplane.ingress.classes import ClassPolicy
from controlplane.ingress.convert import Lookups, build_ingress, normalize_host
from controlplane.ingress.registry import FAMILIES, NOT_APPLICABLE, UNSUPPORTED
from controlplane.ir import IngressRef
from controlplane.metrics import Metrics
from controlplane.services import ServiceIndex
from controlplane.store import ENDPOINT_SLICE, INGRESS, SECRET, SERVICE, ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache

# No shrink phase: shrinking a failing batch can take minutes, so CI stays bounded; the failing
# example is printed as generated. Set HYPOTHESIS_SHRINK=1 locally to get a minimal one.
FUZZ = settings(
    derandomize=True,
    phases=(Phase.explicit, Phase.generate, *((Phase.shrink,) if os.environ.get("HYPOTHESIS_SHRINK") else ())),
    print_blob=False,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# Every key of the ingress-nginx annotation page (so keys are fuzzed before their family lands),
# plus every key a registered family owns, the not-applicable and unsupported lists, and junk.
_DOC_KEYS_TEXT = (
    "canary canary-by-header canary-by-header-value canary-by-header-pattern canary-by-cookie canary-weight "
    "canary-weight-total rewrite-target use-regex app-root x-forwarded-prefix upstream-vhost ssl-redirect "
    "force-ssl-redirect permanent-redirect permanent-redirect-code temporal-redirect temporal-redirect-code "
    "enable-cors cors-allow-origin cors-allow-methods cors-allow-headers cors-expose-headers "
    "cors-allow-credentials cors-max-age proxy-connect-timeout proxy-read-timeout proxy-send-timeout "
    "proxy-next-upstream proxy-next-upstream-tries proxy-next-upstream-timeout load-balance upstream-hash-by "
    "affinity affinity-mode session-cookie-name session-cookie-path session-cookie-max-age "
    "session-cookie-expires session-cookie-samesite session-cookie-secure backend-protocol proxy-ssl-verify "
    "proxy-ssl-secret proxy-ssl-name proxy-ssl-server-name whitelist-source-range allowlist-source-range "
    "denylist-source-range limit-rps limit-rpm limit-burst-multiplier limit-whitelist limit-connections "
    "proxy-body-size auth-url auth-signin auth-response-headers auth-method mirror-target service-upstream "
    "default-backend custom-http-errors auth-type auth-secret auth-secret-type auth-realm auth-tls-secret "
    "auth-tls-verify-client auth-tls-verify-depth auth-tls-pass-certificate-to-upstream ssl-passthrough "
    "ssl-ciphers ssl-protocols server-snippet configuration-snippet"
)
DOC_KEYS = _DOC_KEYS_TEXT.split()
KEYS = sorted(
    set(DOC_KEYS)
    | {k for f in FAMILIES for k in f.keys}
    | set(NOT_APPLICABLE)
    | set(UNSUPPORTED)
    | {"not-a-key", "Rewrite-Target", " use-regex "}
)

ADVERSARIAL = [
    "", " ", "\t\n", "true", "false", "TRUE", "yes", "0", "1", "-1", "00", "1e3", "3.5", "NaN", "inf",
    "99999999999999999999999", "-99999999999999999999", "2147483648", "4294967296", "65536", "1m", "8m", "1k",
    "10000m", "1g", "100M", "5s", "1h", "0.5", "-5s", "ms", "☃", "é/ü", "\x00", "\u202e", "$1", "$2$3", "/$1/$2",
    "${1}", "$host$request_uri", "$request_uri", "$remote_addr", "$http_x_user", "$arg_id", "$cookie_sess",
    "$http_", "$", "(", ")", "(.*", "[a-", "\\", ".*", "^/a$", "(?i)x", "(?P<n>x)", "a{99999}", "*", "**",
    ",", ",,,", "a,,b", " , ", "10.0.0.0/8", "10.0.0.0/33", "300.1.1.1", "1.2.3.4/-1", "::1/129", "fe80::/10",
    "127.0.0.1", "0.0.0.0/0", "10.0.0.0/8, 192.168.0.0/16,", "10.0.0.0/8\n172.16.0.0/12", "not-a-cidr",
    "http://", "https://example.com", "http://auth.default.svc.cluster.local:8080/auth?x=$request_uri",
    "ftp://x", "//x", "http://[::1", "http://a b/", "https://example.com:99999/", "http://$host/oauth2/auth",
    "https://a.example.com, https://*.b.example.com", "https://*.*.example.com", "null", "~", "GET", "PUT,FOO",
    "GRPC", "GRPCS", "HTTPS", "HTTP2", "FCGI", "AUTO_HTTP", "grpc", "cookie", "ewma", "least_conn", "random",
    "round_robin", "basic", "digest", "on", "off", "optional", "optional_no_ca", "TLSv1.2 TLSv1.3", "SSLv3",
    "ECDHE-RSA-AES128-GCM-SHA256:!aNULL", "web", "default/web", "missing", "default/tls-good", "tls-bad", "/",
    "/x", "x", "404,503", "600", "99,abc", "error timeout http_502", "off non_idempotent", "Strict", "None",
    "a" * 5000,
]  # fmt: skip


def values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ADVERSARIAL),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(max_size=40),
        st.lists(st.sampled_from(ADVERSARIAL[:120]), min_size=2, max_size=4).map(",".join),
    )


# Valid values per key, so that whole families get switched on together (a crash in a feature
# often needs several of its keys set sensibly at once, e.g. auth-url + auth-signin).
PLAUSIBLE: dict[str, list[str]] = {
    "canary": ["true"], "canary-weight": ["30", "0", "100"], "canary-weight-total": ["1000"],
    "canary-by-header": ["X-Canary"], "canary-by-header-value": ["yes"], "canary-by-header-pattern": ["^a|b$"],
    "canary-by-cookie": ["canary"], "rewrite-target": ["/$2", "/"], "use-regex": ["true"], "app-root": ["/app"],
    "x-forwarded-prefix": ["/p"], "upstream-vhost": ["up.example"], "ssl-redirect": ["false"],
    "force-ssl-redirect": ["true"], "permanent-redirect": ["https://example.com/x"], "permanent-redirect-code": ["308"],
    "temporal-redirect": ["https://example.com"], "temporal-redirect-code": ["307"], "enable-cors": ["true"],
    "cors-allow-origin": ["https://a.example.com, https://*.b.example.com"], "cors-allow-methods": ["GET, POST"],
    "cors-allow-headers": ["X-A,X-B"], "cors-expose-headers": ["X-E"], "cors-allow-credentials": ["false"],
    "cors-max-age": ["600"], "proxy-connect-timeout": ["3"], "proxy-read-timeout": ["120"],
    "proxy-send-timeout": ["30"], "proxy-next-upstream": ["error timeout http_502"], "proxy-next-upstream-tries": ["5"],
    "proxy-next-upstream-timeout": ["10"], "load-balance": ["ewma", "least_conn", "random"],
    "upstream-hash-by": ["$remote_addr", "$http_x_user", "$arg_id", "$cookie_s", "$request_uri", "$host"],
    "affinity": ["cookie"], "affinity-mode": ["persistent"], "session-cookie-name": ["S"],
    "session-cookie-path": ["/"], "session-cookie-max-age": ["3600"], "session-cookie-expires": ["3600"],
    "session-cookie-samesite": ["Strict"], "session-cookie-secure": ["true"],
    "backend-protocol": ["HTTPS", "GRPC", "GRPCS", "HTTP2", "FCGI"], "proxy-ssl-verify": ["on"],
    "proxy-ssl-secret": ["default/tls-good"], "proxy-ssl-name": ["web.internal"], "proxy-ssl-server-name": ["on"],
    "whitelist-source-range": ["127.0.0.1/32,10.0.0.0/8"], "allowlist-source-range": ["0.0.0.0/0"],
    "denylist-source-range": ["192.0.2.0/24"], "limit-rps": ["5"], "limit-rpm": ["100"],
    "limit-burst-multiplier": ["3"], "limit-whitelist": ["10.0.0.0/8"], "limit-connections": ["10"],
    "proxy-body-size": ["8m", "0", "1k"], "auth-url": ["http://web.default.svc.cluster.local/auth"],
    "auth-signin": ["https://login.example.com/start?rd=$escaped_request_uri"], "auth-response-headers": ["X-User"],
    "auth-method": ["GET"], "mirror-target": ["http://web.default.svc:80$request_uri"], "service-upstream": ["true"],
    "default-backend": ["web"], "custom-http-errors": ["404,503"], "auth-type": ["basic"], "auth-secret": ["web"],
    "auth-secret-type": ["auth-file"], "auth-realm": ["Fuzz realm"], "auth-tls-secret": ["default/tls-good"],
    "auth-tls-verify-client": ["on", "optional"], "auth-tls-verify-depth": ["2"],
    "auth-tls-pass-certificate-to-upstream": ["true"], "ssl-passthrough": ["true"],
    "ssl-ciphers": ["ECDHE-RSA-AES128-GCM-SHA256"], "ssl-protocols": ["TLSv1.2 TLSv1.3", "TLSv1.3"],
}  # fmt: skip


def _group_annotations(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """All keys of one family, each plausible or adversarial."""
    prefix = st.sampled_from([NGINX_PREFIX, MERIDIAN_PREFIX])
    parts = [
        st.tuples(prefix.map(lambda p, k=k: p + k), st.one_of(st.sampled_from(PLAUSIBLE.get(k, ["true"])), values()))
        for k in keys
    ]
    return st.tuples(*parts).map(dict) if parts else st.just({})


GROUPS = [tuple(f.keys) for f in FAMILIES if f.keys]


def annotations() -> st.SearchStrategy[dict[str, Any]]:
    key = st.tuples(st.sampled_from([NGINX_PREFIX, MERIDIAN_PREFIX]), st.sampled_from(KEYS)).map("".join)
    value = st.one_of(values(), st.sampled_from([None, 5, True]))  # YAML can give non-strings
    loose = st.dictionaries(key, value, max_size=7)
    if not GROUPS:
        return loose
    families = st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3).flatmap(
        lambda groups: st.tuples(*(_group_annotations(g) for g in groups))
    )
    return st.tuples(loose, families).map(lambda t: {k: v for d in (t[0], *t[1]) for k, v in d.items()})


BYSTANDER_HOST = "bystander.example.com"
HOSTS = [
    "a.fuzz.example", "b.fuzz.example", "*.fuzz.example", "*", "", "A.Fuzz.Example", "a.fuzz.example.",
    "bad_host", "a..b", "-x.example", "x" * 64 + ".example", "ünï.example", "1.2.3.4", "host:80", "*.*.example",
    "*example.com", "example.com", "localhost",
]  # fmt: skip
PATHS = [
    "/", "", "/a", "/a/", "/a/b", "//", "/a(/|$)(.*)", "/api/(.*)", "/.*", "/*", "/[a-z]+", "/(", "/a{2,}",
    "/é", "/a b", "a", "/\\", "/$", "/a?x=1", "/a#f", "/%2e%2e/", "/a/../b", "/" + "a" * 3000,
]  # fmt: skip
PATH_TYPES = ["Exact", "Prefix", "ImplementationSpecific", None, "", "prefix", "Regex"]


def hosts(exclude: str | None = None) -> st.SearchStrategy[str]:
    labels = st.from_regex(r"[a-z0-9][a-z0-9-]{0,9}", fullmatch=True).map(lambda s: f"{s}.gen.example")
    strat = st.one_of(st.sampled_from(HOSTS), labels, st.text(max_size=20))
    return strat.filter(lambda h: exclude is None or normalize_host(h) != exclude) if exclude else strat


def backends() -> st.SearchStrategy[Any]:
    name = st.sampled_from(["web", "web", "missing", "", "Web", "a" * 300])
    port = st.one_of(
        st.fixed_dictionaries({"number": st.sampled_from([80, 80, 8080, 0, -1, 65536, 81, "80", "x"])}),
        st.fixed_dictionaries({"name": st.sampled_from(["http", "alt", "nope", ""])}),
        st.just({}),
    )
    return st.one_of(
        st.builds(lambda n, p: {"service": {"name": n, "port": p}}, name, port),
        st.builds(lambda n, p: {"serviceName": n, "servicePort": p}, name, st.sampled_from([80, "80", "http", None])),
        st.just({"resource": {"kind": "Bucket", "name": "b"}}),
        st.just({}),
        st.none(),
    )


def ingress_specs(exclude_host: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    path = st.fixed_dictionaries(
        {"path": st.sampled_from(PATHS), "pathType": st.sampled_from(PATH_TYPES), "backend": backends()}
    )
    rule = st.fixed_dictionaries(
        {"http": st.fixed_dictionaries({"paths": st.lists(path, max_size=3)})},
        optional={"host": hosts(exclude_host)},
    )
    tls = st.fixed_dictionaries(
        {},
        optional={
            "hosts": st.lists(hosts(exclude_host), max_size=2),
            "secretName": st.sampled_from(["tls-good", "tls-missing", "tls-bad", ""]),
        },
    )
    return st.fixed_dictionaries(
        {"rules": st.lists(rule, max_size=3)},
        optional={
            "tls": st.lists(tls, max_size=2),
            "defaultBackend": backends(),
            "ingressClassName": st.sampled_from(["nginx", "meridian", "other"]),
        },
    )


def ingress_objects(exclude_host: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda ann, spec, api: {
            "apiVersion": api,
            "kind": "Ingress",
            "metadata": {"name": "fuzzed", "namespace": "default", "annotations": ann},
            "spec": spec,
        },
        annotations(),
        ingress_specs(exclude_host),
        st.sampled_from(["networking.k8s.io/v1", "networking.k8s.io/v1", "extensions/v1beta1"]),
    )


# -- supporting objects (real Service, EndpointSlice and Secrets) -------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _self_signed() -> tuple[bytes, bytes]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.fuzz.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


CERT, KEY = _self_signed()


def supporting_objects(echo_port: int = 9) -> list[tuple[str, dict[str, Any]]]:
    meta = {"namespace": "default"}
    return [
        (SERVICE, {"kind": "Service", "metadata": {"name": "web", **meta},
                   "spec": {"ports": [{"name": "http", "port": 80}, {"name": "alt", "port": 8080}]}}),
        (ENDPOINT_SLICE, {"kind": "EndpointSlice", "addressType": "IPv4",
                          "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}, **meta},
                          "ports": [{"name": "http", "port": echo_port}, {"name": "alt", "port": echo_port}],
                          "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}),
        (SECRET, {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "tls-good", **meta},
                  "data": {"tls.crt": _b64(CERT), "tls.key": _b64(KEY), "ca.crt": _b64(CERT)}}),
        (SECRET, {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "tls-bad", **meta},
                  "data": {"tls.crt": _b64(b"garbage"), "tls.key": _b64(b"garbage"), "auth": _b64(b"x")}}),
        (SECRET, {"kind": "Secret", "type": "Opaque", "metadata": {"name": "web", **meta},
                  "data": {"auth": _b64(b"user:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")}}),
    ]  # fmt: skip


def bystander() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "bystander", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {
            "rules": [
                {
                    "host": BYSTANDER_HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


class ErrorLog(logging.Handler):
    """Collects ERROR records: the controller logs (and swallows) exceptions of a batch."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("controlplane")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Engine:
    """A real Controller over a real ClusterStore, flushed synchronously."""

    def __init__(self) -> None:
        self.registry = ClusterRegistry()
        self.cache = SnapshotCache()
        classes = ClassPolicy(frozenset({"nginx", "meridian"}), watch_without_class=True)
        self.controller = Controller(self.registry, self.cache, Metrics(), GatewayConfig(classes=classes))
        self.store = self.registry.add(ClusterStore("c1", primary=True))
        self.loop = asyncio.new_event_loop()
        self.controller.attach(self.loop)
        for kind, obj in supporting_objects():
            self.store.upsert(kind, obj)
        self.store.mark_synced()

    def flush(self) -> None:
        self.controller.flush()

    def close(self) -> None:
        self.loop.close()

    def decoded(self, type_url: str) -> dict[str, Any]:
        snap = self.cache.get(type_url)
        return {n: rt.decode(type_url, r.any_bytes) for n, r in snap.resources.items()}

    def bystander_view(self) -> dict[str, Any]:
        """The bystander's virtual hosts (per route table), clusters and endpoints, decoded."""
        view: dict[str, Any] = {}
        clusters: set[str] = set()
        for name, rc in self.decoded(rt.ROUTE).items():
            for vh in rc.get("virtual_hosts", []):
                if BYSTANDER_HOST in vh.get("domains", []):
                    view[f"route:{name}"] = vh
                    for r in vh.get("routes", []):
                        c = (r.get("route") or {}).get("cluster")
                        if c:
                            clusters.add(c)
        cds, eds = self.decoded(rt.CLUSTER), self.decoded(rt.ENDPOINT)
        for c in sorted(clusters):
            view[f"cluster:{c}"] = cds.get(c)
            view[f"endpoints:{c}"] = eds.get(c)
        return view


def _lookups() -> Lookups:
    index = ServiceIndex()
    secrets: dict[tuple[str, str, str], dict[str, Any]] = {}
    for kind, obj in supporting_objects():
        if kind == SERVICE:
            index.set_service("c1", "default", obj["metadata"]["name"], obj)
        elif kind == SECRET:
            secrets[("c1", "default", obj["metadata"]["name"])] = obj
    return Lookups(resolve_port=index.resolve_port, get_secret=lambda c, ns, n: secrets.get((c, ns, n)))


LOOKUPS = _lookups()


@settings(FUZZ, max_examples=150)
@given(obj=ingress_objects())
def test_build_ingress_never_raises_nor_crashes_a_family(obj: dict[str, Any]) -> None:
    ref = IngressRef("c1", "default", "fuzzed")
    ir = build_ingress(obj, ref, class_accepted=True, lookups=LOOKUPS)
    crashes = [f for f in ir.findings if "internal error" in f.message]
    assert not crashes, f"a family raised: {crashes}"
    # Every annotation key is accounted for in the report (nothing silently ignored).
    reported = {f.key for f in ir.findings}
    for full in obj["metadata"]["annotations"]:
        short = full.split("/", 1)[1].strip()
        assert (
            short in reported
            or short in ("failover", "cluster", "cluster-id")
            or any(f.level == "rejected" for f in ir.findings)
        ), f"{full!r} not reported"


@settings(FUZZ, max_examples=60)
@given(obj=ingress_objects(exclude_host=BYSTANDER_HOST))
def test_fuzzed_ingress_never_changes_a_bystander(obj: dict[str, Any], error_log: ErrorLog) -> None:
    engine = Engine()
    try:
        engine.store.upsert(INGRESS, bystander())
        engine.flush()
        alone = engine.bystander_view()
        assert any(k.startswith("route:") for k in alone), "the bystander has no virtual host"
        engine.store.upsert(INGRESS, obj)
        engine.flush()
        assert not error_log.records, f"the controller failed: {error_log.records[-1].getMessage()}"
        together = engine.bystander_view()
        assert together == alone, "the fuzzed Ingress changed the bystander's config"
        # Removing it again restores exactly the bystander-only config.
        engine.store.delete(INGRESS, "default", "fuzzed")
        engine.flush()
        assert engine.bystander_view() == alone
        assert not error_log.records, f"the controller failed: {error_log.records[-1].getMessage()}"
    finally:
        error_log.records.clear()
        engine.close()


@settings(FUZZ, max_examples=20)
@given(objs=st.lists(ingress_objects(), min_size=2, max_size=6))
def test_many_fuzzed_ingresses_in_one_batch_and_then_removed(objs: list[dict[str, Any]], error_log: ErrorLog) -> None:
    """Fuzzed Ingresses sharing hosts (merges, conflicts, canaries) build; removing them all empties the routes."""
    engine = Engine()
    try:
        engine.flush()
        empty = engine.decoded(rt.ROUTE)
        for i, obj in enumerate(objs):
            obj["metadata"]["name"] = f"fuzzed-{i}"
            engine.store.upsert(INGRESS, obj)
        engine.flush()
        assert not error_log.records, f"the controller failed: {error_log.records[-1].getMessage()}"
        reports = engine.controller.ingress_reports()
        assert len(reports) == len(objs)
        for r in reports:
            assert not [f for f in r["findings"] if "internal error" in f["message"]], r
        for i in range(len(objs)):
            engine.store.delete(INGRESS, "default", f"fuzzed-{i}")
        engine.flush()
        assert not error_log.records, f"the controller failed: {error_log.records[-1].getMessage()}"
        assert engine.decoded(rt.ROUTE) == empty, "routes left behind after every Ingress was deleted"
    finally:
        error_log.records.clear()
        engine.close()
