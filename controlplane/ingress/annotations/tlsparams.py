"""ssl-protocols and ssl-ciphers: the TLS versions and TLS 1.2 cipher suites a host accepts."""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ingress.annotations.tlsnames import BORINGSSL_CIPHERS, TLS_VERSION_ORDER, TLS_VERSIONS
from controlplane.ir.policies import TlsParams


def _pretty(version: str) -> str:
    return version.replace("_", ".")


class TlsParamsFamily(Family):
    name = "tls-params"
    fields = (
        Key(
            ("ssl-protocols",),
            "TLS versions of the host's filter chain (e.g. `TLSv1.2 TLSv1.3`)",
            default="`TLSv1.2 TLSv1.3`",
            difference=(
                "a per-Ingress key in Meridian (ConfigMap-only in nginx); Envoy takes a min..max range, so a list "
                "with gaps or SSLv2/SSLv3 is narrowed to the versions it can express (warning)"
            ),
        ),
        Key(
            ("ssl-ciphers",),
            "TLS 1.2 cipher suites of the host",
            default="Envoy defaults",
            difference="TLS 1.3 suites are fixed; ciphers BoringSSL lacks are dropped (warning)",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        lo: str | None = None
        hi: str | None = None
        raw = ann.get("ssl-protocols")
        if raw is not None:
            tokens = [t for t in re.split(r"[\s,]+", raw) if t]
            known = sorted({TLS_VERSIONS[t] for t in tokens if t in TLS_VERSIONS}, key=TLS_VERSION_ORDER.index)
            unknown = [t for t in tokens if t not in TLS_VERSIONS]
            if not known:
                ctx.warn("ssl-protocols", f"no supported protocol in {raw!r}; using the default (TLSv1.2 TLSv1.3)")
            else:
                lo, hi = known[0], known[-1]
                gap = len(known) != TLS_VERSION_ORDER.index(hi) - TLS_VERSION_ORDER.index(lo) + 1
                notes = []
                if unknown:
                    notes.append(f"ignored {', '.join(unknown)}")
                if gap:
                    notes.append("Envoy accepts a contiguous range; versions in between are allowed too")
                if notes:
                    ctx.warn("ssl-protocols", f"{'; '.join(notes)}; using {_pretty(lo)}..{_pretty(hi)}")
                else:
                    ctx.converted("ssl-protocols", f"TLS versions {_pretty(lo)}..{_pretty(hi)}")
        ciphers: tuple[str, ...] = ()
        raw = ann.get("ssl-ciphers")
        if raw is not None:
            names = [c for c in re.split(r"[:\s,]+", raw) if c]
            good = tuple(dict.fromkeys(c for c in names if c in BORINGSSL_CIPHERS))
            bad = [c for c in names if c not in BORINGSSL_CIPHERS]
            if not good:
                ctx.warn("ssl-ciphers", f"no cipher Envoy supports in {raw!r}; using Envoy's defaults")
            else:
                ciphers = good
                if bad:
                    ctx.warn("ssl-ciphers", f"not supported by Envoy (BoringSSL), dropped: {', '.join(bad)}")
                else:
                    ctx.converted("ssl-ciphers", "TLS 1.2 cipher suites set (TLS 1.3 suites are fixed)")
        if lo is None and hi is None and not ciphers:
            return []
        return [TlsParams(lo, hi, ciphers)]
