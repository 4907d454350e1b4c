"""rewrite-target and use-regex: regex paths (case-insensitive, anchored at the start) and rewrites."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext
from controlplane.ir.policies import RegexPaths, RewriteTarget


class RewriteFamily(Family):
    name = "rewrite"
    fields = (
        Key(
            ("use-regex",),
            (
                "paths become regular expressions, case-insensitive, anchored at the start (`(?i)^<path>.*`, RE2 "
                "full match); spreads to every path of the same host, as in nginx"
            ),
            default="`false`",
            difference="RE2, not PCRE: lookarounds and backreferences are not available",
            validator=BOOLEAN,
        ),
        Key(
            ("rewrite-target",),
            "implies regex paths; route `regex_rewrite` of the whole path, `$1..$n` become RE2 groups",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        use_regex = ctx.boolean(ann, "use-regex", False)
        if ann.has("use-regex"):
            ctx.converted("use-regex", "paths are case-insensitive regular expressions" if use_regex else "")
        target = ann.get("rewrite-target")
        if target is not None:
            if not target or any(c in target for c in "\r\n\t "):
                ctx.warn("rewrite-target", f"invalid rewrite target {target!r}; ignored")
            else:
                out.append(RewriteTarget(target))
                ctx.converted("rewrite-target", f"path rewritten to {target}")
                use_regex = True
        if use_regex:
            out.append(RegexPaths())
        return out
