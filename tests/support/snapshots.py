"""In-process controllers for "one truth" tests: what a running engine serves vs. a cold build.

`resources` is everything the snapshot cache would send (name -> content version and bytes);
`cold_build` is `controlplane.compile.compile` of the given objects: the reference semantics, what a
new replica or a restart serves. Equality of the two is the property "config is a function of the
objects present".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from controlplane.compile import SourceObjects, compile
from controlplane.controller import Controller, GatewayConfig
from controlplane.ingress.classes import ClassPolicy
from controlplane.metrics import Metrics
from controlplane.store import KINDS, ClusterRegistry, ClusterStore, object_name
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache

Resources = dict[str, dict[str, tuple[str, bytes]]]
CONFIG = GatewayConfig(classes=ClassPolicy(watch_without_class=True, accept_all=True))


class InjectedFailure(RuntimeError):
    """Raised by FlakyCache: a failure in the real publish path, expected by the test that arms it."""


class FlakyCache(SnapshotCache):
    """The real cache, whose next apply raises once when armed."""

    armed = False

    def apply(self, changes: Any, **kw: Any) -> int:
        if self.armed:
            self.armed = False
            raise InjectedFailure("injected apply failure")
        return super().apply(changes, **kw)


def resources(cache: SnapshotCache) -> Resources:
    """type -> name -> (content version, serialized Any), for every type the gateway gets."""
    return {t: {n: (r.version, r.any_bytes) for n, r in cache.get(t).resources.items()} for t in rt.PUSH_ORDER}


def diff(got: Resources, want: Resources) -> str:
    """A short human account of how two snapshots differ ("" when equal)."""
    lines = []
    for t in rt.PUSH_ORDER:
        g, w = got.get(t, {}), want.get(t, {})
        short = rt.SHORT_NAMES[t]
        lines += [f"{short} extra {n}" for n in sorted(g.keys() - w.keys())]
        lines += [f"{short} missing {n}" for n in sorted(w.keys() - g.keys())]
        lines += [f"{short} differs {n}" for n in sorted(g.keys() & w.keys()) if g[n] != w[n]]
    return "\n".join(lines)


@dataclass
class Engine:
    controller: Controller
    cache: SnapshotCache
    stores: dict[str, ClusterStore]


@contextmanager
def engine(
    clusters: Iterable[str] = ("c1",), config: GatewayConfig = CONFIG, cache: SnapshotCache | None = None
) -> Iterator[Engine]:
    """A controller over empty stores (the first cluster is the primary), synced, flushed by hand."""
    registry, cache = ClusterRegistry(), cache or SnapshotCache()
    ctl = Controller(registry, cache, Metrics(), config)
    stores = {}
    for i, cid in enumerate(clusters):
        stores[cid] = registry.add(ClusterStore(cid, primary=i == 0))
    loop = asyncio.new_event_loop()
    try:
        ctl.attach(loop)
        for store in stores.values():
            store.mark_synced()
        yield Engine(ctl, cache, stores)
    finally:
        loop.close()


def cold_build(
    objects: Mapping[str, Iterable[tuple[str, Mapping[str, Any]]]], config: GatewayConfig = CONFIG
) -> Resources:
    """Resources `compile` gives for `objects` (cluster -> (kind, object); the first cluster is the
    primary), as a fresh replica would serve them."""
    clusters: dict[str, dict[str, dict[tuple[str, str], Any]]] = {}
    for cid, objs in objects.items():
        kinds = clusters.setdefault(cid, {})
        for kind, obj in objs:  # as a store keeps them: the last object of a name wins
            kinds.setdefault(kind, {})[object_name(obj)] = dict(obj)
    source = SourceObjects({c: {k: list(v.values()) for k, v in ks.items()} for c, ks in clusters.items()},
                           primary=next(iter(objects), None))  # fmt: skip
    compiled = compile(source, config)
    return {t: {n: (r.version, r.any_bytes) for n, r in compiled.resources.get(t, {}).items()} for t in rt.PUSH_ORDER}


def store_objects(stores: Mapping[str, ClusterStore]) -> dict[str, list[tuple[str, Any]]]:
    """Everything in the stores, as cold_build takes it."""
    return {cid: [(kind, obj) for kind in KINDS for obj in s.list(kind)] for cid, s in stores.items()}
