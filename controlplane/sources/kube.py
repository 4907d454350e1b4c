"""Kubernetes source: list then watch one cluster's objects into a `ClusterStore`.

Uses the real `kubernetes` client for transport and auth, but never builds its
model objects: lists and watch streams are read raw (`_preload_content=False`)
and parsed with orjson, which is several times faster for large clusters and
gives the plain dicts the store keeps. Each kind runs a `Reflector` in its own
thread (informer semantics: resume from the last resourceVersion, BOOKMARKs,
relist on 410, jittered backoff). While the API server is unreachable the store
keeps its objects and is marked stale, so last-known endpoints keep serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from controlplane.metrics import Metrics
from controlplane.store import (
    ENDPOINT_SLICE,
    GATEWAY,
    GATEWAY_API_KINDS,
    GATEWAY_CLASS,
    GRPC_ROUTE,
    HTTP_ROUTE,
    INGRESS,
    INGRESS_CLASS,
    KINDS,
    KINGRESS,
    KNATIVE_KINDS,
    NAMESPACE,
    REFERENCE_GRANT,
    SECRET,
    SERVICE,
    ClusterStore,
    KubeObject,
)

log = logging.getLogger(__name__)

TLS_SECRETS = "type=kubernetes.io/tls"
GATEWAY_API_PATH = "/apis/gateway.networking.k8s.io/v1"
KNATIVE_PATH = "/apis/networking.internal.knative.dev/v1alpha1"

# kind -> (API group path, resource plural, field selector). Lists and watches are plain GETs on
# these paths (see `RawLister`), so the generated API classes are never needed.
_KIND_API: dict[str, tuple[str, str, str | None]] = {
    INGRESS: ("/apis/networking.k8s.io/v1", "ingresses", None),
    INGRESS_CLASS: ("/apis/networking.k8s.io/v1", "ingressclasses", None),
    SERVICE: ("/api/v1", "services", None),
    ENDPOINT_SLICE: ("/apis/discovery.k8s.io/v1", "endpointslices", None),
    SECRET: ("/api/v1", "secrets", TLS_SECRETS),
    GATEWAY_CLASS: (GATEWAY_API_PATH, "gatewayclasses", None),
    GATEWAY: (GATEWAY_API_PATH, "gateways", None),
    HTTP_ROUTE: (GATEWAY_API_PATH, "httproutes", None),
    GRPC_ROUTE: (GATEWAY_API_PATH, "grpcroutes", None),
    REFERENCE_GRANT: (GATEWAY_API_PATH, "referencegrants", None),
    NAMESPACE: ("/api/v1", "namespaces", None),
    KINGRESS: (KNATIVE_PATH, "ingresses", None),
}
_CLUSTER_SCOPED = frozenset({INGRESS_CLASS, GATEWAY_CLASS, NAMESPACE})
_QUERY_NAMES = {
    "_continue": "continue",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "label_selector": "labelSelector",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
}

ClientSpec = k8s.ApiClient | Callable[[], k8s.ApiClient] | str


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used. The message never contains credentials."""


class Expired(Exception):
    """The resourceVersion we resume from is gone (410): relist."""


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff between reconnect attempts."""

    initial: float = 0.2
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5  # fraction of the delay that is randomised

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt))
        return base * (1.0 - self.jitter * random.random())


# -- clients ---------------------------------------------------------------
def _secret_values(node: Any) -> Iterator[str]:
    """Every string under a kubeconfig's `users` (tokens, keys, passwords) for redaction."""
    if isinstance(node, dict):
        for v in node.values():
            yield from _secret_values(v)
    elif isinstance(node, list):
        for v in node:
            yield from _secret_values(v)
    elif isinstance(node, str) and len(node) >= 6:
        yield node


def redact(message: str, kubeconfig: Any) -> str:
    """Remove credentials of `kubeconfig` (dict) from an error message."""
    users = kubeconfig.get("users") if isinstance(kubeconfig, dict) else None
    for value in sorted(set(_secret_values(users)), key=len, reverse=True):
        message = message.replace(value, "***")
    return message


