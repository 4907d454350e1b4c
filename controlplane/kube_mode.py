"""Kubernetes mode: the primary cluster from a kubeconfig (or in-cluster) plus remote clusters
registered through labelled Secrets in Meridian's namespace, and the leader's status writer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.engine.view import IngressView
from controlplane.gatewayapi.status import GatewayApiStatusWriter
from controlplane.knative.status import FleetAcks, KnativeStatusSettings, KnativeStatusWriter
from controlplane.metrics import Metrics
from controlplane.sources.kube import KubeSource, api_client_from_file, in_cluster_api_client
from controlplane.sources.remote import RemoteClusterManager
from controlplane.status import StatusSettings, StatusWriter
from controlplane.store import ClusterRegistry, ClusterStore

log = logging.getLogger("controlplane.kube")


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: str | None = None  # None: in-cluster configuration
    cluster_id: str = "primary"
    status: StatusSettings = field(default_factory=StatusSettings)  # its namespace is Meridian's
    knative: KnativeStatusSettings = field(default_factory=KnativeStatusSettings)


class KubeMode:
    def __init__(
        self,
        settings: KubeSettings,
        registry: ClusterRegistry,
        metrics: Metrics,
        view: IngressView,
        request_flush: Callable[[], None],
        *,
        fleet: Callable[[], tuple[int, bool]] = lambda: (0, True),
        acks: Callable[[], FleetAcks | None] = lambda: None,
        pinned: Callable[[], bool] = lambda: False,
        own_default_certificate: tuple[str, str] | None = None,
    ) -> None:
        self.fleet = fleet  # (gateways connected, all ACKed the current routes): Gateway `Programmed`
        self.acks = acks  # which connected gateways ACKed which versions: KIngress `LoadBalancerReady`
        self.pinned = pinned  # a rollback pin holds the served configuration
        # Without --default-ssl-certificate: the Secret the leader creates if absent (default_certificate.py).
        self.own_default_certificate = own_default_certificate
        self._ensure_task: asyncio.Task[None] | None = None
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.view = view
        self.request_flush = request_flush
        self.api = api_client_from_file(settings.kubeconfig) if settings.kubeconfig else in_cluster_api_client()
        self.cluster_id = settings.cluster_id
        self.store = registry.add(ClusterStore(self.cluster_id, primary=True))
        self.source = KubeSource(self.cluster_id, self.api, self.store, metrics=metrics)
        namespace = settings.status.namespace
        self.remotes = RemoteClusterManager(self.api, registry, namespace, self.cluster_id, metrics)
        self.status_writer: StatusWriter | None = None
        self.gateway_status: GatewayApiStatusWriter | None = None
        self.knative_status: KnativeStatusWriter | None = None
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.source.start()
        await self.remotes.start()
        self._sync_task = asyncio.create_task(self._flush_when_synced(), name="kube-initial-sync")
        self.status_writer = StatusWriter(
            self.view,
            self.registry,
            self.api,
            self.settings.status,
            self.metrics.registry,
            remote_client=self.remotes.api_client,
        )
        writer = self.status_writer
        self.gateway_status = GatewayApiStatusWriter(
            self.registry,
            self.view.gateway_api,
            self.view.host_findings,
            writer.addresses,
            lambda: writer.is_leader,
            writer.client_for,
            fleet=self.fleet,
        )
        self.knative_status = KnativeStatusWriter(
            self.registry, self.view.knative, self.settings.knative, lambda: writer.is_leader, writer.client_for,
            acks=self.acks, pinned=self.pinned,
        )
        writer.elector.add_listener(self._leadership)
        self.view.on_built(self.gateway_status.kick)  # status follows what the engine serves
        self.view.on_built(self.knative_status.kick)
        await self.gateway_status.start()
        await self.knative_status.start()
        await writer.start()

    def _leadership(self, leading: bool) -> None:
        if leading and self.own_default_certificate is not None and self._ensure_task is None:
            self._ensure_task = asyncio.get_running_loop().create_task(self._ensure_default_certificate())
        if leading and self.gateway_status is not None:
            self.gateway_status.kick()
        if leading and self.knative_status is not None:
            self.knative_status.kick()

    async def _ensure_default_certificate(self) -> None:
        from controlplane.default_certificate import create_secret_if_absent

        assert self.own_default_certificate is not None
        try:
            await asyncio.to_thread(create_secret_if_absent, self.api, *self.own_default_certificate)
        except Exception as exc:  # no default certificate until it exists; the next leadership retries
            log.warning("cannot create the default certificate Secret %s/%s: %s", *self.own_default_certificate, exc)
        finally:
            self._ensure_task = None

    async def _flush_when_synced(self) -> None:
        # Readiness needs a snapshot built after the initial lists, even if they were empty.
        await self.source.wait_synced()
        self.request_flush()

    def problems(self) -> list[dict[str, Any]]:
        return [{"cluster": p.get("cluster"), "state": "rejected", **p} for p in self.remotes.problems()]

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self._ensure_task is not None:
            self._ensure_task.cancel()
        if self.gateway_status is not None:
            await self.gateway_status.stop()
        if self.knative_status is not None:
            await self.knative_status.stop()
        if self.status_writer is not None:
            await self.status_writer.stop()
        await self.remotes.stop()
        await self.source.stop()
