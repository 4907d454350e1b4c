"""server-alias: more host names served exactly like the host they are given to.

As ingress-nginx (annotations/alias and createServers): the comma list is trimmed, de-duplicated
and sorted; the first Ingress (oldest) with aliases on a host gives that host its aliases; an alias
that is the host itself, a host of an Ingress, or already an alias of another host (hosts in name
order) is dropped, and Meridian reports it (controlplane/ingress/aliases.py).
"""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import ServerAlias, WwwRedirect


def _valid_name(name: str) -> bool:
    labels = name.split(".")
    if name.startswith("*."):
        labels = labels[1:]
    return len(name) <= 253 and all(
        label and len(label) <= 63 and label[0] != "-" and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )


class ServerAliasFamily(Family):
    name = "server-alias"
    fields = (
        Key(
            ("server-alias",),
            (
                "comma list of host names added to the domains of each host of the Ingress, so an alias serves "
                "every path of that host, other Ingresses' paths included (nginx `server_name host alias…`); the "
                "oldest Ingress with aliases on a host gives them; an alias that is a host of an Ingress, or "
                "already an alias of another host (hosts in name order), is dropped and reported; names that are "
                "not host names (nginx regex names) are ignored with a warning"
            ),
        ),
        Key(
            ("from-to-www-redirect",),
            (
                "`www.<host>` (or `<host>` without `www.` for a `www.` host) is one more name of the host's virtual "
                "host whose requests get a 308 to `<scheme>://<host>:<port><request URI>` (one trailing `/` "
                "dropped; port 80, or `--public-https-port` over HTTPS), as ingress-nginx's redirect server; skipped "
                "(reported) when that name is a host of an Ingress or another host's alias"
            ),
            default="`false`",
            difference="over HTTPS the name needs a certificate of its own Ingress TLS entry (nginx reuses the "
            "host's certificate when it covers the name)",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        if ann.has("from-to-www-redirect"):
            if ctx.boolean(ann, "from-to-www-redirect", False):
                out.append(WwwRedirect())
                ctx.converted("from-to-www-redirect", "the www. twin of each host redirects (308) to the host")
            elif "from-to-www-redirect" not in {f.key for f in ctx.findings}:
                ctx.converted("from-to-www-redirect", "off")
        return out + self._aliases(ann, ctx)

    def _aliases(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        raw = ann.get("server-alias") or ""
        names = sorted({a.strip().lower().rstrip(".") for a in raw.split(",") if a.strip()})
        bad = [n for n in names if not _valid_name(n)]
        good = tuple(n for n in names if _valid_name(n))
        if bad:
            ctx.warn("server-alias", f"not a host name (ignored): {', '.join(bad)}")
        if not good:
            return []
        if not bad:
            ctx.converted("server-alias", f"every host of the Ingress also answers as {', '.join(good)}")
        return [ServerAlias(good)]
