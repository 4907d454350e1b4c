"""enable-cors and cors-*: the gateway answers preflights and adds CORS headers (ingress-nginx defaults)."""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, ParseContext
from controlplane.ir.policies import DEFAULT_HEADERS, DEFAULT_MAX_AGE, DEFAULT_METHODS, ORIGIN, Cors

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _token_list(ctx: ParseContext, ann: Annotations, key: str, default: str) -> str:
    raw = ann.get(key)
    if raw is None:
        return default
    items = [t.strip() for t in raw.split(",") if t.strip()]
    if not items or not all(_TOKEN.match(t) for t in items):
        ctx.warn(key, f"invalid list {raw!r}; using default {default!r}" if default else f"invalid list {raw!r}")
        return default
    ctx.converted(key)
    return ",".join(items)


class CorsFamily(Family):
    name = "cors"
    keys = (
        "enable-cors",
        "cors-allow-origin",
        "cors-allow-methods",
        "cors-allow-headers",
        "cors-expose-headers",
        "cors-allow-credentials",
        "cors-max-age",
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        if not ctx.boolean(ann, "enable-cors", False):
            if ann.has("enable-cors"):
                ctx.converted("enable-cors", "CORS disabled")
            for k in self.keys[1:]:
                if ann.has(k):
                    ctx.warn(k, 'ignored without enable-cors: "true"')
            return []
        ctx.converted("enable-cors", "CORS filter with a per-route policy; preflights answered by the gateway")
        origins: list[str] = []
        raw = ann.get("cors-allow-origin")
        if raw is not None:
            items = [o.strip() for o in raw.split(",") if o.strip()]
            if any(o == "*" for o in items):
                origins = []
                ctx.converted("cors-allow-origin", "any origin")
            else:
                bad = [o for o in items if not ORIGIN.match(o)]
                origins = [o for o in items if ORIGIN.match(o)]
                if bad:
                    ctx.warn("cors-allow-origin", f"invalid origins ignored: {', '.join(bad)}"
                             + ("" if origins else "; using default *"))  # fmt: skip
                else:
                    ctx.converted("cors-allow-origin")
        methods = _token_list(ctx, ann, "cors-allow-methods", DEFAULT_METHODS)
        headers = _token_list(ctx, ann, "cors-allow-headers", DEFAULT_HEADERS)
        expose = _token_list(ctx, ann, "cors-expose-headers", "")
        credentials = ctx.boolean(ann, "cors-allow-credentials", True)
        max_age = ctx.integer(ann, "cors-max-age", DEFAULT_MAX_AGE, minimum=0)
        return [Cors(tuple(origins), methods, headers, expose, credentials, max_age)]
