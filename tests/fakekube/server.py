"""A fake Kubernetes API server that speaks the real REST list/watch protocol.

No kube-apiserver can be installed here, so tests run this on loopback and point
the real `kubernetes` client at it through a real kubeconfig. It keeps what the
control plane relies on: a global resourceVersion, consistent paged LISTs,
chunked WATCH streams resuming after a resourceVersion, BOOKMARKs, `410 Gone`
once history is compacted, label/field selectors, the status subresource,
optimistic concurrency (409) and Leases/Events. Tests drive it from Python
(`apply`, `delete`, `compact`, `stop`/`start`) from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from .discovery import discovery_document
from .resources import (
    BY_KIND,
    BY_PATH,
    RESOURCES,
    ApiError,
    Predicate,
    Resource,
    json_patch,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
)

Obj = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class Write:
    """One write request as the API server saw it: who (the token's user), what, and the answer."""

    at: float  # time.monotonic() when it was answered
    user: str
    verb: str  # create | update | patch | delete
    kind: str
    namespace: str
    name: str
    subresource: str  # "status" or ""
    code: int
    holder: str | None = None  # Lease writes: spec.holderIdentity of the stored result


@dataclass(frozen=True)
class _Change:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj  # with kind/apiVersion; never mutated after commit
    old: Obj | None


API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"  # the API server's own audience
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MAX_DATA_BYTES = 1024 * 1024  # what the apiserver allows in a ConfigMap's or Secret's data


def _check_size(kind: str, obj: Mapping[str, Any]) -> None:
    """ConfigMaps and Secrets hold at most 1 MiB of data (keys plus values; binary values decoded)."""
    total = 0
    for field in ("data", "stringData", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            total += len(key)
            if field == "binaryData" or (kind == "Secret" and field == "data"):
                try:
                    total += len(base64.b64decode(str(value), validate=True))
                except ValueError:
                    raise ApiError(400, "BadRequest", f"{field}[{key}]: illegal base64 data") from None
            else:
                total += len(str(value).encode())
    if total > MAX_DATA_BYTES:
        raise ApiError(422, "Invalid", f"{kind} \"{(obj.get('metadata') or {}).get('name')}\" is invalid: "
                       f"[]: Too long: must have at most {MAX_DATA_BYTES} bytes")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _strip_type(obj: Obj) -> Obj:
    """List items come without kind/apiVersion, as the real server sends them."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class FakeKube:
    """One fake API server (one "cluster"), serving on 127.0.0.1 in its own thread and loop."""

    def __init__(
        self,
        *,
        bookmark_interval: float = 0.2,
        history_size: int = 1000,
        token: str | None = None,
        require_auth: bool = True,
        max_list_snapshots: int = 64,
        version: str = "v1.30.0",
        gateway_api: bool = True,
        knative: bool = True,
    ) -> None:
        self.gateway_api = gateway_api  # False: gateway.networking.k8s.io is not served (no CRDs)
        self.knative = knative  # False: networking.internal.knative.dev is not served (Knative not installed)
        self.bookmark_interval = bookmark_interval
        self.history_size = history_size
        self.token = token or f"fake-{uuid.uuid4().hex}"
        self.require_auth = require_auth
        self.version = version
        self.port = 0
        self._lock = threading.RLock()
        self._rv = 1
        self._objects: dict[str, dict[Key, Obj]] = {r.id: {} for r in RESOURCES}
        self._history: dict[str, collections.deque[_Change]] = {
            r.id: collections.deque() for r in RESOURCES
        }
        self._floor: dict[str, int] = {r.id: 0 for r in RESOURCES}
        self._snapshots: collections.OrderedDict[str, tuple[int, list[Obj]]] = collections.OrderedDict()
        self._max_snapshots = max_list_snapshots
        self._waiters: set[asyncio.Future[None]] = set()
        self._watch_transports: set[asyncio.BaseTransport] = set()
        self._watch_log: collections.deque[dict[str, str]] = collections.deque(maxlen=1000)
        self._users: dict[str, str] = {}  # token -> user name (besides the admin token)
        self._writes: list[Write] = []
        self._active: collections.Counter[str] = collections.Counter()
        self._stopping = False
        # Service-account tokens the TokenReview API knows: token -> (username, audiences).
        self._sa_tokens: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._runner: web.AppRunner | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakekube", daemon=True)
        self._thread.start()

    # -- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def start(self) -> FakeKube:
        """Serve (again) on the same port, so a restart looks like an API server coming back."""
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the listener and cut every open connection (an API server outage)."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeKube:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        if self._runner is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._stopping = False
        self._runner = runner

    async def _stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        self._wake()
        for transport in list(self._watch_transports):
            transport.abort()
        self._watch_transports.clear()
        await runner.cleanup()

    # -- test controls (any thread) --------------------------------------
    def kubeconfig(self, path: str | None = None, *, token: str | None = None, context: str = "fake") -> str:
        """A real kubeconfig for this server; written to `path` too when given."""
        text = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": context, "cluster": {"server": self.url}}],
                "users": [{"name": f"{context}-user", "user": {"token": token or self.token}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
                "current-context": context,
                "preferences": {},
            },
            sort_keys=False,
        )
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def issue_token(
        self, namespace: str, service_account: str, audiences: tuple[str, ...] = (API_AUDIENCE,)
    ) -> str:
        """A bound service-account token (as the TokenRequest API mints one), for TokenReview."""
        token = f"sa-{uuid.uuid4().hex}"
        with self._lock:
            self._sa_tokens[token] = (f"system:serviceaccount:{namespace}:{service_account}", tuple(audiences))
        return token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._sa_tokens.pop(token, None)

    def add_user(self, name: str) -> str:
        """A token that authenticates as `name` (see `writes`); use it with `kubeconfig(token=...)`."""
        token = f"fake-{name}-{uuid.uuid4().hex}"
        with self._lock:
            self._users[token] = name
        return token

    def writes(self) -> list[Write]:
        """Every write request over HTTP (not the test's own `apply`/`delete`), oldest first."""
        with self._lock:
            return list(self._writes)

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Create or replace an object as given (status included); returns the stored copy."""
        res = self._resource_of(obj)
        new = copy.deepcopy(dict(obj))
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("apply() needs metadata.name")
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        meta.pop("resourceVersion", None)
        with self._lock:
            old = self._objects[res.id].get(_key(new))
            if old is not None:
                meta["uid"] = old["metadata"]["uid"]
                meta.setdefault("creationTimestamp", old["metadata"].get("creationTimestamp"))
            return copy.deepcopy(self._commit(res, new, old))

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        res = BY_KIND[kind]
        with self._lock:
            old = self._objects[kind].get((namespace or "" if res.namespaced else "", name))
            if old is None:
                return False
            self._commit(res, None, old)
            return True

    def compact(self) -> None:
        """Forget all watch history and list snapshots: resuming from any older version gets 410."""
        with self._lock:
            for kind in self._history:
                self._history[kind].clear()
                self._floor[kind] = self._rv
            self._snapshots.clear()
        self._wake()

    def objects(self, kind: str) -> list[Obj]:
        with self._lock:
            return copy.deepcopy(list(self._objects[kind].values()))

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        res = BY_KIND[kind]
        with self._lock:
            obj = self._objects[kind].get((namespace or "" if res.namespaced else "", name))
            return copy.deepcopy(obj)

    def events(self) -> list[Obj]:
        return self.objects("Event")

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def active_watches(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(self._active.values()) if kind is None else self._active[kind]

    def watch_requests(self) -> list[dict[str, str]]:
        """Query parameters (plus `kind`) of every watch request seen, oldest first."""
        with self._lock:
            return list(self._watch_log)

    # -- state -----------------------------------------------------------
    @staticmethod
    def _resource_of(obj: Mapping[str, Any]) -> Resource:
        kind = str(obj.get("kind") or "")
        api_version = str(obj.get("apiVersion") or "")
        for res in RESOURCES:  # the kind of that group first (Knative's Ingress is not networking.k8s.io's)
            if res.kind == kind and res.group and api_version.startswith(res.group + "/"):
                return res
        if kind not in BY_KIND:
            raise ValueError(f"unsupported kind {kind!r}")
        return BY_KIND[kind]

    def _commit(self, res: Resource, new: Obj | None, old: Obj | None) -> Obj:
        """Store a change under the lock: bump the global resourceVersion and record history."""
        with self._lock:
            self._rv += 1
            rv = self._rv
            if new is None:
                assert old is not None
                gone = copy.deepcopy(old)
                gone["metadata"]["resourceVersion"] = str(rv)
                self._objects[res.id].pop(_key(old), None)
                change = _Change(rv, "DELETED", gone, old)
            else:
                if res.id == "Secret" and isinstance(new.get("stringData"), dict):
                    data = new.setdefault("data", {}) or {}
                    for k, v in new.pop("stringData").items():  # the apiserver folds stringData into data
                        data[k] = base64.b64encode(str(v).encode()).decode()
                    new["data"] = data
                meta = new.setdefault("metadata", {})
                meta["resourceVersion"] = str(rv)
                meta.setdefault("uid", str(uuid.uuid4()))
                if not meta.get("creationTimestamp"):
                    meta["creationTimestamp"] = _now()
                if "spec" in new and res.id not in ("Lease",):
                    meta.setdefault("generation", 1)
                self._objects[res.id][_key(new)] = new
                change = _Change(rv, "MODIFIED" if old is not None else "ADDED", new, old)
            history = self._history[res.id]
            history.append(change)
            while len(history) > self.history_size:
                self._floor[res.id] = history.popleft().rv
        self._wake()
        return change.obj

    def _wake(self) -> None:
        if not self._loop.is_closed():
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- HTTP ------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        user = self._users.get(token) or "admin"
        try:
            if self.require_auth and auth != f"Bearer {self.token}" and token not in self._users:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            parts = [p for p in request.path.split("/") if p]
            if not self.gateway_api and parts[:2] == ["apis", "gateway.networking.k8s.io"]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not self.knative and parts[:2] == ["apis", "networking.internal.knative.dev"]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
                if request.method != "POST":
                    raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on tokenreviews")
                return web.json_response(self._token_review(await self._body(request)), status=201)
            discovery = discovery_document(parts, self.version)
            if discovery is not None:
                return web.json_response(discovery)
            resp = await self._resource_request(request, parts)
        except ApiError as err:
            resp = web.json_response(err.status(), status=err.code)
        if request.method in _VERBS:
            sent: Any = {}
            if request.method == "POST":  # a failed create names its object only in the request
                with suppress(Exception):
                    sent = await self._body(request)  # aiohttp keeps the body read before
            self._log_write(request, user, resp, sent if isinstance(sent, dict) else {})
        return resp

    def _log_write(self, request: web.Request, user: str, resp: web.StreamResponse, sent: Obj) -> None:
        parts = [p for p in request.path.split("/") if p]
        try:
            res, ns, name, status = self._route(parts)
        except (ApiError, IndexError):
            return
        body: Any = {}
        if isinstance(resp, web.Response) and resp.body:
            with suppress(ValueError, TypeError):
                body = json.loads(bytes(resp.body))  # type: ignore[arg-type]
        meta = (body.get("metadata") or {} if isinstance(body, dict) else {}) or sent.get("metadata") or {}
        holder = None
        if res.kind == "Lease" and resp.status < 300:
            holder = (body.get("spec") or {}).get("holderIdentity")
        write = Write(time.monotonic(), user, _VERBS[request.method], res.id, ns or "",
                      name or str(meta.get("name") or ""), "status" if status else "", resp.status, holder)  # fmt: skip
        with self._lock:
            self._writes.append(write)

    def _token_review(self, body: Any) -> dict[str, Any]:
        """authentication.k8s.io/v1 TokenReview: status.authenticated, user, audiences (or error)."""
        if not isinstance(body, dict) or body.get("kind", "TokenReview") != "TokenReview":
            raise ApiError(400, "BadRequest", "expected a TokenReview")
        spec = body.get("spec") or {}
        wanted = tuple(spec.get("audiences") or (API_AUDIENCE,))
        with self._lock:
            known = self._sa_tokens.get(spec.get("token") or "")
        status: dict[str, Any] = {"user": {}}
        if known is None:
            status["error"] = "[invalid bearer token, service account token is not valid]"
        else:
            username, audiences = known
            common = [a for a in wanted if a in audiences]
            if not common:
                status["error"] = f"[invalid bearer token, token audiences {list(audiences)} is invalid for the " \
                    f"target audiences {list(wanted)}]"  # fmt: skip
            else:
                groups = ["system:serviceaccounts", f"system:serviceaccounts:{username.split(':')[2]}",
                          "system:authenticated"]  # fmt: skip
                uid = str(uuid.uuid5(uuid.NAMESPACE_URL, username))
                status = {"authenticated": True, "user": {"username": username, "uid": uid, "groups": groups},
                          "audiences": common}  # fmt: skip
        return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}  # fmt: skip

    def _route(self, parts: list[str]) -> tuple[Resource, str | None, str | None, bool]:
        """Path -> (resource, namespace or None for all, name or None, status subresource)."""
        if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] != "status":
            ns, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and not res.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        if name is not None and res.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, ns, name, len(rest) == 3

    async def _resource_request(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        res, ns, name, status = self._route(parts)
        method = request.method
        q = request.query
        if name is None:
            if method == "GET":
                if _truthy(q.get("watch")):
                    return await self._watch(request, res, ns)
                return web.json_response(self._list(res, ns, q))
            if method == "POST" and (ns is not None or not res.namespaced):
                body = await self._body(request)
                return web.json_response(self._create(res, ns, body), status=201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on this collection")
        key = (ns or "", name)
        if method == "GET":
            with self._lock:
                obj = self._objects[res.id].get(key)
            if obj is None:
                raise self._not_found(res, name)
            return web.json_response(obj)
        if method == "PUT":
            body = await self._body(request)
            return web.json_response(self._update(res, key, body, status))
        if method == "PATCH":
            body = await self._body(request)
            ctype = request.headers.get("Content-Type", "")
            return web.json_response(self._patch(res, key, body, ctype, status))
        if method == "DELETE" and not status:
            with self._lock:
                obj = self._objects[res.id].get(key)
                if obj is None:
                    raise self._not_found(res, name)
                self._commit(res, None, obj)
            return web.json_response({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "kind": res.plural, "uid": obj["metadata"].get("uid")},
            })
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        try:
            if "yaml" in request.headers.get("Content-Type", ""):
                return yaml.safe_load(raw)
            return json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"invalid body: {exc}") from None

    @staticmethod
    def _not_found(res: Resource, name: str) -> ApiError:
        group = f".{res.group}" if res.group else ""
        return ApiError(404, "NotFound", f'{res.plural}{group} "{name}" not found',
                        {"name": name, "kind": res.plural, "group": res.group})

    def _matching(self, res: Resource, ns: str | None, q: Mapping[str, str]) -> Predicate:
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), res)

        def match(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            if ns is not None and meta.get("namespace") != ns:
                return False
            return labels(meta.get("labels") or {}) and fields(obj)

        return match

    # -- list ------------------------------------------------------------
    def _list(self, res: Resource, ns: str | None, q: Mapping[str, str]) -> dict[str, Any]:
        match = self._matching(res, ns, q)
        token = q.get("continue")
        with self._lock:
            if token:
                snap_id, start = self._decode_continue(token)
                snap = self._snapshots.get(snap_id)
                if snap is None:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue "
                                   "parameter.")
                self._snapshots.move_to_end(snap_id)
                rv, items = snap
            else:
                rv = self._rv
                items = sorted((o for o in self._objects[res.id].values() if match(o)), key=_key)
                snap_id, start = uuid.uuid4().hex, 0
        limit = int(q.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        page = items[start:]
        if limit > 0 and len(page) > limit:
            page = page[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"s": snap_id, "o": start + limit}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - start - limit
            with self._lock:
                self._snapshots[snap_id] = (rv, items)
                while len(self._snapshots) > self._max_snapshots:
                    self._snapshots.popitem(last=False)
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta,
                "items": [_strip_type(o) for o in page]}

    @staticmethod
    def _decode_continue(token: str) -> tuple[str, int]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return str(data["s"]), int(data["o"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "BadRequest", "invalid continue token") from None

    # -- writes ----------------------------------------------------------
    def _check_body(self, res: Resource, ns: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "body must be a JSON object")
        if body.get("kind") not in (None, res.kind):
            raise ApiError(400, "BadRequest", f"kind {body.get('kind')!r} does not match {res.kind}")
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            meta["namespace"] = ns
        if res.kind in ("ConfigMap", "Secret"):
            _check_size(res.kind, obj)
        return obj

    def _create(self, res: Resource, ns: str | None, body: Any) -> Obj:
        obj = self._check_body(res, ns, body)
        meta = obj["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "name or generateName is required")
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        for field in ("resourceVersion", "uid", "creationTimestamp"):
            meta.pop(field, None)
        if res.status and res.id != "Namespace":
            obj.pop("status", None)  # status is set only through the subresource
        with self._lock:
            if _key(obj) in self._objects[res.id]:
                raise ApiError(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists',
                               {"name": meta["name"], "kind": res.plural})
            return self._commit(res, obj, None)

    def _update(self, res: Resource, key: Key, body: Any, status: bool) -> Obj:
        obj = self._check_body(res, key[0] or None, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, key[1]):
            raise ApiError(400, "BadRequest", "the name of the object does not match the request")
        meta["name"] = key[1]
        with self._lock:
            old = self._objects[res.id].get(key)
            if old is None:
                raise self._not_found(res, key[1])
            self._precondition(res, old, meta.get("resourceVersion"))
            return self._commit(res, self._merge_write(res, old, obj, status), old)

    def _patch(self, res: Resource, key: Key, body: Any, ctype: str, status: bool) -> Obj:
        with self._lock:
            old = self._objects[res.id].get(key)
            if old is None:
                raise self._not_found(res, key[1])
            if "json-patch" in ctype:
                if not isinstance(body, list):
                    raise ApiError(400, "BadRequest", "json patch body must be a list")
                patched = json_patch(old, body)
            else:  # merge-patch, strategic-merge-patch (as merge) and apply (as merge)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "patch body must be a JSON object")
                rv = (body.get("metadata") or {}).get("resourceVersion")
                self._precondition(res, old, rv)
                patched = merge_patch(old, body)
            patched["apiVersion"], patched["kind"] = res.api_version, res.kind
            patched["metadata"]["name"], patched["metadata"]["namespace"] = key[1], old["metadata"].get(
                "namespace"
            )
            if not res.namespaced:
                patched["metadata"].pop("namespace", None)
            if res.kind in ("ConfigMap", "Secret"):
                _check_size(res.kind, patched)
            return self._commit(res, self._merge_write(res, old, patched, status), old)

    @staticmethod
    def _precondition(res: Resource, old: Obj, rv: Any) -> None:
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{old["metadata"]["name"]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": old["metadata"]["name"], "kind": res.plural},
            )

    @staticmethod
    def _merge_write(res: Resource, old: Obj, new: Obj, status: bool) -> Obj:
        """Status writes change only status; main writes keep status for kinds with the subresource."""
        if status:
            out = copy.deepcopy(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            return out
        out = copy.deepcopy(new)
        meta, old_meta = out["metadata"], old["metadata"]
        meta["uid"] = old_meta.get("uid")
        meta["creationTimestamp"] = old_meta.get("creationTimestamp")
        if res.status:
            if "status" in old:
                out["status"] = copy.deepcopy(old["status"])
            else:
                out.pop("status", None)
        if "generation" in old_meta:
            changed = out.get("spec") != old.get("spec")
            meta["generation"] = old_meta["generation"] + (1 if changed else 0)
        return out

    # -- watch -----------------------------------------------------------
    async def _watch(self, request: web.Request, res: Resource, ns: str | None) -> web.StreamResponse:
        q = request.query
        match = self._matching(res, ns, q)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        timeout = float(q.get("timeoutSeconds") or 0)
        rv_param = q.get("resourceVersion") or ""
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_param!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        with self._lock:
            self._watch_log.append({"kind": res.id, **q})
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        transport = request.transport
        if transport is not None:
            self._watch_transports.add(transport)
        with self._lock:
            self._active[res.id] += 1
        try:
            await self._stream(resp, res, match, rv_param, bookmarks, deadline)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._active[res.id] -= 1
            if transport is not None:
                self._watch_transports.discard(transport)
        return resp

    async def _stream(
        self,
        resp: web.StreamResponse,
        res: Resource,
        match: Predicate,
        rv_param: str,
        bookmarks: bool,
        deadline: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()

        async def send(kind: str, obj: Obj) -> None:
            await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        with self._lock:
            if rv_param in ("", "0"):
                pos = self._rv
                initial = [o for o in self._objects[res.id].values() if match(o)]
            else:
                pos = int(rv_param)
                initial = []
        for obj in initial:
            await send("ADDED", obj)
        next_bookmark = loop.time() + self.bookmark_interval
        while not self._stopping:
            fut: asyncio.Future[None] | None = None
            with self._lock:
                if pos < self._floor[res.id]:
                    floor = self._floor[res.id]
                    expired = ApiError(410, "Expired", f"too old resource version: {pos} ({floor})")
                    changes = None
                else:
                    changes = list(self._changes_after(res.id, pos))
                    if not changes:
                        fut = loop.create_future()
                        self._waiters.add(fut)
            if changes is None:
                await send("ERROR", expired.status())
                return
            for ch in changes:
                pos = ch.rv
                event = self._filtered(ch, match)
                if event is not None:
                    await send(event, ch.obj)
            if fut is None:
                continue
            now = loop.time()
            waits = [next_bookmark - now] if bookmarks else []
            if deadline is not None:
                waits.append(deadline - now)
            try:
                await asyncio.wait_for(fut, max(0.0, min(waits)) if waits else None)
            except TimeoutError:
                pass
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                with self._lock:
                    idle = not any(True for _ in self._changes_after(res.id, pos))
                    current = self._rv
                if idle and not self._stopping:
                    pos = max(pos, current)
                    await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                            "metadata": {"resourceVersion": str(pos)}})
                next_bookmark = now + self.bookmark_interval

    def _changes_after(self, kind: str, pos: int) -> Iterator[_Change]:
        history = self._history[kind]
        idx = len(history)
        while idx > 0 and history[idx - 1].rv > pos:
            idx -= 1
        for i in range(idx, len(history)):
            yield history[i]

    @staticmethod
    def _filtered(ch: _Change, match: Predicate) -> str | None:
        """Selector-aware event type: an object leaving the selection is DELETED for this watch."""
        now_in = ch.type != "DELETED" and match(ch.obj)
        was_in = ch.old is not None and match(ch.old)
        if ch.type == "DELETED":
            return "DELETED" if was_in else None
        if now_in and was_in:
            return "MODIFIED"
        if now_in:
            return "ADDED"
        if was_in:
            return "DELETED"
        return None
