"""ssl-redirect / force-ssl-redirect / preserve-trailing-slash: plain-HTTP requests get 308 to https.

As ingress-nginx's lua_ingress.rewrite: the Location is `https://<host without port><request URI>`
with one trailing "/" of the request URI dropped unless preserve-trailing-slash is true, and the
port only when the public HTTPS port is not 443.
"""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, ParseContext, ParsedAnnotations
from controlplane.ir.policies import SslRedirect


class SslRedirectFamily(Family):
    name = "ssl-redirect"
    keys = ("ssl-redirect", "force-ssl-redirect", "preserve-trailing-slash")

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        enabled = ctx.boolean(ann, "ssl-redirect", True)
        force = ctx.boolean(ann, "force-ssl-redirect", False)
        preserve = ctx.boolean(ann, "preserve-trailing-slash", False)
        for key in self.keys:
            if ann.has(key) and not any(f.key == key for f in ctx.findings):
                ctx.converted(key)
        return [SslRedirect(enabled=enabled, force=force, preserve_trailing_slash=preserve)]

    def redirect_to_https(self, parsed: ParsedAnnotations, host_has_tls: bool) -> bool | None:
        ssl = parsed.get(SslRedirect) or SslRedirect()
        return ssl.force or (ssl.enabled and host_has_tls)
