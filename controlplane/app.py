"""`meridian serve`: sources -> controller -> cache -> xDS server, plus the admin endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field
from typing import Any

from controlplane.admin import AdminServer
from controlplane.build.classes import ClassPolicy
from controlplane.controller import Controller, GatewayConfig
from controlplane.history.service import HistoryService
from controlplane.history.wiring import start_history
from controlplane.metrics import Metrics
from controlplane.sources.files import FileSource
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.server import XdsServer

log = logging.getLogger("controlplane.app")


@dataclass
class ServeOptions:
    clusters: list[tuple[str, str]] = field(default_factory=list)  # (cluster id, directory)
    kubeconfig: str | None = None
    in_cluster: bool = False
    cluster_id: str = "primary"  # the primary Kubernetes cluster's id
    namespace: str = "meridian-system"
    xds_address: str = "127.0.0.1:18000"
    admin_address: str = "127.0.0.1:19000"
    listen_address: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    east_west_port: int = 15080
    ingress_classes: list[str] = field(default_factory=lambda: ["meridian"])
    watch_ingress_without_class: bool = False
    publish_address: str | None = None
    publish_service: str | None = None
    lease_duration: float = 15.0  # leader election (status and Events writer)
    lease_renew_interval: float = 5.0
    route_partitions: int | None = None  # None: automatic (one table until ~1,000 hosts)
    history_size: int = 200  # versions kept in the history
    state_dir: str | None = None  # file mode: history, pin (and admin token) live here; None: memory only
    admin_token_file: str | None = None  # token for mutating admin endpoints (rollback, resume)
    rollback_max_age: float = 86400.0  # rolling back to an older version needs --yes


class MeridianApp:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.metrics = Metrics()
        self.registry = ClusterRegistry()
        self.cache = SnapshotCache()  # what the xDS server serves
        self.history = HistoryService(
            self.cache, self.metrics, size=opts.history_size, max_age=opts.rollback_max_age
        )  # the controller writes the sources' view to history.sources; history decides what is served
        self.controller = Controller(
            self.registry,
            self.history.sources,
            self.metrics,
            GatewayConfig(
                listen_address=opts.listen_address,
                http_port=opts.http_port,
                https_port=opts.https_port,
                east_west_port=opts.east_west_port,
                classes=ClassPolicy(frozenset(opts.ingress_classes), opts.watch_ingress_without_class),
                publish_address=opts.publish_address,
                route_partitions=opts.route_partitions,
            ),
        )
        self.xds: XdsServer | None = None
        self.admin = AdminServer(self)
        self.file_sources: list[FileSource] = []
        self.kube: Any = None  # controlplane.kube_mode.KubeMode when watching Kubernetes
        self.xds_port: int | None = None
        self._fully_built = False
        self._startup_gc: asyncio.Task[None] | None = None
        self.admin_port: int | None = None

    def is_ready(self) -> bool:
        """Serving everything the sources hold: all synced, and (the first time) all of it built.

        Without the second part a replica could report ready while the last remote cluster's
        endpoints still wait in the controller's queue, and an Envoy connecting to it would be
        sent a configuration without them.
        """
        if not (self.controller.ready.is_set() and self.registry.all_synced()):
            return False
        if not self._fully_built:
            self._fully_built = self.controller.idle()
        return self._fully_built

    async def _collect_after_startup(self) -> None:
        """No cyclic GC while the initial lists are read and built (hundreds of thousands of fresh
        objects, no garbage cycles worth chasing); afterwards everything built so far is frozen out
        of later collections. Bounded: collection resumes after 5 minutes whatever happens."""
        gc.disable()
        try:
            deadline = asyncio.get_running_loop().time() + 300
            while not self.is_ready() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            gc.freeze()
            gc.enable()

    def cluster_problems(self) -> list[dict[str, Any]]:
        return self.kube.problems() if self.kube is not None else []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.controller.attach(loop)
        await start_history(self)  # before any source: a replica starting while pinned serves the pin
        self._startup_gc = asyncio.create_task(self._collect_after_startup(), name="startup-gc")
        for cluster_id, directory in self.opts.clusters:
            store = self.registry.add(ClusterStore(cluster_id, primary=not self.file_sources))
            source = FileSource(directory, store)
            self.file_sources.append(source)
            await source.start()
        if self.opts.kubeconfig or self.opts.in_cluster:
            from controlplane.kube_mode import KubeMode

            self.kube = KubeMode(self)
            await self.kube.start()
        self.xds = XdsServer(self.cache, self.metrics)
        self.xds_port = await self.xds.start(self.opts.xds_address)
        self.admin_port = await self.admin.start(self.opts.admin_address)
        # An empty configuration is still a configuration: publish listeners right away.
        self.controller.flush()
        log.info("xDS on port %s, admin on port %s", self.xds_port, self.admin_port)

    async def stop(self) -> None:
        if self._startup_gc is not None:
            self._startup_gc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._startup_gc
        for source in self.file_sources:
            await source.stop()
        if self.kube is not None:
            await self.kube.stop()
        if self.xds is not None:
            await self.xds.stop()
        await self.history.stop()
        await self.admin.stop()


async def serve(opts: ServeOptions, stop: asyncio.Event | None = None) -> None:
    app = MeridianApp(opts)
    await app.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await app.stop()
