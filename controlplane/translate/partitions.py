"""Route tables split by host hash, so one host change costs Envoy a small table, not all of them.

Envoy rebuilds a whole RouteConfiguration on every update, on its main thread: at 10,000 virtual
hosts that is about a second per change. With K partitions a listener's connection manager uses
scoped routes: a first Lua filter hashes the request's host (lower-cased, port stripped) into a
bucket and writes `<base>/<K>/<b>` to a header, and the scope key is that header. The scopes come
over SRDS (Envoy does not fetch the tables of inline scopes over RDS); scope `<base>/<K>/<b>` names
the RouteConfiguration `<base>/<K>/<b>`, holding every exact host that hashes to `b` plus every
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
import time
import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.translate.common import ads_source
from controlplane.translate.routes import route_configuration_from_frames
from controlplane.xds import resources as rt

SCOPE_HEADER = "x-meridian-route-scope"
SCOPE_FILTER = "meridian.route_scope"
MAX_PARTITIONS = 1024
AUTO_MIN_KEYS = 1000  # below this a single table is cheap enough for Envoy
# Measured at 10,000 hosts (Delta, one run): 128 partitions new-route p50 76 ms, 512 -> 55 ms. Smaller
# tables cost Envoy less per change; a wildcard or default-backend change touches every partition.
AUTO_KEYS_PER_PARTITION = 25
# How long an old partition layout stays published after a re-partition: Envoy drains the old
# listener's connections for up to --drain-time-s (600 s by default), and they still use it.
RETIRED_LINGER_S = 660.0


_SERVICE_SUFFIXES = (b".svc.cluster.local", b".svc")  # the longer first, as the Lua filter tests them


@functools.lru_cache(maxsize=1 << 16)
def host_hash(host: str) -> int:
    """The hash the Lua filter computes: CRC-32 of the host, ASCII lower-cased, port dropped, and
    a trailing `.svc.cluster.local` or `.svc` dropped too.

    The last rule keeps a Service's east-west names (`name.ns`, `name.ns.svc`,
    `name.ns.svc.cluster.local`), one virtual host, in one table: hashed whole they fell into up
    to three, and the virtual host (domains, route, retry policy) was sent in each: 1.1 of the
    2.1 MiB a gateway got at 1,000 Services, for ~0.4 MiB of content.

    CRC-32 because both sides have it cheaply (zlib here, a table and LuaJIT's bit ops there) and
    it spreads hosts that differ in a few characters evenly over power-of-two partition counts.
    """
    raw = host.encode().lower()
    colon = raw.find(b":")
    if colon >= 0:
        raw = raw[:colon]
    for suffix in _SERVICE_SUFFIXES:
        if len(raw) > len(suffix) and raw.endswith(suffix):
            raw = raw[: -len(suffix)]
            break
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
  local n = #host
  if n > 18 and sub(host, n - 17) == ".svc.cluster.local" then host = sub(host, 1, n - 18)
  elseif n > 4 and sub(host, n - 3) == ".svc" then host = sub(host, 1, n - 4) end
  local c = -1
  for i = 1, #host do c = bxor(rshift(c, 8), crc_table[band(bxor(c, byte(host, i)), 255)]) end
  c = bxor(c, -1)
  if c < 0 then c = c + 4294967296 end
  headers:replace("{header}", "{base}/{partitions}/" .. tostring(c % {partitions}))
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
    """`base` for one table; `<base>/<K>/<n>` for K partitions (K in the name: another count never
    reuses a name, so connections of a draining listener never see a table of another layout)."""
    if partitions <= 1:
        return [base]
    return [f"{base}/{partitions}/{i}" for i in range(partitions)]


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


@dataclass(eq=False)
class _Layout:
    """One partitioning of a table: K buckets of sorted keys, and what of it needs rebuilding."""

    partitions: int
    names: list[str]
    buckets: list[list[Any]]
    placed: dict[Hashable, tuple[int, ...]] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    scopes_dirty: bool = True
    published: bool = False
    retire_at: float = 0.0

    def place(self, hosts: tuple[str, ...]) -> tuple[int, ...]:
        k = self.partitions
        if k == 1:
            return (0,)
        if any(is_shared(h) for h in hosts):
            return tuple(range(k))
        names = {h.partition(":")[0] for h in hosts}  # east-west lists each name with and without ports
        return tuple(sorted({host_hash(h) % k for h in names}))


class RouteTable:
    """One listener's virtual hosts as 1 or K RouteConfigurations, re-assembled per dirty bucket.

    Entries are framed VirtualHost bytes (see routes.framed_vhost) under a sortable key; each
    entry is placed by the hosts it serves. A change marks only the buckets it touches, and
    `render` assembles just those, each a single bytes join.

    When the partition count changes, the listener changes and Envoy drains the old one; its
    connections keep using the old partitions (other names: `<base>/<K>/<n>`). So an old
    layout that Envoy has seen stays published, and kept up to date, for `linger` seconds
    before its tables and scopes are deleted.
    """

    def __init__(
        self,
        base: str,
        *,
        ignore_port: bool = True,
        partitions: int = 1,
        linger: float = RETIRED_LINGER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.ignore_port = ignore_port
        self.linger = linger
        self._clock = clock
        self._frames: dict[Hashable, bytes] = {}
        self._hosts: dict[Hashable, tuple[str, ...]] = {}
        self._layout = self._new_layout(partitions)
        self._retiring: list[_Layout] = []
        self.active = True  # published; an inactive table is kept up to date but not sent

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._frames

    def keys(self) -> list[Hashable]:
        return list(self._frames)

    def frame(self, key: Hashable) -> bytes | None:
        return self._frames.get(key)

    @property
    def partitions(self) -> int:
        return self._layout.partitions

    @property
    def names(self) -> list[str]:
        return self._layout.names

    def _new_layout(self, partitions: int) -> _Layout:
        k = max(1, partitions)
        layout = _Layout(k, partition_names(self.base, k), [[] for _ in range(k)], dirty=set(range(k)))
        layout.scopes_dirty = k > 1
        for key, hosts in self._hosts.items():
            placed = layout.place(hosts)
            layout.placed[key] = placed
            for b in placed:
                layout.buckets[b].append(key)
        for members in layout.buckets:
            members.sort()
        return layout

    def _layouts(self) -> list[_Layout]:
        return [self._layout, *self._retiring]

    def put(self, key: Hashable, frame: bytes, hosts: Iterable[str]) -> None:
        hosts = tuple(hosts)
        if self._frames.get(key) == frame and self._hosts.get(key) == hosts:
            return
        self.remove(key)
        self._frames[key] = frame
        self._hosts[key] = hosts
        for layout in self._layouts():
            placed = layout.place(hosts)
            layout.placed[key] = placed
            for b in placed:
                bisect.insort(layout.buckets[b], key)
                layout.dirty.add(b)

    def remove(self, key: Hashable) -> None:
        if self._frames.pop(key, None) is None:
            return
        self._hosts.pop(key, None)
        for layout in self._layouts():
            for b in layout.placed.pop(key, ()):
                members = layout.buckets[b]
                i = bisect.bisect_left(members, key)
                if i < len(members) and members[i] == key:
                    del members[i]
                layout.dirty.add(b)

    def repartition(self, partitions: int) -> None:
        """Place every entry into `partitions` buckets; the old layout lingers if Envoy saw it."""
        partitions = max(1, partitions)
        if partitions == self.partitions:
            return
        self._retire_current()
        self._layout = self._revive(partitions) or self._new_layout(partitions)

    def set_active(self, active: bool) -> None:
        """Publish the table or stop publishing it (e.g. no HTTPS listener uses the HTTPS table:
        Envoy hands every scope to every scoped listener, so its partitions would still be fetched
        and applied on every change). A published layout lingers for draining connections."""
        if active == self.active:
            return
        self.active = active
        if not active:
            self._retire_current()
            self._layout = self._new_layout(self.partitions)
        else:
            self._layout = self._revive(self.partitions) or self._layout

    def _retire_current(self) -> None:
        old = self._layout
        if old.published:
            old.retire_at = self._clock() + self.linger
            self._retiring.append(old)

    def _revive(self, partitions: int) -> _Layout | None:
        """A lingering layout of this size, made current again (it was kept up to date)."""
        back = next((lay for lay in self._retiring if lay.partitions == partitions), None)
        if back is not None:
            self._retiring.remove(back)
        return back

    def next_retirement(self) -> float | None:
        """Clock time at which a lingering layout is due to be deleted (render then)."""
        return min((lay.retire_at for lay in self._retiring), default=None)

    def render(self, emit: Callable[[str, str, Any], None]) -> None:
        """emit(type, name, message or bytes or None) for each changed table and scope, None for
        deleted ones."""
        now = self._clock()
        for layout in [lay for lay in self._retiring if lay.retire_at <= now]:
            self._retiring.remove(layout)
            for name in layout.names:
                emit(rt.ROUTE, name, None)
                if layout.partitions > 1:
                    emit(rt.SCOPED_ROUTE, name, None)
        for layout in self._layouts() if self.active else self._retiring:
            if layout.scopes_dirty:
                for name in layout.names if layout.partitions > 1 else ():
                    emit(rt.SCOPED_ROUTE, name, scope_message(name))
                layout.scopes_dirty = False
            for b in sorted(layout.dirty):
                frames = [self._frames[k] for k in layout.buckets[b]]
                body = route_configuration_from_frames(layout.names[b], frames, ignore_port=self.ignore_port)
                if layout.partitions > 1:
                    body = _with_scope_header_removed(body)
                emit(rt.ROUTE, layout.names[b], body)
            layout.dirty.clear()
            layout.published = True


_REMOVE_SCOPE_HEADER = route_pb2.RouteConfiguration(request_headers_to_remove=[SCOPE_HEADER]).SerializeToString()


def _with_scope_header_removed(body: bytes) -> bytes:
    """Backends never see the scope header (appending a field to serialized bytes merges it)."""
    return body + _REMOVE_SCOPE_HEADER
