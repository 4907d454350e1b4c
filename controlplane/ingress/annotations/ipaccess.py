"""whitelist/allowlist-source-range and denylist-source-range: client IP access lists (403 when denied)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import IpAccess


def parse_cidrs(raw: str) -> tuple[tuple[str, ...], list[str]]:
    """Comma/whitespace separated CIDRs or bare IPs -> (normalized unique CIDRs, invalid entries).

    Lists in real manifests span lines, carry spaces and repeat entries; bare IPs are /32 (/128).
    """
    out: list[str] = []
    bad: list[str] = []
    for item in re.split(r"[,\s]+", raw):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            bad.append(item)
            continue
        text = str(net)
        if text not in out:
            out.append(text)
    return tuple(out), bad


class IpAccessFamily(Family):
    name = "ip-access"
    fields = (
        Key(
            ("whitelist-source-range", "allowlist-source-range"),
            "per-route RBAC: only these CIDRs/IPs; others get 403",
            difference=(
                "an unparsable list **rejects** the Ingress (nginx answers 503); `allowlist` wins over `whitelist`"
            ),
        ),
        Key(
            ("denylist-source-range",),
            "per-route RBAC deny list (403)",
            difference="unparsable list rejects the Ingress",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        allow: tuple[str, ...] = ()
        deny: tuple[str, ...] = ()
        # allowlist-source-range is the newer name of whitelist-source-range; it wins when both are set.
        for key in ("whitelist-source-range", "allowlist-source-range"):
            raw = ann.get(key)
            if raw is None:
                continue
            cidrs, bad = parse_cidrs(raw)
            if bad:
                ctx.reject(key, f"invalid CIDR/IP {', '.join(bad)!r}; the Ingress is not served")
                continue
            if not cidrs:
                ctx.warn(key, "empty list; no allow list applied")
                continue
            if allow and key == "allowlist-source-range":
                ctx.warn("whitelist-source-range", "overridden by allowlist-source-range")
            allow = cidrs
            ctx.converted(key, f"only {', '.join(cidrs)} allowed (others get 403)")
        raw = ann.get("denylist-source-range")
        if raw is not None:
            cidrs, bad = parse_cidrs(raw)
            if bad:
                ctx.reject("denylist-source-range", f"invalid CIDR/IP {', '.join(bad)!r}; the Ingress is not served")
            elif not cidrs:
                ctx.warn("denylist-source-range", "empty list; nothing denied")
            else:
                deny = cidrs
                ctx.converted("denylist-source-range", f"{', '.join(cidrs)} denied (403)")
        if not allow and not deny:
            return []
        return [IpAccess(allow, deny)]
