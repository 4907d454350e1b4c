"""`meridian translate`: manifests in, Envoy resources and per-Ingress reports out, no server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.compile import Compiled, compile, objects_of
from controlplane.config import GatewayConfig
from controlplane.sources.files import FileSource
from controlplane.store import ClusterStore
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource


def load_paths(paths: Sequence[str | Path], cluster_id: str = "local", *, primary: bool = True) -> ClusterStore:
    """Files (or directories) as one cluster's store, read as the file source reads them."""
    store = ClusterStore(cluster_id, primary=primary)
    for p in paths:
        path = Path(p)
        source = FileSource(path if path.is_dir() else path.parent, store)
        if path.is_dir():
            source.load_all()
        else:
            source.load_file(path)
    store.mark_synced()
    return store


def translate_paths(
    paths: Sequence[str | Path], config: GatewayConfig | None = None, *, cluster_id: str = "local"
) -> Compiled:
    """Load files (or directories) as one cluster and compile them."""
    return compile(objects_of([load_paths(paths, cluster_id)]), config or GatewayConfig())


def translate_clusters(dirs: Mapping[str, Path], config: GatewayConfig | None = None) -> Compiled:
    """Several clusters, one directory each; the first id in sorted order is the primary."""
    stores = [load_paths([d], cid, primary=i == 0) for i, (cid, d) in enumerate(sorted(dirs.items()))]
    return compile(objects_of(stores), config or GatewayConfig())


def snapshot_dict(resources: Mapping[str, Mapping[str, Resource]]) -> dict[str, Any]:
    """Every resource decoded, grouped by short type name, sorted by name (stable for goldens)."""
    out: dict[str, Any] = {}
    for type_url in rt.PUSH_ORDER:
        by_name = resources.get(type_url, {})
        out[rt.SHORT_NAMES[type_url]] = [rt.decode(type_url, by_name[n].any_bytes) for n in sorted(by_name)]
    return out
