"""The contract between IR policies and Envoy resources.

Each HTTP feature (as in Envoy Gateway's translator) is one object that knows
whether a route uses it, how to patch that route, which HTTP filter the
connection manager needs when any route uses it (and only then), how to patch a
cluster or a TLS filter chain, and which extra clusters it needs (an auth or
mirror target). The features in use are listed in one table,
`controlplane.translate.policies.FEATURES`, ordered by the position of their filter in the chain.
"""

from __future__ import annotations

from typing import ClassVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.ir import Route, ServiceCluster, TlsHost, VirtualHost


class Feature:
    """Base feature: every hook is a no-op. Subclasses override what they need."""

    name: ClassVar[str] = ""
    # Position of this feature's HTTP filter in the chain (lower runs first).
    filter_order: ClassVar[int] = 500

    def route_uses(self, route: Route) -> bool:
        return False

    def expand_route(self, route: Route) -> list[Route] | None:
        """The routes that replace `route` in its virtual host, in match order (None: unchanged; []:
        dropped). For behaviour one Envoy route cannot express (CORS preflights answered by the
        gateway), or routes another one already covers."""
        return None

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        """Called for every route; return early when the route does not use the feature."""

    def filter_keys(self, route: Route) -> frozenset[str]:
        """What this route needs from the feature's HTTP filter(s).

        The controller unions these over all routes and passes the union to
        `http_filters`, so a feature whose filter config depends on routes (one
        ext_authz filter per distinct auth service, say) can say so. The
        default is one key for "used".
        """
        return frozenset({""}) if self.route_uses(route) else frozenset()

    def patch_vhost(self, vhost: VirtualHost, pb: route_components_pb2.VirtualHost) -> None:
        """Called once per virtual host after its routes: the place for settings every route shares
        (cheaper for Envoy than the same setting repeated on each route)."""

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        """Filters to add to every connection manager; called only when `keys` (the union of
        `filter_keys` over all routes) is not empty."""
        return []

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        """Called for every Service cluster."""

    def extra_clusters(self, route: Route) -> list[cluster_pb2.Cluster]:
        """Clusters this route needs besides Service clusters (external auth, mirror targets)."""
        return []

    def patch_tls(
        self, host: TlsHost, chain: listener_components_pb2.FilterChain, ctx: tls_pb2.DownstreamTlsContext
    ) -> None:
        """Called for every HTTPS filter chain."""
