"""Runs one transcribed case (cases/<GoTest>.yaml) against a gateway, as upstream's test does:

1. start the backends and publish their Services (in file mode, also wait until the gateway reaches
   each one, a probe to `svc.serving-tests:port` on the east-west listener, as upstream waits for the
   Endpoints, since files are read in no guaranteed order);
2. publish the Secrets and KIngresses and wait until they are ready (targets.py: CreateIngressReady);
3. run each step once, as upstream does after Ready.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conformance.knative import steps
from tests.conformance.knative.backends import NAMESPACE, CaseBackends
from tests.conformance.knative.kingress_hash import compute_hash
from tests.conformance.knative.targets import PROBE_HASH, READY_TIMEOUT, FileTarget, KubeTarget
from tests.conformance.steps import self_signed_tls_secret
from tests.support.http import Client
from tests.support.knative_images import ImageFleet
from tests.support.wait import wait_until

HERE = Path(__file__).resolve().parent
CASES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((HERE / "cases").glob("*.yaml"))}
# In a case, the port of the private load balancer (upstream: 80); Envoy's east-west port at run time.
PRIVATE_LB_PORT = "PRIVATE_LB_PORT"
Target = FileTarget | KubeTarget


class TrafficDropped(AssertionError):
    """TestUpdate's prober saw a failed request (kept apart so an expected failure can name just this)."""


