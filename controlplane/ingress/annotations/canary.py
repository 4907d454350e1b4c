"""canary-*: an Ingress that is the alternative backend of the primary with the same host/path.

Decision order per request (ingress-nginx): header, then cookie, then weight.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, ParseContext, ParsedAnnotations, valid_re2
from controlplane.ir import Forward, HeaderMatch, Route, WeightedCluster
from controlplane.ir.policies import Canary, Policy

CANARY_KEYS = (
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
)

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class CanaryFamily(Family):
    name = "canary"
    keys = CANARY_KEYS

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        present = [k for k in CANARY_KEYS if ann.has(k)]
        if not present:
            return []
        enabled = ctx.boolean(ann, "canary", False)
        if not enabled:
            for k in present:
                if k != "canary":
                    ctx.reject(k, 'canary-* annotations require canary: "true"')
            if ann.has("canary"):
                ctx.converted("canary", "not a canary")
            return []
        ctx.converted("canary")
        header = ann.get("canary-by-header") or None
        if header is not None and not _HEADER_NAME.match(header):
            ctx.warn("canary-by-header", f"invalid header name {header!r}; ignored")
            header = None
        value = ann.get("canary-by-header-value") or None
        pattern = ann.get("canary-by-header-pattern") or None
        if pattern is not None and not valid_re2(pattern):
            ctx.warn("canary-by-header-pattern", f"invalid regular expression {pattern!r}; ignored")
            pattern = None
        if value and pattern:
            ctx.warn("canary-by-header-pattern", "ignored because canary-by-header-value is set")
            pattern = None
        if header is None:
            for k in ("canary-by-header-value", "canary-by-header-pattern"):
                if ann.has(k):
                    ctx.warn(k, "ignored without canary-by-header")
            value = pattern = None
        cookie = ann.get("canary-by-cookie") or None
        total = ctx.integer(ann, "canary-weight-total", 100, minimum=1, maximum=1_000_000)
        weight = ctx.integer(ann, "canary-weight", 0, minimum=0)
        if weight > total:
            ctx.warn("canary-weight", f"weight {weight} exceeds total {total}; using {total}")
            weight = total
        for k in present:
            if k != "canary" and not any(f.key == k and f.level == "warning" for f in ctx.findings):
                ctx.converted(k)
        return [
            Canary(
                header=header,
                header_value=value,
                header_pattern=pattern,
                cookie=cookie,
                weight=weight,
                weight_total=total,
            )
        ]

    # -- hooks: a canary Ingress is an alternative backend of the primary with its host and path --
    def alternative(self, parsed: ParsedAnnotations) -> Policy | None:
        return parsed.get(Canary)

    def alternative_routes(self, primary: Route, alternative: Forward, policy: Policy) -> list[Route]:
        """The ordered routes for one primary rule: header, cookie, then weight (ingress-nginx order)."""
        if not isinstance(policy, Canary) or not isinstance(primary.action, Forward):
            return [primary]
        spec = policy
        to_canary = replace(primary, name=primary.name + "~canary", action=alternative)
        out: list[Route] = []
        if spec.header:
            h = spec.header.lower()
            if spec.header_value:
                out.append(replace(to_canary, headers=(HeaderMatch(h, exact=spec.header_value),)))
            elif spec.header_pattern:
                out.append(replace(to_canary, headers=(HeaderMatch(h, regex=f".*(?:{spec.header_pattern}).*"),)))
            else:
                out.append(replace(to_canary, headers=(HeaderMatch(h, exact="always"),)))
                out.append(replace(primary, name=primary.name + "~never", headers=(HeaderMatch(h, exact="never"),)))
        if spec.cookie:
            c = re.escape(spec.cookie)
            out.append(
                replace(
                    to_canary,
                    name=to_canary.name + "-cookie",
                    headers=(HeaderMatch("cookie", regex=f"(.*;\\s*)?{c}=always(;.*)?"),),
                )
            )
            out.append(
                replace(
                    primary,
                    name=primary.name + "~never-cookie",
                    headers=(HeaderMatch("cookie", regex=f"(.*;\\s*)?{c}=never(;.*)?"),),
                )
            )
        if spec.weight <= 0:
            out.append(primary)
        elif spec.weight >= spec.weight_total:
            out.append(replace(to_canary, name=to_canary.name + "-all"))
        else:
            p = primary.action.clusters[0].cluster
            c_cluster = alternative.clusters[0].cluster
            split = Forward(
                (WeightedCluster(p, spec.weight_total - spec.weight), WeightedCluster(c_cluster, spec.weight)),
                total_weight=spec.weight_total,
            )
            out.append(replace(primary, action=split))
        return out
