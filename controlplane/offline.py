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


# Protobuf maps whose decoded key order follows hashing, not the (deterministic) bytes.
_MAPS = frozenset({"typed_per_filter_config", "map"})  # "map": xds matcher exact_match_map


_STRUCTS = frozenset({"filter_metadata"})  # google.protobuf.Struct values: sorted all the way down


def _deep_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_sorted(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_deep_sorted(v) for v in value]
    return value


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, dict) and _STRUCTS & value.keys():
        return {k: (_deep_sorted(v) if k in _STRUCTS else _sorted_maps(v)) for k, v in value.items()}
    if isinstance(value, dict):
        return {k: (dict(sorted(_sorted_maps(v).items())) if k in _MAPS and isinstance(v, dict) else _sorted_maps(v))
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def snapshot_dict(resources: Mapping[str, Mapping[str, Resource]]) -> dict[str, Any]:
    """Every resource decoded, grouped by short type name, sorted by name, protobuf maps sorted by key
    (stable for goldens)."""
    out: dict[str, Any] = {}
    for type_url in rt.PUSH_ORDER:
        by_name = resources.get(type_url, {})
        decoded = (rt.decode(type_url, by_name[n].any_bytes) for n in sorted(by_name))
        out[rt.SHORT_NAMES[type_url]] = [_sorted_maps(d) for d in decoded]
    return out


def export_gateway_api_paths(
    paths: Sequence[str | Path], config: GatewayConfig | None = None, *, namespace: str = "default"
) -> tuple[Compiled, Any, Compiled]:
    """`translate --to gateway-api`: the Ingresses compiled, their Gateway API export, and that export
    compiled with the same Services, EndpointSlices and Secrets (for the IR check)."""
    from controlplane.store import KINDS

    store = load_paths(paths)
    return export_gateway_api_objects({k: store.list(k) for k in KINDS}, config, namespace=namespace,
                                      cluster_id=store.cluster_id)  # fmt: skip


def export_gateway_api_objects(
    objects: Mapping[str, Sequence[Any]],
    config: GatewayConfig | None = None,
    *,
    namespace: str = "default",
    cluster_id: str = "local",
) -> tuple[Compiled, Any, Compiled]:
    """As export_gateway_api_paths, for one cluster's objects by kind."""
    from controlplane.compile import SourceObjects
    from controlplane.gatewayapi.export import export_gateway_api
    from controlplane.ir import IngressRef
    from controlplane.store import INGRESS, INGRESS_CLASS, object_name

    config = config or GatewayConfig()
    original = compile(SourceObjects({cluster_id: objects}, cluster_id), config)
    by_ref = {IngressRef(cluster_id, *object_name(o)): o for o in objects.get(INGRESS, [])}
    out = export_gateway_api(original.irs, original.host_results, original.gateway.tls_hosts, namespace=namespace,
                             ingresses=by_ref)  # fmt: skip
    kinds: dict[str, list[Any]] = {k: list(v) for k, v in objects.items() if k not in (INGRESS, INGRESS_CLASS)}
    for obj in out.objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    exported = compile(SourceObjects({cluster_id: kinds}, cluster_id), config)
    return original, out, exported