def _tune(cfg: k8s.Configuration, pool: int) -> None:
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, pool)
    cfg.retries = False  # we retry with our own backoff; urllib3's silent retries only hide outages


def api_client_from_kubeconfig(text: str, *, context: str | None = None, pool: int = 16) -> k8s.ApiClient:
    """An ApiClient for a kubeconfig given as text (a remote Secret's value or a file's contents)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigError(f"invalid kubeconfig: not YAML{where}") from None
    if not isinstance(data, dict) or not data.get("clusters"):
        raise KubeconfigError("invalid kubeconfig: no clusters")
    cfg = type.__call__(k8s.Configuration)
    try:
        k8s_config.load_kube_config_from_dict(data, context=context, client_configuration=cfg, persist_config=False)
    except Exception as exc:  # the loader raises many types; all mean "unusable"
        raise KubeconfigError(f"invalid kubeconfig: {redact(str(exc), data)[:300]}") from None
    if not cfg.host or not cfg.host.startswith(("http://", "https://")):
        raise KubeconfigError("invalid kubeconfig: no usable server address")
    _tune(cfg, pool)
    return k8s.ApiClient(cfg)


def api_client_from_file(path: str, *, context: str | None = None) -> k8s.ApiClient:
    with open(path, encoding="utf-8") as fh:
        return api_client_from_kubeconfig(fh.read(), context=context)


def in_cluster_api_client(pool: int = 16) -> k8s.ApiClient:
    cfg = type.__call__(k8s.Configuration)
    k8s_config.load_incluster_config(client_configuration=cfg)
    _tune(cfg, pool)
    return k8s.ApiClient(cfg)


def describe_error(exc: BaseException) -> str:
    """A short, credential-free description of a request failure."""
    if isinstance(exc, k8s.ApiException):
        detail = ""
        try:
            detail = str(orjson.loads(exc.body or b"{}").get("message") or "")[:200]
        except (orjson.JSONDecodeError, AttributeError):
            pass
        return f"HTTP {exc.status} {exc.reason or ''}{': ' + detail if detail else ''}".strip()
    text = str(exc)
    if "Authorization" in text or "Bearer" in text:
        text = ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class RawApi:
    """JSON requests on API paths through an ApiClient (its auth, TLS and connection pool).

    The generated API classes (CoreV1Api...) are not used: importing CoreV1Api alone builds hundreds
    of pydantic-validated methods, about 0.5 s of CPU, on the start-up path, for calls whose responses
    are read raw anyway. `request` returns the undecoded urllib3 response, as `_preload_content=False`
    does; a non-2xx status raises `ApiException` as the generated methods do.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        timeout: Any = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in query if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api_client.call_api(*request, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise k8s.ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp.response

    def call(self, method: str, path: str, **kwargs: Any) -> bytes:
        """`request`, read whole; the connection goes back to the pool."""
        resp = self.request(method, path, **kwargs)
        try:
            return bytes(resp.data)
        finally:
            resp.release_conn()


class RawLister:
    """A Reflector `list_fn` that GETs a collection path (see `RawApi`)."""

    def __init__(self, api_client: k8s.ApiClient, path: str) -> None:
        self.api = RawApi(api_client)
        self.path = path

    @classmethod
    def for_kind(cls, api_client: k8s.ApiClient, kind: str, namespace: str | None = None) -> RawLister:
        prefix, plural, _ = _KIND_API[kind]
        if namespace and kind not in _CLUSTER_SCOPED:
            return cls(api_client, f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}")
        return cls(api_client, f"{prefix}/{plural}")

    def __call__(self, *, _preload_content: bool = False, _request_timeout: Any = None, **params: Any) -> Any:
        query = [(_QUERY_NAMES.get(k, k), v) for k, v in params.items()]
        return self.api.request("GET", self.path, query=query, timeout=_request_timeout)


# -- reflector -------------------------------------------------------------
class Reflector:
    """List then watch one resource in a thread, with informer semantics.

    Callbacks run in the reflector thread: `on_replace(items)` after every (re)list,
    `on_event(type, obj)` per ADDED/MODIFIED/DELETED, `on_health(error_or_None)`
    when the connection breaks or works again.
    """

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        *,
        on_replace: Callable[[list[KubeObject]], None],
        on_event: Callable[[str, KubeObject], None],
        on_health: Callable[[str | None], None],
        field_selector: str | None = None,
        label_selector: str | None = None,
        backoff: Backoff | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self._list_fn = list_fn
        self._on_replace = on_replace
        self._on_event = on_event
        self._on_health = on_health
        self._selectors: dict[str, str] = {}
        if field_selector:
            self._selectors["field_selector"] = field_selector
        if label_selector:
            self._selectors["label_selector"] = label_selector
        self._backoff = backoff or Backoff()
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._timeouts = (connect_timeout, float(watch_timeout + 30))
        self.resource_version: str | None = None
        self.relists = 0
        self._stop = threading.Event()
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"reflector-{name}", daemon=True)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and unblock a pending read by shutting its socket."""
        self._stop.set()
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            _shutdown(resp)

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    items, rv = self._list()
                    if self._stop.is_set():
                        return
                    self._on_replace(items)
                    self.resource_version = rv
                    self.relists += 1
                    self._on_health(None)
                self._watch()
                attempt = 0
            except Expired:
                self.resource_version = None  # relist right away, as client-go does
            except Exception as exc:
                if self._stop.is_set():
                    return
                message = describe_error(exc)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "watch %s failed (attempt %d): %s", self.name, attempt + 1, message)
                self._on_health(message)
                self._stop.wait(self._backoff.delay(attempt))
                attempt += 1

    def _call(self, **kwargs: Any) -> Any:
        resp = self._list_fn(_preload_content=False, _request_timeout=self._timeouts, **self._selectors, **kwargs)
        with self._resp_lock:
            self._resp = resp
        if self._stop.is_set():
            _shutdown(resp)
        return resp

    def _release(self, resp: Any) -> None:
        with self._resp_lock:
            if self._resp is resp:
                self._resp = None
        try:
            resp.release_conn()
        except Exception:
            pass

    def _list(self) -> tuple[list[KubeObject], str]:
        """A full paged list; restarts from scratch if a continue token expires (410)."""
        while True:
            items: list[KubeObject] = []
            token: str | None = None
            try:
                while True:
                    resp = self._call(limit=self._page_size, _continue=token)
                    try:
                        data = orjson.loads(resp.data)
                    finally:
                        self._release(resp)
                    kind = str(data.get("kind") or "").removesuffix("List")
                    api_version = data.get("apiVersion")
                    for item in data.get("items") or ():
                        item["kind"] = kind
                        item["apiVersion"] = api_version
                        _trim(item)
                        items.append(item)
                    meta = data.get("metadata") or {}
                    token = meta.get("continue") or None
                    if not token:
                        return items, str(meta.get("resourceVersion") or "")
            except k8s.ApiException as exc:
                if exc.status != 410 or token is None:
                    raise

    def _watch(self) -> None:
        resp = self._call(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=max(1, int(self._watch_timeout * (0.75 + random.random() / 4))),
        )
        try:
            self._on_health(None)
            buf = b""
            for chunk in resp.stream(None, decode_content=False):
                if self._stop.is_set():
                    return
                buf += chunk
                while (nl := buf.find(b"\n")) >= 0:
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if line.strip():
                        self._handle(orjson.loads(line))
                        if self._stop.is_set():
                            return
        finally:
            try:
                resp.close()
            except Exception:
                pass
            self._release(resp)

    def _handle(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise Expired(obj.get("message") or "expired")
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('reason')} {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if etype in ("ADDED", "MODIFIED", "DELETED"):
            _trim(obj)
            self._on_event(etype, obj)
        if rv:
            self.resource_version = str(rv)


def _trim(obj: KubeObject) -> None:
    """Drop managedFields: large, never read, and it churns on every write."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


