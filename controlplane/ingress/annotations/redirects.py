"""permanent-redirect, temporal-redirect and app-root: answers the gateway gives without a backend.

As ingress-nginx: temporal wins over permanent; permanent-redirect-code outside 300-308 and
temporal-redirect-code outside 300-307 fall back to 301 / 302; the URL is sent exactly as written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext, ParsedAnnotations, integer
from controlplane.ir import IngressRef, PathMatch, Redirect, Route
from controlplane.ir.policies import AppRoot, UrlRedirect


def app_root_routes(policy: AppRoot, host: str, source: IngressRef) -> list[Route]:
    """app-root: a request for exactly `/` on each host of the Ingress gets a 302 to the path."""
    return [Route(name=f"{source}#app-root", match=PathMatch("exact", "/"), action=Redirect(302, path=policy.path),
                  source=source)]  # fmt: skip


def _valid_url(url: str) -> bool:
    if any(c.isspace() for c in url):
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    try:
        _ = parts.port
    except ValueError:
        return False
    return True


class RedirectFamily(Family):
    name = "redirects"
    fields = (
        Key(
            ("permanent-redirect",),
            (
                "nginx `return <code> <URL>`: a route direct response whose `Location` is the URL exactly as "
                "written (no `/` added, its own path and query kept, the request's never appended); must be "
                "`http(s)://host…`"
            ),
        ),
        Key(
            ("permanent-redirect-code",),
            (
                "300-308, else 301; 301/302/303/307/308 carry the `Location`, other codes send the URL as the body "
                "without `Location` (as nginx's `return`)"
            ),
            default="`301`",
            validator=integer(300, 308),
        ),
        Key(("temporal-redirect",), "as `permanent-redirect`; wins over it"),
        Key(("temporal-redirect-code",), "300-307, else 302", default="`302`", validator=integer(300, 307)),
        Key(
            ("app-root",),
            "a request for exactly `/` gets a 302 to the path (an extra route)",
            difference="`/` or an invalid path: warning, ignored",
        ),
    )

    def _code(self, ann: Annotations, ctx: ParseContext, key: str, default: int, top: int) -> int:
        code = ctx.integer(ann, key, default, minimum=300, maximum=top)
        if ann.has(key) and not any(f.key == key for f in ctx.findings):
            ctx.converted(key)
        return code

    def _url(self, ann: Annotations, ctx: ParseContext, key: str) -> str | None:
        url = ann.get(key)
        if url is None:
            return None
        if not _valid_url(url):
            ctx.warn(key, f"invalid redirect URL {url!r} (need http(s)://host[/path]); ignored")
            return None
        return url

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        permanent = self._url(ann, ctx, "permanent-redirect")
        temporal = self._url(ann, ctx, "temporal-redirect")
        p_code = self._code(ann, ctx, "permanent-redirect-code", 301, 308)
        t_code = self._code(ann, ctx, "temporal-redirect-code", 302, 307)
        if temporal is not None:
            out.append(UrlRedirect(temporal, t_code))
            ctx.converted("temporal-redirect", f"{t_code} to {temporal}")
            if permanent is not None:
                ctx.warn("permanent-redirect", "ignored: temporal-redirect wins")
        elif permanent is not None:
            out.append(UrlRedirect(permanent, p_code))
            ctx.converted("permanent-redirect", f"{p_code} to {permanent}")
        root = ann.get("app-root")
        if root is not None:
            if not re.fullmatch(r"/[^\s?#]*(\?[^\s#]*)?", root) or root == "/":
                ctx.warn("app-root", f"invalid app-root {root!r} (need a path other than /); ignored")
            else:
                out.append(AppRoot(root))
                ctx.converted("app-root", f"/ redirects (302) to {root}")
        return out

    def extra_routes(self, parsed: ParsedAnnotations, host: str, source: IngressRef) -> list[Route]:
        root = parsed.get(AppRoot)
        return app_root_routes(root, host, source) if root is not None else []
