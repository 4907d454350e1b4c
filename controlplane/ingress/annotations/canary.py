"""canary-*: an Ingress that is the alternative backend of the primary with the same host/path.

Decision order per request (ingress-nginx): header, then cookie, then weight.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from controlplane.ingress.annotations.base import (
    BOOLEAN,
    Annotations,
    Family,
    Key,
    ParseContext,
    ParsedAnnotations,
    integer,
    valid_re2,
)
from controlplane.ir import Forward, HeaderMatch, Route, WeightedCluster
from controlplane.ir.policies import Canary, Policy

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# ingress-nginx's validators (parser.BasicCharsRegex, parser.IsValidRegex): other values are dropped.
_BASIC_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9/:]*$")
_REGEX_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9/:^$\[\](){}*+?|&=\\]*$")


def _compiles(pattern: str) -> bool:
    """Whether a PCRE-like engine accepts the pattern (Python's re stands in for PCRE)."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


class CanaryFamily(Family):
    name = "canary"
    fields = (
        Key(
            ("canary",),
            (
                "the Ingress becomes the alternative backend of the non-canary Ingress with the same "
                "host+path+pathType; without a primary it does nothing (warning)"
            ),
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("canary-by-header",), "header match routes before the primary: value `always` → canary, `never` → primary"
        ),
        Key(
            ("canary-by-header-value",),
            (
                "canary only when the header equals the value exactly; any other value falls through to the cookie "
                "and the weight; a value outside `[-._~a-zA-Z0-9/:]` is ignored (warning)"
            ),
        ),
        Key(
            ("canary-by-header-pattern",),
            (
                "header regex `.*(?:P).*` (unanchored, as `ngx.re.match`); no match falls through to the cookie "
                "and the weight; ignored when a value is also set, or (warning) when it has characters "
                "ingress-nginx's validator refuses. A pattern that does not compile makes a request carrying the "
                "header stay on the main Service without looking at the cookie or the weight (balancer.lua returns "
                "false on the match error); requests without the header still follow the cookie and the weight"
            ),
            difference=(
                "a pattern only PCRE accepts (lookarounds, backreferences) is treated like one that does not "
                "compile (warning)"
            ),
        ),
        Key(("canary-by-cookie",), "cookie `always` → canary, `never` → primary"),
        Key(
            ("canary-weight",),
            "`weighted_clusters` with the primary",
            default="`0`",
            difference="weight above the total is clamped (warning)",
            validator=integer(0),
        ),
        Key(("canary-weight-total",), "total weight", default="`100`", validator=integer(1, 1_000_000)),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        present = [k for k in self.keys if ann.has(k)]
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
        if value is not None and not _BASIC_CHARS.match(value):
            ctx.warn(
                "canary-by-header-value", f"invalid value {value!r} (ingress-nginx allows [-._~a-zA-Z0-9/:]); ignored"
            )
            value = None
        pattern = ann.get("canary-by-header-pattern") or None
        pattern_invalid = False
        if pattern is not None and not _REGEX_CHARS.match(pattern):
            ctx.warn("canary-by-header-pattern", f"invalid characters in {pattern!r}; ignored")
            pattern = None
        elif pattern is not None and not valid_re2(pattern):
            pattern_invalid = True
            why = "is not a valid regular expression" if not _compiles(pattern) else "is not RE2 (Envoy cannot run it)"
            ctx.warn("canary-by-header-pattern", f"{pattern!r} {why}: as ingress-nginx, a request with the header "
                     "stays on the main Service (cookie and weight are not consulted)")  # fmt: skip
        if value and (pattern or pattern_invalid):
            ctx.warn("canary-by-header-pattern", "ignored because canary-by-header-value is set")
            pattern, pattern_invalid = None, False
        if header is None:
            for k in ("canary-by-header-value", "canary-by-header-pattern"):
                if ann.has(k):
                    ctx.warn(k, "ignored without canary-by-header")
            value = pattern = None
            pattern_invalid = False
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
                header_pattern_invalid=pattern_invalid,
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
            elif spec.header_pattern_invalid:
                out.append(
                    replace(primary, name=primary.name + "~pattern-error", headers=(HeaderMatch(h, present=True),))
                )
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
