"""Remote clusters registered by kubeconfig Secrets in the primary cluster (Istio's convention).

Secrets in Meridian's namespace labelled `meridian.io/cluster: "true"` (or Istio's
`istio/multiCluster: "true"`) hold one kubeconfig per data key; the key is the
cluster ID. Each such cluster gets a ClusterStore and a KubeSource. A changed
kubeconfig is synced into a staging store first and then swapped into the live
store, so served endpoints never disappear during the change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s

from controlplane.metrics import Metrics
from controlplane.sources.kube import (
    Backoff,
    ClientSpec,
    KubeconfigError,
    KubeSource,
    RawLister,
    Reflector,
    api_client_from_kubeconfig,
)
from controlplane.store import SECRET, ClusterRegistry, ClusterStore, KubeObject, object_name

log = logging.getLogger(__name__)

CLUSTER_LABEL = "meridian.io/cluster"
ISTIO_LABEL = "istio/multiCluster"
SELECTORS: tuple[str, ...] = (f"{CLUSTER_LABEL}=true", f"{ISTIO_LABEL}=true")
PROBLEM_KEY = "remote-secret"  # where the manager writes its findings in a store's status.errors


class Source(Protocol):
    """What the manager needs from a cluster source (KubeSource satisfies it)."""

    async def start(self) -> None: ...
    async def wait_synced(self, timeout: float | None = None) -> bool: ...
    async def stop(self) -> None: ...
    def retarget(self, store: ClusterStore) -> None: ...


SourceFactory = Callable[[str, str, ClusterStore], Source]  # (cluster_id, kubeconfig text, store)


@dataclass
class _Staging:
    digest: str
    source: Source | None
    task: asyncio.Task[None] | None
    error: str | None = None
    swapping: bool = False  # synced and taking over: let it finish rather than cancel it


@dataclass
class _Cluster:
    cluster_id: str
    secret: str  # namespace/name of the Secret that provides it
    digest: str
    store: ClusterStore
    source: Source | None = None
    staging: _Staging | None = None
    problems: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What /debug/clusters shows for it."""
        info: dict[str, Any] = {
            "secret": self.secret,
            "state": self.store.status.state,
            "errors": dict(self.store.status.errors),
            "updating": self.staging is not None,
        }
        if self.staging is not None and self.staging.error:
            info["update_error"] = self.staging.error
        return info


def _report_error(metrics: Metrics, store: ClusterStore, where: str, message: str) -> None:
    store.status.errors[where] = message
    metrics.source_errors.labels(cluster=store.cluster_id).inc()
    log.warning("remote cluster %r: %s", store.cluster_id, message)


async def _start_source(factory: SourceFactory, metrics: Metrics, cid: str, text: str,
                        store: ClusterStore) -> Source | None:  # fmt: skip
    """A started source for `store`, or None with the error on the store (its first sync attempt ended)."""
    try:
        source = factory(cid, text, store)
        await source.start()
    except Exception as exc:
        store.status.state = "error"
        _report_error(metrics, store, "kubeconfig", _safe_message(exc))
        store.status_changed()
        return None
    store.status.errors.pop("kubeconfig", None)
    return source


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _safe_message(exc: BaseException) -> str:
    """Only our own sanitised messages are shown; anything else may quote the kubeconfig."""
    if isinstance(exc, KubeconfigError):
        return str(exc)
    return f"cannot use kubeconfig: {type(exc).__name__}"


