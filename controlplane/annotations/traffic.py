"""Traffic-shaping annotation families (redirects, CORS, timeouts, retries, load balancing, upstream)."""

from __future__ import annotations

from controlplane.annotations.base import Family

FAMILIES: list[Family] = []
