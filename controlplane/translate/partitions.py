"""Route tables split by host hash, so one host change costs Envoy a small table, not all of them.

Envoy rebuilds a whole RouteConfiguration on every update, on its main thread: at 10,000 virtual
hosts that is about a second per change. With K partitions a listener's connection manager uses
scoped routes: a first Lua filter hashes the request's host (lower-cased, port stripped) into a
bucket and writes `<base>/<b>` to a header, and the scope key is that header. The scopes come
over SRDS (Envoy does not fetch the tables of inline scopes over RDS); scope `<base>/<b>` names
the RouteConfiguration `<base>/<b>`, holding every exact host that hashes to `b` plus every
wildcard and catch-all host. Keys carry the table name because Envoy hands every scope to every
scoped connection manager; each listener's filter only ever produces its own. Inside a bucket
Envoy matches domains exactly as it would in the whole table, so routing is unchanged; only the
cost of an update shrinks, to about N/K hosts.

Why a hash and not one scope per host: a scope key is looked up exactly and a miss has no
fallback, so wildcard and catch-all hosts (envoyproxy/envoy#19098) could never match. Every host
has a bucket, and every bucket holds the wildcard and catch-all hosts.
"""

from __future__ import annotations

import bisect
import functools
import zlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.translate.resources import ads_source
from controlplane.translate.routes import route_configuration_from_frames
from controlplane.xds import resources as rt

SCOPE_HEADER = "x-meridian-route-scope"
SCOPE_FILTER = "meridian.route_scope"
MAX_PARTITIONS = 1024
AUTO_MIN_KEYS = 1000  # below this a single table is cheap enough for Envoy
AUTO_KEYS_PER_PARTITION = 100


@functools.lru_cache(maxsize=1 << 16)
def host_hash(host: str) -> int:
    """The hash the Lua filter computes: CRC-32 of the host, ASCII lower-cased, port dropped.

    CRC-32 because both sides have it cheaply (zlib here, a table and LuaJIT's bit ops there) and
    it spreads hosts that differ in a few characters evenly over power-of-two partition counts.
    """
    raw = host.encode().lower()
    colon = raw.find(b":")
    if colon >= 0:
        raw = raw[:colon]
    return zlib.crc32(raw)


def bucket_of(host: str, partitions: int) -> int:
    return host_hash(host) % partitions


def is_shared(host: str) -> bool:
    """Hosts every bucket must hold: wildcards and the catch-all."""
    return host in ("", "*") or "*" in host


_LUA = """\
local byte, lower, find, sub = string.byte, string.lower, string.find, string.sub
local bit = require("bit")
local band, bxor, rshift = bit.band, bit.bxor, bit.rshift
local crc_table = {{}}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then c = bxor(rshift(c, 1), 0xEDB88320) else c = rshift(c, 1) end
  end
  crc_table[i] = c
end
function envoy_on_request(h)
  local headers = h:headers()
  local host = lower(headers:get(":authority") or "")
  local colon = find(host, ":", 1, true)
  if colon then host = sub(host, 1, colon - 1) end
  local c = -1
  for i = 1, #host do c = bxor(rshift(c, 8), crc_table[band(bxor(c, byte(host, i)), 255)]) end
  c = bxor(c, -1)
  if c < 0 then c = c + 4294967296 end
  headers:replace("{header}", "{base}/" .. tostring(c % {partitions}))
end
"""


def scope_filter(base: str, partitions: int) -> hcm_pb2.HttpFilter:
    """The first HTTP filter of a partitioned listener: sets the scope header from the host.

    Replacing the header also replaces anything a client sent under that name, and clears the
    route cache so the scope is looked up again with the computed key.
    """
    code = _LUA.format(header=SCOPE_HEADER, base=base, partitions=partitions)
    lua = lua_pb2.Lua()
    lua.default_source_code.inline_string = code
    flt = hcm_pb2.HttpFilter(name=SCOPE_FILTER)
    flt.typed_config.Pack(lua)
    return flt


def partition_names(base: str, partitions: int) -> list[str]:
    if partitions <= 1:
        return [base]
    return [f"{base}/{i}" for i in range(partitions)]


def use_partitions(hcm: hcm_pb2.HttpConnectionManager, base: str, partitions: int) -> None:
    """Point a connection manager at `base` (one table) or at its K partitions (scoped routes)."""
    if partitions <= 1:
        hcm.rds.route_config_name = base
        hcm.rds.config_source.CopyFrom(ads_source())
        return
    scoped = hcm.scoped_routes
    scoped.name = base
    extractor = scoped.scope_key_builder.fragments.add().header_value_extractor
    extractor.name = SCOPE_HEADER
    extractor.index = 0  # the whole value (a oneof Envoy requires to be set)
    scoped.rds_config_source.CopyFrom(ads_source())
    scoped.scoped_rds.scoped_rds_config_source.CopyFrom(ads_source())
    hcm.http_filters.insert(0, scope_filter(base, partitions))


def scope_message(name: str) -> scoped_route_pb2.ScopedRouteConfiguration:
    """The scope whose key (the filter's header value) and route table are both `name`."""
    scope = scoped_route_pb2.ScopedRouteConfiguration(name=name, route_configuration_name=name)
    scope.key.fragments.add().string_key = name
    return scope