class RemoteClusterManager:
    """Keeps the registry's remote clusters equal to what the labelled Secrets say."""

    def __init__(
        self,
        primary: ClientSpec,
        registry: ClusterRegistry,
        namespace: str,
        primary_cluster_id: str,
        metrics: Metrics,
        *,
        source_factory: SourceFactory | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._owns_client = not isinstance(primary, k8s.ApiClient)
        if isinstance(primary, str):
            self._api = api_client_from_kubeconfig(primary)
        elif isinstance(primary, k8s.ApiClient):
            self._api = primary
        else:
            self._api = primary()
        self.registry = registry
        self.namespace = namespace
        self.primary_cluster_id = primary_cluster_id
        self.metrics = metrics
        self._backoff = backoff or Backoff()
        self._factory: SourceFactory = source_factory or self._default_factory
        self._lock = threading.Lock()
        self._secrets: list[dict[tuple[str, str], KubeObject]] = [{} for _ in SELECTORS]
        self._listed: set[int] = set()
        self._clusters: dict[str, _Cluster] = {}
        self._problems: list[dict[str, str]] = []
        self._reported: set[tuple[str, str, str]] = set()
        self._reflectors: list[Reflector] = []
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._discovery = f"remote-cluster Secrets of {primary_cluster_id}"  # see ClusterRegistry.discovering

    def _default_factory(self, cluster_id: str, kubeconfig: str, store: ClusterStore) -> Source:
        return KubeSource(cluster_id, kubeconfig, store, metrics=self.metrics, backoff=self._backoff)

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        self.registry.discovering(self._discovery)  # which clusters exist is known once the Secrets are
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        list_fn = RawLister.for_kind(self._api, SECRET, self.namespace)
        self._reflectors = [self._reflector(list_fn, idx, selector) for idx, selector in enumerate(SELECTORS)]
        for r in self._reflectors:
            r.start()
        self._task = asyncio.create_task(self._run(), name="remote-clusters")

    def _reflector(self, list_fn: Any, idx: int, selector: str) -> Reflector:
        """The watch of the Secrets one label selector picks (both label conventions are read)."""
        return Reflector(f"{self.primary_cluster_id}/secrets[{selector}]", list_fn, label_selector=selector,
                         on_replace=functools.partial(self._on_replace, idx),
                         on_event=functools.partial(self._on_event, idx),
                         on_health=self._on_health, backoff=self._backoff)  # fmt: skip

    async def stop(self) -> None:
        """Stop watching Secrets and every cluster source (clusters stay registered)."""
        self.registry.discovered(self._discovery)
        for r in self._reflectors:
            r.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(lambda: [r.join(5.0) for r in self._reflectors])
        for cluster in list(self._clusters.values()):
            await self._stop_staging(cluster)
            if cluster.source is not None:
                await cluster.source.stop()
                cluster.source = None
        if self._owns_client:
            self._api.close()

    async def wait_idle(self, timeout: float) -> bool:
        """True once both Secret watches listed and the last change was reconciled (for tests)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- views -----------------------------------------------------------
    def clusters(self) -> dict[str, dict[str, Any]]:
        return {cid: c.describe() for cid, c in sorted(self._clusters.items())}

    def problems(self) -> list[dict[str, str]]:
        return [dict(p) for p in self._problems]

    def api_client(self, cluster_id: str) -> k8s.ApiClient | None:
        """The live API client of a remote cluster (status and Events are written back through it)."""
        cluster = self._clusters.get(cluster_id)
        source = cluster.source if cluster is not None else None
        client = getattr(source, "api_client", None)
        return client if isinstance(client, k8s.ApiClient) else None

    # -- reflector callbacks (threads) -----------------------------------
    def _on_replace(self, idx: int, items: list[KubeObject]) -> None:
        with self._lock:
            self._secrets[idx] = {object_name(o): o for o in items}
            self._listed.add(idx)
        self._wake()

    def _on_event(self, idx: int, etype: str, obj: KubeObject) -> None:
        with self._lock:
            if etype == "DELETED":
                self._secrets[idx].pop(object_name(obj), None)
            else:
                self._secrets[idx][object_name(obj)] = obj
        self._wake()

    def _on_health(self, error: str | None) -> None:
        if error is not None:
            log.warning("watching remote-cluster Secrets in %s failed: %s", self.namespace, error)
            self.metrics.source_errors.labels(cluster=self.primary_cluster_id).inc()
            self.registry.discovered(self._discovery)  # cannot find out now: do not wait for it

    def _wake(self) -> None:
        if self._loop is not None and self._kick is not None:
            self._loop.call_soon_threadsafe(self._kick.set)

    # -- reconcile (event loop) ------------------------------------------
    async def _run(self) -> None:
        assert self._kick is not None
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._idle.clear()
            with self._lock:
                ready = len(self._listed) == len(SELECTORS)
            if not ready:
                continue
            try:
                await self._reconcile()
            except Exception:  # one bad Secret must not stop the manager
                log.exception("reconciling remote clusters failed")
            self.registry.discovered(self._discovery)  # its clusters are registered (no-op after the first)
            if not self._kick.is_set():
                self._idle.set()

    async def _reconcile(self) -> None:
        with self._lock:
            secrets = [s for by_name in self._secrets for s in by_name.values()]

        def taken(cid: str) -> bool:
            return cid not in self._clusters and self.registry.get(cid) is not None

        desired, problems = desired_clusters(secrets, self.namespace, self.primary_cluster_id, taken)
        for cid in [c for c in self._clusters if c not in desired]:
            await self._remove(cid)
        for cid, (ref, text) in desired.items():
            digest = _digest(text)
            cluster = self._clusters.get(cid)
            if cluster is None:
                await self._add(cid, ref, text, digest)
                continue
            cluster.secret = ref
            if digest == cluster.digest:
                await self._stop_staging(cluster)  # changed back: keep what runs
            elif cluster.staging is None or cluster.staging.digest != digest:
                await self._update(cluster, text, digest)
        self._problems = problems
        self._reported = record_problems(problems, self._reported, self.registry, self.metrics)

    async def _add(self, cid: str, ref: str, text: str, digest: str) -> None:
        store = ClusterStore(cid)
        cluster = _Cluster(cid, ref, digest, store)
        self.registry.add(store)
        self._clusters[cid] = cluster
        log.info("remote cluster %r added from Secret %s", cid, ref)
        cluster.source = await _start_source(self._factory, self.metrics, cid, text, store)

    async def _remove(self, cid: str) -> None:
        cluster = self._clusters.pop(cid)
        await self._stop_staging(cluster)
        if cluster.source is not None:
            await cluster.source.stop()
        self.registry.remove(cid)
        # A removed cluster must not keep reporting up/stale from its last state.
        for gauge in (self.metrics.source_up, self.metrics.source_stale):
            with contextlib.suppress(KeyError):
                gauge.remove(cid)
        log.info("remote cluster %r removed", cid)

    async def _update(self, cluster: _Cluster, text: str, digest: str) -> None:
        await self._stop_staging(cluster)
        serving = cluster.source is not None and cluster.store.status.state in ("synced", "stale")
        if not serving:
            # Nothing is served from this cluster yet: switch right away.
            if cluster.source is not None:
                await cluster.source.stop()
            cluster.digest = digest
            cluster.source = await _start_source(self._factory, self.metrics, cluster.cluster_id, text, cluster.store)
            return
        staging_store = ClusterStore(cluster.cluster_id)
        try:
            source = self._factory(cluster.cluster_id, text, staging_store)
            await source.start()
        except Exception as exc:
            message = _safe_message(exc)
            cluster.staging = _Staging(digest, None, None, message)
            _report_error(self.metrics, cluster.store, "kubeconfig-update", message)
            return
        staging = _Staging(digest, source, None)
        staging.task = asyncio.create_task(self._swap_when_synced(cluster, staging))
        cluster.staging = staging

    async def _swap_when_synced(self, cluster: _Cluster, staging: _Staging) -> None:
        assert staging.source is not None
        await staging.source.wait_synced(None)
        staging.swapping = True
        old = cluster.source
        if old is not None:
            await old.stop()  # no second writer while the new source takes over the live store
        staging.source.retarget(cluster.store)
        cluster.source = staging.source
        cluster.digest = staging.digest
        cluster.staging = None
        cluster.store.status.errors.pop("kubeconfig-update", None)
        log.info("remote cluster %r switched to its new kubeconfig", cluster.cluster_id)

    async def _stop_staging(self, cluster: _Cluster) -> None:
        staging, cluster.staging = cluster.staging, None
        if staging is None:
            return
        if staging.task is not None and not staging.task.done():
            if not staging.swapping:
                staging.task.cancel()
            try:
                await staging.task
            except asyncio.CancelledError:
                pass
        if staging.source is not None and staging.source is not cluster.source:
            await staging.source.stop()
        cluster.store.status.errors.pop("kubeconfig-update", None)


def desired_clusters(
    secrets: Iterable[KubeObject], namespace: str, primary_cluster_id: str, taken: Callable[[str], bool]
) -> tuple[dict[str, tuple[str, str]], list[dict[str, str]]]:
    """cluster ID -> (secret ref, kubeconfig) by the rules; plus the problems found.

    `taken(id)`: another source (not a Secret of this manager) already registers that cluster ID.
    """
    merged = {object_name(s): s for s in secrets}
    ordered = sorted(
        merged.values(),
        key=lambda s: (str((s.get("metadata") or {}).get("creationTimestamp") or ""), object_name(s)),
    )
    desired: dict[str, tuple[str, str]] = {}
    problems: list[dict[str, str]] = []
    for secret in ordered:
        ns, name = object_name(secret)
        if ns != namespace:
            continue
        ref = f"{ns}/{name}"
        for key, value in sorted((secret.get("data") or {}).items()):
            try:
                text = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                problems.append({"cluster": key, "secret": ref, "reason": "value is not base64 text"})
                continue
            if key == primary_cluster_id:
                problems.append(
                    {
                        "cluster": key,
                        "secret": ref,
                        "reason": "the primary cluster's ID cannot be registered by a Secret",
                    }
                )
            elif key in desired:
                problems.append(
                    {
                        "cluster": key,
                        "secret": ref,
                        "reason": f"duplicate cluster ID; already provided by {desired[key][0]}",
                    }
                )
            elif taken(key):
                problems.append(
                    {"cluster": key, "secret": ref, "reason": "cluster ID is already used by another source"}
                )
            else:
                desired[key] = (ref, text)
    return desired, problems


def record_problems(
    problems: list[dict[str, str]], reported: set[tuple[str, str, str]], registry: ClusterRegistry, metrics: Metrics
) -> set[tuple[str, str, str]]:
    """Log and count problems not reported yet, and show each on its cluster's store status;
    returns what is reported now."""
    by_cluster: dict[str, list[str]] = {}
    for p in problems:
        by_cluster.setdefault(p["cluster"], []).append(f"Secret {p['secret']}: {p['reason']}")
        key = (p["cluster"], p["secret"], p["reason"])
        if key not in reported:
            log.warning("remote cluster %r from Secret %s: %s", p["cluster"], p["secret"], p["reason"])
            metrics.source_errors.labels(cluster=p["cluster"]).inc()
    out = {(p["cluster"], p["secret"], p["reason"]) for p in problems}
    for store in registry.stores():
        messages = by_cluster.get(store.cluster_id)
        if messages:
            store.status.errors[PROBLEM_KEY] = "; ".join(messages)
        else:
            store.status.errors.pop(PROBLEM_KEY, None)
    return out
