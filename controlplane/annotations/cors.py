"""enable-cors and cors-*: the gateway answers preflights and adds CORS headers (ingress-nginx defaults)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from controlplane.annotations.base import Annotations, ParseContext

DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
DEFAULT_HEADERS = (
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
)
DEFAULT_MAX_AGE = 1728000

_ORIGIN = re.compile(r"^(https?)://(\*\.)?([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(:\d{1,5})?$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True, slots=True)
class Cors:
    """`origins` empty means any origin; otherwise each is exact or has a one-label `*.` wildcard."""

    scope: ClassVar[str] = "route"
    origins: tuple[str, ...] = ()
    methods: str = DEFAULT_METHODS
    headers: str = DEFAULT_HEADERS
    expose_headers: str = ""
    credentials: bool = True
    max_age: int = DEFAULT_MAX_AGE

    def origin_patterns(self) -> tuple[tuple[str, str], ...]:
        """(kind, value) matchers: ("any", ""), ("exact", origin) or ("regex", RE2 full match)."""
        if not self.origins:
            return (("any", ""),)
        out = []
        for o in self.origins:
            m = _ORIGIN.match(o)
            if m and m.group(2):
                rest = re.escape(m.group(3)) + re.escape(m.group(4) or "")
                out.append(("regex", f"{m.group(1)}://[^.]+\\.{rest}"))
            else:
                out.append(("exact", o))
        return tuple(out)


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


class CorsFamily:
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
                bad = [o for o in items if not _ORIGIN.match(o)]
                origins = [o for o in items if _ORIGIN.match(o)]
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
