"""The shared corpus of real-world ingress-nginx manifests: offline translation, then all of it in one gateway.

The corpus is verbatim user YAML (old APIs, unknown keys, invalid values). Every file must translate
without an exception and with every annotation key reported; loaded together into a real gateway the
config must be ACKed by Envoy, and one request per host must get the answer ingress-nginx would give
(for the annotation families registered at the time the test runs).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import re
import shutil
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.controller import GatewayConfig
from controlplane.ingress.annotations.base import MERIDIAN_PREFIX, NGINX_PREFIX
from controlplane.ingress.classes import ClassPolicy
from controlplane.ingress.convert import normalize_host, valid_host
from controlplane.ingress.registry import FAMILIES
from controlplane.offline import snapshot_dict, translate_paths
from tests.support.gateway import Gateway
from tests.support.http import Response
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "ingress"
FILES = sorted(p for p in CORPUS.glob("*") if p.suffix in (".yaml", ".yml")) if CORPUS.is_dir() else []
BASIC_USER, BASIC_PASSWORD = "corpus", "corpus-secret"


def test_corpus_is_present() -> None:
    assert CORPUS.is_dir(), f"corpus directory {CORPUS} is missing"
    assert len(FILES) >= 30, f"expected the shared corpus in {CORPUS}, found {len(FILES)} files"


# -- reading the corpus ------------------------------------------------------------------------
def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def short_annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    """Short key -> value under both prefixes (meridian.io/ wins), as the framework reads them."""
    raw = (obj.get("metadata") or {}).get("annotations") or {}
    out: dict[str, str] = {}
    for prefix in (NGINX_PREFIX, MERIDIAN_PREFIX):
        for k, v in raw.items():
            if k.startswith(prefix):
                out[k[len(prefix) :].strip()] = "" if v is None else str(v).strip()
    return out


def backend_ref(backend: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(service, port ref) of a v1 or v1beta1 backend."""
    if not backend:
        return None
    if "service" in backend:
        svc = backend.get("service") or {}
        return (str(svc.get("name")), dict(svc.get("port") or {})) if svc.get("name") else None
    if "serviceName" in backend:
        port = backend.get("servicePort")
        ref = {"number": int(port)} if str(port).isdigit() else {"name": str(port)}
        return str(backend["serviceName"]), ref
    return None


@dataclass
class CorpusIngress:
    file: str
    obj: dict[str, Any]
    namespace: str
    name: str
    ann: dict[str, str]
    # host -> [(path, pathType, service)] in rule order
    paths: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    backends: set[tuple[str, str]] = field(default_factory=set)  # (namespace, service)
    tls_hosts: set[str] = field(default_factory=set)

    @property
    def canary(self) -> bool:
        return self.ann.get("canary", "").lower() == "true"

    @property
    def passthrough(self) -> bool:
        return self.ann.get("ssl-passthrough", "").lower() == "true"


def corpus_ingresses() -> list[CorpusIngress]:
    out = []
    for path in FILES:
        for doc in load_docs(path):
            if doc.get("kind") != "Ingress":
                continue
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or "default"
            ing = CorpusIngress(path.name, doc, ns, meta["name"], short_annotations(doc))
            spec = doc.get("spec") or {}
            for r in spec.get("rules") or []:
                host = normalize_host(r.get("host"))
                for p in (r.get("http") or {}).get("paths") or []:
                    ref = backend_ref(p.get("backend"))
                    if ref:
                        ing.backends.add((ns, ref[0]))
                        ing.paths.setdefault(host, []).append(
                            (p.get("path") or "/", p.get("pathType") or "ImplementationSpecific", ref[0])
                        )
            default = backend_ref(spec.get("defaultBackend") or spec.get("backend"))
            if default:
                ing.backends.add((ns, default[0]))
            for t in spec.get("tls") or []:
                ing.tls_hosts |= {normalize_host(h) for h in t.get("hosts") or []}
            out.append(ing)
    return out


