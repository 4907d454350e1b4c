"""Protobuf wire helpers shared by the translator and the xDS server (no Meridian types here).

One varint encoder and one `Any` packer, so the bytes the translator caches and the bytes the
server frames are produced the same way.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer (protobuf wire format)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pack_any(msg: Message) -> any_pb2.Any:
    """`msg` wrapped in an Any (type URL type.googleapis.com/<full name>)."""
    a = any_pb2.Any()
    a.Pack(msg)
    return a
