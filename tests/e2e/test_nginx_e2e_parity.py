"""ingress-nginx's and Higress's own e2e expectations, replayed through a real Envoy driven by Meridian.

The expectations are transcribed (facts only, our own code) from ingress-nginx's `test/e2e/annotations`,
`test/e2e/ingress`, `test/e2e/defaultbackend` and `test/e2e/servicebackend`, and from Higress's
`test/e2e/conformance/tests/httproute-*` (the Ingress annotation ones) into
`nginx_e2e_parity.yaml` next to this file: per case the Ingresses (annotations, paths, TLS), and
per request the host, path, method, headers, scheme and the expected status, `Location`, response
headers, backend reached and what the backend received. Each case names its source file and test.
What cannot apply to Envoy (nginx snippets and directives, ModSecurity, Lua plugins, checks that read
nginx.conf instead of sending traffic, controller flags and ConfigMap options) is listed under
`skipped:` in the same file with the reason.

One gateway for the module, one host per case (`<case id>.e2e.test` unless the case names its
own), every manifest written at once, so the whole suite takes seconds. Each request is one test:
`pytest tests/e2e/test_nginx_e2e_parity.py -q` prints the passing/total count.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.certs import Issued, ca_secret, issue_cert, make_ca, tls_secret
from tests.support.gateway import Gateway, ingress, rule
from tests.support.http import Response, request

pytestmark = pytest.mark.e2e

DATA = Path(__file__).with_name("nginx_e2e_parity.yaml")
NGINX = "nginx.ingress.kubernetes.io/"
DOMAIN = "e2e.test"
SERVICES = ("echo", "canary", "httpbin", "v1", "v2", "v3")
SENTINEL = "sentinel." + DOMAIN
CA = make_ca("nginx e2e parity CA")
# ingress-nginx's CreateIngressMASecret client certificate (auth-tls-match-cn "CN=authtls" matches it).
CLIENT: Issued = issue_cert(CA, common_name="authtls", client=True)


@dataclass(frozen=True)
class Case:
    """One transcribed upstream test: its Ingresses and the requests it sends."""

    id: str
    source: str
    test: str
    host: str
    ingresses: list[dict[str, Any]]
    objects: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    xfail: str | None
    gateway: str


def load_cases() -> list[Case]:
    data = yaml.safe_load(DATA.read_text())
    cases = []
    for raw in data["cases"]:
        host = raw.get("host", f"{raw['id']}.{DOMAIN}")
        cases.append(Case(raw["id"], raw["source"], raw["test"], host, raw.get("ingresses", []),
                          raw.get("objects", []), raw["requests"], raw.get("xfail"),
                          raw.get("gateway", "main")))  # fmt: skip
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES = load_cases()


def fill(value: Any, case: Case) -> Any:
    """`{host}` in any string of the case stands for the case's host, `{expires+N}` for the cookie date
    N seconds from now as nginx writes it (to the minute)."""
    if isinstance(value, str):
        value = value.replace("{host}", case.host)
        if found := re.search(r"\{expires\+(\d+)\}", value):
            when = time.strftime("%a, %d-%b-%y %H:%M", time.gmtime(time.time() + int(found.group(1))))
            value = value.replace(found.group(0), when)
        return value
    if isinstance(value, list):
        return [fill(v, case) for v in value]
    if isinstance(value, dict):
        return {fill(k, case): fill(v, case) for k, v in value.items()}
    return value


def backend_ref(spec: str) -> tuple[str, int]:
    name, _, port = spec.partition(":")
    return name, int(port or 80)


def case_manifests(case: Case) -> list[dict[str, Any]]:
    """The case's Ingresses from the shorthand: `paths: ["/p Prefix service[:port]"]`, `host`, `tls`."""
    out = []
    for i, raw in enumerate(fill(case.ingresses, case)):
        paths = []
        for item in raw.get("paths", []):
            path, path_type, service = item.split()
            name, port = backend_ref(service)
            paths.append({"path": path, "pathType": path_type,
                          "backend": {"service": {"name": name, "port": {"number": port}}}})  # fmt: skip
        host = raw.get("host", case.host)
        rules: list[dict[str, Any]] = []
        if paths:
            rules.append({"host": host, "http": {"paths": paths}} if host else {"http": {"paths": paths}})
        elif host:
            rules.append({"host": host})  # a host with no paths: its Ingress's spec.defaultBackend serves it
        annotations = {(k if "/" in k else NGINX + k): str(v) for k, v in (raw.get("annotations") or {}).items()}
        tls = None
        if raw.get("tls"):
            tls = [{"hosts": raw.get("tls_hosts", [host]), "secretName": raw.get("tls_secret", "e2e-tls")}]
        default = backend_ref(raw["default_backend"]) if raw.get("default_backend") else None
        name = f"{case.id}-{raw['name']}" if "name" in raw else f"{case.id}-{i}"  # unique across cases
        ing = ingress(name, rules, annotations=annotations, tls=tls,
                      default_backend=default, created=raw.get("created"))  # fmt: skip
        out.append(ing)
    # `{ca_secret: NAME}`: a Secret with the test CA's certificate (what auth-tls-secret names).
    objects = [
        ca_secret(o["ca_secret"], "default", CA.cert) if "ca_secret" in o else o for o in fill(case.objects, case)
    ]
    return out + objects


