"""Kinds, API group and the controller name of the Gateway API frontend, and its duration format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"  # standard channel, as of gateway-api v1.6.1
CONTROLLER_NAME = "meridian.io/gateway-controller"

GATEWAY_CLASS = "GatewayClass"
GATEWAY = "Gateway"
HTTP_ROUTE = "HTTPRoute"
GRPC_ROUTE = "GRPCRoute"
REFERENCE_GRANT = "ReferenceGrant"
NAMESPACE = "Namespace"

ROUTE_KINDS = (HTTP_ROUTE, GRPC_ROUTE)
CLUSTER_SCOPED = frozenset({GATEWAY_CLASS, NAMESPACE})
API_VERSIONS = frozenset({f"{GROUP}/v1", f"{GROUP}/v1beta1"})

_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: Any) -> float | None:
    """A Gateway API Duration ("1h", "10s", "500ms", "1m30s") in seconds, None when not one."""
    if not isinstance(value, str) or not _DURATION.match(value):
        return None
    return sum(int(n) * _UNIT[u] for n, u in _PART.findall(value))


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, Mapping) else {}


def generation(obj: Mapping[str, Any]) -> int:
    g = meta(obj).get("generation")
    return g if isinstance(g, int) else 0


def as_list(value: Any) -> list[Any]:
    """A list field as a list: anything else (a hand-written manifest's mistake) counts as empty."""
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    """A mapping field as a mapping (anything else counts as empty)."""
    return value if isinstance(value, Mapping) else {}
