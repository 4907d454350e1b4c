"""IpAccess -> per-route RBAC on the downstream remote address (HCM uses the peer address)."""

from __future__ import annotations

import ipaddress
from typing import TypeVar

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_cfg
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from controlplane.ir import Forward, Route, VirtualHost
from controlplane.ir.policies import IpAccess, UrlRedirect
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature

FILTER = "envoy.filters.http.rbac"
P = TypeVar("P")


def access_policy(route: Route, kind: type[P]) -> P | None:
    """The route's policy of `kind`, only when the route forwards.

    nginx answers redirects (`return` in the rewrite phase) before the access phase, so
    allow/deny lists, limits and auth never apply to redirect routes.
    """
    if not route.policies or not isinstance(route.action, Forward) or route.policy(UrlRedirect) is not None:
        return None  # (most routes have no policies: asked ~20 times per route, this is the short way)
    return route.policy(kind)


def cidr_principals(cidrs: tuple[str, ...]) -> rbac_cfg.Principal:
    """One principal matching a remote address in any of `cidrs`."""
    out = rbac_cfg.Principal()
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        p = out.or_ids.ids.add()
        p.remote_ip.CopyFrom(address_pb2.CidrRange(address_prefix=str(net.network_address)))
        p.remote_ip.prefix_len.value = net.prefixlen
    return out


def access_principal(policy: IpAccess) -> rbac_cfg.Principal:
    parts: list[rbac_cfg.Principal] = []
    if policy.deny:
        parts.append(rbac_cfg.Principal(not_id=cidr_principals(policy.deny)))
    if policy.allow:
        parts.append(cidr_principals(policy.allow))
    if len(parts) == 1:
        return parts[0]
    p = rbac_cfg.Principal()
    p.and_ids.ids.extend(parts)
    return p


class IpAccessFeature(Feature):
    name = "ip-access"
    filter_order = 100

    def route_uses(self, route: Route) -> bool:
        return access_policy(route, IpAccess) is not None

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        # No rules at the connection manager: the filter only acts where a route configures it.
        return [hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(rbac_pb2.RBAC()))]

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = access_policy(route, IpAccess)
        if policy is None:
            return
        rules = rbac_cfg.RBAC(action=rbac_cfg.RBAC.ALLOW)
        pol = rules.policies["source-range"]
        pol.permissions.add(any=True)
        pol.principals.append(access_principal(policy))
        per_route = rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rules))
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(per_route))
