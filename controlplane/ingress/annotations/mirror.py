"""mirror-target: a copy of each request goes to a URL (responses of the copy are ignored).

Envoy mirrors keep the request's path, so a target path other than `$request_uri` (or none)
cannot be reproduced; that is reported.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from controlplane.addresses import is_ip
from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import Mirror

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_target(url: str) -> tuple[Mirror | None, str]:
    """(policy, note) or (None, why not)."""
    if any(c.isspace() for c in url):
        return None, "URL contains whitespace"
    parts = urlsplit(url.replace("$request_uri", "/"))
    if parts.scheme not in ("http", "https"):
        return None, "need an http:// or https:// URL"
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, "invalid port"
    if not host or not (_HOSTNAME.match(host) or is_ip(host)):
        return None, f"invalid host {host!r}"
    path = urlsplit(url).path
    note = ""
    if path not in ("", "/", "$request_uri", "/$request_uri"):
        note = f"; the copy keeps the request's path (target path {path!r} is not applied)"
    return Mirror(parts.scheme, host, port), note


class MirrorFamily(Family):
    name = "mirror"
    fields = (
        Key(
            ("mirror-target",),
            "route `request_mirror_policies` to a cluster made for the URL; mirror responses ignored",
            difference=(
                "Envoy keeps the request's path: a target path other than `$request_uri` cannot be reproduced "
                "(reported)"
            ),
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        url = ann.get("mirror-target")
        if url is None:
            return []
        policy, note = parse_target(url)
        if policy is None:
            ctx.warn("mirror-target", f"invalid mirror target {url!r}: {note}; not mirrored")
            return []
        ctx.converted("mirror-target", f"requests copied to {policy.host}:{policy.port}{note}")
        return [policy]
