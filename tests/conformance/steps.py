"""Step definitions of the Kubernetes Ingress conformance features, against file mode + real Envoy.

A `FeatureWorld` is one feature's namespace on the shared gateway: its Ingress file, its echo
backends (Service + EndpointSlice per Service the Ingress names) and its TLS Secrets. A
`ScenarioState` holds what one scenario sent and received.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conformance.gherkin import Step
from tests.support.gateway import Gateway
from tests.support.http import Response, request
from tests.support.wait import wait_until

# ingress-nginx redirects plain HTTP for TLS hosts by default (ssl-redirect), while the conformance client
# never follows redirects and expects http://foo.bar.com to answer 200 for a TLS host. ingress-nginx passes
# the suite only with that redirect off, so the runner sets it on every conformance Ingress, the way the
# upstream tool injects its ingress class.
CONFORMANCE_ANNOTATIONS = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}


def self_signed_tls_secret(name: str, namespace: str, host: str) -> tuple[dict[str, Any], bytes]:
    """A kubernetes.io/tls Secret with a self-signed certificate for `host`, and the certificate PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()},
    }
    return secret, cert_pem


def backend_services(spec: dict[str, Any]) -> set[str]:
    """Every Service name an Ingress spec sends traffic to."""
    found: set[str] = set()
    backends = [spec.get("defaultBackend")]
    for rule in spec.get("rules") or []:
        backends += [p.get("backend") for p in ((rule.get("http") or {}).get("paths") or [])]
    for b in backends:
        if b and (b.get("service") or {}).get("name"):
            found.add(b["service"]["name"])
    return found


@dataclass
class FeatureWorld:
    """One feature's objects on the shared gateway; `cleanup` removes them all."""

    gw: Gateway
    key: str
    namespace: str = ""
    ingress_name: str = ""
    files: list[str] = field(default_factory=list)
    services: dict[str, list[Any]] = field(default_factory=dict)
    ca: dict[str, bytes] = field(default_factory=dict)  # host -> trusted certificate PEM

    def new_namespace(self) -> None:
        self.namespace = f"conformance-{secrets.token_hex(4)}"

    def apply_ingress(self, manifest: dict[str, Any]) -> None:
        assert self.namespace, "no namespace yet"
        meta = manifest.setdefault("metadata", {})
        meta["namespace"] = self.namespace
        meta.setdefault("annotations", {}).update(CONFORMANCE_ANNOTATIONS)
        self.ingress_name = meta["name"]
        for svc in sorted(backend_services(manifest.get("spec") or {})):
            self.ensure_backend(svc, replicas=1)
        self.write(f"ingress-{self.ingress_name}.yaml", [manifest])

    def ensure_backend(self, service: str, replicas: int) -> None:
        """Echo pods behind Service `service` (port 8080 named `http`), `replicas` of them."""
        pods = self.services.setdefault(service, [])
        while len(pods) < replicas:
            pods.append(
                self.gw.fleet.add(service=service, pod=f"{service}-{uuid.uuid4().hex[:8]}", namespace=self.namespace)
            )
        del pods[replicas:]
        self.gw.publish(service, pods, namespace=self.namespace, port=8080, port_name="http")
        name = f"svc-{self.namespace}-{service}.yaml"
        if name not in self.files:
            self.files.append(name)

    def write(self, filename: str, objs: list[dict[str, Any]]) -> None:
        self.gw.write(filename, objs)
        if filename not in self.files:
            self.files.append(filename)

    def report(self) -> dict[str, Any] | None:
        return self.gw.ingress_report(self.ingress_name, namespace=self.namespace)

    def cleanup(self) -> None:
        for f in self.files:
            self.gw.remove(f)
        if self.ingress_name:
            wait_until(lambda: self.report() is None, timeout=15, message=f"{self.key}: Ingress not removed")
        wait_converged(self.gw)


