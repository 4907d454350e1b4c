"""A whole gateway for end-to-end tests: Meridian + a real Envoy + echo backends + manifest dirs.

The control plane runs either as a real `meridian serve` subprocess (so tests can
kill -9 and restart it) or in-process on its own event loop thread (so a test can
reach the cache, e.g. to inject a resource Envoy rejects).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.devtools.echo import EchoFleet, EchoServer
from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.http import Response, request
from tests.support.ports import free_port
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
# Envoy still warming a listener or cluster it has ACKed (see Gateway.wait_converged).
WARMING = r"^(cluster_manager\.warming_clusters|listener_manager\.total_listeners_warming)$"


def dump_manifests(objs: Iterable[Mapping[str, Any]] | str) -> str:
    if isinstance(objs, str):
        return objs
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def service_manifests(
    name: str,
    servers: Iterable[EchoServer],
    *,
    namespace: str = "default",
    port: int = 80,
    port_name: str = "http",
    ready: Iterable[bool] | None = None,
    annotations: Mapping[str, str] | None = None,
    slice_name: str | None = None,
) -> list[dict[str, Any]]:
    """A Service and one EndpointSlice whose endpoints are the given echo servers.

    Every echo server listens on 127.0.0.1 with its own port, so each endpoint's port is its own:
    the slice lists one endpoint per port group (a slice per distinct port).
    """
    servers = list(servers)
    readiness = list(ready) if ready is not None else [True] * len(servers)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": {"ports": [{"name": port_name, "port": port, "targetPort": port_name}]},
    }
    slices = []
    for i, (srv, is_ready) in enumerate(zip(servers, readiness, strict=True)):
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{slice_name or name}-{i}",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": port_name, "port": srv.port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": is_ready}}],
            }
        )
    return [svc, *slices]


def ingress(
    name: str,
    rules: list[dict[str, Any]] | None = None,
    *,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    tls: list[dict[str, Any]] | None = None,
    default_backend: tuple[str, int] | None = None,
    ingress_class: str | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if ingress_class:
        spec["ingressClassName"] = ingress_class
    if default_backend:
        spec["defaultBackend"] = {"service": {"name": default_backend[0], "port": {"number": default_backend[1]}}}
    if tls:
        spec["tls"] = tls
    if rules:
        spec["rules"] = rules
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": dict(annotations or {})}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def rule(host: str | None, *paths: tuple[str, str, str, int]) -> dict[str, Any]:
    """rule("a.com", ("/", "Prefix", "svc", 80), ...)"""
    r: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": n}}}}
                for p, t, s, n in paths
            ]
        }
    }
    if host:
        r["host"] = host
    return r


class _InProcess:
    """MeridianApp on its own event loop thread."""

    def __init__(self, opts: Any) -> None:
        from controlplane.app import MeridianApp

        self.loop = asyncio.new_event_loop()
        self.app = MeridianApp(opts)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="meridian")
        self._thread.start()
        self.call(self.app.start())

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the control plane's loop and return its result."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.call(wrapper())

    def stop(self) -> None:
        try:
            self.call(self.app.stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class NotYet:
    """A falsy check result that says why: `wait_until` prints the last one when it times out, so a
    convergence wait that fails once in CI names the stream and type (or Envoy stat) it waited for."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.why


