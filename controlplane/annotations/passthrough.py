"""ssl-passthrough: TLS for the Ingress's hosts is not terminated; SNI-routed TCP to its backend."""

from __future__ import annotations

from typing import Any

from controlplane.annotations.base import Annotations, ParseContext
from controlplane.ir.policies import SslPassthrough


class SslPassthroughFamily:
    name = "ssl-passthrough"
    keys = ("ssl-passthrough",)

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        if not ctx.boolean(ann, "ssl-passthrough", False):
            return []
        ctx.converted(
            "ssl-passthrough", "TLS is passed through to the backend by SNI; HTTP annotations do not apply to it"
        )
        return [SslPassthrough()]
