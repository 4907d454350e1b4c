"""ssl-redirect / force-ssl-redirect: plain-HTTP requests get 308 to https."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, ParseContext, ParsedAnnotations
from controlplane.ir.policies import SslRedirect


class SslRedirectFamily(Family):
    name = "ssl-redirect"
    keys = ("ssl-redirect", "force-ssl-redirect")

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        enabled = ctx.boolean(ann, "ssl-redirect", True)
        force = ctx.boolean(ann, "force-ssl-redirect", False)
        for key in self.keys:
            if ann.has(key):
                ctx.converted(key)
        return [SslRedirect(enabled=enabled, force=force)]

    def redirect_to_https(self, parsed: ParsedAnnotations, host_has_tls: bool) -> bool | None:
        ssl = parsed.get(SslRedirect) or SslRedirect()
        return ssl.force or (ssl.enabled and host_has_tls)