class Gateway:
    def __init__(
        self,
        root: Path,
        clusters: Iterable[str] = ("c1",),
        *,
        in_process: bool = False,
        delta: bool = False,
        serve_args: Iterable[str] = ("--watch-ingress-without-class",),
        envoy: bool = True,
        drain_time_s: int = 1,
    ) -> None:
        self.root = Path(root)
        self.dirs = {c: self.root / c for c in clusters}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.in_process = in_process
        self.delta = delta
        self.serve_args = list(serve_args)
        self.want_envoy = envoy
        self.drain_time_s = drain_time_s  # Envoy's --drain-time-s: short, unless a test watches a drain
        self.fleet = EchoFleet()
        self.xds_port = free_port()
        self.admin_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.east_west_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.inproc: _InProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self.log_path = self.root / "meridian.log"
        # The secure default, as a user gets it: a local CA here, Envoy with a client certificate.
        # Replicas share it (same root), as replicas in a cluster share the chart's certificates.
        self.state_dir = self.root / "state"
        self.node_cluster = "meridian-gateway"
        self.env: dict[str, str] = {}  # extra environment of the control plane subprocess
        self.owns_shared = True  # False for replicas: the fleet (and fake clusters) belong to the original

    # -- lifecycle -----------------------------------------------------------------
    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "controlplane", "serve"]
        for c, d in self.dirs.items():
            args += ["--cluster", f"{c}={d}"]
        args += [
            "--xds-address", f"127.0.0.1:{self.xds_port}",
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            "--listen-address", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--https-port", str(self.https_port),
            "--east-west-port", str(self.east_west_port),
            "--publish-address", "127.0.0.1",
            "--state-dir", str(self.state_dir),  # local CA, history, pin, admin token: one per gateway
            *self.serve_args,
        ]  # fmt: skip
        return args

    def start_control_plane(self) -> None:
        if self.in_process:
            from controlplane.cli import build_parser, serve_options

            opts = serve_options(build_parser().parse_args(self.argv()[3:]))
            self.inproc = _InProcess(opts)
        else:
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
            env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            log.close()
        wait_until(lambda: self.admin_status("/readyz") == 200, timeout=30, message="control plane not ready")

    def start(self) -> Gateway:
        self.start_control_plane()
        if self.want_envoy:
            boot = self.bootstrap("gw-1")
            self.envoy = EnvoyProcess(boot, workdir=self.root / "envoy", drain_time_s=self.drain_time_s)
            self.envoy.start()
            self.envoy.wait_ready(30)
            wait_until(lambda: self._listener_up(), timeout=30, message="gateway listener not up")
        return self

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def xds_insecure(self) -> bool:
        return "--xds-insecure" in self.serve_args

    def bootstrap(self, node_id: str, *, xds_addresses: Sequence[str] = (), **kw: Any) -> dict[str, Any]:
        """What `meridian bootstrap` renders for an Envoy of this gateway, authenticated with the local CA's
        client certificate; several addresses = several replicas."""
        group = kw.pop("node_cluster", self.node_cluster)
        delta = kw.pop("delta", None)
        return render_bootstrap(xds_address=list(xds_addresses) or [self.xds_address], node_id=node_id,
                                node_cluster=group, delta=self.delta if delta is None else delta,
                                tls=None if self.xds_insecure else local_client_tls(self.state_dir, group),
                                **kw)  # fmt: skip

    def xds_channel(self) -> grpc.Channel:
        """A gRPC channel to this control plane's ADS, for tests asking it for resources directly
        (TLS with the default group's client certificate, as an Envoy of this gateway would use)."""
        if self.xds_insecure:
            return grpc.insecure_channel(self.xds_address)
        tls = local_client_tls(self.state_dir, self.node_cluster)
        creds = grpc.ssl_channel_credentials(
            Path(tls.ca).read_bytes(), Path(tls.key).read_bytes(), Path(tls.cert).read_bytes()  # type: ignore[arg-type]
        )
        return grpc.secure_channel(self.xds_address, creds)

    def replica(self, name: str) -> Gateway:
        """Another control plane process for the same sources and gateway ports (own xDS/admin ports and log).

        Everything else (arguments, sources, the state dir with its CA, whatever else `argv` uses) is
        shared, so both replicas build from the same inputs. Start it with `start()`; stop it with
        `stop_control_plane()`.
        """
        assert not self.in_process, "replicas are subprocesses"
        other = copy.copy(self)
        other.xds_port, other.admin_port = free_port(), free_port()
        other.log_path = self.root / f"meridian-{name}.log"
        other.proc, other.inproc, other.envoy = None, None, None
        other.want_envoy, other.owns_shared = False, False
        other.serve_args, other.env = list(self.serve_args), dict(self.env)
        return other

    def _listener_up(self) -> bool:
        try:
            request("GET", self.http_port, "/", host="meridian.invalid", timeout=2)
        except OSError:
            return False
        return True

    def kill_control_plane(self) -> None:
        assert self.proc is not None, "kill needs the subprocess mode"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
            self.envoy = None
        self.stop_control_plane()
        if self.owns_shared:
            self.fleet.close()

    def stop_control_plane(self) -> None:
        """SIGTERM (a graceful stop: the leader hands its lease back); no-op when not running."""
        if self.inproc is not None:
            self.inproc.stop()
            self.inproc = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def app(self) -> Any:
        assert self.inproc is not None, "needs in_process=True"
        return self.inproc.app

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    # -- manifests -------------------------------------------------------------------
    def write(self, filename: str, objs: Iterable[Mapping[str, Any]] | str, cluster: str = "c1") -> Path:
        """Atomic write (temp file + rename), as a real deploy tool does."""
        path = self.dirs[cluster] / filename
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(dump_manifests(objs))
        os.replace(tmp, path)
        return path

    def remove(self, filename: str, cluster: str = "c1") -> None:
        (self.dirs[cluster] / filename).unlink()

    def backend(
        self,
        service: str,
        *,
        namespace: str = "default",
        cluster: str = "c1",
        replicas: int = 1,
        port: int = 80,
        port_name: str = "http",
        annotations: Mapping[str, str] | None = None,
        **knobs: Any,
    ) -> list[EchoServer]:
        """Start echo pods and publish their Service + EndpointSlices in `cluster`."""
        servers = [
            self.fleet.add(
                service=service, pod=f"{service}-{cluster}-{i}", namespace=namespace, cluster=cluster, **knobs
            )
            for i in range(replicas)
        ]
        self.publish(service, servers, namespace=namespace, cluster=cluster, port=port, port_name=port_name,
                     annotations=annotations)  # fmt: skip
        return servers

    def publish(
        self,
        service: str,
        servers: Iterable[EchoServer],
        *,
        namespace: str = "default",
        cluster: str = "c1",
        port: int = 80,
        port_name: str = "http",
        ready: Iterable[bool] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        objs = service_manifests(
            service, servers, namespace=namespace, port=port, port_name=port_name, ready=ready, annotations=annotations
        )
        self.write(f"svc-{namespace}-{service}.yaml", objs, cluster)

    # -- traffic and admin -----------------------------------------------------------------
    def get(self, host: str | None, path: str = "/", **kw: Any) -> Response:
        return request(kw.pop("method", "GET"), self.http_port, path, host=host, **kw)

    def get_https(self, host: str, path: str = "/", **kw: Any) -> Response:
        return request(kw.pop("method", "GET"), self.https_port, path, host=host, tls=True, **kw)

    def wait_status(self, host: str | None, path: str, status: int, timeout: float = 15, **kw: Any) -> Response:
        def check() -> Response | None:
            r = self.get(host, path, **kw)
            return r if r.status == status else None

        return wait_until(check, timeout=timeout, message=f"{host}{path} never answered {status}")

    def wait_served_by(self, host: str | None, path: str, service: str, timeout: float = 15, **kw: Any) -> Response:
        def check() -> Response | None:
            r = self.get(host, path, **kw)
            if r.status == 200 and r.json().get("service") == service:
                return r
            return None

        return wait_until(check, timeout=timeout, message=f"{host}{path} never served by {service}")

    def admin_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def admin(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/debug") else body.decode()

    def ingress_report(self, name: str, namespace: str = "default", cluster: str = "c1") -> dict[str, Any] | None:
        for r in self.admin("/debug/ingresses"):
            if (r["cluster"], r["namespace"], r["name"]) == (cluster, namespace, name):
                return r
        return None

    def wait_report(self, name: str, predicate: Any, timeout: float = 15, **kw: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            r = self.ingress_report(name, **kw)
            return r if r is not None and predicate(r) else None

        return wait_until(check, timeout=timeout, message=f"report of {name} never matched")

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample of the control plane's /metrics, parsed from the text format."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items()))
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.M)
        for m in pattern.finditer(text):
            got = ",".join(sorted((m.group(1) or "").split(","))) if m.group(1) else ""
            if got == want:
                return float(m.group(2))
        return None

    def wait_converged(self, timeout: float = 15) -> None:
        """Every connected stream has ACKed the current version of every type it subscribes to."""

        def check() -> bool | NotYet:
            snap = self.admin("/debug/snapshot")
            streams = self.admin("/debug/syncz")
            if not streams:
                return NotYet("no xDS stream")
            for s in streams:
                if not {"CDS", "LDS"} <= s["types"].keys():
                    return NotYet(f"stream {s['stream']} asked only for {sorted(s['types'])}")
                for short, t in s["types"].items():
                    want = str(snap["types"][short]["version"])
                    if (t.get("pending") or t.get("acked_version") not in (want, t.get("sent_version"))
                            or t.get("acked_version") != t.get("sent_version")):  # fmt: skip
                        return NotYet(f"stream {s['stream']} ({s['node_id']}) {short}: {t} (cache version {want})")
            # Envoy ACKs a listener update before the new listener (or filter chain) has warmed, i.e.
            # before its certificates and routes arrived; until then the old one answers.
            if self.envoy is not None and self.envoy.running():
                warming = self.envoy.stats(WARMING)
                if any(warming.values()):
                    return NotYet(f"Envoy warming: {warming}")
            return True

        wait_until(check, timeout=timeout, message="proxies never converged")
