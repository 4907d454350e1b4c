"""RateLimit -> per-route local rate limit with one dynamic token bucket per client IP; 503 when empty.

Each limit (rps, rpm) is a descriptor [meridian_limit=<name>, remote_address=<any>]; an empty
descriptor value makes Envoy keep a bucket per distinct client address (bounded LRU).
Exempt CIDRs (limit-whitelist) are tagged by a shadow-mode RBAC filter that runs first: its
result in dynamic metadata is part of the descriptor, so exempt clients match no limit.
"""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2 as rbac_cfg
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2

from controlplane.ir import Route, VirtualHost
from controlplane.ir.policies import RateLimit
from controlplane.protowire import pack_any
from controlplane.translate.features import Feature
from controlplane.translate.policies.ipaccess import access_policy, cidr_principals

FILTER = "envoy.filters.http.local_ratelimit"
EXEMPT_FILTER = "envoy.filters.http.rbac/rate-limit-exempt"
EXEMPT_PREFIX = "meridian_rl_"
MAX_CLIENTS = 100_000  # per route: distinct client IPs tracked (least recently used are dropped)
UNLIMITED = 1_000_000_000


def _full(frac: object) -> None:
    frac.default_value.numerator = 100  # type: ignore[attr-defined]
    frac.default_value.denominator = percent_pb2.FractionalPercent.HUNDRED  # type: ignore[attr-defined]


class RateLimitFeature(Feature):
    name = "rate-limit"
    filter_order = 200

    def route_uses(self, route: Route) -> bool:
        return access_policy(route, RateLimit) is not None

    def filter_keys(self, route: Route) -> frozenset[str]:
        policy = access_policy(route, RateLimit)
        if policy is None:
            return frozenset()
        return frozenset({"limit", "exempt"} if policy.exempt else {"limit"})

    def http_filters(self, keys: frozenset[str]) -> list[hcm_pb2.HttpFilter]:
        out = []
        if "exempt" in keys:
            shadow = rbac_pb2.RBAC(shadow_rules_stat_prefix=EXEMPT_PREFIX)
            out.append(hcm_pb2.HttpFilter(name=EXEMPT_FILTER, typed_config=pack_any(shadow)))
        out.append(
            hcm_pb2.HttpFilter(name=FILTER, typed_config=pack_any(lrl_pb2.LocalRateLimit(stat_prefix="rate_limit")))
        )
        return out

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        policy = access_policy(route, RateLimit)
        if policy is None:
            return
        cfg = lrl_pb2.LocalRateLimit(stat_prefix="rate_limit")
        cfg.status.code = http_status_pb2.ServiceUnavailable
        # Requests matching no descriptor (exempt clients) use this bucket: effectively unlimited.
        cfg.token_bucket.max_tokens = UNLIMITED
        cfg.token_bucket.tokens_per_fill.value = UNLIMITED
        cfg.token_bucket.fill_interval.seconds = 1
        _full(cfg.filter_enabled)
        cfg.filter_enabled.runtime_key = "meridian.rate_limit.enabled"
        _full(cfg.filter_enforced)
        cfg.filter_enforced.runtime_key = "meridian.rate_limit.enforced"
        cfg.max_dynamic_descriptors.value = MAX_CLIENTS
        for rule in policy.rules:
            rl = cfg.rate_limits.add()
            gk = rl.actions.add().generic_key
            gk.descriptor_key, gk.descriptor_value = "meridian_limit", rule.name
            desc = cfg.descriptors.add()
            desc.entries.add(key="meridian_limit", value=rule.name)
            if policy.exempt:
                md = rl.actions.add().metadata
                md.descriptor_key = "meridian_exempt"
                md.metadata_key.key = "envoy.filters.http.rbac"
                md.metadata_key.path.add(key=f"{EXEMPT_PREFIX}shadow_engine_result")
                md.default_value = "denied"
                md.source = route_components_pb2.RateLimit.Action.MetaData.DYNAMIC
                desc.entries.add(key="meridian_exempt", value="denied")
            rl.actions.add().remote_address.SetInParent()
            desc.entries.add(key="remote_address", value="")
            desc.token_bucket.max_tokens = rule.burst
            desc.token_bucket.tokens_per_fill.value = rule.rate
            desc.token_bucket.fill_interval.seconds = rule.period
        pb.typed_per_filter_config[FILTER].CopyFrom(pack_any(cfg))
        if policy.exempt:
            # Shadow ALLOW policy: exempt clients come out "allowed", everyone else "denied".
            shadow = rbac_cfg.RBAC(action=rbac_cfg.RBAC.ALLOW)
            pol = shadow.policies["exempt"]
            pol.permissions.add(any=True)
            pol.principals.append(cidr_principals(policy.exempt))
            per_route = rbac_pb2.RBACPerRoute(
                rbac=rbac_pb2.RBAC(shadow_rules=shadow, shadow_rules_stat_prefix=EXEMPT_PREFIX)
            )
            pb.typed_per_filter_config[EXEMPT_FILTER].CopyFrom(pack_any(per_route))