def _shutdown(resp: Any) -> None:
    """Unblock a thread reading `resp` (from another thread) by shutting its socket down."""
    try:
        resp.shutdown()
        return
    except Exception:
        pass
    try:
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass


# -- source ----------------------------------------------------------------
class KubeSource:
    """All watched kinds of one cluster, feeding one ClusterStore."""

    def __init__(
        self,
        cluster_id: str,
        api: ClientSpec,
        store: ClusterStore,
        *,
        namespace: str | None = None,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        kinds: Iterable[str] = KINDS,
        page_size: int = 500,
        watch_timeout: int = 300,
        connect_timeout: float = 5.0,
    ) -> None:
        self.cluster_id = cluster_id
        self._owns_client = not isinstance(api, k8s.ApiClient)
        if isinstance(api, str):
            self.api_client = api_client_from_kubeconfig(api)
        elif isinstance(api, k8s.ApiClient):
            self.api_client = api
        else:
            self.api_client = api()
        self._store = store
        self.namespace = namespace
        self.kinds = tuple(kinds)
        self._backoff = backoff or Backoff()
        self._metrics = metrics
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._connect_timeout = connect_timeout
        self._lock = threading.RLock()  # serialises store writes, status and retargeting
        self._listed: set[str] = set()
        self._failing: dict[str, str] = {}
        self._ever_synced = False
        self._stopped = False
        self._reflectors: dict[str, Reflector] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced: asyncio.Event | None = None

    @property
    def store(self) -> ClusterStore:
        return self._store

    @property
    def reflectors(self) -> dict[str, Reflector]:
        return dict(self._reflectors)

    def _probe(self, path: str) -> int:
        """The status of a one-item list of `path` (0 when the API server cannot be reached now)."""
        try:
            request = self.api_client.param_serialize(method="GET", resource_path=path, query_params=[("limit", "1")],
                                                      auth_settings=["BearerToken"])  # fmt: skip
            resp = self.api_client.call_api(*request, _request_timeout=self._connect_timeout)
            status = resp.status
            _shutdown(resp)
        except k8s.ApiException as exc:
            status = exc.status
        except Exception:  # unreachable now: the reflectors will say so
            return 0
        return int(status)

    def _unwatchable(self) -> set[str]:
        """Optional kinds this source cannot watch: the KIngress when Knative's group is not served
        or not permitted (the chart's knative.enabled is off), and see `_unwatchable_gateway_api`."""
        skip = set(self._unwatchable_gateway_api()) if set(GATEWAY_API_KINDS) & set(self.kinds) else set()
        if set(KNATIVE_KINDS) & set(self.kinds):
            status = self._probe(f"{KNATIVE_PATH}/ingresses")
            if status in (403, 404):
                why = "not served" if status == 404 else "not permitted"
                log.info("%s: %s is %s; Knative KIngresses are not watched", self.cluster_id, KNATIVE_PATH, why)
                skip |= set(KNATIVE_KINDS)
        return skip

    def _unwatchable_gateway_api(self) -> set[str]:
        """Gateway API kinds this source cannot watch: all of them when the group is not served (no
        CRDs, 404) or not permitted (403: the chart's gatewayAPI.enabled is off); Namespaces alone
        when only they are forbidden. Never blocks the Ingress kinds."""
        status = self._probe(f"{GATEWAY_API_PATH}/gatewayclasses")
        if status in (403, 404):
            why = "not served" if status == 404 else "not permitted"
            log.info("%s: %s is %s; Gateway API kinds are not watched", self.cluster_id, GATEWAY_API_PATH, why)
            return set(GATEWAY_API_KINDS)
        if self._probe("/api/v1/namespaces") == 403:
            log.info("%s: Namespaces may not be listed; allowedRoutes selectors match no namespace", self.cluster_id)
            return {NAMESPACE}
        return set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._synced = asyncio.Event()
        if (set(GATEWAY_API_KINDS) | set(KNATIVE_KINDS)) & set(self.kinds):
            skip = await asyncio.to_thread(self._unwatchable)
            self.kinds = tuple(k for k in self.kinds if k not in skip)
        for kind in self.kinds:
            field_selector = _KIND_API[kind][2]
            list_fn = RawLister.for_kind(self.api_client, kind, self.namespace)
            self._reflectors[kind] = Reflector(
                f"{self.cluster_id}/{kind}",
                list_fn,
                on_replace=functools.partial(self._replace, kind),
                on_event=functools.partial(self._event, kind),
                on_health=functools.partial(self._health, kind),
                field_selector=field_selector,
                backoff=self._backoff,
                page_size=self._page_size,
                watch_timeout=self._watch_timeout,
                connect_timeout=self._connect_timeout,
            )
        for reflector in self._reflectors.values():
            reflector.start()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every kind has been listed (False if `timeout` passes first)."""
        if self._synced is None:
            raise RuntimeError("KubeSource.start() was not called")
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def synced(self) -> bool:
        return self._synced is not None and self._synced.is_set()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop all watches; after this returns the store is never written again."""
        with self._lock:
            self._stopped = True
        for reflector in self._reflectors.values():
            reflector.stop()
        reflectors = list(self._reflectors.values())

        def join() -> None:
            deadline = time.monotonic() + timeout
            for r in reflectors:
                if not r.join(max(0.0, deadline - time.monotonic())):
                    log.warning("reflector %s did not stop in time", r.name)
            if self._owns_client:
                self.api_client.close()

        await asyncio.to_thread(join)

    def retarget(self, store: ClusterStore) -> None:
        """Feed `store` from now on, first making it equal to what we have (only real changes emitted).

        Used to swap a cluster to a new kubeconfig without a gap: the new source syncs into
        a staging store, then takes over the live store atomically with respect to its watches.
        """
        with self._lock:
            old = self._store
            for kind in KINDS:
                store.replace(kind, old.list(kind))
            store.status.state = old.status.state
            store.status.last_sync = old.status.last_sync
            store.status.stale_since = old.status.stale_since
            for where in [w for w in store.status.errors if w.startswith("watch/")]:
                del store.status.errors[where]
            store.status.errors.update({w: m for w, m in old.status.errors.items() if w.startswith("watch/")})
            self._store = store

    # -- reflector callbacks (reflector threads) --------------------------
    def _replace(self, kind: str, items: list[KubeObject]) -> None:
        with self._lock:
            if self._stopped:
                return
            self._store.replace(kind, items)
            self._listed.add(kind)

    def _event(self, kind: str, etype: str, obj: KubeObject) -> None:
        with self._lock:
            if self._stopped:
                return
            if etype == "DELETED":
                meta = obj.get("metadata") or {}
                self._store.delete(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            else:
                self._store.upsert(kind, obj)

    def _health(self, kind: str, error: str | None) -> None:
        with self._lock:
            if self._stopped:
                return
            status = self._store.status
            where = f"watch/{kind}"
            if error is not None:
                self._failing[kind] = error
                status.errors[where] = error
                if self._metrics is not None:
                    self._metrics.source_errors.labels(cluster=self.cluster_id).inc()
                if self._ever_synced:
                    if status.state != "stale":
                        status.state = "stale"
                        status.stale_since = time.time()
                elif status.state != "error":
                    status.state = "error"
                self._set_gauges(up=False, stale=self._ever_synced)
                self._store.status_changed()
                return
            self._failing.pop(kind, None)
            status.errors.pop(where, None)
            if self._failing or not all(k in self._listed for k in self.kinds):
                return
            if status.state != "synced":
                self._store.mark_synced()
                self._set_gauges(up=True, stale=False)
            if not self._ever_synced:
                self._ever_synced = True
                if self._loop is not None and self._synced is not None:
                    self._loop.call_soon_threadsafe(self._synced.set)

    def _set_gauges(self, *, up: bool, stale: bool) -> None:
        if self._metrics is None:
            return
        self._metrics.source_up.labels(cluster=self.cluster_id).set(1 if up else 0)
        self._metrics.source_stale.labels(cluster=self.cluster_id).set(1 if stale else 0)
