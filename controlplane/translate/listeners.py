"""Gateway listeners: plain HTTP, HTTPS with one filter chain per SNI set, and east-west."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.on_demand.v3 import on_demand_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.ir import Passthrough, TlsHost
from controlplane.ir.gateway import Listener
from controlplane.protowire import pack_any
from controlplane.translate.common import ads_source, socket_address
from controlplane.translate.features import Feature
from controlplane.translate.partitions import use_partitions

HTTP_LISTENER = "http"
HTTPS_LISTENER = "https"
EAST_WEST_LISTENER = "east_west"
HTTP_ROUTES = "http"
HTTPS_ROUTES = "https"
EAST_WEST_ROUTES = "east_west"
ROUTER = "envoy.filters.http.router"
ON_DEMAND_FILTER = "envoy.filters.http.on_demand"
_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
# How long a request waits for its cluster to arrive on demand (`meridian bootstrap --clusters
# on-demand`) before it gets a 503: a fetch is one CDS and one EDS response (~6 ms); Meridian answers
# a name it has no cluster for at once, so this bounds only an unreachable control plane.
ON_DEMAND_TIMEOUT = 5


def on_demand_filter() -> hcm_pb2.HttpFilter:
    """Envoy's on_demand filter fetching a route's missing cluster over the ADS stream (Delta CDS by name)."""
    od = on_demand_pb2.OnDemand()
    od.odcds.source.CopyFrom(ads_source())
    od.odcds.timeout.seconds = ON_DEMAND_TIMEOUT
    return hcm_pb2.HttpFilter(name=ON_DEMAND_FILTER, typed_config=pack_any(od))


def with_on_demand(listener: listener_pb2.Listener) -> bool:
    """Give every HTTP connection manager of `listener` the on_demand filter, right before the router
    (after the scope header's Lua filter and every policy filter: the route is final there, and an
    unauthorized request fetches nothing). True if it changed anything.

    Only on-demand gateways get it (Meridian serves them this variant of the listeners): on a
    gateway that holds every cluster it would cost ~20 us of Envoy CPU per request for a lookup that
    always succeeds, and on a State-of-the-World gateway a request for a cluster Envoy does not hold
    (one still warming) would make Envoy 1.40 replace its wildcard CDS subscription by that one name,
    losing every other cluster (BENCHMARKS.md, "On-demand clusters")."""
    changed = False
    rewritten: dict[bytes, bytes] = {}  # the HTTPS listener's chains (one per certificate) share one HCM
    for chain in listener.filter_chains:
        for flt in chain.filters:
            if flt.typed_config.type_url != _HCM_TYPE:
                continue
            value = flt.typed_config.value
            new = rewritten.get(value)
            if new is None:
                hcm = hcm_pb2.HttpConnectionManager.FromString(value)
                names = [f.name for f in hcm.http_filters]
                if ON_DEMAND_FILTER not in names:
                    hcm.http_filters.insert(names.index(ROUTER) if ROUTER in names else len(names), on_demand_filter())
                new = rewritten[value] = hcm.SerializeToString(deterministic=True)
            if new != value:
                flt.typed_config.value = new
                changed = True
    return changed


# The TLS host of a certificate served for any SNI no other chain names (a Gateway API HTTPS
# listener without a hostname): a filter chain without server_names.
CATCH_ALL = "*"


def connection_manager(
    stat_prefix: str,
    route_config: str,
    filters: Sequence[hcm_pb2.HttpFilter],
    *,
    use_remote_address: bool = True,
    partitions: int = 1,
) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    hcm.use_remote_address.value = use_remote_address
    # A client's X-Request-ID reaches the backend unchanged, one is made only when it has none, as
    # ingress-nginx's `$req_id` (its `$http_x_request_id`, else nginx's `$request_id`).
    hcm.preserve_external_request_id = True
    hcm.normalize_path.value = True
    # WebSockets work by default in ingress-nginx.
    hcm.upgrade_configs.add(upgrade_type="websocket")
    # nginx keeps streams open for proxy-read-timeout per route; no global request timeout.
    hcm.stream_idle_timeout.seconds = 300
    hcm.http_filters.extend(filters)
    hcm.http_filters.add(name=ROUTER, typed_config=pack_any(router_pb2.Router()))
    use_partitions(hcm, route_config, partitions)  # the scope filter goes first
    return hcm


def _hcm_filter(hcm: hcm_pb2.HttpConnectionManager) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=pack_any(hcm)
    )


def http_listener(
    name: str,
    address: str,
    port: int,
    route_config: str,
    filters: Sequence[hcm_pb2.HttpFilter],
    *,
    partitions: int = 1,
) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=name, address=socket_address(address, port))
    hcm = connection_manager(name, route_config, filters, partitions=partitions)
    lst.filter_chains.add().filters.append(_hcm_filter(hcm))
    return lst


def https_listener(
    address: str,
    port: int,
    hosts: Sequence[TlsHost],
    features: Sequence[Feature],
    filters: Sequence[hcm_pb2.HttpFilter],
    passthrough: Sequence[Passthrough] = (),
    *,
    partitions: int = 1,
    name: str = HTTPS_LISTENER,
    route_config: str = HTTPS_ROUTES,
) -> listener_pb2.Listener:
    """One filter chain per certificate (SNI set); certificates come over SDS."""
    lst = listener_pb2.Listener(name=name, address=socket_address(address, port))
    lst.listener_filters.add(
        name="envoy.filters.listener.tls_inspector", typed_config=pack_any(tls_inspector_pb2.TlsInspector())
    )
    hcm_filter = _hcm_filter(connection_manager(name, route_config, filters, partitions=partitions))
    chains: list[TlsHost] = []
    catch_all: list[TlsHost] = []
    for host in hosts:
        names = tuple(h for h in host.hosts if h != CATCH_ALL)
        if names:
            chains.append(host if len(names) == len(host.hosts) else replace(host, hosts=names))
        if CATCH_ALL in host.hosts:
            catch_all.append(replace(host, hosts=(CATCH_ALL,)))
    for host in chains + catch_all[:1]:
        _tls_chain(lst, host, features, hcm_filter)
    for pt in passthrough:
        chain = lst.filter_chains.add(name=f"passthrough:{','.join(pt.hosts)}")
        chain.filter_chain_match.server_names.extend(pt.hosts)
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix="passthrough", cluster=pt.cluster)
        chain.filters.add(name="envoy.filters.network.tcp_proxy", typed_config=pack_any(proxy))
    return lst


def _tls_chain(lst: listener_pb2.Listener, host: TlsHost, features: Sequence[Feature],
               hcm_filter: listener_components_pb2.Filter) -> None:  # fmt: skip
    """One filter chain terminating TLS with `host`'s certificate: for its SNI names, or for any SNI
    (and none) no other chain matches when its host is the catch-all "*"."""
    chain = lst.filter_chains.add(name=f"tls:{host.secret}:{','.join(host.hosts)}")
    if CATCH_ALL not in host.hosts:
        chain.filter_chain_match.server_names.extend(host.hosts)
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    common.alpn_protocols.extend(["h2", "http/1.1"])
    sds = common.tls_certificate_sds_secret_configs.add(name=host.secret)
    sds.sds_config.CopyFrom(ads_source())
    for feature in features:
        feature.patch_tls(host, chain, ctx)
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Pack(ctx)
    chain.filters.append(hcm_filter)


def listener_messages(
    listeners: Sequence[Listener],
    filters: Sequence[hcm_pb2.HttpFilter],
    tls_hosts: Sequence[TlsHost],
    passthrough: Sequence[Passthrough],
    features: Sequence[Feature],
    partitions: Mapping[str, int],
) -> dict[str, listener_pb2.Listener]:
    """Every listener's message; `partitions`: route table name -> its partition count."""
    out = {}
    for listener in listeners:
        used = filters if listener.policy_filters else []
        k = partitions.get(listener.route_table, 1)
        if listener.tls:
            out[listener.name] = https_listener(
                listener.address, listener.port, tls_hosts, features, used, passthrough, partitions=k
            )
        else:
            out[listener.name] = http_listener(
                listener.name, listener.address, listener.port, listener.route_table, used, partitions=k
            )
    return out