def tls_hosts(cases: list[Case]) -> list[str]:
    hosts = {SENTINEL}
    for case in cases:
        for raw in fill(case.ingresses, case):
            if raw.get("tls") and raw.get("tls_secret", "e2e-tls") == "e2e-tls":
                hosts.update(raw.get("tls_hosts", [raw.get("host", case.host)]))
    return sorted(hosts)


class Gateways:
    """One gateway per `gateway:` group of cases, started when its first request comes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: dict[str, Gateway] = {}
        (root / "client.crt").write_bytes(CLIENT.cert)  # what requests with `client_cert: true` present
        (root / "client.key").write_bytes(CLIENT.key)
        self.client_files = (str(root / "client.crt"), str(root / "client.key"))

    def get(self, group: str) -> Gateway:
        if group not in self.started:
            self.started[group] = self.start(group, [c for c in CASES if c.gateway == group])
        return self.started[group]

    def start(self, group: str, cases: list[Case]) -> Gateway:
        g = Gateway(self.root / group)
        self.started[group] = g  # stopped at the end even when it fails to start
        g.start()
        for name in SERVICES:
            g.backend(name)
        cert = issue_cert(CA, tls_hosts(cases))
        objs: list[dict[str, Any]] = [tls_secret("e2e-tls", "default", cert.cert, cert.key)]
        for case in cases:
            objs += case_manifests(case)
        objs.append(ingress("sentinel", [rule(SENTINEL, ("/", "Prefix", "echo", 80))]))
        g.write("cases.yaml", objs)
        g.wait_served_by(SENTINEL, "/", "echo", timeout=30)
        g.wait_converged(timeout=30)
        return g

    def stop(self) -> None:
        for g in self.started.values():
            g.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    gws = Gateways(Path(tmp_path_factory.mktemp("nginx-e2e")))
    try:
        yield gws
    finally:
        gws.stop()


def send(gw: Gateway, case: Case, req: dict[str, Any], client_files: tuple[str, str]) -> Response:
    host = req.get("host", case.host)
    headers = list((req.get("headers") or {}).items())
    if req.get("cookies"):
        headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in req["cookies"].items())))
    https = req.get("scheme", "http") == "https"
    port = gw.https_port if https else gw.http_port
    sni = req.get("sni", host.split(":")[0]) if https else None
    client = client_files if req.get("client_cert") else None
    # No server certificate check: the status is what is compared (certificates have their own e2e).
    return request(req.get("method", "GET"), port, req.get("path", "/"), host=host, headers=headers,
                   body=req.get("body"), tls=https, sni=sni, client_cert=client)  # fmt: skip


def echo(resp: Response) -> dict[str, Any]:
    """What the echo backend received (its JSON), or {} when the answer did not come from it."""
    if "X-Echo-Service" not in resp.headers or not resp.body:
        return {}
    return dict(resp.json())


def problems(resp: Response, want: dict[str, Any]) -> list[str]:
    """Every difference between the response and the expectation (empty: it matches)."""
    out = []
    got = echo(resp)
    seen_headers = {k.lower(): v for k, v in (got.get("headers") or {}).items()}
    if "status" in want and resp.status != want["status"]:
        out.append(f"status {resp.status} != {want['status']}")
    if "location" in want and resp.headers.get("Location") != want["location"]:
        out.append(f"Location {resp.headers.get('Location')!r} != {want['location']!r}")
    for name, value in (want.get("headers") or {}).items():
        if resp.headers.get(name) != (None if value is None else str(value)):
            out.append(f"header {name}: {resp.headers.get(name)!r} != {value!r}")
    for name, value in (want.get("headers_contain") or {}).items():
        if str(value) not in ",".join(resp.headers.getall(name, [])):
            out.append(f"header {name}: {resp.headers.getall(name, [])!r} lacks {value!r}")
    for name, value in (want.get("headers_lack") or {}).items():
        if value in ",".join(resp.headers.getall(name, [])):
            out.append(f"header {name}: {resp.headers.getall(name, [])!r} has {value!r}")
    if "service" in want and got.get("service") != want["service"]:
        out.append(f"served by {got.get('service')!r} != {want['service']!r}")
    if "upstream_path" in want and got.get("path") != want["upstream_path"]:
        out.append(f"backend saw path {got.get('path')!r} != {want['upstream_path']!r}")
    if "upstream_host" in want and got.get("host") != want["upstream_host"]:
        out.append(f"backend saw Host {got.get('host')!r} != {want['upstream_host']!r}")
    for name, value in (want.get("upstream_headers") or {}).items():
        if seen_headers.get(name.lower()) != (None if value is None else str(value)):
            out.append(f"backend saw {name}: {seen_headers.get(name.lower())!r} != {value!r}")
    for name, value in (want.get("upstream_headers_start") or {}).items():
        if not str(seen_headers.get(name.lower(), "")).startswith(value):
            out.append(f"backend saw {name}: {seen_headers.get(name.lower())!r}, not starting {value!r}")
    if "body_contains" in want and want["body_contains"] not in resp.text:
        out.append(f"body lacks {want['body_contains']!r}: {resp.text[:200]!r}")
    return out


def marks(case: Case, req: dict[str, Any]) -> list[pytest.MarkDecorator]:
    """`xfail`: owned by another branch right now (may pass); `known`: a difference docs/annotations.md
    documents (strict: a change that makes it pass must update the docs and the data)."""
    if reason := req.get("xfail", case.xfail):
        return [pytest.mark.xfail(strict=False, reason=reason)]
    if reason := req.get("known"):
        return [pytest.mark.xfail(strict=True, reason=reason)]
    return []


REQUESTS = [
    pytest.param(case, i, id=f"{case.id}-{i}", marks=marks(case, req))
    for case in CASES
    for i, req in enumerate(case.requests)
]


@pytest.mark.parametrize(("case", "index"), REQUESTS)
def test_expectation(gateways: Gateways, case: Case, index: int) -> None:
    gw = gateways.get(case.gateway)
    req = fill(case.requests[index], case)
    want = req["expect"]
    if "split" in want:  # several requests: each listed backend answers some, no other backend any
        served = {
            echo(send(gw, case, req, gateways.client_files)).get("service") for _ in range(int(want.get("tries", 100)))
        }
        assert served == set(want["split"]), f"{case.source}: {case.test}: served by {served}"
        return
    for _ in range(int(req.get("repeat", 1))):
        resp = send(gw, case, req, gateways.client_files)
        found = problems(resp, want)
        assert not found, f"{case.source}: {case.test}: {found}"


def test_every_case_names_its_source() -> None:
    for case in CASES:
        assert case.source.split()[0] in ("ingress-nginx", "higress") and case.test, case.id
    skipped = yaml.safe_load(DATA.read_text())["skipped"]
    assert all(s["reason"] and s["source"] for s in skipped)
