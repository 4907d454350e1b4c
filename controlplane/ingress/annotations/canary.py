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
)
from controlplane.ir import Forward, HeaderMatch, Route, WeightedCluster
from controlplane.ir.pcre import classify
from controlplane.ir.policies import PATTERN_VERDICT_HEADER, Canary, HeaderPattern, Policy

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# ingress-nginx's validators (parser.BasicCharsRegex, parser.IsValidRegex): other values are dropped.
_BASIC_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9/:]*$")
_REGEX_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9/:^$\[\](){}*+?|&=\\]*$")


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
                "the header's value searched with the pattern as `ngx.re.match` does in ingress-nginx (PCRE1 8.45: "
                "bytes, unanchored, case-sensitive, ASCII classes). Meridian reads the pattern with PCRE1's own "
                "syntax: its escapes (`\\h`, `\\R`, `\\K`, `\\G`, `\\g`, `\\e`, `\\c`, `\\N`, `\\Q…\\E`, "
                "`\\p`…), POSIX classes, recursion and subroutine calls (atomic, as PCRE1), conditionals, branch "
                "reset, `(*ACCEPT)`, `(*FAIL)`, `(*COMMIT)`, `(*PRUNE)`, `(*SKIP)`, `(*THEN)`; `{,n}` is literal, as "
                "in PCRE1 (and ingress-nginx's validator refuses `,` anyway). A pattern that consumes only ASCII "
                "and has no repeat that backtracks is an Envoy header regex `.*(?:P).*` (RE2, written from that "
                "reading); any other is searched by a backtracking matcher in a Lua step before routing, which "
                "counts PCRE's steps (calls of its match(), afresh at each start position as PCRE) against PCRE's "
                "limit, 10,000,000, as ngx.re.match keeps it, and PCRE's shortcuts (an anchored pattern tries one "
                "position, a first byte, a required byte, repeats made possessive). No match falls through to the "
                "cookie and the weight; ignored when a value is also "
                "set, or (warning) when it has characters ingress-nginx's validator refuses. A pattern PCRE "
                "refuses, or a search past the limit, makes a request carrying the header stay on the main "
                "Service without looking at the cookie or the weight (balancer.lua returns false on "
                "ngx.re.match's error); requests without the header still follow the cookie and the weight. A "
                "search that reaches the limit holds one Envoy worker for about 1.5 s of CPU (PCRE in nginx: "
                "about 60 ms; measured by tests/e2e/test_annotations_parity_wire.py): kept for the same answers, so "
                "review patterns that backtrack exponentially, such as `(a|a)+`, as ingress-nginx users should. "
                "PCRE has no limit over all start positions; the matcher stops a search at twice the limit in all "
                "(about 3 s of CPU)"
            ),
            difference=(
                "valid PCRE that the matcher does not run is treated like a pattern PCRE refuses (warning): "
                "the start-of-pattern settings `(*UTF8)`, `(*UTF)`, `(*UCP)`, `(*CR)`, `(*CRLF)`, `(*ANYCRLF)`, "
                "`(*ANY)`, `(*BSR_ANYCRLF)` and `(*LIMIT_RECURSION=n)` (`(*LIMIT_MATCH=n)`, `(*NO_START_OPT)`, "
                "`(*NO_AUTO_POSSESS)` and the defaults `(*LF)`, `(*BSR_UNICODE)` are run), and `(*SKIP:NAME)`. The "
                "step count is PCRE's within 1% where searches reach the limit (alternatives or repeats inside a "
                "repeat), so only a search within 1% of the limit may get the other answer; a value crafted so "
                "that many start positions each cost nearly the limit is an error here (over twice the limit in "
                "all) where nginx, seconds later, answers. On searches that reach the limit the required-byte "
                "shortcut can also differ: PCRE keeps one required byte (from a lookahead too), the matcher "
                "checks every one outside assertions, so such a search can be an error on one side and no match "
                "on the other (`(?=(a|a)+b)` on many `a`s: an error here, no match in PCRE), which decides "
                "between staying on the main Service and following the cookie and the weight"
            ),
        ),
        Key(("canary-by-cookie",), "cookie `always` → canary, `never` → primary"),
        Key(
            ("canary-weight",),
            (
                "`weighted_clusters` with the primary: the canary gets weight/total of the requests (all of "
                "them when the weight reaches the total: a larger weight is clamped, with a warning, as "
                "balancer.lua's `math.random(total) <= weight` is then always true)"
            ),
            default="`0`",
            validator=integer(0),
        ),
        Key(
            ("canary-weight-total",),
            "total weight; a total below 100 counts as 100, as ingress-nginx's balancer.lua does",
            default="`100`",
            validator=integer(1, 1_000_000),
        ),
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
        pattern_invalid = pattern_pcre = False
        if pattern is not None and not _REGEX_CHARS.match(pattern):
            ctx.warn("canary-by-header-pattern", f"invalid characters in {pattern!r}; ignored")
            pattern = None
        elif pattern is not None:
            kind = classify(pattern)
            pattern_pcre = kind.kind == "pcre"
            if kind.kind in ("invalid", "unsupported"):
                pattern_invalid = True
                why = (f"is not a valid PCRE regular expression ({kind.why})" if kind.kind == "invalid"
                       else f"uses {kind.why}, which Meridian cannot evaluate exactly; treated as invalid")
                ctx.warn("canary-by-header-pattern", f"{pattern!r} {why}: as ingress-nginx with a pattern that fails, "
                         "a request with the header stays on the main Service (cookie and weight are not consulted)")
        if value and (pattern or pattern_invalid):
            ctx.warn("canary-by-header-pattern", "ignored because canary-by-header-value is set")
            pattern, pattern_invalid, pattern_pcre = None, False, False
        if header is None:
            for k in ("canary-by-header-value", "canary-by-header-pattern"):
                if ann.has(k):
                    ctx.warn(k, "ignored without canary-by-header")
            value = pattern = None
            pattern_invalid = pattern_pcre = False
        cookie = ann.get("canary-by-cookie") or None
        total = ctx.integer(ann, "canary-weight-total", 100, minimum=1, maximum=1_000_000)
        if total < 100:
            # balancer.lua: `local weightTotal = 100; if weightTotal ~= nil and weightTotal > 100 then ...`
            ctx.converted("canary-weight-total", f"{total} is below 100: ingress-nginx's balancer uses 100, as here")
            total = 100
        weight = ctx.integer(ann, "canary-weight", 0, minimum=0)
        if weight > total:
            ctx.warn("canary-weight", f"weight {weight} exceeds total {total}; using {total}")
            weight = total
        for k in present:
            if k != "canary" and not any(f.key == k for f in ctx.findings):
                ctx.converted(k)
        return [
            Canary(
                header=header,
                header_value=value,
                header_pattern=pattern,
                header_pattern_invalid=pattern_invalid,
                header_pattern_pcre=pattern_pcre,
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
        if spec.header and spec.header_pattern and spec.header_pattern_pcre:
            # Every route of the rule runs the Lua step (whichever Envoy picks first), then routing
            # is done again on its verdict.
            step = HeaderPattern(spec.header.lower(), spec.header_pattern)
            primary = replace(primary, policies=(*primary.policies, step))
        to_canary = replace(primary, name=primary.name + "~canary", action=alternative)
        out: list[Route] = []
        if spec.header:
            h = spec.header.lower()
            if spec.header_value:
                out.append(replace(to_canary, headers=(HeaderMatch(h, exact=spec.header_value),)))
            elif spec.header_pattern and spec.header_pattern_pcre:
                out.append(replace(to_canary, headers=(HeaderMatch(PATTERN_VERDICT_HEADER, exact="match"),)))
                out.append(replace(primary, name=primary.name + "~pattern-error",
                                   headers=(HeaderMatch(PATTERN_VERDICT_HEADER, exact="error"),)))  # fmt: skip
            elif spec.header_pattern_invalid:
                out.append(
                    replace(primary, name=primary.name + "~pattern-error", headers=(HeaderMatch(h, present=True),))
                )
            elif spec.header_pattern:  # RE2 runs it exactly (controlplane.ir.pcre): Envoy's own header match
                regex = classify(spec.header_pattern).re2
                out.append(replace(to_canary, headers=(HeaderMatch(h, regex=f".*(?:{regex}).*"),)))
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