# -- offline: every file on its own -------------------------------------------------------------
@pytest.mark.parametrize("path", FILES, ids=[p.name[:3] for p in FILES])
def test_file_translates_offline(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="controlplane")
    classes = ClassPolicy(frozenset(), watch_without_class=True, accept_all=True)
    compiled = translate_paths([path], GatewayConfig(classes=classes))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "compiling logged an error"
    assert compiled.gateway.problems() == []
    doc = snapshot_dict(compiled.resources)
    assert doc["LDS"] and doc["RDS"], "no listeners or routes in the snapshot"

    expected = {(d.get("metadata") or {}).get("name") for d in load_docs(path) if d.get("kind") == "Ingress"}
    reports = {r["name"]: r for r in compiled.reports}
    assert set(reports) == expected
    vhost_domains = {d for rc in doc["RDS"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}
    for ing in (i for i in corpus_ingresses() if i.file == path.name):
        report = reports[ing.name]
        keys = {f["key"] for f in report["findings"]}
        internal = [f for f in report["findings"] if "internal error" in f["message"]]
        assert not internal, f"a family crashed on {path.name}: {internal}"
        # Nothing is silently ignored: every annotation key under both prefixes has a report line.
        missing = set(ing.ann) - keys
        assert not missing, f"{ing.name}: keys not reported: {sorted(missing)}"
        if report["accepted"] and not ing.canary:
            for host in ing.paths:
                if host and valid_host(host):
                    assert host in vhost_domains, f"{host} of {ing.name} has no virtual host"


def test_report_names_unsupported_and_unknown_keys() -> None:
    classes = ClassPolicy(frozenset(), watch_without_class=True, accept_all=True)
    compiled = translate_paths([CORPUS], GatewayConfig(classes=classes))
    levels: dict[tuple[str, str], dict[str, str]] = {}
    for r in compiled.reports:
        levels[(r["namespace"], r["name"])] = {f["key"]: f["level"] for f in r["findings"]}
    by_file = {i.file[:3]: (i.namespace, i.name) for i in corpus_ingresses()}
    pluggy, vault, almyty, cccd = (levels[by_file[n]] for n in ("017", "019", "037", "006"))
    assert pluggy["configuration-snippet"] == pluggy["server-snippet"] == "unsupported"
    assert vault["configuration-snippet"] == vault["server-snippet"] == "unsupported"
    assert cccd["modsecurity-snippet"] == cccd["enable-modsecurity"] == "unsupported"
    for key in ("hsts", "hsts-max-age", "hsts-include-subdomains", "hsts-preload", "rate-limit"):
        assert almyty[key] == "unknown", key
    assert almyty["ssl-prefer-server-ciphers"] == "not-applicable"
    assert pluggy["proxy-set-header"] == "unknown"
    # Legacy-prefixed keys are named, not dropped.
    canary_demo = levels[by_file["024"]]
    assert canary_demo["ingress.kubernetes.io/app-root"] == "unknown"


# -- certificates -------------------------------------------------------------------------------
class Pki:
    """One CA; leaf certificates for any set of names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corpus test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.ca_path = root / "ca.pem"
        self.ca_path.write_bytes(self.ca_pem)

    def leaf(self, names: list[str]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans = [x509.DNSName(n) for n in names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def server_context(self, names: list[str], tag: str) -> ssl.SSLContext:
        cert, key = self.leaf(names)
        (self.root / f"{tag}.crt").write_bytes(cert)
        (self.root / f"{tag}.key").write_bytes(key)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.root / f"{tag}.crt", self.root / f"{tag}.key")
        return ctx


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# -- the whole corpus in one gateway ------------------------------------------------------------
REGISTERED = frozenset(k for f in FAMILIES for k in f.keys)


def tls_backend_services(ings: list[CorpusIngress]) -> set[tuple[str, str]]:
    """Services whose echo must speak TLS: passthrough targets, and HTTPS/GRPCS upstreams once converted."""
    out: set[tuple[str, str]] = set()
    for ing in ings:
        proto = ing.ann.get("backend-protocol", "").upper()
        if ing.passthrough or (proto in ("HTTPS", "GRPCS") and "backend-protocol" in REGISTERED):
            out |= ing.backends
    return out


def supporting_objects(ings: list[CorpusIngress], gw: Gateway, pki: Pki) -> list[dict[str, Any]]:
    """Services (unless the corpus has them), EndpointSlices to echo pods, TLS and htpasswd Secrets."""
    corpus_services: dict[tuple[str, str], dict[str, Any]] = {}
    for path in FILES:
        for d in load_docs(path):
            if d.get("kind") == "Service":
                meta = d["metadata"]
                corpus_services[(meta.get("namespace") or "default", meta["name"])] = d
    refs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ing in ings:
        spec = ing.obj.get("spec") or {}
        backends = [p.get("backend") for r in spec.get("rules") or [] for p in (r.get("http") or {}).get("paths") or []]
        backends.append(spec.get("defaultBackend") or spec.get("backend"))
        for b in backends:
            ref = backend_ref(b)
            if ref:
                refs.setdefault((ing.namespace, ref[0]), []).append(ref[1])
        if ing.ann.get("default-backend"):
            refs.setdefault((ing.namespace, ing.ann["default-backend"]), []).append({"number": 80})
    tls_services = tls_backend_services(ings)
    hosts_of: dict[tuple[str, str], list[str]] = {}
    for ing in ings:
        for key in ing.backends:
            hosts_of.setdefault(key, []).extend(h for h in ing.paths if h and valid_host(h))
    objs: list[dict[str, Any]] = []
    for (ns, svc), port_refs in sorted(refs.items()):
        knobs: dict[str, Any] = {}
        if (ns, svc) in tls_services:
            names = sorted(set(hosts_of.get((ns, svc), []))) or [f"{svc}.{ns}.svc"]
            knobs["ssl_context"] = pki.server_context(names, f"echo-{ns}-{svc}")
        echo = gw.fleet.add(service=svc, pod=f"{svc}-0", namespace=ns, **knobs)
        if (ns, svc) in corpus_services:
            ports = list((corpus_services[(ns, svc)].get("spec") or {}).get("ports") or [])
        else:
            ports, seen = [], set()
            for i, ref in enumerate(port_refs):
                if ref.get("number") is not None and ("n", ref["number"]) not in seen:
                    seen.add(("n", ref["number"]))
                    ports.append({"name": f"p{ref['number']}", "port": int(ref["number"])})
                elif ref.get("name") and ("s", ref["name"]) not in seen:
                    seen.add(("s", ref["name"]))
                    ports.append({"name": ref["name"], "port": 20000 + i})
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": svc, "namespace": ns},
                    "spec": {"ports": ports},
                }
            )
        objs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": f"{svc}-corpus", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": [{"name": p.get("name") or "", "port": echo.port, "protocol": "TCP"} for p in ports],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            }
        )
    secrets: dict[tuple[str, str], set[str]] = {}
    for ing in ings:
        for t in (ing.obj.get("spec") or {}).get("tls") or []:
            if t.get("secretName"):
                hosts = {normalize_host(h) for h in t.get("hosts") or []}
                secrets.setdefault((ing.namespace, t["secretName"]), set()).update(hosts)
        if ing.ann.get("auth-secret"):
            secret = ing.ann["auth-secret"]
            ns, _, name = secret.rpartition("/")
            sha = b64(hashlib.sha1(BASIC_PASSWORD.encode()).digest())
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns or ing.namespace},
                    "type": "Opaque",
                    "data": {"auth": b64(f"{BASIC_USER}:{{SHA}}{sha}\n")},
                }
            )
    for (ns, name), hosts in sorted(secrets.items()):
        cert, key = pki.leaf(sorted(h for h in hosts if h) or ["corpus.invalid"])
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": ns},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": b64(cert), "tls.key": b64(key)},
            }
        )
    return objs


def ingress_classes(ings: list[CorpusIngress]) -> list[str]:
    names: set[str] = set()
    for ing in ings:
        raw = (ing.obj.get("metadata") or {}).get("annotations") or {}
        if raw.get("kubernetes.io/ingress.class"):
            names.add(str(raw["kubernetes.io/ingress.class"]))
        if (ing.obj.get("spec") or {}).get("ingressClassName"):
            names.add(str(ing.obj["spec"]["ingressClassName"]))
    return sorted(names)


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    meta = doc.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name")


@pytest.fixture(scope="module", params=["1", "8"], ids=["one-route-table", "8-route-partitions"])
def corpus_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Pki, list[CorpusIngress]]]:
    """The whole corpus in one gateway, with one route table per listener, and again with partitioned
    tables (scoped routes behind the Lua scope filter, in front of every annotation's filters).

    Partitioned, the Ingresses using auth-url / auth-type are left out: their per-route auth filters
    keep the north-south tables whole (test_route_partitions.py checks that), and every other
    annotation is to be seen working with partitions.
    """
    if not FILES:
        pytest.fail(f"corpus directory {CORPUS} is missing or empty")
    root = tmp_path_factory.mktemp("corpus")
    ings = corpus_ingresses()
    partitioned = request.param != "1"
    left_out = {(i.namespace, i.name) for i in ings if partitioned and {"auth-url", "auth-type"} & i.ann.keys()}
    ings = [i for i in ings if (i.namespace, i.name) not in left_out]
    serve_args = ["--watch-ingress-without-class", "--route-partitions", request.param]
    for name in ingress_classes(ings):
        serve_args += ["--ingress-class", name]
    gw = Gateway(root / "gw", serve_args=serve_args)
    pki = Pki(root)
    try:
        gw.start()
        gw.write("zz-supporting.yaml", supporting_objects(ings, gw, pki))
        for path in FILES:
            if not left_out:
                shutil.copy(path, gw.dirs["c1"] / path.name)
                continue
            keep = [d for d in load_docs(path) if not (d.get("kind") == "Ingress" and _key(d) in left_out)]
            gw.write(path.name, keep)
        if partitioned:
            wait_until(lambda: "http/8/7" in gw.admin("/debug/snapshot")["types"]["SRDS"]["resources"], timeout=30,
                       message="the north-south route tables were not partitioned")  # fmt: skip
        yield gw, pki, ings
    finally:
        gw.stop()


# -- what a request should get ------------------------------------------------------------------
REGEX_CHARS = re.compile(r"[(\[*+?$^\\|{.]")


def sample_path(path: str, regex: bool) -> str:
    """A concrete request path that the rule matches (regex rules: anchored, case-insensitive)."""
    if not regex:
        return path
    cut = path[: m.start()] if (m := REGEX_CHARS.search(path)) else path
    for cand in (cut, cut + "/", cut + "/x", cut.rstrip("/") or "/"):
        try:
            if re.match(f"(?i){path}", cand):
                return cand or "/"
        except re.error:
            break
    return cut or "/"


def allowed_by(cidrs: str, addr: str = "127.0.0.1") -> bool:
    ip = ipaddress.ip_address(addr)
    for part in re.split(r"[,\s]+", cidrs):
        if part:
            try:
                if ip in ipaddress.ip_network(part, strict=False):
                    return True
            except ValueError:
                continue
    return False


def upstream_failure(r: Response) -> bool:
    """A 5xx from talking to the backend (protocol mismatch), not from missing configuration."""
    return r.status in (502, 503) and ("upstream connect error" in r.text or "protocol error" in r.text)


@dataclass
class Expect:
    statuses: set[int]
    why: str
    location: str | None = None  # exact Location for redirects (None: not checked)
    services: set[str] = field(default_factory=set)  # who may answer a 200


def expected(
    ing: CorpusIngress, host: str, path: str, *, https: bool, host_has_tls: bool, tls_echo: bool, port: int
) -> Expect:
    """ingress-nginx's answer for this Ingress's rule, given the families registered right now."""
    a = ing.ann
    services = {svc for _ns, svc in ing.backends}

    def on(key: str) -> bool:
        return key in REGISTERED and key in a

    def flag(key: str, default: bool) -> bool:
        v = a.get(key, "").lower()
        return v == "true" if v in ("true", "false") else default

    if not https and (flag("force-ssl-redirect", False) or (flag("ssl-redirect", True) and host_has_tls)):
        # lua_ingress.lua: https://<host><request URI>, one trailing "/" dropped unless preserve-trailing-slash;
        # the gateway runs with the default --public-https-port 443, so no port.
        uri = path if flag("preserve-trailing-slash", False) or not path.endswith("/") else path[:-1]
        return Expect({308}, "ssl-redirect", location=f"https://{host}{uri}")
    if on("temporal-redirect") or on("permanent-redirect"):
        key = "temporal-redirect" if on("temporal-redirect") else "permanent-redirect"
        return Expect({302} if key == "temporal-redirect" else {301}, key, location=a[key])
    if on("app-root") and path == "/":
        # nginx (absolute_redirect on) and Envoy both answer with an absolute URL on the request's host.
        return Expect({302}, "app-root", location=f"http://{host}{a['app-root']}")
    if on("whitelist-source-range") and not allowed_by(a["whitelist-source-range"]):
        return Expect({403}, "client not in whitelist-source-range")
    if on("auth-type") and a["auth-type"].lower() == "basic":
        return Expect({401}, "basic auth without credentials")
    if on("auth-url"):
        # The auth service is not reachable from the test: the gateway must fail closed.
        return Expect({401, 403, 500, 502, 503} | ({302} if on("auth-signin") else set()), "auth-url unreachable")
    proto = a.get("backend-protocol", "HTTP").upper() if "backend-protocol" in REGISTERED else "HTTP"
    speaks_tls = proto in ("HTTPS", "GRPCS")
    if proto in ("GRPC", "GRPCS", "HTTP2") or speaks_tls != tls_echo:
        return Expect({502, 503}, f"{proto} to an HTTP/1 echo ({'TLS' if tls_echo else 'plain'})")
    return Expect({200}, "served", services=services)


def check(r: Response, want: Expect, what: str) -> None:
    assert r.status in want.statuses, f"{what}: got {r.status} ({r.text[:200]!r}), want {want}"
    if r.status in (502, 503):
        assert upstream_failure(r), f"{what}: {r.status} is not an upstream failure: {r.text[:200]!r}"
    if want.location is not None:
        loc = r.headers.get("location", "")
        assert loc == want.location, f"{what}: Location {loc!r}, want {want.location!r}"
    if r.status == 200 and want.services:
        assert r.json()["service"] in want.services, f"{what}: served by {r.json()['service']}"


def test_whole_corpus_in_one_gateway(corpus_gateway: tuple[Gateway, Pki, list[CorpusIngress]]) -> None:
    gw, pki, ings = corpus_gateway
    # Every Ingress shows up, then the fleet converges with zero NACKs.
    def all_reported() -> list[dict[str, Any]] | None:
        reports = gw.admin("/debug/ingresses")
        names = {(r["namespace"], r["name"]) for r in reports}
        return reports if names >= {(i.namespace, i.name) for i in ings} else None

    reports = wait_until(all_reported, timeout=30, message="not every corpus Ingress is in /debug/ingresses")
    gw.wait_converged(timeout=30)
    streams = gw.admin("/debug/syncz")
    for s in streams:
        for short, t in s["types"].items():
            assert t["last_nack"] is None, f"Envoy rejected {short}: {t['last_nack']}"
            assert t["acked_version"] == t["sent_version"], f"{short} not ACKed"
    report = {(r["namespace"], r["name"]): r for r in reports}

    served = {(i.namespace, i.name) for i in ings if report[(i.namespace, i.name)]["accepted"]}
    tls_hosts = {h for i in ings if (i.namespace, i.name) in served for h in i.tls_hosts}
    tls_echo = tls_backend_services(ings)
    owners: dict[str, list[CorpusIngress]] = {}
    for ing in ings:
        if (ing.namespace, ing.name) in served:
            for host in ing.paths:
                owners.setdefault(host, []).append(ing)

    failures: list[str] = []
    checked = 0
    for ing in ings:
        for host, paths in ing.paths.items():
            if not host or not valid_host(host) or host.startswith("*."):
                continue  # the catch-all is shared by many corpus Ingresses; checked below
            rule_path, path_type, _service = paths[0]
            regex = ("use-regex" in ing.ann or "rewrite-target" in ing.ann) and path_type != "Exact"
            if path_type == "Exact" and re.search(r"[(|$*\[]", rule_path):
                continue  # an Exact path is literal in nginx too; "(/|$)(.*)" is no request anyone sends
            path = sample_path(rule_path, regex)
            key = (ing.namespace, ing.name)
            try:
                primaries = [o for o in owners.get(host, []) if not o.canary]
                if key not in served or (ing.canary and not primaries):
                    if not primaries:
                        # No virtual host of its own: the request falls to the catch-all (no-host rules).
                        r, fallback = gw.get(host, path), gw.get("unmatched.corpus.invalid", path)
                        assert (r.status, r.headers.get("x-echo-service")) == (
                            fallback.status,
                            fallback.headers.get("x-echo-service"),
                        ), f"{host}{path}: {ing.name} is not served, but got {r.status}, not the catch-all's answer"
                        checked += 1
                    continue
                if ing.canary or len(primaries) > 1 or ing.passthrough:
                    continue  # answered by the primary's own check / SNI check below
                canary_services = {s for o in owners[host] if o.canary for _n, s in o.backends}
                echo_tls = any(b in tls_echo for b in ing.backends)
                for https in (False, True) if host in tls_hosts else (False,):
                    want = expected(ing, host, path, https=https, host_has_tls=host in tls_hosts,
                                    tls_echo=echo_tls, port=gw.https_port)  # fmt: skip
                    want.services |= canary_services
                    if https:
                        r = gw.get_https(host, path, ca=str(pki.ca_path))
                        assert host in r.peer_cert_names(), f"{host}: served certificate {r.peer_cert_names()}"
                    else:
                        r = gw.get(host, path)
                    check(r, want, f"{'https' if https else 'http'}://{host}{path} ({ing.file})")
                    checked += 1
                    if want.why == "basic auth without credentials":
                        assert "basic realm=" in r.headers.get("www-authenticate", "").lower()
                        auth = {"Authorization": "Basic " + b64(f"{BASIC_USER}:{BASIC_PASSWORD}")}
                        ok = (
                            gw.get_https(host, path, ca=str(pki.ca_path), headers=auth)
                            if https
                            else gw.get(host, path, headers=auth)
                        )
                        assert ok.status in (200, 502, 503), f"{host}: right credentials got {ok.status}"
            except AssertionError as exc:
                failures.append(f"{ing.file}: {exc}")

    # ssl-passthrough: the TLS echo behind the gateway terminates the client's TLS (SNI routed).
    for ing in ings:
        if ing.passthrough and (ing.namespace, ing.name) in served:
            for host in ing.paths:
                try:
                    r = gw.get_https(host, "/", ca=str(pki.ca_path))
                    assert r.status == 200 and r.json()["namespace"] == ing.namespace, f"{host}: {r.status}"
                    checked += 1
                except (AssertionError, OSError) as exc:
                    failures.append(f"{ing.file} passthrough {host}: {exc!r}")

    # The catch-all (Ingresses without a host): something answers, never a config 5xx.
    r = gw.get("unmatched.corpus.invalid", "/")
    if r.status >= 500 and not upstream_failure(r):
        failures.append(f"catch-all: {r.status} {r.text[:200]!r}")
    assert not failures, "\n".join(failures)
    assert checked >= 20, f"only {checked} requests checked"
