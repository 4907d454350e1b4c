"""Timeouts and retries: cluster connect timeout, per-try idle timeout and the route retry policy.

Every forwarding route gets nginx's default retry behaviour (`error timeout`, 3 tries, no
retry of POST/LOCK/PATCH) unless its Ingress says otherwise. The default is set once on the
virtual host (see `default_policy`) and only routes that differ carry their own policy: Envoy
builds a retry policy per route, and 10,000 copies of one made applying a route table several
times slower. nginx answers a read timeout
with 504; Envoy's route idle timeout answers 408, so the read timeout is the router's
per-try idle timeout (504) and the route idle timeout is kept just above it.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from controlplane.ir import Route, ServiceCluster, VirtualHost
from controlplane.ir.policies import DEFAULT_RETRIES, ConnectTimeout, IdleTimeout, Retries
from controlplane.translate.common import set_duration
from controlplane.translate.features import Feature

# nginx does not retry POST, LOCK or PATCH unless `non_idempotent` is listed. Envoy's
# retriable_request_headers is an allow-list (any match), so list the methods that may be
# retried; exact matches avoid compiling a regex for every policy.
IDEMPOTENT_METHODS = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE")


def retry_policy(policy: Retries, read_timeout: float | None) -> rc_pb2.RetryPolicy:
    rp = rc_pb2.RetryPolicy()
    retry_on = policy.retry_on()
    if retry_on:
        rp.retry_on = ",".join(retry_on)
        rp.num_retries.value = policy.retries
        rp.retriable_status_codes.extend(policy.status_codes())
        # "next upstream": prefer another endpoint for each retry.
        pred = rp.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
        pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
        rp.host_selection_retry_max_attempts = 3
        if not policy.non_idempotent:
            for method in IDEMPOTENT_METHODS:
                rp.retriable_request_headers.add(name=":method").string_match.exact = method
    else:
        rp.num_retries.value = 0
    if read_timeout is not None:
        set_duration(rp.per_try_idle_timeout, read_timeout)
    return rp


def default_policy() -> rc_pb2.RetryPolicy:
    """nginx's default (`error timeout`, 3 tries), in the form cheapest for Envoy to build.

    Connect failures and refused streams never reached the application, so retrying them is safe
    for every method and needs no `:method` allow-list (six header matchers per virtual host
    doubled Envoy's apply time for a 10,000-host table: bench/rds_apply.py). Resets after the
    request was sent are retried only where the Ingress asks for proxy-next-upstream explicitly,
    which keeps nginx's no-retry rule for POST/LOCK/PATCH there.
    """
    rp = rc_pb2.RetryPolicy(retry_on="connect-failure,refused-stream")
    rp.num_retries.value = DEFAULT_RETRIES.retries
    pred = rp.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    pred.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    rp.host_selection_retry_max_attempts = 3
    return rp


_DEFAULT_POLICY = default_policy()


class TimeoutsFeature(Feature):
    name = "timeouts"

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        idle = route.policy(IdleTimeout)
        policy = route.policy(Retries) or DEFAULT_RETRIES
        read = idle.seconds if idle is not None else None
        if policy != DEFAULT_RETRIES or read is not None:
            pb.route.retry_policy.CopyFrom(retry_policy(policy, read))  # else: the virtual host's default
        if idle is not None:
            # The per-try idle timeout (504, as nginx) must fire before the route's (408).
            set_duration(pb.route.idle_timeout, idle.seconds + 1)
        if policy.timeout > 0:
            set_duration(pb.route.timeout, policy.timeout)

    def patch_vhost(self, vhost: VirtualHost, pb: rc_pb2.VirtualHost) -> None:
        if any(r.HasField("route") and not r.route.HasField("retry_policy") for r in pb.routes):
            pb.retry_policy.CopyFrom(_DEFAULT_POLICY)

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        policy = cluster.policy(ConnectTimeout)
        if policy is not None:
            set_duration(pb.connect_timeout, policy.seconds)
