"""Access-control annotation families (IP lists, rate limits, body size, auth, client TLS, TLS params)."""

from __future__ import annotations

from controlplane.annotations.base import Family
from controlplane.annotations.basicauth import BasicAuthFamily
from controlplane.annotations.bodysize import BodySizeFamily
from controlplane.annotations.clientcert import ClientCertFamily
from controlplane.annotations.extauth import ExtAuthFamily
from controlplane.annotations.ipaccess import IpAccessFamily
from controlplane.annotations.ratelimit import RateLimitFamily
from controlplane.annotations.tlsparams import TlsParamsFamily

FAMILIES: list[Family] = [
    IpAccessFamily(),
    RateLimitFamily(),
    BodySizeFamily(),
    ExtAuthFamily(),
    BasicAuthFamily(),
    ClientCertFamily(),
    TlsParamsFamily(),
]
