"""Timeouts and retries: cluster connect timeout, per-try idle timeout and the route retry policy.

Every forwarding route gets nginx's default retry behaviour (`error timeout`, 3 tries, no
retry of POST/LOCK/PATCH) unless its Ingress says otherwise. nginx answers a read timeout
with 504; Envoy's route idle timeout answers 408, so the read timeout is the router's
per-try idle timeout (504) and the route idle timeout is kept just above it.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from controlplane.annotations.timeouts import DEFAULT_RETRIES, ConnectTimeout, IdleTimeout, Retries
from controlplane.ir import Route, ServiceCluster, VirtualHost
from controlplane.translate.features import Feature, register
from controlplane.translate.resources import set_duration

NON_IDEMPOTENT = "POST|LOCK|PATCH"


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
            h = rp.retriable_request_headers.add(name=":method", invert_match=True)
            h.string_match.safe_regex.regex = NON_IDEMPOTENT
    else:
        rp.num_retries.value = 0
    if read_timeout is not None:
        set_duration(rp.per_try_idle_timeout, read_timeout)
    return rp


class TimeoutsFeature(Feature):
    name = "timeouts"

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        idle = route.policy(IdleTimeout)
        policy = route.policy(Retries) or DEFAULT_RETRIES
        read = idle.seconds if idle is not None else None
        pb.route.retry_policy.CopyFrom(retry_policy(policy, read))
        if idle is not None:
            # The per-try idle timeout (504, as nginx) must fire before the route's (408).
            set_duration(pb.route.idle_timeout, idle.seconds + 1)
        if policy.timeout > 0:
            set_duration(pb.route.timeout, policy.timeout)

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        policy = cluster.policy(ConnectTimeout)
        if policy is not None:
            set_duration(pb.connect_timeout, policy.seconds)


register(TimeoutsFeature())
