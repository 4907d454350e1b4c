"""Gateway API HTTPRoute and GRPCRoute conformance, transcribed from kubernetes-sigs/gateway-api
v1.6.1 (see README.md here): each case's upstream manifests are applied to file-mode Meridian over
the base Gateways (base.yaml), and each upstream ExpectedResponse is replayed through a real Envoy
against echo backends that stand in for the suite's echo Deployments (same Service names,
namespaces and port; gRPC ones answer as upstream's GrpcEcho service). A request is retried until
it matches or 15 s pass, as upstream's MakeRequestAndExpectEventuallyConsistentResponse does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml

from controlplane.compile import SourceObjects, compile
from controlplane.config import GatewayConfig
from controlplane.gatewayapi.status import route_status
from controlplane.ir import IngressRef
from controlplane.sources.files import parse_manifests
from tests.conformance.steps import self_signed_tls_secret
from tests.support.gateway import Gateway, dump_manifests
from tests.support.grpc_conformance_echo import Answer, ConformanceGrpcEcho
from tests.support.grpc_conformance_echo import call as grpc_echo_call
from tests.support.http import Response, request
from tests.support.ports import free_port

HERE = Path(__file__).resolve().parent
CASES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((HERE / "cases").glob("*.yaml"))}
BACKENDS = {
    "gateway-conformance-infra": ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3"),
    "gateway-conformance-app-backend": ("app-backend-v1", "app-backend-v2"),
    "gateway-conformance-web-backend": ("web-backend",),
}
# The base manifests' gRPC echo Deployments (Service port 8080), answered by grpc_conformance_echo.
GRPC_BACKENDS = {"gateway-conformance-infra": tuple(f"grpc-infra-backend-v{i}" for i in (1, 2, 3))}
# Cases not run here, and why (each is a test of the upstream suite; see README.md).
NOT_RUN: dict[str, str] = {
    "HTTPRouteObservedGenerationBump": "needs an API server that bumps metadata.generation: runs in Kubernetes "
    "mode against the fake API server (test_gatewayapi_conformance_kube.py)",
    "HTTPRouteInvalidCrossNamespaceParentRef": "status only (no request): test_status_conformance checks it",
    "HTTPRouteInvalidParentRefNotMatchingSectionName": "status only (no request): test_status_conformance checks it",
    "HTTPRouteMultipleGateways": "needs one address per Gateway: Meridian serves every Gateway of its class on the "
    "fleet's shared listeners, so two Gateways' catch-all routes meet on one host",
}
TIMEOUT = 15.0
# Gateway listener ports other than 80/443 (GatewayPort8080) -> the free port Envoy serves them on
# in this run: Meridian gives such a listener an Envoy listener on its port, and the test may not
# take a fixed port on a shared machine. The manifests' listener port and what the requests expect
# of it (the address they go to, a Location that keeps the listener's port) are mapped alike.
OWN_PORTS: dict[int, int] = {}
# Listener ports of the transcribed manifests that get a port of their own (chosen when a case uses it).
OWN_LISTENER_PORTS = (8080,)
SKIPPED_REQUESTS: list[str] = []  # requests of run cases marked `Skip` in their transcription (README.md)


def _lower(headers: dict[str, Any] | None) -> dict[str, str]:
    return {k.lower(): str(v) for k, v in (headers or {}).items()}


def _values(text: str) -> str:
    """Repeated header values as upstream's echo server reports them: joined by "," (ours: ", ")."""
    return ",".join(v.strip() for v in text.split(","))


