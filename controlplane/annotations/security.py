"""Access-control annotation families (IP lists, rate limits, body size, auth, client TLS, TLS params)."""

from __future__ import annotations

from controlplane.annotations.base import Family

FAMILIES: list[Family] = []
