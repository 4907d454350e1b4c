"""Knative's data-plane probe contract (knative/networking pkg/ingress InsertProbe): before each path of
each rule, the same path that also matches `K-Network-Hash: override` and sends the KIngress's hash
upstream in `K-Network-Hash` (the backend's probe handler echoes it, so a prober sees which version of
the KIngress a gateway serves). The hash is `ComputeHash`: sha256 of Go's `json.Marshal(spec)`, then the
namespace and the name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

HASH_HEADER = "K-Network-Hash"
OVERRIDE = "override"

Fields = tuple[tuple[str, bool], ...]  # (JSON name, omitempty) in the Go struct's order

_SPEC: Fields = (("tls", True), ("rules", True), ("httpOption", True))
_TLS: Fields = (("hosts", True), ("secretName", True), ("secretNamespace", True))
_RULE: Fields = (("hosts", True), ("visibility", True), ("http", True))
_HTTP: Fields = (("paths", False),)
_PATH: Fields = (("path", True), ("rewriteHost", True), ("headers", True), ("splits", False), ("appendHeaders", True))
_SPLIT: Fields = (("serviceNamespace", False), ("serviceName", False), ("servicePort", False), ("percent", True),
                  ("appendHeaders", True))  # fmt: skip
_MATCH: Fields = (("exact", False),)
_ZERO: dict[str, Any] = {"serviceNamespace": "", "serviceName": "", "servicePort": 0, "exact": "", "paths": None}
# Go escapes these in strings (json.Marshal's HTML-safe default and the JavaScript line separators).
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or (isinstance(value, (str, list, dict)) and not value)


def _struct(obj: Any, fields: Fields, nested: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    obj = obj if isinstance(obj, Mapping) else {}
    out: dict[str, Any] = {}
    for name, omitempty in fields:
        value = obj.get(name)
        if omitempty and _empty(value):
            continue
        if value is None:
            out[name] = _ZERO.get(name)
        elif name in nested:
            out[name] = nested[name](value)
        elif isinstance(value, Mapping):
            out[name] = dict(sorted(value.items()))
        else:
            out[name] = value
    return out


def _list(fields: Fields, nested: Mapping[str, Callable[[Any], Any]] = {}) -> Callable[[Any], Any]:
    return lambda items: [_struct(x, fields, nested) for x in items] if isinstance(items, list) else None


def _headers(value: Any) -> Any:
    return {k: _struct(v, _MATCH, {}) for k, v in sorted(value.items())} if isinstance(value, Mapping) else None


_PATHS = _list(_PATH, {"headers": _headers, "splits": _list(_SPLIT)})
_RULES = _list(_RULE, {"http": lambda h: _struct(h, _HTTP, {"paths": _PATHS})})


def go_json(spec: Mapping[str, Any]) -> bytes:
    """`json.Marshal(IngressSpec)` as Go writes it: fields in struct order, omitempty, sorted map keys."""
    doc = _struct(spec, _SPEC, {"tls": _list(_TLS), "rules": _RULES})
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode()


def compute_hash(namespace: str, name: str, spec: Mapping[str, Any]) -> str:
    """Knative's ingress.ComputeHash, hex encoded."""
    return hashlib.sha256(go_json(spec) + namespace.encode() + name.encode()).hexdigest()


def expanded_hosts(hosts: list[str], cluster_domain: str = "cluster.local") -> list[str]:
    """Knative's ingress.ExpandedHosts: a cluster-local name also under its shorter forms
    (`name.ns.svc.cluster.local` -> `name.ns.svc`, `name.ns`)."""
    out: list[str] = []
    for h in hosts:
        for suffix in ("", "." + cluster_domain, ".svc." + cluster_domain):
            short = h[: -len(suffix)] if suffix and h.endswith(suffix) else h if not suffix else None
            if short and _valid_tld(short) and short not in out:
                out.append(short)
    return sorted(out)


def _valid_tld(domain: str) -> bool:
    tld = domain.rsplit(".", 1)[-1]
    return len(tld) <= 63 and any(c == "-" or c > "9" for c in tld)
