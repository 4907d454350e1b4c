"""The IR as plain data (dicts, lists, strings, numbers) and back, for readable golden files.

Fields left at their default are omitted. A value whose declared type is a union of several IR
classes (a route action, a policy) is written as `{ClassName: fields}`. Key material (private
keys, password hashes) is written as "[redacted]" and read back as those bytes, so an IR file
never holds a secret.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union

REDACTED = "[redacted]"
_SECRET_FIELDS = frozenset({"private_key", "key", "users"})


def to_data(value: Any) -> Any:
    """`value` (an IR dataclass, tuple or scalar) as plain data."""
    return _dump(value, type(value))


def from_data(cls: type, data: Any) -> Any:
    """An instance of `cls` from what `to_data` produced."""
    return _load(cls, data)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return ()


def _dump(value: Any, declared: Any) -> Any:
    args = _union_args(declared)
    classes = [a for a in args if dataclasses.is_dataclass(a)]
    if value is not None and len(classes) > 1:
        return {type(value).__name__: _dump_fields(value)}
    if dataclasses.is_dataclass(value):
        return _dump_fields(value)
    if isinstance(value, tuple):
        item = typing.get_args(declared)
        if len(item) == 2 and item[1] is Ellipsis:
            return [_dump(v, item[0]) for v in value]
        return [_dump(v, item[i] if i < len(item) else type(v)) for i, v in enumerate(value)]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    return value


def _dump_fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        out[f.name] = REDACTED if f.name in _SECRET_FIELDS and value else _dump(value, hints[f.name])
    return out


def _load(tp: Any, data: Any) -> Any:
    args = _union_args(tp)
    if args:
        if data is None and type(None) in args:
            return None
        classes = {a.__name__: a for a in args if dataclasses.is_dataclass(a)}
        if len(classes) > 1:
            ((name, body),) = data.items()
            return _load(classes[name], body)
        (other,) = [a for a in args if a is not type(None)]
        return _load(other, data)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)  # type: ignore[arg-type]
        kwargs = {f.name: _load(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)
        if len(item) == 2 and item[1] is Ellipsis:
            return tuple(_load(item[0], v) for v in data)
        return tuple(_load(t, v) for t, v in zip(item, data, strict=True))
    if tp is bytes:
        return bytes.fromhex(data["hex"]) if isinstance(data, dict) else str(data).encode()
    if origin is Literal or tp in (str, int, bool):
        return data
    if tp is float:
        return float(data)
    return data
