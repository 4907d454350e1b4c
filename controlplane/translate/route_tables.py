"""The gateway's three route tables and how many partitions each uses.

Its user (the incremental controller, or `translate_gateway` for a whole gateway at once) puts and
removes framed virtual hosts; this decides the partition counts (fixed, or grown with the tables),
keeps north-south tables whole while a per-route auth filter is in use, publishes the HTTPS table
only when an HTTPS listener needs it, emits the changed tables and scopes, and says when a
lingering old layout is due to be deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.translate import listeners as lst
from controlplane.translate.partitions import RouteTable, auto_partitions

Emit = Callable[[str, str, Any], None]  # (type URL, name, message | bytes | None for deleted)

log = logging.getLogger("controlplane.route_tables")


class RouteTables:
    def __init__(self, fixed: int | None, on_partitions: Callable[[str, int], None] | None = None) -> None:
        self.fixed = fixed  # --route-partitions N, or None for automatic
        self.on_partitions = on_partitions  # told each table's partition count (a metric)
        self.http = RouteTable(lst.HTTP_ROUTES)
        self.https = RouteTable(lst.HTTPS_ROUTES)
        self.east_west = RouteTable(lst.EAST_WEST_ROUTES, ignore_port=False)
        self._hosts_wanted = 1  # for the north-south tables (what they use may be 1, see render)

    @property
    def all(self) -> tuple[RouteTable, RouteTable, RouteTable]:
        return self.http, self.https, self.east_west

    def presize(self, hosts: int, services: int) -> None:
        """Partition for about `hosts` north-south hosts and `services` east-west entries before a cold
        build puts them, so each is placed once into its partition, not into one table re-split at
        render. Nothing is published yet, so nothing lingers; render still has the last word."""
        self._hosts_wanted = self.fixed or auto_partitions(hosts, self._hosts_wanted)
        self.http.repartition(self._hosts_wanted)
        self.https.repartition(self._hosts_wanted)
        self.east_west.repartition(self.fixed or auto_partitions(services, self.east_west.partitions))

    def render(self, emit: Emit, filters: Sequence[Any], https_listener: bool) -> None:
        """Size the partitions, then emit only the changed tables and scopes.

        A filter that is off at the connection manager and turned on per route (ext_authz, basic
        auth) is added to a request's filter chain only if the route Envoy finds *before* any filter
        runs enables it; with partitions that route is found only after the scope filter ran, so the
        check would be skipped. Such listeners keep one table: slower to update, never less safe.
        """
        self._hosts_wanted = self.fixed or auto_partitions(len(self.https), self._hosts_wanted)
        hosts = 1 if any(f.disabled for f in filters) else self._hosts_wanted
        if hosts != self.https.partitions:
            log.info("north-south route tables: %d partition(s)%s", hosts,
                     "" if hosts == self._hosts_wanted else " (a per-route auth filter is in use)")  # fmt: skip
        self.http.repartition(hosts)
        self.https.repartition(hosts)
        # Partitioned, an unused HTTPS table would still be fetched (scopes go to every listener).
        self.https.set_active(https_listener or hosts == 1)
        self.east_west.repartition(self.fixed or auto_partitions(len(self.east_west), self.east_west.partitions))
        if self.on_partitions is not None:
            for table in self.all:
                self.on_partitions(table.base, table.partitions)
        for table in self.all:
            table.render(emit)

    def next_retirement(self) -> float | None:
        """time.monotonic() at which an old layout (kept for draining listeners) is due to be deleted;
        render again then."""
        return min((t for table in self.all if (t := table.next_retirement()) is not None), default=None)
