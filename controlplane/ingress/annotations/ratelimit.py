"""limit-rps / limit-rpm per client IP with burst and exempt CIDRs; limit-connections is reported."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext, integer
from controlplane.ingress.annotations.ipaccess import parse_cidrs
from controlplane.ir.policies import RateLimit, RateLimitRule

MAX_TOKENS = 2**32 - 1


class RateLimitFamily(Family):
    name = "rate-limit"
    fields = (
        Key(
            ("limit-rps", "limit-rpm"),
            (
                "local rate limit, one token bucket per client IP; burst = limit x multiplier; 503 when empty "
                "(nginx default)"
            ),
        ),
        Key(("limit-burst-multiplier",), "burst factor", default="`5`", validator=integer(1, 1_000_000)),
        Key(("limit-whitelist", "limit-allowlist"), "exempt CIDRs", difference="invalid entries dropped (warning)"),
        Key(("limit-connections",), "reported: not reproduced exactly", default="—", difference="partial"),
        Key(
            ("limit-rate", "limit-rate-after"),
            "response bandwidth throttling: unsupported",
            default="—",
            difference="ignored",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        mult = ctx.integer(ann, "limit-burst-multiplier", 5, minimum=1, maximum=1_000_000)
        rules: list[RateLimitRule] = []
        for key, period in (("limit-rps", 1), ("limit-rpm", 60)):
            if not ann.has(key):
                continue
            rate = ctx.integer(ann, key, 0, minimum=0, maximum=1_000_000_000)
            if rate <= 0:
                if not any(f.key == key for f in ctx.findings):
                    ctx.converted(key, "0: no limit")
                continue
            burst = min(rate * mult, MAX_TOKENS)  # Envoy token buckets count in uint32
            rules.append(RateLimitRule(key.removeprefix("limit-"), rate, period, burst))
            unit = "second" if period == 1 else "minute"
            ctx.converted(key, f"{rate} requests per {unit} per client IP, burst {burst}; then 503")
        exempt: tuple[str, ...] = ()
        for key in ("limit-whitelist", "limit-allowlist"):
            raw = ann.get(key)
            if raw is None:
                continue
            cidrs, bad = parse_cidrs(raw)
            if bad:
                ctx.warn(key, f"invalid CIDR/IP {', '.join(bad)!r} ignored")
            exempt = cidrs
            if not bad:
                ctx.converted(key, f"{', '.join(cidrs) or 'nobody'} exempt from rate limits")
        if ann.has("limit-burst-multiplier") and not any(f.key == "limit-burst-multiplier" for f in ctx.findings):
            if rules:
                ctx.converted("limit-burst-multiplier", f"burst = limit x {mult}")
            else:
                ctx.warn("limit-burst-multiplier", "no limit-rps/limit-rpm on this Ingress; ignored")
        if ann.has("limit-connections"):
            ctx.report(
                "unsupported",
                "limit-connections",
                "partially supported: not enforced. Envoy has no per-client-IP concurrent connection limit; "
                "use limit-rps/limit-rpm",
            )
        for key in ("limit-rate", "limit-rate-after"):
            if ann.has(key):
                ctx.report("unsupported", key, "response bandwidth throttling is not supported; ignored")
        if not rules:
            return []
        return [RateLimit(tuple(rules), exempt)]
