"""Knative ingress conformance (knative/networking test/conformance/ingress), transcribed: see README.md here.

Each case (cases/<GoTest>.yaml) is one upstream test: its backends (Services of Knative's test images),
its KIngresses as the API server stores them (defaults applied), and its requests and expectations as
data. The runner plays upstream's CreateRuntimeService / CreateIngressReady / RuntimeRequest against
file-mode Meridian and a real Envoy:

1. start the backends and write their Services and EndpointSlices, then wait until the gateway reaches
   each one (a Knative probe to `svc.serving-tests:port` on the east-west listener);
2. write the Secrets and KIngresses, then wait until the KIngress is "ready" as Knative's status prober
   sees it: every host of a Meridian KIngress answers a probe (`K-Network-Probe: probe`) on the
   listener of its visibility, then every Envoy has ACKed the current configuration;
3. run the steps once each, as upstream does after Ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.knative import steps
from tests.conformance.knative.backends import NAMESPACE, CaseBackends
from tests.conformance.knative.kingress_hash import compute_hash
from tests.conformance.steps import self_signed_tls_secret
from tests.support.gateway import Gateway
from tests.support.http import Client
from tests.support.knative_images import ImageFleet
from tests.support.wait import wait_until

HERE = Path(__file__).resolve().parent
CASES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((HERE / "cases").glob("*.yaml"))}
CLASS_ANNOTATION = "networking.knative.dev/ingress.class"
INGRESS_CLASS = "meridian.ingress.networking.knative.dev"
SERVE_ARGS: tuple[str, ...] = ()
READY_TIMEOUT = 15.0
PROBE_HASH = "meridian-conformance-ready"  # any value but "override" comes back as sent
# Upstream tests not run, and why (README.md): none needs more than file mode and one Envoy so far.
NOT_RUN: dict[str, str] = {}
# Upstream tests Meridian fails, and why (README.md). Strict: one that starts passing fails the run, to be
# taken off this list.
EXPECTED_FAILURES: dict[str, str] = {}


def _cases() -> list[Any]:
    return [pytest.param(name, marks=pytest.mark.xfail(reason=EXPECTED_FAILURES[name], strict=True))
            if name in EXPECTED_FAILURES else name for name in sorted(CASES)]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, ImageFleet]]:
    gw = Gateway(tmp_path_factory.mktemp("knative-conformance"), serve_args=SERVE_ARGS)
    fleet = ImageFleet()
    try:
        gw.start()
        yield gw, fleet
    finally:
        gw.stop()
        fleet.close()


class CaseRun:
    """One case against the gateway: its files, backends, readiness and steps."""

    def __init__(self, gw: Gateway, fleet: ImageFleet, case: dict[str, Any]) -> None:
        self.gw, self.case = gw, case
        self.backends = CaseBackends(fleet, private_gateway_port=gw.east_west_port)
        self.listeners = {"public": gw.http_port, "https": gw.https_port, "private": gw.east_west_port}
        self.trust: steps.Trust = {}
        self.kingresses = [d for d in yaml.safe_load_all(case["manifests"]) if d]
        self.hashes = {ing["metadata"]["name"]: compute_hash(ing) for ing in self.kingresses}
        self.files: list[str] = []

    # -- files -------------------------------------------------------------------------
    def write(self, filename: str, objs: list[dict[str, Any]]) -> None:
        self.gw.write(filename, objs)
        if filename not in self.files:
            self.files.append(filename)

    def retire(self, name: str) -> None:
        """Upstream's cancel of a runtime Service: the Service and its pod go."""
        self.gw.remove(f"svc-{name}.yaml")
        self.files.remove(f"svc-{name}.yaml")
        self.backends.stop(name)

    def start_backend(self, backend: dict[str, Any]) -> None:
        self.write(f"svc-{backend['name']}.yaml", self.backends.start(backend))

    # -- readiness ---------------------------------------------------------------------
    def probe(self, host: str, listener: str) -> bool:
        headers = {"K-Network-Probe": "probe", "K-Network-Hash": PROBE_HASH}
        try:
            resp = steps.send(self.listeners, self.trust, {"host": host, "listener": listener, "headers": headers})
        except OSError:
            return False
        return resp.status == 200 and resp.headers.get("K-Network-Hash") == PROBE_HASH

    def wait_backend(self, backend: dict[str, Any]) -> None:
        """As upstream waits for the Service's Endpoints: the gateway reaches the Service (east-west)."""
        if backend.get("kind", "runtime") in ("grpc", "private-gateway"):
            return  # grpc-ping answers no HTTP probe; a private-gateway Service leads back to this listener
        host = f"{backend['name']}.{NAMESPACE}:{backend['port']}"
        wait_until(lambda: self.probe(host, "private"), timeout=READY_TIMEOUT, message=f"Service {host} never reached")

    def ready_hosts(self) -> Iterator[tuple[str, str]]:
        """(host, listener) of every rule of Meridian's KIngresses whose backends answer probes."""
        probe_kinds = {b["name"]: b.get("kind", "runtime") != "grpc" for b in self.case["backends"]}
        for ing in self.kingresses:
            if (ing["metadata"].get("annotations") or {}).get(CLASS_ANNOTATION) != INGRESS_CLASS:
                continue
            spec = ing["spec"]
            tls_hosts = {h for t in spec.get("tls") or [] for h in t.get("hosts") or []}
            for rule in spec["rules"]:
                splits = [s for p in rule["http"]["paths"] for s in p["splits"]]
                if not any(probe_kinds.get(s["serviceName"], True) for s in splits):
                    continue
                for host in rule["hosts"]:
                    if rule.get("visibility") == "ClusterLocal":
                        yield host, "private"
                    elif spec.get("httpOption") == "Redirected" and host in tls_hosts:
                        yield host, "https"
                    else:
                        yield host, "public"

    def setup(self) -> None:
        started = [b for b in self.case["backends"] if not b.get("deferred")]
        for backend in started:
            self.start_backend(backend)
        for backend in started:
            self.wait_backend(backend)
        secrets = []
        for s in self.case.get("secrets") or []:
            secret, pem = self_signed_tls_secret(s["name"], NAMESPACE, s["hosts"][0])
            secrets.append(secret)
            self.trust.update(dict.fromkeys(s["hosts"], pem))
        self.write("case.yaml", secrets + self.kingresses)
        for host, listener in self.ready_hosts():
            wait_until(lambda: self.probe(host, listener), timeout=READY_TIMEOUT,  # noqa: B023 - called at once
                       message=f"KIngress host {host} never ready on the {listener} listener")  # fmt: skip
        self.gw.wait_converged()

    def teardown(self) -> None:
        for filename in self.files:
            self.gw.remove(filename)
        self.gw.wait_converged()
        self.backends.stop_all()

    # -- steps -------------------------------------------------------------------------
    def run(self, step: dict[str, Any]) -> None:
        ls, trust = self.listeners, self.trust
        if "request" in step:
            steps.request_step(ls, trust, step, self.hashes)
        elif "concurrent" in step:
            steps.concurrent_step(ls, trust, step["concurrent"], self.hashes)
        elif "distribution" in step:
            steps.distribution_step(ls, trust, step["distribution"])
        elif "seen_all" in step:
            steps.seen_all_step(ls, trust, step["seen_all"])
        elif "websocket" in step:
            steps.websocket_step(ls, step["websocket"])
        elif "websocket_split" in step:
            steps.websocket_split_step(ls, step["websocket_split"])
        elif "grpc" in step:
            steps.grpc_step(ls, step["grpc"])
        elif "grpc_split" in step:
            steps.grpc_split_step(ls, step["grpc_split"])
        elif "update" in step:
            self.update(step["update"])
        else:
            raise ValueError(f"unknown step {sorted(step)}")

    def update(self, spec: dict[str, Any]) -> None:
        """TestUpdate: rollouts under a prober that must never see a failure."""
        prober = Prober(self.listeners["public"], spec["host"])
        ing = next(i for i in self.kingresses if i["metadata"]["name"] == spec["ingress"])
        by_name = {b["name"]: b for b in self.case["backends"]}
        previous = ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["serviceName"]
        with prober:
            for rollout in spec["rollouts"]:
                service = rollout["service"]
                if service not in self.backends.ports:
                    self.start_backend(by_name[service])
                    self.wait_backend(by_name[service])
                split = ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]
                split.update(serviceName=service, servicePort=rollout["port"],
                             appendHeaders={spec["header"]: rollout["sentinel"]})  # fmt: skip
                self.write("case.yaml", self.kingresses)
                wait_until(lambda: prober.serves(spec["header"], rollout["sentinel"]),  # noqa: B023 - called at once
                           timeout=READY_TIMEOUT, message=f"sentinel {rollout['sentinel']} never served")  # fmt: skip
                if rollout.get("retire_previous") and previous != service:
                    self.retire(previous)
                previous = service
        assert prober.count > 0
        assert not prober.failures, f"{len(prober.failures)} of {prober.count} probes failed: {prober.failures[:5]}"


