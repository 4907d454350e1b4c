"""Kubernetes mode: the primary cluster from a kubeconfig (or in-cluster) plus remote clusters
registered through labelled Secrets in Meridian's namespace."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from controlplane.sources.kube import KubeSource, api_client_from_file, in_cluster_api_client
from controlplane.sources.remote import RemoteClusterManager
from controlplane.store import ClusterStore

if TYPE_CHECKING:
    from controlplane.app import MeridianApp

log = logging.getLogger("controlplane.kube")


class KubeMode:
    def __init__(self, app: MeridianApp) -> None:
        self.app = app
        opts = app.opts
        self.api = api_client_from_file(opts.kubeconfig) if opts.kubeconfig else in_cluster_api_client()
        self.cluster_id = opts.cluster_id
        self.store = app.registry.add(ClusterStore(self.cluster_id, primary=True))
        self.source = KubeSource(self.cluster_id, self.api, self.store, metrics=app.metrics)
        self.remotes = RemoteClusterManager(self.api, app.registry, opts.namespace, self.cluster_id, app.metrics)
        self.status_writer: Any = None
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.source.start()
        await self.remotes.start()
        self._sync_task = asyncio.create_task(self._flush_when_synced(), name="kube-initial-sync")
        try:
            from controlplane.status import StatusWriter
        except ImportError:  # status writing is optional until its module exists
            return
        self.status_writer = StatusWriter(self.app, self.api)
        await self.status_writer.start()

    async def _flush_when_synced(self) -> None:
        # Readiness needs a snapshot built after the initial lists, even if they were empty.
        await self.source.wait_synced()
        self.app.controller.request_flush()

    def problems(self) -> list[dict[str, Any]]:
        return [{"cluster": p.get("cluster"), "state": "rejected", **p} for p in self.remotes.problems()]

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self.status_writer is not None:
            await self.status_writer.stop()
        await self.remotes.stop()
        await self.source.stop()
