"""Per-host virtual hosts in the route tables, and what those hosts need from the listeners.

A host is merged (ingress/hosts.merge_host) and translated to framed VirtualHost bytes only when
something it depends on changed; the route tables are then re-assembled from cached bytes. The HTTP
filters a listener needs and the extra clusters (auth services, mirror targets) follow the hosts
that use them, counted incrementally so a change never scans every host.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

from controlplane.eastwest import east_west_vhosts
from controlplane.gatewayapi.build import HostEntries
from controlplane.gatewayapi.merge import merge_gateway_routes
from controlplane.ingress.aliases import AliasFindings, AliasPlan
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.hosts import HostResult, merge_host
from controlplane.ir import Route
from controlplane.knative.frontend import local_key, local_vhost
from controlplane.services import ServiceIndex, ServiceKey
from controlplane.translate.features import Feature
from controlplane.translate.policies import FEATURES
from controlplane.translate.route_tables import RouteTables
from controlplane.translate.routes import framed_vhost, vhost_bytes

log = logging.getLogger("controlplane.controller")


class HostRoutes:
    def __init__(self, routes: RouteTables, https_port: int) -> None:
        self.routes = routes
        self.https_port = https_port
        self.results: dict[str, HostResult] = {}
        self.errors: dict[str, str] = {}  # hosts whose last build failed (previous routes kept)
        # Only hosts that use a feature / need extra clusters are listed, so per-change scans stay small.
        self.features: dict[str, dict[str, frozenset[str]]] = {}  # host -> feature -> filter keys
        # (feature, filter key) -> number of hosts needing it, so the listener inputs are known without
        # scanning every host when most hosts use some feature (e.g. retries).
        self._feature_key_hosts: Counter[tuple[str, str]] = Counter()
        self.extra_clusters: dict[str, dict[str, Any]] = {}  # host -> cluster name -> Cluster message
        # The Gateway API routes of a host (engine/gatewayapi.py), merged with its Ingress routes.
        self.gateway: Callable[[str], HostEntries | None] = lambda host: None
        # The filters last built and the (feature, key) pairs they were built for: most changes
        # leave them as they are, and then neither the messages nor their bytes are made again.
        self._filters: tuple[frozenset[tuple[str, str]], list[Any], tuple[bytes, ...]] | None = None

    def rebuild(
        self, hosts: Iterable[str], served: Callable[[str], list[IngressIR]], tls: frozenset[str], aliases: AliasPlan
    ) -> None:
        """Rebuild `hosts`; `served(host)`: the served Ingresses that may contribute to it; `aliases`:
        the server-alias names of every host."""
        for host in hosts:
            try:
                self._build(host, served(host), tls, aliases.get(host, ((), ())))
                self.errors.pop(host, None)
            except Exception as exc:  # keep this host's last good routes; every other host goes on
                log.exception("building virtual host %r failed; keeping its previous routes", host or "*")
                self.errors[host] = f"internal error building host {host or '*'}: {exc}"

    def wanted_extra_clusters(self) -> dict[str, Any]:
        wanted: dict[str, Any] = {}
        for extra in self.extra_clusters.values():
            wanted.update(extra)
        return wanted

    def _drop(self, host: str) -> None:
        self.results.pop(host, None)
        self.routes.http.remove(host)
        self.routes.https.remove(host)
        self._set_features(host, {})
        self.extra_clusters.pop(host, None)

    def _build(
        self, host: str, irs: list[IngressIR], tls: frozenset[str], aliases: tuple[tuple[str, ...], AliasFindings]
    ) -> None:
        """Merge and translate one host; cache its framed vhost bytes, filter needs and extra clusters.

        Everything is computed before any table is touched, so a failure leaves the host as it was.
        """
        entries = self.gateway(host)
        if not irs and entries is None:
            self._drop(host)
            return
        result = merge_host(host, irs, tls_hosts=tls, https_port=self.https_port, aliases=aliases[0],
                            alias_findings=aliases[1])  # fmt: skip
        if entries is not None:
            created = {ir.ref: ir.created for ir in irs}
            result = merge_gateway_routes(host, result if irs else None, entries, created) or result
        if not (result.https.routes or result.http.routes):
            self._drop(host)
            self.results[host] = result  # keeps its findings (conflicts) for the reports
            return
        https = framed_vhost(vhost_bytes(result.https))
        http = https if result.http is result.https else framed_vhost(vhost_bytes(result.http))
        needs: dict[str, frozenset[str]] = {}
        extra: dict[str, Any] = {}
        routes = result.https.routes + (() if result.http is result.https else result.http.routes)
        for f in FEATURES:  # per host, so the common cases (one route; no extra clusters) go the short way
            keys = f.filter_keys(routes[0]) if len(routes) == 1 else frozenset().union(*map(f.filter_keys, routes))
            if keys:
                needs[f.name] = keys
            if type(f).extra_clusters is not Feature.extra_clusters:
                for r in routes:
                    for c in f.extra_clusters(r):
                        extra[c.name] = c
        self.results[host] = result
        self.routes.https.put(host, https, result.https.domains)
        self.routes.http.put(host, http, result.https.domains)
        self._set_features(host, needs)
        if extra:
            self.extra_clusters[host] = extra
        else:
            self.extra_clusters.pop(host, None)

    def _set_features(self, host: str, needs: dict[str, frozenset[str]]) -> None:
        for name, keys in self.features.pop(host, {}).items():
            for key in keys:
                self._feature_key_hosts[(name, key)] -= 1
        if needs:
            self.features[host] = needs
            for name, keys in needs.items():
                for key in keys:
                    self._feature_key_hosts[(name, key)] += 1

    def rebuild_east_west(
        self, services: ServiceIndex, dirty: Iterable[ServiceKey], taken: Container[str] = ()
    ) -> None:
        """The east-west names of these Services, but those cluster-local KIngress hosts `taken`."""
        for key in dirty:
            ports = services.ports(key)
            vhosts = east_west_vhosts(key[0], key[1], ports, taken) if ports else []
            if vhosts:
                frames = b"".join(framed_vhost(vhost_bytes(v)) for v in vhosts)
                self.routes.east_west.put(key, frames, [d for v in vhosts for d in v.domains])
            else:
                self.routes.east_west.remove(key)

    def rebuild_local(self, hosts: Iterable[str], local: Mapping[str, tuple[Route, ...]]) -> None:
        """Cluster-local KIngress hosts on the east-west listener (`local`: host -> routes)."""
        for host in hosts:
            routes = local.get(host)
            if routes:
                vhost = local_vhost(host, routes)
                self.routes.east_west.put(local_key(host), framed_vhost(vhost_bytes(vhost)), vhost.domains)
            else:
                self.routes.east_west.remove(local_key(host))

    def http_filters(self) -> list[Any]:
        """The north-south HTTP filters that some route needs right now (the same list object as
        long as the needs are the same: callers must not change it)."""
        return self._current_filters()[1]

    def http_filter_bytes(self) -> tuple[bytes, ...]:
        """`http_filters()` serialized (deterministic), to tell whether the listeners must change."""
        return self._current_filters()[2]

    def _current_filters(self) -> tuple[frozenset[tuple[str, str]], list[Any], tuple[bytes, ...]]:
        used = frozenset(pair for pair, count in self._feature_key_hosts.items() if count > 0)
        if self._filters is not None and self._filters[0] == used:
            return self._filters
        needs: dict[str, frozenset[str]] = {}
        for name, key in used:
            needs[name] = needs.get(name, frozenset()) | {key}
        features = [f for f in FEATURES if f.name in needs]
        filters = [flt for f in features for flt in f.http_filters(needs[f.name])]
        self._filters = (used, filters, tuple(flt.SerializeToString(deterministic=True) for flt in filters))
        return self._filters
