"""ssl-redirect / force-ssl-redirect / preserve-trailing-slash: plain-HTTP requests get 308 to https.

As ingress-nginx's lua_ingress.rewrite: the Location is `https://<host without port><request URI>`
with one trailing "/" of the request URI dropped unless preserve-trailing-slash is true, and the
port only when the public HTTPS port is not 443.
"""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext, ParsedAnnotations
from controlplane.ir.policies import SslRedirect


class SslRedirectFamily(Family):
    name = "ssl-redirect"
    fields = (
        Key(
            ("ssl-redirect",),
            (
                "plain-HTTP requests for a host with a served TLS certificate get a 308 to `https://<host>[:public "
                "port]<request URI>`: the request's Host as the client spelled it, up to its first `:` (any port "
                "dropped, for named, wildcard, alias and catch-all hosts alike), the port only when "
                "`--public-https-port` is not 443 (a small Lua step computes the Location as nginx's "
                "`lua_ingress.lua`; the HTTP route's action becomes a redirect; access rules do not run first, as "
                "in nginx where the redirect happens in the rewrite phase). A host whose `tls:` Secret is missing, "
                "invalid with no last good certificate, or not named is served with the default certificate "
                "(`--default-ssl-certificate`, else a generated self-signed \"Kubernetes Ingress Controller Fake "
                "Certificate\") and redirected to it the same way, as ingress-nginx does; a host with no `tls:` "
                "entry is not redirected (HTTPS still answers it, with the default certificate)"
            ),
            default="`true`",
            difference=(
                "only where there is no default certificate at all (Kubernetes mode without the chart, the flag "
                "and the right to create its own Secret): such hosts stay plain HTTP, as their Ingress's warnings "
                "say. A certificate a `tls:` entry lists for a host but whose names do not cover it is still "
                "served (ingress-nginx serves its default certificate then)"
            ),
            validator=BOOLEAN,
        ),
        Key(
            ("force-ssl-redirect",),
            "the same 308 even without TLS on the host (also when its Secret is missing: reported)",
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("preserve-trailing-slash",),
            (
                "without it, one trailing `/` of the request URI is dropped from the Location (`/dir/` → "
                "`https://host/dir`, `/` → `https://host`; `/dir/?q=1` is kept), as nginx's `lua_ingress.lua` "
                "does; with it the URI is kept"
            ),
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("use-port-in-redirects",),
            (
                "the ssl-redirect Location always names the public HTTPS port, `:443` included "
                "(`https://host:443/uri`), as nginx's `lua_ingress.lua` with `use_port_in_redirects`"
            ),
            default="`false`",
            validator=BOOLEAN,
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        enabled = ctx.boolean(ann, "ssl-redirect", True)
        force = ctx.boolean(ann, "force-ssl-redirect", False)
        preserve = ctx.boolean(ann, "preserve-trailing-slash", False)
        port_in = ctx.boolean(ann, "use-port-in-redirects", False)
        for key in self.keys:
            if ann.has(key) and not any(f.key == key for f in ctx.findings):
                ctx.converted(key)
        return [SslRedirect(enabled=enabled, force=force, preserve_trailing_slash=preserve, port_in_redirects=port_in)]

    def redirect_to_https(self, parsed: ParsedAnnotations, host_has_tls: bool) -> bool | None:
        ssl = parsed.get(SslRedirect) or SslRedirect()
        return ssl.force or (ssl.enabled and host_has_tls)
