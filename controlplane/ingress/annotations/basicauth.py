"""auth-type: basic + auth-secret (htpasswd in key `auth`) + auth-realm -> Envoy basic auth.

Envoy verifies only `{SHA}` (SHA-1) htpasswd entries. Entries with other hashes (apr1,
bcrypt, crypt) are dropped with a warning; if no usable entry is left every request gets the
401, so a request is never let through unauthenticated. A missing Secret denies the location as
ingress-nginx does: every path of the Ingress answers 503.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ingress.secrets import secret_bytes
from controlplane.ir.policies import BasicAuth, DeniedLocation

_SHA = re.compile(r"^\{SHA\}[A-Za-z0-9+/]{27}=$")


def _hash_kind(h: str) -> str:
    if h.startswith("$apr1$"):
        return "apr1-md5"
    if h.startswith(("$2y$", "$2a$", "$2b$")):
        return "bcrypt"
    if h.startswith(("$5$", "$6$", "$1$")):
        return "crypt"
    if h.startswith("{SHA}"):
        return "malformed {SHA}"
    return "crypt/plain"


def usable_htpasswd(text: str) -> tuple[list[str], list[str]]:
    """(lines Envoy can verify, 'user (kind)' descriptions of the others)."""
    good: list[str] = []
    bad: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not user or user in seen or re.search(r"[\s\x00-\x1f\x7f]", user):
            continue
        if _SHA.match(hashed):
            good.append(f"{user}:{hashed}")
            seen.add(user)
        else:
            bad.append(f"{user} ({_hash_kind(hashed)})")
    return good, bad


class BasicAuthFamily(Family):
    name = "basic-auth"
    fields = (
        Key(
            ("auth-type",),
            'Envoy basic auth; 401 with `WWW-Authenticate: Basic realm="…"`',
            difference="`digest` **rejects** the Ingress",
            label="`auth-type: basic`",
        ),
        Key(
            ("auth-secret", "auth-secret-type"),
            "htpasswd Secret (key `auth`, or `auth-map`); a missing Secret or key `auth` makes every path of the "
            "Ingress answer 503, as ingress-nginx denies the location",
            default="`auth-file`",
            difference=(
                "Envoy verifies only `{SHA}` entries; others (bcrypt, apr1, crypt) are dropped (warning), and with "
                "no entry left every request gets the 401 (never served unauthenticated; nginx would let a bcrypt "
                "user in)"
            ),
        ),
        Key(("auth-realm",), "realm in the challenge", difference="quotes/control characters removed"),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out = self._parse(ann, ctx)
        reported = {f.key for f in ctx.findings}
        for key in self.keys:
            if not ann.has(key) or key in reported:
                continue
            if out:
                ctx.converted(key)
            else:
                ctx.warn(key, "ignored: basic auth not configured")
        return out

    def _parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        kind = ann.get("auth-type")
        if kind is None:
            for key in ("auth-secret", "auth-secret-type", "auth-realm"):
                # auth-tls-secret is a different key; plain auth-secret without auth-type does nothing in nginx.
                if ann.has(key):
                    ctx.warn(key, "no auth-type on this Ingress; ignored")
            return []
        if kind.lower() == "digest":
            ctx.reject("auth-type", "digest authentication is not supported by Envoy; the Ingress is not served")
            return []
        if kind.lower() != "basic":
            ctx.warn("auth-type", f"invalid auth-type {kind!r}; no authentication (nginx ignores it too)")
            return []
        secret_type = (ann.get("auth-secret-type") or "auth-file").lower()
        if secret_type not in ("auth-file", "auth-map"):
            ctx.warn("auth-secret-type", f"invalid {secret_type!r}; using auth-file")
            secret_type = "auth-file"
        ref = ann.get("auth-secret")
        if not ref:
            return _denied(ctx, "auth-type basic needs auth-secret")
        ns, _, name = ref.rpartition("/")
        ns = ns or ctx.ingress.namespace
        secret = ctx.lookup_secret(ns, name)
        if secret is None:
            return _denied(ctx, f"secret {ns}/{name} not found")
        if secret_type == "auth-map":
            data = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
            lines = []
            for user in sorted(data):
                raw = secret_bytes(secret, user)
                if raw is not None:
                    lines.append(f"{user}:{raw.decode(errors='replace').strip()}")
            text = "\n".join(lines)
        else:
            raw = secret_bytes(secret, "auth")
            if raw is None:
                return _denied(ctx, f"secret {name} has no key 'auth'")
            text = raw.decode(errors="replace")
        good, bad = usable_htpasswd(text)
        if bad:
            ctx.warn(
                "auth-secret",
                f"entries Envoy cannot verify are refused: {', '.join(bad)}. Envoy supports only SHA-1 "
                "htpasswd entries (htpasswd -s)",
            )
        realm = ann.get("auth-realm") or ""
        if '"' in realm or "\\" in realm or any(ord(c) < 32 for c in realm):
            ctx.warn("auth-realm", "quotes/control characters removed from the realm")
            realm = re.sub(r'["\\\x00-\x1f]', "", realm)
        if not good:
            # nginx would still answer 401 to every request without the right password; with no entry Envoy
            # can check, that is every request: nobody gets through unauthenticated.
            ctx.warn("auth-type", "no htpasswd entry Envoy can verify ({SHA}): every request gets the 401 "
                     f"with realm {realm!r}")  # fmt: skip
            return [BasicAuth("", realm)]
        ctx.converted("auth-type", f"basic auth, {len(good)} user(s); 401 with realm {realm!r} otherwise")
        return [BasicAuth("\n".join(good) + "\n", realm)]


def _denied(ctx: ParseContext, problem: str) -> list[Any]:
    """As ingress-nginx's LocationDeniedError: the Ingress's paths answer 503, never unauthenticated."""
    ctx.warn("auth-secret", f"{problem}: every path of the Ingress answers 503 (ingress-nginx denies the location)")
    return [DeniedLocation(problem)]
