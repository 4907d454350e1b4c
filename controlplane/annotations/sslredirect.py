"""ssl-redirect / force-ssl-redirect: plain-HTTP requests get 308 to https."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from controlplane.annotations.base import Annotations, ParseContext


@dataclass(frozen=True, slots=True)
class SslRedirect:
    """`enabled` applies when the host has TLS; `force` even without TLS."""

    scope: ClassVar[str] = "ingress"
    enabled: bool = True
    force: bool = False


class SslRedirectFamily:
    name = "ssl-redirect"
    keys = ("ssl-redirect", "force-ssl-redirect")

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        enabled = ctx.boolean(ann, "ssl-redirect", True)
        force = ctx.boolean(ann, "force-ssl-redirect", False)
        for key in self.keys:
            if ann.has(key):
                ctx.converted(key)
        return [SslRedirect(enabled=enabled, force=force)]
