"""Knative's `ingress.ComputeHash` (knative/networking pkg/ingress): the hash a gateway must put in
`K-Network-Hash` when a probe asks with `override` (TestProbeHeaders).

It is sha256 over Go's `json.Marshal(ing.Spec)` followed by the namespace and the name, so the spec is
serialised here as Go would: struct fields in declaration order, `omitempty` fields left out when
empty, map keys sorted, no spaces.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# (json name, omitempty) in the order of the Go structs (pkg/apis/networking/v1alpha1/ingress_types.go).
_SPEC = (("tls", True), ("rules", True), ("httpOption", True))
_TLS = (("hosts", True), ("secretName", True), ("secretNamespace", True))
_RULE = (("hosts", True), ("visibility", True), ("http", True))
_HTTP = (("paths", False),)
_PATH = (("path", True), ("rewriteHost", True), ("headers", True), ("splits", False), ("appendHeaders", True))
_SPLIT = (("serviceNamespace", False), ("serviceName", False), ("servicePort", False), ("percent", True),
          ("appendHeaders", True))  # fmt: skip
_HEADER_MATCH = (("exact", False),)
_ZERO = {"serviceNamespace": "", "serviceName": "", "servicePort": 0, "exact": ""}  # Go's zero values (else null)


def _struct(obj: dict[str, Any], fields: tuple[tuple[str, bool], ...], nested: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, omitempty in fields:
        value = obj.get(name)
        if omitempty and value in (None, "", 0, [], {}):
            continue
        if name in nested and value is not None:
            value = nested[name](value)
        elif isinstance(value, dict):
            value = dict(sorted(value.items()))
        out[name] = _ZERO.get(name) if value is None else value
    return out


def _header_matches(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: _struct(v, _HEADER_MATCH, {}) for k, v in sorted(headers.items())}


def _path(path: dict[str, Any]) -> dict[str, Any]:
    return _struct(path, _PATH, {"headers": _header_matches, "splits": lambda s: [_struct(x, _SPLIT, {}) for x in s]})


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    return _struct(rule, _RULE, {"http": lambda h: _struct(h, _HTTP, {"paths": lambda ps: [_path(p) for p in ps]})})


def go_spec_json(spec: dict[str, Any]) -> bytes:
    """`json.Marshal(IngressSpec)` as Go writes it."""
    nested = {"tls": lambda ts: [_struct(t, _TLS, {}) for t in ts], "rules": lambda rs: [_rule(r) for r in rs]}
    doc = _struct(spec, _SPEC, nested)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(kingress: dict[str, Any]) -> str:
    meta = kingress["metadata"]
    data = go_spec_json(kingress.get("spec") or {}) + meta.get("namespace", "").encode() + meta["name"].encode()
    return hashlib.sha256(data).hexdigest()