class CaseRun:
    """One case against the gateway: its objects, backends, readiness and steps."""

    def __init__(self, target: Target, fleet: ImageFleet, case: dict[str, Any]) -> None:
        gw = target.gw
        case = yaml.safe_load(yaml.safe_dump(case).replace(PRIVATE_LB_PORT, str(gw.east_west_port)))
        self.target, self.case = target, case
        self.backends = CaseBackends(fleet, private_gateway_port=gw.east_west_port)
        self.listeners = {"public": gw.http_port, "https": gw.https_port, "private": gw.east_west_port}
        self.trust: steps.Trust = {}
        self.kingresses = [d for d in yaml.safe_load_all(case["manifests"]) if d]
        self.hashes = {ing["metadata"]["name"]: compute_hash(ing) for ing in self.kingresses}
        self.files: list[str] = []
        self.by_name = {b["name"]: b for b in case["backends"]}

    # -- objects -------------------------------------------------------------------------
    def publish(self, filename: str, objs: list[dict[str, Any]]) -> None:
        self.target.apply(filename, objs)
        if filename not in self.files:
            self.files.append(filename)

    def start_backend(self, backend: dict[str, Any]) -> None:
        self.publish(f"svc-{backend['name']}.yaml", self.backends.start(backend))

    def retire(self, name: str) -> None:
        """Upstream's cancel of a runtime Service: the Service and its pod go."""
        self.target.remove(f"svc-{name}.yaml")
        self.files.remove(f"svc-{name}.yaml")
        self.backends.stop(name)

    # -- readiness ---------------------------------------------------------------------
    def probe(self, host: str, listener: str) -> bool:
        headers = {"K-Network-Probe": "probe", "K-Network-Hash": PROBE_HASH}
        try:
            resp = steps.send(self.listeners, self.trust, {"host": host, "listener": listener, "headers": headers})
        except OSError:
            return False
        return resp.status == 200 and resp.headers.get("K-Network-Hash") == PROBE_HASH

    def answers_probes(self, service: str) -> bool:
        """grpc-ping answers no HTTP probe; every other image sits behind Knative's probe handler."""
        return self.by_name.get(service, {}).get("kind", "runtime") != "grpc"

    def wait_backend(self, backend: dict[str, Any]) -> None:
        """Upstream's CreateRuntimeService returns once the pod is ready, seconds after the Service was
        created: long after any gateway watching the API server has seen it. Here the "pod" is ready at
        once, so wait until the gateway reaches the Service (its east-west name) before a KIngress names
        it; else, in Kubernetes mode, the KIngress watch can deliver the update before the Service watch
        delivers the Service, and the path answers 503 "no backend" meanwhile, as it must."""
        if backend.get("kind", "runtime") in ("grpc", "external-name"):
            return  # an external-name Service leads back to the east-west listener itself
        host = f"{backend['name']}.{NAMESPACE}:{backend['port']}"
        wait_until(lambda: self.probe(host, "private"), timeout=READY_TIMEOUT, message=f"Service {host} never reached")

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
        self.publish("case.yaml", secrets + self.kingresses)
        self.target.wait_ready(self.kingresses, self.probe, self.answers_probes)

    def teardown(self) -> None:
        for filename in self.files:
            self.target.remove(filename)
        self.target.gw.wait_converged()
        self.backends.stop_all()

    # -- steps -------------------------------------------------------------------------
    def run(self, step: dict[str, Any]) -> None:
        ls, trust = self.listeners, self.trust
        kind = next(iter(step))
        if kind == "request":
            steps.request_step(ls, trust, step, self.hashes)
        elif kind == "unreachable":
            steps.unreachable_step(ls, step["unreachable"])
        elif kind == "concurrent":
            steps.concurrent_step(ls, trust, step["concurrent"], self.hashes)
        elif kind == "distribution":
            steps.distribution_step(ls, trust, step["distribution"])
        elif kind == "seen_all":
            steps.seen_all_step(ls, trust, step["seen_all"])
        elif kind == "websocket":
            steps.websocket_step(ls, step["websocket"])
        elif kind == "websocket_split":
            steps.websocket_split_step(ls, step["websocket_split"])
        elif kind == "grpc":
            steps.grpc_step(ls, step["grpc"])
        elif kind == "grpc_split":
            steps.grpc_split_step(ls, step["grpc_split"])
        elif kind == "update":
            self.update(step["update"])
        elif kind == "untouched":
            self.untouched(step["untouched"])
        else:
            raise ValueError(f"unknown step {kind!r}")

    def untouched(self, names: list[str]) -> None:
        """TestIngressClass's own check: KIngresses of another class are left as created (kube mode; file
        mode has no status to write, and the case's request step checks they are not served)."""
        if isinstance(self.target, KubeTarget):
            problems = {n: p for n in names if (p := self.target.untouched(n, NAMESPACE))}
            assert not problems, f"Unexpected update: {problems}"

    def update(self, spec: dict[str, Any]) -> None:
        """TestUpdate: rollouts under a prober that must never see a failure. After each update the new
        sentinel must be served: at once when the target has a Ready status (UpdateIngressReady), within
        READY_TIMEOUT otherwise."""
        prober = Prober(self.listeners["public"], spec["host"])
        ing = next(i for i in self.kingresses if i["metadata"]["name"] == spec["ingress"])
        previous = ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["serviceName"]
        with prober:
            for rollout in spec["rollouts"]:
                service = rollout["service"]
                if service not in self.backends.ports:
                    self.start_backend(self.by_name[service])
                    self.wait_backend(self.by_name[service])
                split = ing["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]
                split.update(serviceName=service, servicePort=rollout["port"],
                             appendHeaders={spec["header"]: rollout["sentinel"]})  # fmt: skip
                self.publish("case.yaml", self.kingresses)
                if self.target.kube:
                    self.target.wait_ready([ing], self.probe, self.answers_probes)
                    got, want = prober.sentinel(spec["header"]), rollout["sentinel"]
                    assert got == want, f"Header[{spec['header']!r}] = {got!r}, wanted {want!r} (as soon as Ready)"
                else:
                    sentinel = rollout["sentinel"]
                    wait_until(lambda: prober.sentinel(spec["header"]) == sentinel,  # noqa: B023 - called at once
                               timeout=READY_TIMEOUT, message=f"sentinel {sentinel} never served")  # fmt: skip
                if rollout.get("retire_previous") and previous != service:
                    self.retire(previous)
                previous = service
        assert prober.count > 0
        if prober.failures:
            raise TrafficDropped(f"{len(prober.failures)} of {prober.count} probes failed: {prober.failures[:5]}")


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

    def sentinel(self, header: str) -> str:
        """One more request (on its own connection), which must succeed as upstream's: its `header`."""
        with Client(self.port, host=self.host) as c:
            info = steps.runtime_info(c.request("GET", f"/?time={time.time_ns()}"))
        return steps.header_get(info, header)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def run_case(target: Target, fleet: ImageFleet, name: str) -> None:
    """Set up, run every step, tear down; an AssertionError names the case, its run.go key and the step."""
    case = CASES[name]
    run = CaseRun(target, fleet, case)
    try:
        run.setup()
        for i, step in enumerate(case["steps"]):
            try:
                run.run(step)
            except AssertionError as exc:
                raise type(exc)(f"{name} ({case['key']}) step {i}: {exc}") from None
    finally:
        run.teardown()
