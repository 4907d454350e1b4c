"""Per-cluster object stores with informer semantics.

Every source (a directory of manifests, a Kubernetes API server) fills a
`ClusterStore`; the rest of the pipeline reads stores and listens to their
change events without knowing where objects came from. Objects are kept as the
plain JSON dicts Kubernetes serves (no client model objects), which is what
both YAML files and raw list/watch responses give us cheaply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

INGRESS = "Ingress"
INGRESS_CLASS = "IngressClass"
SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"
SECRET = "Secret"

# Gateway API (controlplane/gatewayapi), plus Namespaces for allowedRoutes selectors; in Kubernetes
# mode they are watched only when the API server serves gateway.networking.k8s.io.
GATEWAY_CLASS = "GatewayClass"
GATEWAY = "Gateway"
HTTP_ROUTE = "HTTPRoute"
GRPC_ROUTE = "GRPCRoute"
REFERENCE_GRANT = "ReferenceGrant"
NAMESPACE = "Namespace"
GATEWAY_API_KINDS: tuple[str, ...] = (GATEWAY_CLASS, GATEWAY, HTTP_ROUTE, GRPC_ROUTE, REFERENCE_GRANT, NAMESPACE)

# Knative Serving's internal Ingress (controlplane/knative): its objects say `kind: Ingress`, the
# stores call it KIngress; in Kubernetes mode it is watched only when the API server serves it.
KINGRESS = "KIngress"
KNATIVE_KINDS: tuple[str, ...] = (KINGRESS,)

INGRESS_KINDS: tuple[str, ...] = (INGRESS, INGRESS_CLASS, SERVICE, ENDPOINT_SLICE, SECRET)
KINDS: tuple[str, ...] = INGRESS_KINDS + GATEWAY_API_KINDS + KNATIVE_KINDS

KubeObject = dict[str, Any]
ObjectName = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


def object_name(obj: Mapping[str, Any]) -> ObjectName:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@dataclass(frozen=True)
class ObjectRef:
    """Where an object lives: which cluster, kind, namespace and name."""

    cluster: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.cluster}:{self.kind}/{ns}{self.name}"


@dataclass(frozen=True)
class StoreEvent:
    """One object change. `old` is None on add, `new` is None on delete."""

    ref: ObjectRef
    old: KubeObject | None
    new: KubeObject | None


Listener = Callable[[StoreEvent], None]


@dataclass
class SourceStatus:
    """What `/debug/clusters` shows for one source cluster."""

    state: str = "pending"  # pending | synced | stale | error | stopped
    last_sync: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # where (file, watch) -> message
    stale_since: float | None = None


class ClusterStore:
    """Objects of one source cluster, by kind and (namespace, name).

    Thread-safe: a Kubernetes watcher may run in a worker thread while the
    controller reads from the event loop. Listeners run synchronously in the
    writer's thread and must only record work (the controller hands it to its
    loop).
    """

    def __init__(self, cluster_id: str, *, primary: bool = False) -> None:
        self.cluster_id = cluster_id
        self.primary = primary
        self.status = SourceStatus()
        self._objects: dict[str, dict[ObjectName, KubeObject]] = {k: {} for k in KINDS}
        self._listeners: list[Listener] = []
        self._status_listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()

    # -- reading ---------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        with self._lock:
            return self._objects[kind].get((namespace, name))

    def list(self, kind: str) -> list[KubeObject]:
        with self._lock:
            return list(self._objects[kind].values())

    def items(self, kind: str) -> list[tuple[ObjectName, KubeObject]]:
        with self._lock:
            return list(self._objects[kind].items())

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._objects[kind])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._objects.items()}

    # -- writing ---------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def upsert(self, kind: str, obj: KubeObject) -> None:
        key = object_name(obj)
        with self._lock:
            old = self._objects[kind].get(key)
            if old is not None and _same(old, obj):
                return
            self._objects[kind][key] = obj
        self._emit(StoreEvent(ObjectRef(self.cluster_id, kind, *key), old, obj))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            old = self._objects[kind].pop((namespace, name), None)
        if old is not None:
            self._emit(StoreEvent(ObjectRef(self.cluster_id, kind, namespace, name), old, None))

    def replace(self, kind: str, objects: Iterable[KubeObject]) -> None:
        """Reconcile a kind to exactly `objects` (a relist): emits only real changes."""
        fresh = {object_name(o): o for o in objects}
        with self._lock:
            gone = [k for k in self._objects[kind] if k not in fresh]
        for key in gone:
            self.delete(kind, *key)
        for obj in fresh.values():
            self.upsert(kind, obj)

    def clear(self) -> None:
        """Remove everything (the cluster left); listeners see each delete."""
        for kind in KINDS:
            self.replace(kind, ())

    def mark_synced(self) -> None:
        self.status.state = "synced"
        self.status.last_sync = time.time()
        self.status.stale_since = None
        self.status_changed()

    def on_status(self, listener: Callable[[], None]) -> None:
        """`listener()` after the source changed this store's status (e.g. its first list is in)."""
        self._status_listeners.append(listener)

    def status_changed(self) -> None:
        """Sources call this after writing `status` (any thread)."""
        for listener in list(self._status_listeners):
            listener()

    def _emit(self, event: StoreEvent) -> None:
        for listener in list(self._listeners):
            listener(event)