def check(resp: Response, case: dict[str, Any], gw: Gateway) -> str | None:
    """Why `resp` does not meet the expected response (None when it does): upstream's CompareRoundTrip."""
    expected = case.get("Response") or {}
    codes = expected.get("StatusCodes") or [expected.get("StatusCode") or 200]
    if resp.status not in codes:
        return f"status {resp.status}, want {codes}"
    for name, value in _lower(expected.get("Headers")).items():
        got = ",".join(resp.headers.getall(name, []))
        if got != value:
            return f"response header {name}={got!r}, want {value!r}"
    for name in expected.get("AbsentHeaders") or []:
        if name in resp.headers:
            return f"response header {name} present"
    if resp.status in (200, 204):
        return _check_request(resp, case)
    if 300 <= resp.status < 400 and case.get("RedirectRequest"):
        return _check_redirect(resp, case, gw)
    return None


def _check_request(resp: Response, case: dict[str, Any]) -> str | None:
    try:
        echoed = resp.json()
    except (json.JSONDecodeError, ValueError):
        return f"not an echo response: {resp.text[:100]!r}"
    req = case.get("Request") or {}
    exp = (case.get("ExpectedRequest") or {}).get("Request") or req
    absent = (case.get("ExpectedRequest") or {}).get("AbsentHeaders") or []
    if case.get("Backend") and echoed.get("service") != case["Backend"]:
        return f"served by {echoed.get('service')}, want {case['Backend']}"
    if echoed.get("namespace") != case.get("Namespace"):
        return f"namespace {echoed.get('namespace')}, want {case.get('Namespace')}"
    if exp.get("Host") and echoed.get("host") != exp["Host"]:
        return f"host {echoed.get('host')!r}, want {exp['Host']!r}"
    if echoed.get("path") != exp.get("Path", req.get("Path")):
        return f"path {echoed.get('path')!r}, want {exp.get('Path')!r}"
    if echoed.get("method") != (exp.get("Method") or "GET"):
        return f"method {echoed.get('method')}, want {exp.get('Method') or 'GET'}"
    got = _lower(echoed.get("headers"))
    for name, value in _lower(exp.get("Headers")).items():
        if name not in got or _values(got[name]) != value:
            return f"request header {name}={got.get(name)!r}, want {value!r}"
    for name in absent:
        if name.lower() in got:
            return f"request header {name} should be absent"
    return None


def _check_redirect(resp: Response, case: dict[str, Any], gw: Gateway) -> str | None:
    want = case["RedirectRequest"]
    loc = urlsplit(resp.headers.get("Location", ""))
    host = want.get("Host") or loc.hostname
    if loc.hostname != host:
        return f"redirect host {loc.hostname!r}, want {host!r}"
    scheme = want.get("Scheme") or "http"
    if loc.scheme != scheme:
        return f"redirect scheme {loc.scheme!r}, want {scheme!r}"
    path = want.get("Path") or urlsplit((case.get("Request") or {}).get("Path", "/")).path
    if loc.path != path:
        return f"redirect path {loc.path!r}, want {path!r}"
    port = str(loc.port or "")
    if want.get("Port"):
        sent_to = (case.get("Request") or {}).get("Port")
        wanted = str(OWN_PORTS[sent_to]) if sent_to and str(want["Port"]) == str(sent_to) else str(want["Port"])
        if port != wanted:
            return f"redirect port {port!r}, want {wanted!r}"
    elif port not in ("", "80" if loc.scheme == "http" else "443"):
        return f"redirect port {port!r} for {loc.scheme}, want none or the well-known one"
    return None


def send(gw: Gateway, case: dict[str, Any]) -> Response:
    req = case.get("Request") or {}
    headers = dict(req.get("Headers") or {})
    if case.get("BackendSetResponseHeaders"):
        headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in case["BackendSetResponseHeaders"].items())
    if req.get("Port"):  # a Gateway listener on its own port (OWN_PORTS)
        port = OWN_PORTS[req["Port"]]
        return request(req.get("Method") or "GET", port, req.get("Path") or "/",
                       host=req.get("Host") or f"127.0.0.1:{port}", headers=headers or None)  # fmt: skip
    if req.get("Scheme") == "https":  # SNI = Host, as upstream's MakeTLSRequest
        return gw.get_https(req["Host"], req.get("Path") or "/", sni=req["Host"], headers=headers or None)
    # Upstream sends to the Gateway's address, "IP:80"; the fleet's port 80 is Envoy's --http-port here.
    return gw.get(req.get("Host") or "127.0.0.1:80", req.get("Path") or "/", method=req.get("Method") or "GET",
                  headers=headers or None)  # fmt: skip