@dataclass
class ScenarioState:
    world: FeatureWorld
    response: Response | None = None
    body: dict[str, Any] | None = None
    tls_host: str | None = None
    responses: list[Response] = field(default_factory=list)

    @property
    def gw(self) -> Gateway:
        return self.world.gw

    def send(self, method: str, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or None
        path = parts.path or "/"
        if parts.scheme == "https":
            assert host, url
            self.tls_host = host
            r = request(method, self.gw.https_port, path, host=host, tls=True, sni=host,
                        ca=self.world.ca.get(host), verify_hostname=True)  # fmt: skip
        else:
            r = request(method, self.gw.http_port, path, host=host)
        self.response = r
        try:
            self.body = r.json() if r.status == 200 else None
        except ValueError:
            self.body = None

    def must_body(self) -> dict[str, Any]:
        assert self.response is not None, "no request was sent"
        assert self.body is not None, f"no echo body: {self.response.status} {self.response.text[:200]}"
        return self.body


def wait_converged(gw: Gateway, timeout: float = 20) -> None:
    """gw.wait_converged, with the xDS state in the failure message."""
    try:
        gw.wait_converged(timeout)
    except AssertionError as exc:
        state = {"syncz": gw.admin("/debug/syncz"), "snapshot": gw.admin("/debug/snapshot")["types"]}
        raise AssertionError(f"{exc}; {json.dumps(state)[:4000]}") from None


StepFn = Callable[..., None]
_STEPS: list[tuple[re.Pattern[str], StepFn]] = []


def step(pattern: str) -> Callable[[StepFn], StepFn]:
    def deco(fn: StepFn) -> StepFn:
        _STEPS.append((re.compile(pattern + r"$"), fn))
        return fn

    return deco


def run_step(st: Step, state: ScenarioState) -> None:
    for pattern, fn in _STEPS:
        m = pattern.match(st.text)
        if m:
            fn(state, st, *m.groups())
            return
    raise AssertionError(f"undefined step (line {st.line}): {st.keyword} {st.text}")


# -- Given ---------------------------------------------------------------------------------------
@step(r"a new random namespace")
def _namespace(s: ScenarioState, st: Step) -> None:
    s.world.new_namespace()


@step(r'an Ingress resource named "([^"]+)" with this spec:')
def _ingress_spec(s: ScenarioState, st: Step, name: str) -> None:
    spec = yaml.safe_load(st.doc or "")
    s.world.apply_ingress({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                           "metadata": {"name": name}, "spec": spec})  # fmt: skip


@step(r"an Ingress resource")
def _ingress(s: ScenarioState, st: Step) -> None:
    s.world.apply_ingress(yaml.safe_load(st.doc or ""))


@step(r"an Ingress resource in a new random namespace")
def _ingress_new_ns(s: ScenarioState, st: Step) -> None:
    s.world.new_namespace()
    s.world.apply_ingress(yaml.safe_load(st.doc or ""))


@step(r'a self-signed TLS secret named "([^"]+)" for the "([^"]+)" hostname')
def _tls_secret(s: ScenarioState, st: Step, name: str, host: str) -> None:
    secret, cert = self_signed_tls_secret(name, s.world.namespace, host)
    s.world.ca[host] = cert
    s.world.write(f"secret-{s.world.namespace}-{name}.yaml", [secret])


@step(r"The Ingress status shows the IP address or FQDN where it is exposed")
def _status_address(s: ScenarioState, st: Step) -> None:
    r = wait_until(lambda: (rep := s.world.report()) and rep.get("address") and rep, timeout=15,
                   message="Ingress status never showed an address")  # fmt: skip
    assert r["accepted"], r
    # The address is only useful once Envoy serves what it stands for.
    wait_converged(s.gw)


@step(r"The Ingress status should not contain the IP address or FQDN")
def _status_no_address(s: ScenarioState, st: Step) -> None:
    r = wait_until(s.world.report, timeout=15, message="Ingress never reported")
    wait_converged(s.gw)
    r = s.world.report()
    assert r is not None and r.get("address") in (None, "", []), r
    assert not r["accepted"], r


@step(r'The backend deployment "([^"]+)" for the ingress resource is scaled to (\d+)')
def _scale(s: ScenarioState, st: Step, service: str, n: str) -> None:
    s.world.ensure_backend(service, replicas=int(n))
    assert s.gw.envoy is not None
    want = int(n)

    def healthy() -> bool:
        stats = s.gw.envoy.stats()  # type: ignore[union-attr]
        return any(k.endswith(".membership_healthy") and f"{s.world.namespace}/{service}" in k and v == want
                   for k, v in stats.items())  # fmt: skip

    wait_until(healthy, timeout=15, message=f"{service} never had {want} healthy endpoints in Envoy")


# -- When ----------------------------------------------------------------------------------------
@step(r'I send a "([A-Z]+)" request to http://"([^"]*)"/"([^"]*)"')
def _send_host_path(s: ScenarioState, st: Step, method: str, host: str, path: str) -> None:
    # An empty host means "the Ingress address itself": the Host header is then 127.0.0.1:port.
    s.send(method, f"http://{host or f'127.0.0.1:{s.gw.http_port}'}/{path}")


@step(r'I send a "([A-Z]+)" request to "([^"]+)"')
def _send_url(s: ScenarioState, st: Step, method: str, url: str) -> None:
    s.send(method, url)


@step(r'I send (\d+) requests to "([^"]+)"')
def _send_many(s: ScenarioState, st: Step, n: str, url: str) -> None:
    parts = urlsplit(url)
    s.responses = [request("GET", s.gw.http_port, parts.path or "/", host=parts.hostname) for _ in range(int(n))]


# -- Then ----------------------------------------------------------------------------------------
@step(r'the secure connection must verify the "([^"]+)" hostname')
def _verify_hostname(s: ScenarioState, st: Step, host: str) -> None:
    # The request itself verified the chain against the Secret's certificate and the hostname (SNI = host).
    assert s.response is not None and s.tls_host == host
    assert host in s.response.peer_cert_names(), s.response.peer_cert_names()


@step(r"the response status-code must be (\d+)")
def _status(s: ScenarioState, st: Step, code: str) -> None:
    assert s.response is not None, "no request was sent"
    assert s.response.status == int(code), f"{s.response.status} {s.response.text[:300]}"


@step(r'the response must be served by the "([^"]+)" service')
def _served_by(s: ScenarioState, st: Step, service: str) -> None:
    body = s.must_body()
    assert body["service"] == service and body["namespace"] == s.world.namespace, body


@step(r'the response proto must be "([^"]+)"')
def _response_proto(s: ScenarioState, st: Step, proto: str) -> None:
    assert s.response is not None and s.response.version == proto, s.response


def _header_rows(st: Step) -> list[tuple[str, str]]:
    rows = st.rows()
    assert rows, f"step needs a key/value table: {st.text}"
    return [(r["key"], r["value"]) for r in rows]


@step(r"the response headers must contain <key> with matching <value>")
def _response_headers(s: ScenarioState, st: Step) -> None:
    assert s.response is not None
    for key, pattern in _header_rows(st):
        value = s.response.headers.get(key)
        assert value and fnmatch.fnmatchcase(value, pattern), f"response header {key}={value!r} !~ {pattern}"


@step(r'the request method must be "([^"]+)"')
def _request_method(s: ScenarioState, st: Step, method: str) -> None:
    assert s.must_body()["method"] == method


@step(r'the request path must be "([^"]*)"')
def _request_path(s: ScenarioState, st: Step, path: str) -> None:
    assert s.must_body()["path"] == "/" + path.lstrip("/"), s.body


@step(r'the request proto must be "([^"]+)"')
def _request_proto(s: ScenarioState, st: Step, proto: str) -> None:
    assert s.must_body()["proto"] == proto


@step(r"the request headers must contain <key> with matching <value>")
def _request_headers(s: ScenarioState, st: Step) -> None:
    headers = {k.lower(): v for k, v in s.must_body()["headers"].items()}
    for key, pattern in _header_rows(st):
        value = headers.get(key.lower())
        assert value and fnmatch.fnmatchcase(value, pattern), f"request header {key}={value!r} !~ {pattern}"


@step(r'the request host must be "([^"]+)"')
def _request_host(s: ScenarioState, st: Step, host: str) -> None:
    assert s.must_body()["host"] == host, s.body


@step(r"all the responses status-code must be (\d+) and the response body should contain the IP address of "
      r"(\d+) different Kubernetes pods")  # fmt: skip
def _all_responses(s: ScenarioState, st: Step, code: str, pods: str) -> None:
    assert s.responses, "no requests were sent"
    assert all(r.status == int(code) for r in s.responses), [r.status for r in s.responses]
    ips = {r.json()["pod_ip"] for r in s.responses}
    assert len(ips) == int(pods), sorted(ips)
