"""The gateway's three route tables and how many partitions each uses.

The controller puts and removes framed virtual hosts; this decides the partition counts (fixed,
or grown with the tables), keeps north-south tables whole while a per-route auth filter is in
use, publishes the HTTPS table only when an HTTPS listener needs it, emits the changed tables
and scopes, and asks for a flush when a lingering old layout is due to be deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.metrics import Metrics
from controlplane.translate import listeners as lst
from controlplane.translate.partitions import RouteTable, auto_partitions
from controlplane.xds.cache import Resource, make_resource

log = logging.getLogger("controlplane.route_tables")


class RouteTables:
    def __init__(self, fixed: int | None, metrics: Metrics) -> None:
        self.fixed = fixed  # --route-partitions N, or None for automatic
        self.metrics = metrics
        self.http = RouteTable(lst.HTTP_ROUTES)
        self.https = RouteTable(lst.HTTPS_ROUTES)
        self.east_west = RouteTable(lst.EAST_WEST_ROUTES, ignore_port=False)
        self._hosts_wanted = 1  # for the north-south tables (what they use may be 1, see render)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def all(self) -> tuple[RouteTable, RouteTable, RouteTable]:
        return self.http, self.https, self.east_west

    def render(
        self, changes: dict[str, dict[str, Resource | None]], filters: Sequence[Any], https_listener: bool
    ) -> None:
        """Size the partitions, then put only the changed tables and scopes into `changes`.

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
        for table in self.all:
            self.metrics.route_partitions.labels(table.base).set(table.partitions)

        def emit(type_url: str, name: str, body: Any) -> None:
            changes[type_url][name] = None if body is None else make_resource(name, type_url, body)

        for table in self.all:
            table.render(emit)

    def schedule_retirement(self, loop: asyncio.AbstractEventLoop | None, flush: Callable[[], None]) -> None:
        """Call `flush` when an old layout (kept for draining listeners) is due to be deleted."""
        due = [t for table in self.all if (t := table.next_retirement()) is not None]
        if not due or loop is None:
            return
        when = min(due)
        if self._timer is not None and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()

        def fire() -> None:
            self._timer = None
            flush()

        # RouteTable's clock is time.monotonic, as is the event loop's.
        self._timer = loop.call_at(when + 0.001, fire)
