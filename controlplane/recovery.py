"""After a failed batch, the next batch is a full rebuild from the objects.

A batch moves the controller's derived state on step by step (IRs and their indexes, the variant
clusters, TLS and listener inputs it marks done, the route tables' dirty buckets) before the
snapshot is applied. If any step raises, part of that state has moved on while the snapshot has
not, and whatever the batch had marked done would never be sent. Rolling every marker back would
need bookkeeping in every step, for every step added later; rebuilding from the objects needs none
and gives exactly what a fresh start gives. It costs one cold build, only after a failure (a bug,
an exhausted resource), and is retried with backoff so that a quiet cluster recovers too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, MutableMapping

from controlplane.store import KINDS, SECRET, ClusterRegistry, ObjectRef, StoreEvent
from controlplane.xds.cache import Resource, SnapshotCache

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class FailedBatchRecovery:
    def __init__(self) -> None:
        self.pending = False  # the last batch failed: the next one rebuilds everything
        # Secret deletes of failed batches: a deleted Secret's last good certificate must not come
        # back because the batch that saw the delete failed (see certificates.py).
        self._secret_deletes: dict[ObjectRef, StoreEvent] = {}
        # The object changes of failed batches, one per object: what the rebuild's version is due to.
        self._missed: dict[ObjectRef, StoreEvent] = {}
        self._delay = RETRY_FIRST_S
        self._timer: asyncio.TimerHandle | None = None

    def failed(
        self, events: Iterable[StoreEvent], loop: asyncio.AbstractEventLoop | None, flush: Callable[[], None]
    ) -> None:
        self.pending = True
        events = list(events)
        self._secret_deletes.update(_secret_deletes(events))
        _coalesce(self._missed, events)
        if loop is None or self._timer is not None:
            return

        def retry() -> None:
            self._timer = None
            flush()

        self._timer = loop.call_later(self._delay, retry)
        self._delay = min(self._delay * 2, RETRY_MAX_S)

    def succeeded(self) -> None:
        self.pending = False
        self._secret_deletes.clear()
        self._missed.clear()
        self._delay = RETRY_FIRST_S
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def trigger(self, batch: Iterable[StoreEvent]) -> list[StoreEvent]:
        """What a full rebuild's version is due to (the history records it): the changes of the failed
        batches and of this one, not every object the rebuild re-reads."""
        missed = dict(self._missed)
        _coalesce(missed, batch)
        return list(missed.values())

    def events(self, batch: Iterable[StoreEvent], registry: ClusterRegistry) -> list[StoreEvent]:
        """The input of a full rebuild: the Secret deletes seen, then every object now as an add."""
        deletes = {**self._secret_deletes, **_secret_deletes(batch)}
        adds = [
            StoreEvent(ObjectRef(store.cluster_id, kind, *key), None, obj)
            for store in registry.stores()
            for kind in KINDS
            for key, obj in store.items(kind)
        ]
        return [*deletes.values(), *adds]


def _coalesce(into: dict[ObjectRef, StoreEvent], events: Iterable[StoreEvent]) -> None:
    """One change per object across batches: its state before the first, after the last."""
    for ev in events:
        first = into.get(ev.ref)
        into[ev.ref] = ev if first is None else StoreEvent(ev.ref, first.old, ev.new)


def _secret_deletes(events: Iterable[StoreEvent]) -> dict[ObjectRef, StoreEvent]:
    return {ev.ref: ev for ev in events if ev.ref.kind == SECRET and ev.new is None}


def remove_unlisted(changes: Mapping[str, MutableMapping[str, Resource | None]], cache: SnapshotCache) -> None:
    """Turn the changes of a build from nothing into a replacement: what they do not list is removed."""
    for type_url, entries in changes.items():
        for name in cache.get(type_url).resources:
            if name not in entries:
                entries[name] = None
