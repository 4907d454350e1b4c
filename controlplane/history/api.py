"""Admin routes of the history: read it (GET /debug/history...), change what is served (POST, token).

While a pin is set, every /debug/* response carries the banner in an `X-Meridian-Pinned` header
and /debug/history carries it in its body.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controlplane.history.content import Manifest
from controlplane.history.render import manifest_diff, sources_view, summary_lines
from controlplane.history.service import RollbackRefused
from controlplane.xds import resources as rt

if TYPE_CHECKING:
    from controlplane.history.service import HistoryService

PINNED_HEADER = "X-Meridian-Pinned"
UI_FILES = {"index.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


class HistoryApi:
    def __init__(self, svc: HistoryService) -> None:
        self.svc = svc

    def register(self, a: web.Application) -> None:
        a.middlewares.append(self._banner)
        a.router.add_get("/debug/history", self.list)
        a.router.add_get("/debug/history/diff", self.diff)
        a.router.add_get("/debug/history/{version}", self.show)
        a.router.add_post("/history/rollback", self.rollback)
        a.router.add_post("/history/resume", self.resume)
        a.router.add_get("/ui", self.ui)
        a.router.add_get("/ui/{file}", self.ui)

    async def ui(self, request: web.Request) -> web.StreamResponse:
        """The console: static files shipped in the package (no build step), reading this API."""
        name = request.match_info.get("file") or "index.html"
        if name not in UI_FILES:
            raise web.HTTPNotFound()
        data = resources.files("controlplane.history").joinpath("ui", name).read_bytes()
        return web.Response(body=data, content_type=UI_FILES[name], headers={"Cache-Control": "no-store"})

    @web.middleware
    async def _banner(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await handler(request)
        if self.svc.pin is not None and request.path.startswith("/debug/"):
            resp.headers[PINNED_HEADER] = self.svc.pin.banner()
        return resp

    def pin_info(self) -> dict[str, Any] | None:
        pin = self.svc.pin
        if pin is None:
            return None
        return {**asdict(pin), "banner": pin.banner(), "missing": self.svc.pin_missing}

    # -- reading ----------------------------------------------------------------------------------
    async def list(self, request: web.Request) -> web.Response:
        h = self.svc.history
        try:
            limit = int(request.query.get("limit", "0") or 0)
        except ValueError:
            return _json({"error": "limit must be a number"}, 400)
        records = list(h.records.values())[-limit:] if limit > 0 else list(h.records.values())
        rows = []
        for r in records:
            d = h.record_dict(r)
            d["summary"] = r.summary()
            d["resource_changes"] = r.resource_changes
            del d["resources"]
            rows.append(d)
        return _json(
            {
                "now": time.time(),
                "pin": self.pin_info(),
                "latest": h.latest,
                "oldest": h.oldest,
                "size": h.size,
                "records": rows,
                "pin_events": [asdict(e) for e in h.pin_events],
            }
        )

    async def show(self, request: web.Request) -> web.Response:
        try:
            version = self._version(request.match_info["version"])
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        rec = self.svc.history.get(version)
        if rec is None:
            return _json({"error": f"version {version} is not in the history"}, 404)
        return _json({"pin": self.pin_info(), "record": rec.to_dict()})

    def _version(self, text: str) -> int:
        if text in ("live", "latest"):
            return self.svc.history.latest
        if text == "served":
            return self.svc.pin.version if self.svc.pin else self.svc.history.latest
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"not a version: {text!r} (a number, live or served)") from None

    def _side(self, text: str) -> tuple[str, Manifest | None]:
        if text == "live":
            return "live", self._live_manifest()
        v = self._version(text)
        return f"v{v}", self.svc.history.manifest(v)

    def _live_manifest(self) -> Manifest:
        h, src = self.svc.history, self.svc.sources
        out: Manifest = {}
        for t in rt.PUSH_ORDER:
            res = src.get(t).resources
            out[t] = {n: (h.fingerprints.of(r) if t == rt.SECRET else r.version) for n, r in res.items()}
        return out

    def _blob(self, cid: str) -> bytes | None:
        data = self.svc.history.blob(cid)
        if data is not None:
            return data
        for t in rt.PUSH_ORDER:
            if t == rt.SECRET:
                continue
            for r in self.svc.sources.get(t).resources.values():
                if r.version == cid:
                    return r.any_bytes
        return None

    async def diff(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            a_label, a = self._side(q.get("from", ""))
            b_label, b = self._side(q.get("to", "live"))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        if a is None or b is None:
            missing = " and ".join(label for label, side in ((a_label, a), (b_label, b)) if side is None)
            return _json({"error": f"{missing} not in the history"}, 404)
        if q.get("sources"):
            lo, hi = sorted((self._version(q.get("from", "")), self._version(q.get("to", "live"))))
            recs = [r for v, r in self.svc.history.records.items() if lo < v <= hi]
            return _json({"pin": self.pin_info(), "from": a_label, "to": b_label, "text": sources_view(recs)})
        text, summary = manifest_diff(a_label, a, b_label, b, self._blob)
        return _json({"pin": self.pin_info(), "from": a_label, "to": b_label, "text": text,
                      "summary": summary, "summary_lines": summary_lines(summary)})  # fmt: skip

    # -- changing what is served --------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> web.Response | None:
        token = self.svc.admin_token
        if token is None:
            return _json({"error": "mutating admin endpoints are disabled: start serve with --admin-token-file"}, 403)
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _json({"error": "a valid admin token is required (Authorization: Bearer ...)"}, 401)
        return None

    async def rollback(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
            version = int(body["version"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": 'body must be JSON {"version": N, "reason": "...", "yes": false}'}, 400)
        try:
            result = await self.svc.rollback(
                version, str(body.get("reason") or ""), bool(body.get("yes")), request.remote or ""
            )
        except RollbackRefused as exc:
            return _json({"error": str(exc), "reasons": exc.reasons}, exc.status)
        return _json(result)

    async def resume(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        return _json(await self.svc.resume())
