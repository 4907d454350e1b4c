"""load-balance, upstream-hash-by and cookie affinity: the cluster's LB policy and the route hash policy.

Consistent hashing (upstream-hash-by, affinity) needs a ring-hash cluster variant and a hash
policy on the route; it takes precedence over `load-balance`, as in ingress-nginx.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import DEFAULT_COOKIE, CookieAffinity, HashBy, HashKey, LoadBalancer

LB_POLICIES = {"round_robin": "ROUND_ROBIN", "ewma": "LEAST_REQUEST", "least_conn": "LEAST_REQUEST",
               "random": "RANDOM"}  # fmt: skip
_VAR = re.compile(r"\$(remote_addr|host|request_uri|uri|http_[A-Za-z0-9_]+|arg_[A-Za-z0-9_-]+|cookie_[A-Za-z0-9_.-]+)")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_COOKIE_DOMAIN = re.compile(r"\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
_SAMESITE = {"none": "None", "lax": "Lax", "strict": "Strict"}


def parse_hash_by(value: str) -> tuple[HashKey, ...] | None:
    """nginx variables -> hash inputs; None when the value uses anything we cannot hash on."""
    found = _VAR.findall(value)
    rest = _VAR.sub("", value)
    if not found or rest.strip():
        return None
    keys: list[HashKey] = []
    for var in found:
        if var == "remote_addr":
            keys.append(HashKey("source_ip"))
        elif var == "host":
            keys.append(HashKey("header", ":authority"))
        elif var in ("request_uri", "uri"):
            keys.append(HashKey("header", ":path"))
        elif var.startswith("http_"):
            keys.append(HashKey("header", var[5:].lower().replace("_", "-")))
        elif var.startswith("arg_"):
            keys.append(HashKey("query", var[4:]))
        else:
            keys.append(HashKey("cookie", var[7:]))
    return tuple(dict.fromkeys(keys))


class LoadBalancingFamily(Family):
    name = "load-balancing"
    fields = (
        Key(
            ("load-balance",),
            (
                "cluster `lb_policy`: `round_robin` → ROUND_ROBIN, `least_conn` → LEAST_REQUEST, `ewma` → "
                "LEAST_REQUEST (approximation), `random` → RANDOM"
            ),
            default="`round_robin`",
            difference="EWMA is approximated; ignored (warning) when consistent hashing is on",
        ),
        Key(
            ("upstream-hash-by",),
            (
                "ring-hash cluster variant + route hash policy: `$remote_addr` → source IP, `$host` → authority, "
                "`$request_uri` → path, `$http_<name>` → header, `$arg_<name>` → query parameter, `$cookie_<name>` "
                "→ cookie"
            ),
            difference="other nginx variables: warning, ignored",
        ),
        Key(
            ("upstream-hash-by-subset", "upstream-hash-by-subset-size"),
            "not reproduced: plain consistent hashing is used (warning)",
            default="—",
            difference="subsets unsupported",
        ),
        Key(
            ("affinity",),
            "cookie hash policy on a ring-hash cluster; Envoy generates the cookie",
            difference="only `cookie` (others warn)",
            label="`affinity: cookie`",
        ),
        Key(
            ("affinity-mode",),
            "`balanced`/`persistent`: consistent hashing, sessions move only when endpoints change",
            default="`balanced`",
            difference="`persistent` is not strictly sticky across endpoint changes",
        ),
        Key(("session-cookie-name",), "name of the generated cookie", default="`INGRESSCOOKIE`"),
        Key(
            ("session-cookie-path",),
            "cookie path; without it the Ingress path of the route (nginx's `$location_path`)",
            default="the Ingress path",
        ),
        Key(
            ("session-cookie-max-age", "session-cookie-expires"),
            "cookie TTL, `Max-Age` (max-age wins)",
            default="session cookie",
            difference="no `Expires` attribute: Envoy's generated cookie carries only `Max-Age` (nginx sends both; "
            "browsers use `Max-Age` when both are there)",
        ),
        Key(
            ("session-cookie-samesite", "session-cookie-secure", "session-cookie-domain"),
            "cookie attributes; over HTTPS the cookie is always `Secure`, as nginx's sticky balancer",
            default="not set",
        ),
        Key(
            ("session-cookie-conditional-samesite-none", "session-cookie-change-on-failure"),
            "not supported with Envoy-generated cookies (warning)",
            default="—",
            difference="ignored",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        hashed = False
        affinity = ann.get("affinity")
        if affinity is not None:
            if affinity.lower() == "cookie":
                out.append(self._cookie(ann, ctx))
                hashed = True
            else:
                ctx.warn("affinity", f"unsupported affinity {affinity!r} (only 'cookie'); ignored")
        if not hashed:
            for k in self.keys[5:]:
                if ann.has(k):
                    ctx.warn(k, 'ignored without affinity: "cookie"')
        hash_by = ann.get("upstream-hash-by")
        if hash_by is not None:
            keys = parse_hash_by(hash_by)
            if keys is None:
                ctx.warn("upstream-hash-by", f"cannot hash on {hash_by!r} (use $remote_addr, $host, $request_uri, "
                         "$http_*, $arg_*, $cookie_*); ignored")  # fmt: skip
            elif hashed:
                ctx.warn("upstream-hash-by", "ignored: cookie affinity takes precedence")
            else:
                out.append(HashBy(keys))
                hashed = True
                ctx.converted("upstream-hash-by", "ring-hash cluster; hash on " + ", ".join(
                    k.kind + (f" {k.name}" if k.name else "") for k in keys))  # fmt: skip
        for k in ("upstream-hash-by-subset", "upstream-hash-by-subset-size"):
            if ann.has(k):
                ctx.warn(k, "hash subsets are not supported; plain consistent hashing is used")
        lb = ann.get("load-balance")
        if lb is not None and lb.lower() not in LB_POLICIES:
            ctx.warn("load-balance", f"unknown algorithm {lb!r}; using round_robin")
            lb = None
        if hashed:
            out.append(LoadBalancer("RING_HASH"))
            if lb is not None:
                ctx.warn("load-balance", "ignored: consistent hashing (affinity / upstream-hash-by) takes precedence")
        elif lb is not None:
            policy = LB_POLICIES[lb.lower()]
            if policy != "ROUND_ROBIN":
                out.append(LoadBalancer(policy))
            ctx.converted("load-balance", f"Envoy {policy}" + (" (EWMA approximated)" if lb.lower() == "ewma" else ""))
        return out

    def _cookie(self, ann: Annotations, ctx: ParseContext) -> CookieAffinity:
        name = ann.get("session-cookie-name") or DEFAULT_COOKIE
        if not _COOKIE_NAME.match(name):
            ctx.warn("session-cookie-name", f"invalid cookie name {name!r}; using {DEFAULT_COOKIE}")
            name = DEFAULT_COOKIE
        path = ann.get("session-cookie-path") or ""
        if path and (not path.startswith("/") or any(c.isspace() or c == ";" for c in path)):
            ctx.warn("session-cookie-path", f"invalid cookie path {path!r}; using the request path")
            path = ""
        ttl = 0
        for key in ("session-cookie-expires", "session-cookie-max-age"):  # max-age wins, as in browsers
            if ann.has(key):
                ttl = ctx.integer(ann, key, ttl, minimum=0)
        samesite = ""
        raw = ann.get("session-cookie-samesite")
        if raw is not None:
            samesite = _SAMESITE.get(raw.lower(), "")
            if not samesite:
                ctx.warn("session-cookie-samesite", f"invalid SameSite {raw!r} (None, Lax, Strict); not set")
        secure = ctx.boolean(ann, "session-cookie-secure", False) or samesite == "None"
        mode = (ann.get("affinity-mode") or "balanced").lower()
        if mode not in ("balanced", "persistent"):
            ctx.warn("affinity-mode", f"invalid affinity-mode {mode!r}; using balanced")
            mode = "balanced"
        elif mode == "persistent":
            ctx.converted("affinity-mode", "consistent hashing: sessions move only when endpoints change")
        for key in ("session-cookie-conditional-samesite-none", "session-cookie-change-on-failure"):
            if ann.has(key):
                ctx.warn(key, "not supported with Envoy-generated cookies; ignored")
        domain = (ann.get("session-cookie-domain") or "").strip()
        if domain and not _COOKIE_DOMAIN.fullmatch(domain):
            ctx.warn("session-cookie-domain", f"invalid cookie domain {domain!r}; not set")
            domain = ""
        ctx.converted("affinity", f"cookie {name} (generated by Envoy) on a ring-hash cluster")
        return CookieAffinity(name, path, ttl, samesite, secure, mode, domain)