def mirrored(gw: Gateway, case: dict[str, Any], path: str) -> str | None:
    for target in case.get("MirroredTo") or []:
        ref = target.get("BackendRef") or {}
        servers = [s for s in gw.fleet.servers if s.service == ref.get("Name") and s.namespace == ref.get("Namespace")]
        if not any(r.path == path for s in servers for r in s.requests):
            return f"no mirrored request {path} at {ref.get('Namespace')}/{ref.get('Name')}"
    return None


def with_endpoint_slices(gw: Gateway, manifests: str, slices: list[dict[str, str]]) -> str:
    """The manifests with the EndpointSlices a case's cluster and Go code fill (HTTPRouteServiceTypes):
    each named slice lists the echo pods of Service `pods` (their own ports) under the port name."""
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    names = {s["name"] for s in slices}
    docs = [d for d in docs if not (d.get("kind") == "EndpointSlice" and d["metadata"]["name"] in names)]
    for s in slices:
        ns = next(d["metadata"]["namespace"] for d in docs if d.get("kind") == "Service"
                  and d["metadata"]["name"] == s["service"])  # fmt: skip
        pods = [p for p in gw.fleet.servers if p.service == s["pods"] and p.namespace == ns]
        assert len({p.port for p in pods}) == 1, "one slice lists one port"
        docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": s["name"], "namespace": ns,
                                  "labels": {"kubernetes.io/service-name": s["service"]}},
                     "addressType": "IPv4",
                     "ports": [{"name": s["port"], "port": pods[0].port, "protocol": "TCP"}],
                     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}} for _ in pods[:1]]})
    return dump_manifests(docs)


def own_ports(manifests: str) -> str:
    """The manifests with Gateway listener ports other than 80/443 mapped as OWN_PORTS says.

    The port is chosen here, just before the case publishes its listener, not when the module starts:
    a port only known free minutes earlier may meanwhile be taken by another test worker.
    """
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    used = {listener.get("port") for doc in docs if doc.get("kind") == "Gateway"
            for listener in (doc.get("spec") or {}).get("listeners") or []}  # fmt: skip
    for port in OWN_LISTENER_PORTS:
        if port in used:
            OWN_PORTS[port] = free_port()
    for doc in docs:
        if doc.get("kind") == "Gateway":
            for listener in (doc.get("spec") or {}).get("listeners") or []:
                if listener.get("port") in OWN_PORTS and listener["port"] in OWN_LISTENER_PORTS:
                    listener["port"] = OWN_PORTS[listener["port"]]
    return dump_manifests(docs)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gatewayapi-conformance"), serve_args=())
    try:
        g.start()
        for ns, services in BACKENDS.items():
            for svc in services:
                g.backend(svc, namespace=ns, port=8080)
        secret, _ = self_signed_tls_secret("tls-validity-checks-certificate", "gateway-conformance-infra",
                                           "second-example.org")  # fmt: skip
        g.write("base.yaml", (HERE / "base.yaml").read_text() + "\n---\n" + dump_manifests([secret]))
        g.wait_converged()
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def grpc_backends(gw: Gateway) -> Iterator[list[ConformanceGrpcEcho]]:
    servers = [ConformanceGrpcEcho(svc, ns) for ns, names in GRPC_BACKENDS.items() for svc in names]
    try:
        for srv in servers:
            gw.publish(srv.service, [srv], namespace=srv.namespace, port=8080)  # type: ignore[list-item]
        gw.wait_converged()
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance(gw: Gateway, name: str, request: pytest.FixtureRequest) -> None:
    if name in NOT_RUN:
        pytest.skip(NOT_RUN[name])
    case = CASES[name]
    manifests = own_ports(case["manifests"].replace("{GATEWAY_CLASS_NAME}", "meridian-conformance"))
    if case.get("protocol") == "grpc":
        request.getfixturevalue("grpc_backends")
    if case.get("endpointSlices"):
        manifests = with_endpoint_slices(gw, manifests, case["endpointSlices"])
    gw.write("case.yaml", manifests)
    try:
        if case.get("protocol") == "grpc":
            _run_grpc(gw, name, case)
            return
        for i, expected in enumerate(case["requests"]):
            if expected.get("Skip"):
                SKIPPED_REQUESTS.append(f"{name} request {i}: {expected['Skip']}")
                continue
            gone = (expected.get("Before") or {}).get("Delete")
            if gone:  # the upstream test deletes an object between its requests
                docs = [d for d in yaml.safe_load_all(manifests) if d and not _names(d, gone)]
                manifests = dump_manifests(docs)
                gw.write("case.yaml", manifests)
            deadline = time.monotonic() + TIMEOUT
            while True:
                for s in gw.fleet.servers:
                    s.reset()
                try:
                    resp = send(gw, expected)
                    problem = check(resp, expected, gw)
                except OSError as exc:  # e.g. a TLS handshake before the certificate is served
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is None and expected.get("MirroredTo"):
                    problem = _wait_mirror(gw, expected)
                if problem is None:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} request {i} {expected.get('Request')}: {problem}")
                time.sleep(0.1)
        if case.get("distribution"):
            _check_distribution(gw, case["distribution"])
    finally:
        gw.remove("case.yaml")
        gw.wait_converged()