def auto_partitions(keys: int, current: int) -> int:
    """Partitions for a table of `keys` hosts: grows with the table and never shrinks while running.

    Changing the count changes the listener (its scope list), so it is kept rare: one table up to
    AUTO_MIN_KEYS hosts, then a power of two giving about AUTO_KEYS_PER_PARTITION hosts each.
    """
    if keys < AUTO_MIN_KEYS:
        return current
    want = 1
    while want * AUTO_KEYS_PER_PARTITION < keys and want < MAX_PARTITIONS:
        want *= 2
    return max(current, want)


class RouteTable:
    """One listener's virtual hosts as 1 or K RouteConfigurations, re-assembled per dirty bucket.

    Entries are framed VirtualHost bytes (see routes.framed_vhost) under a sortable key; each
    entry is placed by the hosts it serves. A change marks only the buckets it touches, and
    `render` assembles just those, each a single bytes join.
    """

    def __init__(self, base: str, *, ignore_port: bool = True, partitions: int = 1) -> None:
        self.base = base
        self.ignore_port = ignore_port
        self.partitions = max(1, partitions)
        self._frames: dict[Hashable, bytes] = {}
        self._hosts: dict[Hashable, tuple[str, ...]] = {}
        self._placed: dict[Hashable, tuple[int, ...]] = {}
        self._buckets: list[list[Any]] = [[] for _ in range(self.partitions)]
        self._dirty: set[int] = set(range(self.partitions))
        self._retired: list[str] = []  # table (and scope) names of an earlier partition count
        self._scopes_dirty = self.partitions > 1

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._frames

    def keys(self) -> list[Hashable]:
        return list(self._frames)

    def frame(self, key: Hashable) -> bytes | None:
        return self._frames.get(key)

    @property
    def names(self) -> list[str]:
        return partition_names(self.base, self.partitions)

    def _placement(self, hosts: tuple[str, ...]) -> tuple[int, ...]:
        if self.partitions == 1:
            return (0,)
        if any(is_shared(h) for h in hosts):
            return tuple(range(self.partitions))
        names = {h.partition(":")[0] for h in hosts}  # east-west lists each name with and without ports
        return tuple(sorted({host_hash(h) % self.partitions for h in names}))

    def put(self, key: Hashable, frame: bytes, hosts: Iterable[str]) -> None:
        hosts = tuple(hosts)
        if self._frames.get(key) == frame and self._hosts.get(key) == hosts:
            return
        self.remove(key)
        self._frames[key] = frame
        self._hosts[key] = hosts
        placed = self._placement(hosts)
        self._placed[key] = placed
        for b in placed:
            bisect.insort(self._buckets[b], key)
            self._dirty.add(b)

    def remove(self, key: Hashable) -> None:
        if self._frames.pop(key, None) is None:
            return
        self._hosts.pop(key, None)
        for b in self._placed.pop(key, ()):
            members = self._buckets[b]
            i = bisect.bisect_left(members, key)
            if i < len(members) and members[i] == key:
                del members[i]
            self._dirty.add(b)

    def repartition(self, partitions: int) -> None:
        """Re-place every entry into `partitions` buckets; the old table names are retired."""
        partitions = max(1, partitions)
        if partitions == self.partitions:
            return
        self._retired.extend(n for n in self.names if n not in partition_names(self.base, partitions))
        self.partitions = partitions
        self._scopes_dirty = True
        self._buckets = [[] for _ in range(partitions)]
        self._dirty = set(range(partitions))
        for key, hosts in self._hosts.items():
            placed = self._placement(hosts)
            self._placed[key] = placed
            for b in placed:
                self._buckets[b].append(key)
        for members in self._buckets:
            members.sort()

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._retired)

    def render(self, emit: Callable[[str, str, Any], None]) -> int:
        """emit(type, name, message or bytes or None) for each changed table and scope, None for
        retired names; returns how many tables were built."""
        names = self.names
        for name in self._retired:
            emit(rt.ROUTE, name, None)
            if name != self.base:
                emit(rt.SCOPED_ROUTE, name, None)
        self._retired.clear()
        if self._scopes_dirty:
            for name in names if self.partitions > 1 else ():
                emit(rt.SCOPED_ROUTE, name, scope_message(name))
            self._scopes_dirty = False
        for b in sorted(self._dirty):
            frames = [self._frames[k] for k in self._buckets[b]]
            body = route_configuration_from_frames(names[b], frames, ignore_port=self.ignore_port)
            if self.partitions > 1:
                body = _with_scope_header_removed(body)
            emit(rt.ROUTE, names[b], body)
        built = len(self._dirty)
        self._dirty.clear()
        return built


_REMOVE_SCOPE_HEADER = route_pb2.RouteConfiguration(request_headers_to_remove=[SCOPE_HEADER]).SerializeToString()


def _with_scope_header_removed(body: bytes) -> bytes:
    """Backends never see the scope header (appending a field to serialized bytes merges it)."""
    return body + _REMOVE_SCOPE_HEADER
