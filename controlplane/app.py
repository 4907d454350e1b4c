"""`meridian serve`: sources -> controller -> cache -> xDS server, plus the admin endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.addresses import split_host_port
from controlplane.admin import AdminServer
from controlplane.controller import Controller, GatewayConfig
from controlplane.history.service import HistoryService
from controlplane.history.wiring import HistorySettings, start_history
from controlplane.ingress.classes import ClassPolicy
from controlplane.ir import CertificateSecret
from controlplane.metrics import Metrics
from controlplane.sources.files import FileSource
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.identity import GroupPolicy
from controlplane.xds.server import XdsServer
from controlplane.xds.tlsfront import TlsFiles
from controlplane.xds.tokenreview import DEFAULT_AUDIENCE, TokenReviewer

if TYPE_CHECKING:
    from controlplane.kube_mode import KubeMode

log = logging.getLogger("controlplane.app")

# The event loop shares the GIL with worker threads (history saves, Kubernetes list parsing). Each
# time the loop comes back from a socket call while such a thread runs Python, it waits for the
# thread's switch interval (5 ms by default): a save overlapping a change then stretches the
# change's handful of sends and reads by 5 ms each (a 1 ms push took 30-130 ms at 10,000 Services,
# bench/route_breakdown.py). Switching sooner bounds each such wait to this.
GIL_SWITCH_INTERVAL = 0.0005


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
    public_https_port: int = 443  # the port in ssl-redirect Locations (omitted when 443)
    default_ssl_certificate: tuple[str, str] | None = None  # (namespace, name) of the default certificate
    east_west_port: int = 15080
    ingress_classes: list[str] = field(default_factory=lambda: ["meridian"])
    watch_ingress_without_class: bool = False
    publish_address: str | None = None
    publish_service: str | None = None
    knative_public_service: str | None = None  # KIngress status.publicLoadBalancer ("ns/name")
    knative_private_service: str | None = None  # KIngress status.privateLoadBalancer
    lease_duration: float = 15.0  # leader election (status and Events writer)
    lease_renew_interval: float = 5.0
    route_partitions: int | None = None  # None: automatic (one table until ~1,000 hosts)
    xds_insecure: bool = False  # plaintext, anonymous clients allowed (keyless): a loopback demo only
    xds_cert: str | None = None  # server certificate, key and client CA; default: the state dir's CA
    xds_key: str | None = None
    xds_ca: str | None = None
    # The local CA and, in file mode, the history, pin and admin token. None: $XDG_CACHE_HOME/meridian
    # or ~/.cache/meridian.
    state_dir: str | None = None
    xds_server_names: list[str] = field(default_factory=list)  # extra SANs for the local CA's server cert
    xds_allow: list[tuple[str, str]] = field(default_factory=list)  # (group, identity)
    xds_token_audience: str = DEFAULT_AUDIENCE
    history_size: int = 200  # versions kept in the history
    admin_token_file: str | None = None  # token for mutating admin endpoints (rollback, resume)
    rollback_max_age: float = 86400.0  # rolling back to an older version needs --yes


class MeridianApp:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        from controlplane.xds.localca import default_state_dir

        # One directory for the local CA and (file mode) the history, pin and admin token.
        self.state_dir = Path(opts.state_dir) if opts.state_dir else default_state_dir()
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
                public_https_port=opts.public_https_port,
                default_certificate=self._default_certificate_ref(),
                generated_certificate=self._generated_certificate(),
                east_west_port=opts.east_west_port,
                classes=ClassPolicy(frozenset(opts.ingress_classes), opts.watch_ingress_without_class),
                publish_address=opts.publish_address,
                route_partitions=opts.route_partitions,
            ),
        )
        self.xds: XdsServer | None = None
        self.admin = AdminServer(
            self.controller.view,
            ready=self.is_ready,
            metrics=self.metrics.registry,
            cache=self.cache,
            registry=self.registry,
            syncz=lambda: self.xds.syncz() if self.xds else [],
            cluster_problems=self.cluster_problems,
            extra={"/debug/gateways": self.gateway_statuses},
            history=self.history,
        )
        self.file_sources: list[FileSource] = []
        self.kube: KubeMode | None = None  # when watching Kubernetes
        self.xds_port: int | None = None
        self._fully_built = False
        self._startup_gc: asyncio.Task[None] | None = None
        self.admin_port: int | None = None

    def _default_certificate_ref(self) -> tuple[str, str] | None:
        """--default-ssl-certificate; in Kubernetes mode without it, the Secret the leader creates in
        Meridian's namespace if absent (an object every replica watches: one truth)."""
        from controlplane.default_certificate import OWN_SECRET

        if self.opts.default_ssl_certificate is None and not self.opts.clusters:
            return (self.opts.namespace, OWN_SECRET)
        return self.opts.default_ssl_certificate

    def _generated_certificate(self) -> CertificateSecret | None:
        """File mode: the self-signed default certificate kept in the state dir (the same after a
        restart). Kubernetes mode: none, a per-process one would differ between replicas; the default
        certificate is a Secret there (the chart's, or the one the leader creates)."""
        if not self.opts.clusters:
            return None
        from controlplane.default_certificate import state_dir_certificate

        try:
            return state_dir_certificate(self.state_dir)
        except OSError as exc:
            raise SystemExit(
                f"meridian: cannot keep the default certificate in {self.state_dir} ({exc.strerror or exc}); "
                "pass --state-dir or --default-ssl-certificate"
            ) from None

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
            # Only now: while the initial lists are parsed in worker threads, the shorter interval
            # costs ~5% more CPU to ready (GIL hand-offs; bench/multicluster.py) and no change is served.
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)

    def request_flush(self) -> None:
        self.controller.request_flush()

    def cluster_problems(self) -> list[dict[str, Any]]:
        return self.kube.problems() if self.kube is not None else []

    def gateway_statuses(self) -> list[dict[str, Any]]:
        """`/debug/gateways`: the Gateway API statuses the leader writes (file mode writes none)."""
        # Imported here: both load the Kubernetes client, which file mode otherwise never needs.
        from controlplane.gatewayapi.status import status_report
        from controlplane.status import StatusSettings, publish_addresses

        view, opts = self.controller.view, self.opts
        addresses = publish_addresses(StatusSettings(publish_address=opts.publish_address,
                                                     publish_service=opts.publish_service), self.registry)  # fmt: skip
        fleet = self.xds.fleet_settled() if self.xds else (0, True)
        return status_report(self.registry, view.gateway_api(), view.host_findings(), addresses, fleet)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.controller.attach(loop)
        await self._start_history()  # before any source: a replica starting while pinned serves the pin
        self._startup_gc = asyncio.create_task(self._collect_after_startup(), name="startup-gc")
        for cluster_id, directory in self.opts.clusters:
            store = self.registry.add(ClusterStore(cluster_id, primary=not self.file_sources))
            source = FileSource(directory, store)
            self.file_sources.append(source)
            await source.start()
        if self.opts.kubeconfig or self.opts.in_cluster:
            # Imported here so file mode never loads the Kubernetes client (kube_mode does not
            # import this module: no cycle).
            from controlplane.knative.status import KnativeStatusSettings
            from controlplane.kube_mode import KubeMode, KubeSettings
            from controlplane.status import StatusSettings

            opts = self.opts
            status = StatusSettings(opts.namespace, opts.lease_duration, opts.lease_renew_interval,
                                    opts.publish_address, opts.publish_service)  # fmt: skip
            knative = KnativeStatusSettings(opts.knative_public_service, opts.knative_private_service)
            settings = KubeSettings(opts.kubeconfig, opts.cluster_id, status, knative)
            self.kube = KubeMode(settings, self.registry, self.metrics, self.controller.view, self.request_flush,
                                 fleet=lambda: self.xds.fleet_settled() if self.xds else (0, True),
                                 acks=lambda: self.xds, pinned=lambda: self.history.pin is not None,
                                 own_default_certificate=None if opts.default_ssl_certificate else
                                 self.controller.config.default_certificate)  # fmt: skip
            await self.kube.start()
        self.xds = self._xds_server()
        self.xds_port = await _listen("--xds-address", self.opts.xds_address, self.xds.start)
        self.admin_port = await _listen("--admin-address", self.opts.admin_address, self.admin.start)
        # An empty configuration is still a configuration: publish listeners right away.
        self.controller.flush()
        log.info("xDS on port %s, admin on port %s", self.xds_port, self.admin_port)

    async def _start_history(self) -> None:
        opts = self.opts
        settings = HistorySettings(
            self.state_dir, opts.admin_token_file, opts.kubeconfig, opts.in_cluster, opts.namespace
        )
        try:
            await start_history(self.history, settings, self.registry,
                                fleet=lambda: self.xds.fleet_states() if self.xds is not None else [],
                                is_leader=self._is_leader)  # fmt: skip
        except Exception as exc:
            if not (opts.kubeconfig or opts.in_cluster):
                raise
            # The first request Meridian makes to the primary cluster (its history and pin ConfigMaps).
            from controlplane.sources.kube import describe_error

            log.debug("reading the history from the Kubernetes API server failed", exc_info=True)
            where = opts.kubeconfig or "the in-cluster configuration"
            raise StartupError(f"cannot read the history and rollback pin from the Kubernetes API server of "
                               f"{where} (namespace {opts.namespace}): {describe_error(exc)}") from exc

    def _is_leader(self) -> bool:
        """The status writer's leader (Kubernetes mode) also writes the history."""
        writer = self.kube.status_writer if self.kube is not None else None
        elector = getattr(writer, "elector", None)
        return bool(elector is not None and elector.is_leader)

    def _xds_server(self) -> XdsServer:
        """TLS with client certificates or tokens, unless --xds-insecure says plaintext."""
        opts = self.opts
        tokens = TokenReviewer(self.kube.api, opts.xds_token_audience) if self.kube is not None else None
        auth = XdsAuth(self.metrics, insecure=opts.xds_insecure, policy=GroupPolicy.from_rules(opts.xds_allow),
                       tokens=tokens)  # fmt: skip
        if opts.xds_insecure:
            log.warning("xDS is PLAINTEXT (--xds-insecure): clients are not authenticated; use it on loopback only")
            return XdsServer(self.cache, self.metrics, auth=auth)
        return XdsServer(self.cache, self.metrics, auth=auth, tls=self._xds_tls_files())

    def _xds_tls_files(self) -> TlsFiles:
        opts = self.opts
        if opts.xds_cert and opts.xds_key and opts.xds_ca:
            return TlsFiles(Path(opts.xds_cert), Path(opts.xds_key), Path(opts.xds_ca))
        from controlplane.xds.localca import DEFAULT_SERVER_NAMES, LocalCA

        names = [*DEFAULT_SERVER_NAMES, *opts.xds_server_names]
        host, _ = split_host_port(opts.xds_address, 18000)
        if host and host not in ("0.0.0.0", "::", ""):
            names.append(host)
        state_dir = self.state_dir
        try:
            issued = LocalCA(state_dir).server(list(dict.fromkeys(names)))
        except OSError as exc:
            raise SystemExit(
                f"meridian: cannot keep the xDS local CA in {state_dir} ({exc.strerror or exc}); pass --state-dir "
                "on a writable volume, or --xds-cert/--xds-key/--xds-ca"
            ) from None
        log.info("xDS certificates from the local CA in %s (CA: %s)", state_dir, issued.ca)
        return TlsFiles(issued.cert, issued.key, issued.ca)

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


class StartupError(Exception):
    """Meridian cannot start as configured (a port in use, an address that does not resolve)."""


async def _listen(flag: str, address: str, start: Callable[[str], Awaitable[int]]) -> int:
    try:
        return await start(address)
    except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, a name that does not resolve
        raise StartupError(f"cannot listen on {flag} {address}: {exc.strerror or exc}") from exc


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