def check_grpc(answer: Answer, expected: dict[str, Any]) -> str | None:
    """Why `answer` does not meet the expected response (None when it does): upstream's
    grpc.compareResponse (status code; when OK, the namespace and the pod name's prefix)."""
    want = getattr(grpc.StatusCode, _UPPER.sub(r"\1_\2", expected.get("Code") or "OK").upper())
    if answer.code != want:
        return f"status {answer.code.name}, want {want.name}"
    if answer.code == grpc.StatusCode.OK:
        ctx = answer.response.assertions.context
        if expected.get("Namespace") and ctx.namespace != expected["Namespace"]:
            return f"namespace {ctx.namespace!r}, want {expected['Namespace']!r}"
        if expected.get("Backend") and not ctx.pod.startswith(expected["Backend"]):
            return f"pod {ctx.pod!r}, want one of {expected['Backend']!r}"
    return None


_UPPER = re.compile(r"([a-z])([A-Z])")


def grpc_call(gw: Gateway, expected: dict[str, Any]) -> Answer:
    # Upstream dials the Gateway's address: its :authority is "IP:80" unless the case sets one.
    return grpc_echo_call(gw.http_port, expected.get("Method") or "Echo",
                          authority=expected.get("Authority") or "127.0.0.1:80",
                          metadata=expected.get("Metadata"))  # fmt: skip


def _run_grpc(gw: Gateway, name: str, case: dict[str, Any]) -> None:
    """A GRPCRoute case: each expected response retried until it matches (up to TIMEOUT), then the
    weighted distribution over the pods that answer, as upstream's grpcroute-weight."""
    for i, expected in enumerate(case["requests"]):
        deadline = time.monotonic() + TIMEOUT
        while (problem := check_grpc(grpc_call(gw, expected), expected)) is not None:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} request {i} {expected}: {problem}")
            time.sleep(0.1)
    want = case.get("distribution")
    if want:
        def backend() -> str:
            answer = grpc_call(gw, case["requests"][0])
            pod = answer.response.assertions.context.pod if answer.code == grpc.StatusCode.OK else ""
            return next((svc for svc in want["weights"] if pod.startswith(svc)), f"{answer.code.name} {pod}")

        _check_shares(want, backend)


