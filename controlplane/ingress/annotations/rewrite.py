"""rewrite-target and use-regex: regex paths (case-insensitive, anchored at the start) and rewrites."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, ParseContext
from controlplane.ir.policies import RegexPaths, RewriteTarget


class RewriteFamily(Family):
    name = "rewrite"
    keys = ("rewrite-target", "use-regex")

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
