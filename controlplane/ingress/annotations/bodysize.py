"""proxy-body-size: the largest request body accepted (413 above it); nginx's default is 1m everywhere."""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import BodySize

# Larger limits are clamped (and reported).
MAX_BODY_SIZE = 2**53  # Lua numbers are exact up to here

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(raw: str) -> int | None:
    """nginx size syntax: digits with an optional k/m/g suffix (either case). None if invalid."""
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)", raw.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


class BodySizeFamily(Family):
    name = "body-size"
    fields = (
        Key(
            ("proxy-body-size",),
            (
                "413 when `Content-Length` exceeds the size (`8m`, `1k`, `0` = unlimited); applied to every route "
                "with nginx's default"
            ),
            default="`1m`",
            difference="bodies without `Content-Length` (chunked) are not counted",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        raw = ann.get("proxy-body-size")
        if raw is None:
            return []
        size = parse_size(raw)
        if size is None:
            ctx.warn("proxy-body-size", f"invalid size {raw!r}; using default 1m")
            return []
        if size > MAX_BODY_SIZE:
            ctx.warn("proxy-body-size", f"{raw} is too large; using {MAX_BODY_SIZE} bytes")
            size = MAX_BODY_SIZE
        else:
            ctx.converted("proxy-body-size", "no limit" if size == 0 else f"bodies declared above {size} bytes get 413")
        return [BodySize(size)]
