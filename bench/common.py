"""Shared benchmark helpers: synthetic manifests, a control plane subprocess, Envoy, RSS, percentiles.

Kept free of pytest so the benchmarks run as plain scripts; `tests/unit/test_bench_smoke.py` runs the
same building blocks at N=5 so they cannot rot.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.devtools.envoy_proc import EnvoyProcess, free_port

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"

# --------------------------------------------------------------------------- manifests


def host_of(i: int) -> str:
    return f"h{i}.bench.example.com"


def objects_for(i: int, backend_port: int) -> list[dict[str, Any]]:
    """Ingress + Service + EndpointSlice number `i`: its own host and Service, one shared backend."""
    svc, ing = f"svc-{i}", f"ing-{i}"
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-0", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": ing, "namespace": NAMESPACE},
            "spec": {
                "rules": [
                    {
                        "host": host_of(i),
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": svc, "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]


def dump(objs: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def atomic_write(path: Path, text: str) -> None:
    """Write a temp file next to `path` (not a manifest suffix) and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_initial(directory: Path, n: int, backend_port: int, *, style: str = "per-file", chunk: int = 1000) -> None:
    """N objects sets as one file each (`per-file`) or `chunk` sets per file (`bulk`)."""
    directory.mkdir(parents=True, exist_ok=True)
    if style == "per-file":
        for i in range(n):
            (directory / f"app-{i}.yaml").write_text(dump(objects_for(i, backend_port)))
    elif style == "bulk":
        for start in range(0, n, chunk):
            objs = [o for i in range(start, min(n, start + chunk)) for o in objects_for(i, backend_port)]
            (directory / f"bulk-{start}.yaml").write_text(dump(objs))
    else:
        raise ValueError(f"unknown style {style!r}")


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of seconds, in milliseconds (rounded to 0.1 ms)."""
    return {k: round(percentile(values, q) * 1000, 1) for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}


# --------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS of a process in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def machine_facts() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    envoy_version = ""
    try:
        from controlplane.devtools.envoy_proc import envoy_binary

        envoy_version = (
            subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=10)
            .stdout.strip()
            .split("version:")[-1]
            .strip()
        )
    except Exception:  # a fact we can live without
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "envoy": envoy_version,
    }


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class ControlPlane:
    """`meridian serve --cluster c1=DIR` as a subprocess, with loopback ports chosen at run time."""

    def __init__(self, directory: Path, log_path: Path, extra_args: Sequence[str] = (), source: Path = REPO) -> None:
        """`source`: the checkout whose `controlplane` package runs (another commit, for A/B runs)."""
        self.source = source
        self.directory = directory
        self.log_path = log_path
        self.xds_port = free_port()
        self.admin_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.east_west_port = free_port()
        self.extra_args = list(extra_args)
        self.state_dir = Path(log_path).parent / "meridian-state"  # its own local CA: xDS over TLS, as by default
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "controlplane", "serve",
            "--cluster", f"c1={self.directory}",
            "--xds-address", f"127.0.0.1:{self.xds_port}",
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            "--listen-address", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--https-port", str(self.https_port),
            "--east-west-port", str(self.east_west_port),
            "--watch-ingress-without-class",
            "--state-dir", str(self.state_dir),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> ControlPlane:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.source, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"control plane exited with {self.proc.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def admin_json(self, path: str) -> Any:
        return json.loads(self.admin(path)[1])

    def ready(self) -> bool:
        try:
            return self.admin("/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def metric(self, name: str) -> float:
        """Sum of every sample of one Prometheus metric line prefix (e.g. meridian_snapshot_version)."""
        text = self.admin("/metrics")[1].decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def peak_rss_kib(self) -> int:
        return proc_status(self.pid).get("VmHWM", 0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_envoy(
    cp: ControlPlane, workdir: Path, *, delta: bool, node_id: str = "bench-gw", envoy_stats: str = "gateway"
) -> EnvoyProcess:
    group = "meridian-gateway"
    boot = render_bootstrap(xds_address=f"127.0.0.1:{cp.xds_port}", node_id=node_id, node_cluster=group, delta=delta,
                            tls=local_client_tls(cp.state_dir, group), envoy_stats=envoy_stats)  # fmt: skip
    env = EnvoyProcess(boot, workdir=workdir, log_level="warning", ready_timeout=120)
    env.start()
    return env


class HostProbe:
    """A keep-alive HTTP/1.1 client to the Envoy listener: `status(host)` costs one round trip."""

    def __init__(self, port: int, timeout: float = 5.0, interval: float = 0.0) -> None:
        self.port = port
        self.timeout = timeout
        # Seconds between polls in wait_status. 0: back to back, which keeps a core busy (this
        # process and Envoy's worker answering 404s) while the change is being applied.
        self.interval = interval
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def status(self, host: str, path: str = "/") -> int:
        """HTTP status, or 0 when the listener is not there (connection refused/reset)."""
        for _ in range(2):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.request("GET", path, headers={"Host": host})
                resp = self._conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.close()
                return resp.status
            except (OSError, http.client.HTTPException):
                self.close()
        return 0

    def wait_status(self, host: str, want: int, timeout: float, path: str = "/") -> float:
        """Poll back to back until `host` answers `want`; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            if self.status(host, path) == want:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}{path} did not answer {want} within {timeout}s")
            if self.interval:
                time.sleep(self.interval)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
