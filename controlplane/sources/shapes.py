"""The field types an API server would have enforced, for objects read from manifest files.

Kubernetes validates an object against its schema before anyone can watch it; a file is not
validated by anyone. A Service whose `spec.ports` is a string must be refused where it is read (the
file is reported, like YAML that does not parse), not reach the build, where it would fail every
snapshot and so block changes to every other object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Per kind: (path, expected type) for fields Meridian reads. "[]" steps into each item of a list.
_FIELDS: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "Service": (
        ("spec.ports", list),
        ("spec.ports[]", dict),
        ("spec.ports[].port", (int, str)),
        ("spec.ports[].name", str),
        ("spec.type", str),
        ("spec.externalName", str),
        ("spec.clusterIP", str),
    ),
    "EndpointSlice": (
        ("ports", list),
        ("ports[]", dict),
        ("ports[].port", (int, str)),
        ("ports[].name", str),
        ("endpoints", list),
        ("endpoints[]", dict),
        ("endpoints[].addresses", list),
        ("endpoints[].addresses[]", str),
        ("endpoints[].conditions", dict),
        ("addressType", str),
    ),
    "Secret": (("data", dict), ("stringData", dict), ("type", str)),
    "IngressClass": (("spec.controller", str),),
    # Lists given as a string would be read letter by letter ("no certificate for a, c, e, ...").
    "Ingress": (
        ("spec.rules", list),
        ("spec.rules[].host", str),
        ("spec.rules[].http", dict),
        ("spec.rules[].http.paths", list),
        ("spec.tls", list),
        ("spec.tls[].hosts", list),
        ("spec.tls[].hosts[]", str),
        ("spec.tls[].secretName", str),
    ),
}


_PORTS = {"Service": ("spec.ports[].port",), "EndpointSlice": ("ports[].port",)}


def _values(value: Any, steps: list[str]) -> list[tuple[str, Any]]:
    """Every (where, value) the path reaches; absent (None) fields are not reported."""
    if not steps:
        return [("", value)]
    step, rest = steps[0], steps[1:]
    out: list[tuple[str, Any]] = []
    if step.endswith("[]"):
        field = step[:-2]
        items = value.get(field) if isinstance(value, Mapping) else None
        if isinstance(items, list):
            for i, item in enumerate(items):
                out += [(f".{field}[{i}]{w}", v) for w, v in _values(item, rest)]
        return out
    child = value.get(step) if isinstance(value, Mapping) else None
    if child is None:
        return []
    return [(f".{step}{w}", v) for w, v in _values(child, rest)]


def shape_problem(kind: str, doc: Mapping[str, Any]) -> str | None:
    """The first field of `doc` whose type its API would refuse, as 'field: expected T, got U'."""
    meta = doc.get("metadata") or {}
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and not isinstance(value, Mapping):
            return f"metadata.{field}: expected a mapping, got {_type_name(type(value))}"
    spec = doc.get("spec")
    if spec is not None and not isinstance(spec, Mapping):
        return f"spec: expected a mapping, got {_type_name(type(spec))}"
    for path in _PORTS.get(kind, ()):
        for where, value in _values(doc, [step for step in path.replace("[]", "[].").split(".") if step]):
            number = value if isinstance(value, int) else int(value) if str(value).strip().isdigit() else None
            if number is not None and not isinstance(value, bool) and not 1 <= number <= 65535:
                return f"{where.lstrip('.')}: port {value} is not in 1..65535"
    for path, expected in _FIELDS.get(kind, ()):
        steps = [step for step in path.replace("[]", "[].").split(".") if step]
        for where, value in _values(doc, steps):
            if not isinstance(value, expected) or isinstance(value, bool):
                names = " or ".join(_type_name(t) for t in (expected if isinstance(expected, tuple) else (expected,)))
                return f"{where.lstrip('.')}: expected {names}, got {_type_name(type(value))}"
    return None


def _type_name(t: type) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number"}.get(t, t.__name__)
