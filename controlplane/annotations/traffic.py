"""Traffic-shaping annotation families (redirects, CORS, timeouts, retries, load balancing, upstream)."""

from __future__ import annotations

from controlplane.annotations.backend import BackendFamily
from controlplane.annotations.base import Family
from controlplane.annotations.cors import CorsFamily
from controlplane.annotations.errors import ErrorsFamily
from controlplane.annotations.loadbalancing import LoadBalancingFamily
from controlplane.annotations.mirror import MirrorFamily
from controlplane.annotations.redirects import RedirectFamily
from controlplane.annotations.timeouts import TimeoutsFamily

FAMILIES: list[Family] = [
    RedirectFamily(),
    CorsFamily(),
    TimeoutsFamily(),
    LoadBalancingFamily(),
    BackendFamily(),
    ErrorsFamily(),
    MirrorFamily(),
]
