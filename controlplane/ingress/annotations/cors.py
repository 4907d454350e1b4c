"""enable-cors and cors-*: the values ingress-nginx's cors parser keeps (internal/ingress/annotations/cors).

Invalid values fall back to ingress-nginx's defaults. cors-allow-origin: a list that fails the
overall validation (spaces ignored) means `*`; then each entry must be `scheme://[*.]host[:port]`,
`null` or `*` (which allows any origin), and other entries are skipped. Methods, headers and expose
headers are sent exactly as written.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext, integer
from controlplane.ir.policies import DEFAULT_HEADERS, DEFAULT_MAX_AGE, DEFAULT_METHODS, Cors

ORIGIN_LIST = re.compile(r"^((((([a-z]+://)?(\*\.)?[A-Za-z0-9\-.]*(:\d+)?,?)|null)+)|\*)?$")
ORIGIN = re.compile(r"^([a-z]+://(\*\.)?[A-Za-z0-9\-.]*(:\d+)?|\*|null)?$")
METHODS = re.compile(r"^([A-Za-z]+,?\s?)+$")
HEADERS = re.compile(r"^[A-Za-z0-9\-_, ]*$")
EXPOSE_HEADERS = re.compile(r"^(([A-Za-z0-9\-_]+|\*),?\s?)+$")


def _text(ctx: ParseContext, ann: Annotations, key: str, pattern: re.Pattern[str], default: str) -> str:
    raw = ann.get(key)
    if raw is None or raw == "":
        return default
    if not pattern.match(raw.replace(" ", "")) or not pattern.match(raw):
        ctx.warn(key, f"invalid value {raw!r}; using default {default!r}" if default else f"invalid value {raw!r}")
        return default
    ctx.converted(key)
    return raw


class CorsFamily(Family):
    name = "cors"
    fields = (
        Key(
            ("enable-cors",),
            "turns the above on for the Ingress's routes (plain-HTTP redirect routes included)",
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("cors-allow-origin",),
            (
                "comma list of `scheme://[*.]host[:port]` or `null`; `*` (or blank, or a list that fails "
                "validation) means any origin and `Access-Control-Allow-Origin: *`; otherwise the request's "
                "`Origin` is echoed when it ends with a listed origin (case-insensitive, `*.` = one label, as "
                "nginx's `~* (...)$`); entries without a scheme are skipped"
            ),
            default="`*`",
        ),
        Key(("cors-allow-methods",), "sent as written", default="`GET, PUT, POST, DELETE, PATCH, OPTIONS`"),
        Key(
            ("cors-allow-headers",),
            "sent as written",
            default=(
                "`DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization`"
            ),
        ),
        Key(("cors-expose-headers",), "sent as written"),
        Key(
            ("cors-allow-credentials",),
            "`Access-Control-Allow-Credentials: true`; `false` leaves the header out",
            default="`true`",
            validator=BOOLEAN,
        ),
        Key(("cors-max-age",), "`Access-Control-Max-Age`", default="`1728000`", validator=integer()),
    )

    def _origins(self, ann: Annotations, ctx: ParseContext) -> tuple[bool, tuple[str, ...]]:
        raw = ann.get("cors-allow-origin")
        if raw is None or raw == "":
            return True, ()
        if not ORIGIN_LIST.match(raw.replace(" ", "")):
            ctx.warn("cors-allow-origin", f"invalid origin list {raw!r}; using default *")
            return True, ()
        origins: list[str] = []
        skipped: list[str] = []
        for item in (o.strip() for o in raw.split(",")):
            if not item:
                continue
            if item == "*":
                ctx.converted("cors-allow-origin", "any origin")
                return True, ()
            (origins if ORIGIN.match(item) else skipped).append(item)
        if skipped:
            ctx.warn("cors-allow-origin", f"invalid origins skipped: {', '.join(skipped)}"
                     + ("" if origins else "; no origin is allowed, so no CORS headers are sent"))  # fmt: skip
        else:
            ctx.converted("cors-allow-origin")
        return False, tuple(origins)

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        if not ctx.boolean(ann, "enable-cors", False):
            if ann.has("enable-cors") and not any(f.key == "enable-cors" for f in ctx.findings):
                ctx.converted("enable-cors", "CORS disabled")
            for k in self.keys[1:]:
                if ann.has(k):
                    ctx.warn(k, 'ignored without enable-cors: "true"')
            return []
        ctx.converted("enable-cors", "CORS headers on every response of allowed origins; preflights answered 204")
        any_origin, origins = self._origins(ann, ctx)
        methods = _text(ctx, ann, "cors-allow-methods", METHODS, DEFAULT_METHODS)
        headers = _text(ctx, ann, "cors-allow-headers", HEADERS, DEFAULT_HEADERS)
        expose = _text(ctx, ann, "cors-expose-headers", EXPOSE_HEADERS, "")
        credentials = ctx.boolean(ann, "cors-allow-credentials", True)
        max_age = ctx.integer(ann, "cors-max-age", DEFAULT_MAX_AGE)
        return [Cors(any_origin, origins, methods, headers, expose, credentials, max_age)]
