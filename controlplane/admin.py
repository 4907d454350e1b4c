"""Admin HTTP: health, readiness, Prometheus metrics and JSON debug views."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.addresses import split_host_port
from controlplane.engine.view import IngressView
from controlplane.knative.build import reports as kingress_reports
from controlplane.store import ClusterRegistry
from controlplane.xds import resources as rt
from controlplane.xds.cache import SnapshotCache

if TYPE_CHECKING:
    from controlplane.history.service import HistoryService


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    import orjson

    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


class AdminServer:
    """Binds to localhost unless told otherwise (`--admin-address`).

    Reads Ingresses through the engine's IngressView; everything else it shows (the history too) is
    handed in.
    """

    def __init__(
        self,
        view: IngressView,
        *,
        ready: Callable[[], bool],
        metrics: CollectorRegistry,
        cache: SnapshotCache,
        registry: ClusterRegistry,
        syncz: Callable[[], Any] = list,
        cluster_problems: Callable[[], list[dict[str, Any]]] = list,
        extra: dict[str, Callable[[], Any]] | None = None,
        history: HistoryService | None = None,
    ) -> None:
        self.view = view
        self.ready = ready
        self.metrics_registry = metrics
        self.cache = cache
        self.registry = registry
        self.syncz_source = syncz
        self.cluster_problems = cluster_problems
        self.extra = extra or {}
        self.history = history  # its routes (/history/*, /ui) are served when given
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def routes(self) -> web.Application:
        a = web.Application()
        a.router.add_get("/healthz", self.healthz)
        a.router.add_get("/readyz", self.readyz)
        a.router.add_get("/metrics", self.metrics)
        a.router.add_get("/debug/syncz", self.syncz)
        a.router.add_get("/debug/ingresses", self.ingresses)
        a.router.add_get("/debug/kingresses", self.kingresses)
        a.router.add_get("/debug/clusters", self.clusters)
        a.router.add_get("/debug/snapshot", self.snapshot)
        for path, fn in self.extra.items():
            a.router.add_get(path, self._wrap(fn))
        if self.history is not None:
            from controlplane.history.api import HistoryApi

            HistoryApi(self.history).register(a)
        return a

    @staticmethod
    def _wrap(fn: Callable[[], Any]) -> Callable[[web.Request], Any]:
        async def handler(_request: web.Request) -> web.Response:
            return _json(fn())

        return handler

    async def start(self, address: str) -> int:
        host, port = split_host_port(address, 19000)
        self._runner = web.AppRunner(self.routes(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ---------------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        ready = self.ready()
        return web.Response(text="ready\n" if ready else "not ready\n", status=200 if ready else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def syncz(self, _request: web.Request) -> web.Response:
        return _json(self.syncz_source())

    async def ingresses(self, _request: web.Request) -> web.Response:
        return _json(self.view.reports())

    async def kingresses(self, _request: web.Request) -> web.Response:
        return _json(kingress_reports(self.view.knative()))

    async def clusters(self, _request: web.Request) -> web.Response:
        now = time.time()
        out = []
        for store in sorted(self.registry.stores(), key=lambda s: s.cluster_id):
            st = store.status
            out.append(
                {
                    "cluster": store.cluster_id,
                    "primary": store.primary,
                    "state": st.state,
                    "last_sync": st.last_sync,
                    "seconds_since_sync": None if st.last_sync is None else round(now - st.last_sync, 3),
                    "stale_since": st.stale_since,
                    "errors": dict(st.errors),
                    "objects": store.counts(),
                }
            )
        for problem in self.cluster_problems():
            out.append(problem)
        return _json(out)

    async def snapshot(self, _request: web.Request) -> web.Response:
        cache = self.cache
        # "version" is what Envoy is told (a digest of the resources: equal on every replica);
        # "generation" counts this process's changes (differs between replicas and restarts).
        return _json(
            {
                "generation": cache.version,
                "types": {
                    rt.SHORT_NAMES[t]: {
                        "version": cache.get(t).digest,
                        "generation": cache.get(t).version,
                        # time.monotonic() of the change first seen and of this version built
                        # (for benchmarks on the same host; see bench/route_ready.py)
                        "seen_monotonic": cache.get(t).changed_at,
                        "built_monotonic": cache.get(t).built_at,
                        "resources": {n: r.version for n, r in sorted(cache.get(t).resources.items())},
                    }
                    for t in rt.PUSH_ORDER
                },
            }
        )