def _same(a: KubeObject, b: KubeObject) -> bool:
    """Equal content; a changed resourceVersion alone (e.g. a status write) still counts as new."""
    return a == b


class ClusterRegistry:
    """All source clusters. The controller subscribes once and sees every cluster."""

    def __init__(self) -> None:
        self._stores: dict[str, ClusterStore] = {}
        self._listeners: list[Listener] = []
        self._cluster_listeners: list[Callable[[str, bool], None]] = []
        self._status_listeners: list[Callable[[], None]] = []
        # Sources of clusters not registered yet (the remote-cluster Secrets before their first list):
        # until they report, the set of clusters is not known, so nothing counts as all synced.
        self._discovering: set[str] = set()
        self._lock = threading.RLock()

    def add(self, store: ClusterStore) -> ClusterStore:
        with self._lock:
            if store.cluster_id in self._stores:
                raise ValueError(f"cluster {store.cluster_id!r} is already registered")
            self._stores[store.cluster_id] = store
        for listener in self._listeners:
            store.subscribe(listener)
        for status_listener in self._status_listeners:
            store.on_status(status_listener)
        for cl in self._cluster_listeners:
            cl(store.cluster_id, True)
        return store

    def remove(self, cluster_id: str) -> None:
        """Drop a cluster: its objects are deleted (listeners see it) and it is forgotten."""
        with self._lock:
            store = self._stores.get(cluster_id)
        if store is None:
            return
        store.clear()
        store.status.state = "stopped"
        with self._lock:
            self._stores.pop(cluster_id, None)
        for cl in self._cluster_listeners:
            cl(cluster_id, False)
        for listener in list(self._status_listeners):  # one cluster fewer to wait for
            listener()

    def get(self, cluster_id: str) -> ClusterStore | None:
        with self._lock:
            return self._stores.get(cluster_id)

    def stores(self) -> list[ClusterStore]:
        with self._lock:
            return list(self._stores.values())

    def primary_id(self) -> str | None:
        for s in self.stores():
            if s.primary:
                return s.cluster_id
        return None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        for store in self.stores():
            store.subscribe(listener)

    def on_cluster_change(self, listener: Callable[[str, bool], None]) -> None:
        self._cluster_listeners.append(listener)

    def on_status(self, listener: Callable[[], None]) -> None:
        """`listener()` whenever a store's status or the set of pending discoveries changes."""
        self._status_listeners.append(listener)
        for store in self.stores():
            store.on_status(listener)

    def discovering(self, what: str) -> None:
        """A source of more clusters (`what`) has started and not yet said which clusters there are."""
        with self._lock:
            self._discovering.add(what)

    def discovered(self, what: str) -> None:
        """`what` registered the clusters it knows of (or failed to find out): stop waiting for it."""
        with self._lock:
            if what not in self._discovering:
                return
            self._discovering.discard(what)
        for listener in list(self._status_listeners):
            listener()

    def primary_synced(self) -> bool:
        """The primary cluster (every file-mode cluster counts as primary-like) finished its first sync."""
        return all(s.status.state != "pending" for s in self.stores() if s.primary)

    def all_synced(self) -> bool:
        """Every cluster is known and every source has finished its first sync attempt (a broken
        remote must not block readiness)."""
        with self._lock:
            if self._discovering:
                return False
        return all(s.status.state != "pending" for s in self.stores() if s.primary) and all(
            s.status.state != "pending" or s.status.errors for s in self.stores()
        )
