"""Resource table, selectors and patch semantics of the fake Kubernetes API server.

Kept apart from the HTTP layer so the rules (what the real apiserver accepts and
answers) can be read in one place.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    """One API resource as the apiserver serves it."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    status: bool = False  # has a /status subresource
    short: tuple[str, ...] = ()
    name: str = ""  # what tests call it when two groups serve one kind (Knative's "Ingress": "KIngress")

    @property
    def id(self) -> str:
        return self.name or self.kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def field_labels(self) -> tuple[str, ...]:
        base = ("metadata.name", "metadata.namespace") if self.namespaced else ("metadata.name",)
        if self.kind == "Secret":
            return (*base, "type")
        if self.kind == "Event":
            return (*base, "involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
                    "reason", "type")
        return base


RESOURCES: tuple[Resource, ...] = (
    Resource("Namespace", "", "v1", "namespaces", False, status=True),
    Resource("Service", "", "v1", "services", True, status=True),
    Resource("Secret", "", "v1", "secrets", True),
    Resource("ConfigMap", "", "v1", "configmaps", True),
    Resource("Event", "", "v1", "events", True),
    Resource("Ingress", "networking.k8s.io", "v1", "ingresses", True, status=True),
    Resource("IngressClass", "networking.k8s.io", "v1", "ingressclasses", False),
    Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
    Resource("Lease", "coordination.k8s.io", "v1", "leases", True),
    # Gateway API (standard channel v1.6.1): served unless a test removes the group (see server options).
    Resource("GatewayClass", "gateway.networking.k8s.io", "v1", "gatewayclasses", False, status=True),
    Resource("Gateway", "gateway.networking.k8s.io", "v1", "gateways", True, status=True),
    Resource("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", True, status=True),
    Resource("GRPCRoute", "gateway.networking.k8s.io", "v1", "grpcroutes", True, status=True),
    Resource("ReferenceGrant", "gateway.networking.k8s.io", "v1", "referencegrants", True),
    # Knative Serving's internal Ingress (KIngress), as its CRD serves it.
    Resource("Ingress", "networking.internal.knative.dev", "v1alpha1", "ingresses", True, status=True,
             name="KIngress"),
)

BY_KIND: dict[str, Resource] = {r.id: r for r in RESOURCES}  # by `id`: a kind, or a resource's own name
BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


# -- label selectors -------------------------------------------------------
Predicate = Callable[[Mapping[str, Any]], bool]
_SET_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")
_FIELD_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([^,=!]*?)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value sets."""
    terms, depth, cur = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    """Compile a label selector (=, ==, !=, in, notin, exists, !exists) to a predicate on labels."""
    if not selector:
        return lambda labels: True
    checks: list[Predicate] = []
    for term in _split_terms(selector):
        if m := _SET_RE.match(term):
            key, op, raw = m.group(1), m.group(2), m.group(3)
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            if op == "in":
                checks.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif m := _EQ_RE.match(term):
            key, op, val = m.group(1), m.group(2), m.group(3)
            if op == "!=":
                checks.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=key, v=val: lb.get(k) == v)
        elif m := _EXISTS_RE.match(term):
            neg, key = m.group(1), m.group(2)
            if neg:
                checks.append(lambda lb, k=key: k not in lb)
            else:
                checks.append(lambda lb, k=key: k in lb)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(c(labels) for c in checks)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


def parse_field_selector(selector: str | None, res: Resource) -> Predicate:
    """Compile a field selector; only the fields the real server indexes for this kind are allowed."""
    if not selector:
        return lambda obj: True
    checks: list[Predicate] = []
    for term in _split_terms(selector):
        m = _FIELD_RE.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        key, op, val = m.group(1), m.group(2), m.group(3)
        if key not in res.field_labels:
            raise ApiError(
                400, "BadRequest", f'field label not supported: "{key}" for {res.plural}'
            )
        if op == "!=":
            checks.append(lambda o, k=key, v=val: _field_value(o, k) != v)
        else:
            checks.append(lambda o, k=key, v=val: _field_value(o, k) == v)
    return lambda obj: all(c(obj) for c in checks)


# -- patches ---------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge is treated the same here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test (enough for status and label edits)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = _pointer(str(op.get("path", "")))
        if not parts:
            raise ApiError(422, "Invalid", "json patch on the document root is not supported")
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op.get("op")
        try:
            if kind in ("add", "replace"):
                if isinstance(parent, list):
                    idx = len(parent) if last == "-" else int(last)
                    if kind == "add":
                        parent.insert(idx, op["value"])
                    else:
                        parent[idx] = op["value"]
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "test":
                cur = parent[int(last)] if isinstance(parent, list) else parent[last]
                if cur != op.get("value"):
                    raise ApiError(422, "Invalid", f"test operation failed at {op.get('path')}")
            else:
                raise ApiError(422, "Invalid", f"unsupported json patch op {kind!r}")
        except (KeyError, IndexError, ValueError) as exc:
            raise ApiError(422, "Invalid", f"json patch failed at {op.get('path')}: {exc}") from None
    return doc