def _check_distribution(gw: Gateway, want: dict[str, Any]) -> None:
    """Upstream's weight.TestWeightedDistribution: the share of each backend within the tolerance, and
    no request for a backend of weight 0 (a few attempts, as upstream retries)."""
    def backend() -> str:
        r = gw.get("127.0.0.1:80", "/")
        return str(r.json().get("service")) if r.status == 200 else f"status {r.status}"

    _check_shares(want, backend)


def _check_shares(want: dict[str, Any], backend: Callable[[], str]) -> None:
    problem = ""
    for _ in range(int(want.get("attempts", 1))):
        seen: dict[str, int] = {}
        for _ in range(int(want["requests"])):
            name = backend()
            seen[name] = seen.get(name, 0) + 1
        total = sum(seen.values())
        problems = [f"{svc}: {seen.get(svc, 0) / total:.3f}, want {share}" for svc, share in want["weights"].items()
                    if abs(seen.get(svc, 0) / total - share) > want["tolerance"] or (share == 0 and seen.get(svc))]
        problems += [f"unexpected {svc}" for svc in seen if svc not in want["weights"]]
        if not problems:
            return
        problem = "; ".join(problems)
    pytest.fail(f"weighted distribution: {problem}")


def _names(doc: dict[str, Any], ref: dict[str, str]) -> bool:
    meta = doc.get("metadata") or {}
    return (doc.get("kind"), meta.get("namespace"), meta.get("name")) == (ref["Kind"], ref["Namespace"], ref["Name"])


def _wait_mirror(gw: Gateway, expected: dict[str, Any]) -> str | None:
    path = (expected.get("Request") or {}).get("Path", "/")
    deadline = time.monotonic() + 2
    while (problem := mirrored(gw, expected, path)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return problem


STATUS_CASES = sorted(n for n, c in CASES.items() if c.get("status"))


@pytest.mark.parametrize("name", STATUS_CASES)
def test_status_conformance(name: str) -> None:
    """Cases that assert status only: the statuses the leader would write (gatewayapi/status.py) for
    the base objects plus the case's manifests, as compiled by `compile`."""
    want = CASES[name]["status"]
    text = (HERE / "base.yaml").read_text() + "\n---\n" + CASES[name]["manifests"].replace(
        "{GATEWAY_CLASS_NAME}", "meridian-conformance")  # fmt: skip
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": ns},
                 "spec": {"ports": [{"port": 8080}]}} for ns, names in BACKENDS.items() for svc in names]  # fmt: skip
    parsed, problems = parse_manifests(text + "\n---\n" + dump_manifests(services))
    assert not problems
    by_kind: dict[str, list[Any]] = {}
    for kind, obj in parsed:
        by_kind.setdefault(kind, []).append(obj)
    result = compile(SourceObjects({"c1": by_kind}, "c1"), GatewayConfig()).gateway_api
    route = want["route"]
    ref = IngressRef("c1", route["namespace"], route["name"], kind="HTTPRoute")
    status = route_status(ref, result, [], {}) or {}
    conds = [c for p in status["parents"] if p["parentRef"]["name"] == want["gateway"] for c in p["conditions"]]
    cond = want["condition"]
    assert any((c["type"], c["status"], c["reason"]) == (cond["type"], cond["status"], cond["reason"]) for c in conds)
    if want.get("no_accepted_parents"):
        assert not any(c["type"] == "Accepted" and c["status"] == "True" for p in status["parents"]
                       for c in p["conditions"])  # fmt: skip
    (gw_ref,) = [r for r in result.gateways if r.namespace == "gateway-conformance-infra" and r.name == want["gateway"]]
    attached = sum(n for (g, _listener), n in result.attached.items() if g == gw_ref)
    assert attached == want["gateway_attached_routes"]
