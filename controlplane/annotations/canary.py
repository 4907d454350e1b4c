"""canary-*: an Ingress that is the alternative backend of the primary with the same host/path.

Decision order per request (ingress-nginx): header, then cookie, then weight.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.annotations.base import Annotations, ParseContext, valid_re2
from controlplane.ir.policies import Canary

CANARY_KEYS = (
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
)

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class CanaryFamily:
    name = "canary"
    keys = CANARY_KEYS

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        present = [k for k in CANARY_KEYS if ann.has(k)]
        if not present:
            return []
        enabled = ctx.boolean(ann, "canary", False)
        if not enabled:
            for k in present:
                if k != "canary":
                    ctx.reject(k, 'canary-* annotations require canary: "true"')
            if ann.has("canary"):
                ctx.converted("canary", "not a canary")
            return []
        ctx.converted("canary")
        header = ann.get("canary-by-header") or None
        if header is not None and not _HEADER_NAME.match(header):
            ctx.warn("canary-by-header", f"invalid header name {header!r}; ignored")
            header = None
        value = ann.get("canary-by-header-value") or None
        pattern = ann.get("canary-by-header-pattern") or None
        if pattern is not None and not valid_re2(pattern):
            ctx.warn("canary-by-header-pattern", f"invalid regular expression {pattern!r}; ignored")
            pattern = None
        if value and pattern:
            ctx.warn("canary-by-header-pattern", "ignored because canary-by-header-value is set")
            pattern = None
        if header is None:
            for k in ("canary-by-header-value", "canary-by-header-pattern"):
                if ann.has(k):
                    ctx.warn(k, "ignored without canary-by-header")
            value = pattern = None
        cookie = ann.get("canary-by-cookie") or None
        total = ctx.integer(ann, "canary-weight-total", 100, minimum=1, maximum=1_000_000)
        weight = ctx.integer(ann, "canary-weight", 0, minimum=0)
        if weight > total:
            ctx.warn("canary-weight", f"weight {weight} exceeds total {total}; using {total}")
            weight = total
        for k in present:
            if k != "canary" and not any(f.key == k and f.level == "warning" for f in ctx.findings):
                ctx.converted(k)
        return [
            Canary(
                header=header,
                header_value=value,
                header_pattern=pattern,
                cookie=cookie,
                weight=weight,
                weight_total=total,
            )
        ]
