"""ssl-passthrough: TLS for the Ingress's hosts is not terminated; SNI-routed TCP to its backend."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext, ParsedAnnotations
from controlplane.ir.policies import SslPassthrough


class SslPassthroughFamily(Family):
    name = "ssl-passthrough"
    fields = (
        Key(
            ("ssl-passthrough",),
            (
                "the host's TLS is not terminated: an SNI-matched TCP proxy filter chain to the Service; HTTP "
                "annotations do not apply to it"
            ),
            default="`false`",
            validator=BOOLEAN,
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        if not ctx.boolean(ann, "ssl-passthrough", False):
            return []
        ctx.converted(
            "ssl-passthrough", "TLS is passed through to the backend by SNI; HTTP annotations do not apply to it"
        )
        return [SslPassthrough()]

    def passes_tls_through(self, parsed: ParsedAnnotations) -> bool:
        return parsed.get(SslPassthrough) is not None