class Prober:
    """Upstream's checkOK: requests the host in a loop (each with a fresh ?time=) until stopped."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.count = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="update-prober", daemon=True)

    def _loop(self) -> None:
        with Client(self.port, host=self.host) as c:
            while not self._stop.is_set():
                try:
                    steps.runtime_info(c.request("GET", f"/?time={time.time_ns()}"))
                except (AssertionError, OSError) as exc:
                    self.failures.append(steps.describe(exc))
                    c.close()
                self.count += 1

    def serves(self, header: str, value: str) -> bool:
        """One more request (on its own connection): does it carry `value`? It must succeed, as upstream's."""
        with Client(self.port, host=self.host) as c:
            info = steps.runtime_info(c.request("GET", f"/?time={time.time_ns()}"))
        return steps.header_get(info, header) == value

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("name", _cases())
def test_knative_conformance(env: tuple[Gateway, ImageFleet], name: str) -> None:
    if name in NOT_RUN:
        pytest.skip(NOT_RUN[name])
    gw, fleet = env
    run = CaseRun(gw, fleet, CASES[name])
    try:
        run.setup()
        for i, step in enumerate(CASES[name]["steps"]):
            try:
                run.run(step)
            except AssertionError as exc:
                pytest.fail(f"{name} ({CASES[name]['key']}) step {i}: {exc}")
    finally:
        run.teardown()


def test_kingress_hash_matches_upstream() -> None:
    """The runner's ComputeHash port reproduces upstream's own expected hashes (pkg/ingress TestInsertProbe)."""
    ing: dict[str, Any] = {"metadata": {"name": ""}, "spec": {"rules": [
        {"hosts": ["example.com"], "http": {"paths": [{"splits": [{"serviceName": "blah"}]}]}}]}}  # fmt: skip
    assert compute_hash(ing) == "a25000a350642c8abef53078b329bd043e18758f6063c1172d53b04e14fcf5c1"
    ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["appendHeaders"] = {"Foo": "bar"}
    assert compute_hash(ing) == "6b652c7abed871354affd4a9cb699d33816f24541fac942149b91ad872fe63ca"
