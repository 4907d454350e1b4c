"""`meridian translate`: manifests in, Envoy resources and per-Ingress reports out, no server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane.controller import Controller, GatewayConfig
from controlplane.metrics import Metrics
from controlplane.sources.files import FileSource
from controlplane.store import ClusterRegistry, ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache


def translate_paths(
    paths: Sequence[str | Path], config: GatewayConfig | None = None, *, cluster_id: str = "local"
) -> tuple[Controller, SnapshotCache]:
    """Load files (or directories) as one cluster and build a snapshot synchronously."""
    registry = ClusterRegistry()
    cache = SnapshotCache()
    controller = Controller(registry, cache, Metrics(), config or GatewayConfig())
    store = registry.add(ClusterStore(cluster_id, primary=True))
    loop = asyncio.new_event_loop()
    try:
        controller.attach(loop)
        for p in paths:
            path = Path(p)
            source = FileSource(path if path.is_dir() else path.parent, store)
            if path.is_dir():
                source.load_all()
            else:
                source.load_file(path)
        store.mark_synced()
        controller.flush()
    finally:
        loop.close()
    return controller, cache


def snapshot_dict(cache: SnapshotCache) -> dict[str, Any]:
    """Every resource decoded, grouped by short type name, sorted by name (stable for goldens)."""
    out: dict[str, Any] = {}
    for type_url in rt.PUSH_ORDER:
        snap = cache.get(type_url)
        out[rt.SHORT_NAMES[type_url]] = [
            rt.decode(type_url, snap.resources[n].any_bytes) for n in sorted(snap.resources)
        ]
    return out
