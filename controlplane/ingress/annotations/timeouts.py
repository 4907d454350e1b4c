"""proxy-*-timeout and proxy-next-upstream*: connect/idle timeouts and the retry policy.

nginx retries a request on the next upstream for `error timeout` by default, but never a
non-idempotent one (POST, LOCK, PATCH) unless `non_idempotent` is listed.
"""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import DURATION, Annotations, Family, Key, ParseContext, integer
from controlplane.ir.policies import (
    DEFAULT_NEXT_UPSTREAM,
    DEFAULT_TRIES,
    ConnectTimeout,
    IdleTimeout,
    Retries,
)

NEXT_UPSTREAM_TOKENS = frozenset(
    {
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    }
)
UNLIMITED_TRIES_RETRIES = 10  # nginx tries=0 means "no limit"; Envoy needs a number


class TimeoutsFamily(Family):
    name = "timeouts"
    fields = (
        Key(
            ("proxy-connect-timeout",),
            "cluster `connect_timeout` (a cluster variant for this Ingress's backends)",
            default="`5` s",
            validator=DURATION,
        ),
        Key(
            ("proxy-read-timeout", "proxy-send-timeout"),
            (
                "route `idle_timeout` (the longer of the two); the route's total timeout is disabled (nginx has "
                "none; Envoy's 15 s default never applies)"
            ),
            default="`60` s",
            difference="Envoy has one idle timer for both directions",
        ),
        Key(
            ("proxy-next-upstream",),
            (
                "route `retry_policy.retry_on` (`error` → connect-failure, refused-stream, reset; `timeout`; "
                "`http_5xx` codes as retriable status codes; `non_idempotent` allows POST/PATCH/LOCK retries; "
                "`off` → none)"
            ),
            default="`error timeout`",
            difference=(
                "`invalid_header` is approximated by retrying on reset. Without the annotation, the default is set "
                "once per virtual host and retries only connect failures and refused streams (safe for every "
                "method, and cheap for Envoy to build at 10,000 hosts); resets after the request was sent are "
                "retried (idempotent methods only) when the annotation is given"
            ),
        ),
        Key(
            ("proxy-next-upstream-tries",),
            "total tries; Envoy `num_retries` = tries - 1",
            default="`3`",
            validator=integer(0, 100),
        ),
        Key(("proxy-next-upstream-timeout",), "retry budget per request (0 = none)", default="`0`", validator=DURATION),
    )

    def _seconds(self, ann: Annotations, ctx: ParseContext, key: str, default: float, note: str = "") -> float | None:
        if not ann.has(key):
            return None
        value = ctx.seconds(ann, key, default)
        if value <= 0 and key != "proxy-next-upstream-timeout":
            ctx.warn(key, f"timeout must be positive; using default {default:g}s")
            return default
        if not any(f.key == key for f in ctx.findings):
            ctx.converted(key, f"{value:g}s{note}")
        return value

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        connect = self._seconds(ann, ctx, "proxy-connect-timeout", 5.0)
        if connect is not None:
            out.append(ConnectTimeout(connect))
        read = self._seconds(ann, ctx, "proxy-read-timeout", 60.0)
        send = self._seconds(ann, ctx, "proxy-send-timeout", 60.0)
        idle = [v for v in (read, send) if v is not None]
        if idle:
            # Envoy has one idle timer for both directions: the longer of the two that were set.
            out.append(IdleTimeout(max(idle)))
        if any(ann.has(k) for k in self.keys[3:]):
            out.append(self._retries(ann, ctx))
        return out

    def _retries(self, ann: Annotations, ctx: ParseContext) -> Retries:
        tokens: tuple[str, ...] = DEFAULT_NEXT_UPSTREAM
        raw = ann.get("proxy-next-upstream")
        if raw is not None:
            items = tuple(dict.fromkeys(raw.replace(",", " ").split()))
            bad = [t for t in items if t not in NEXT_UPSTREAM_TOKENS]
            if bad or not items:
                ctx.warn("proxy-next-upstream", f"invalid tokens {bad or [raw]}; using default 'error timeout'")
            elif "off" in items:
                tokens = ()
                ctx.converted("proxy-next-upstream", "no retries")
            else:
                tokens = items
                note = "" if "non_idempotent" in items else "; POST, LOCK and PATCH are not retried"
                if "invalid_header" in items:
                    note += "; invalid_header is approximated by retrying on reset"
                ctx.converted("proxy-next-upstream", "retry on " + " ".join(items) + note)
        tries = ctx.integer(ann, "proxy-next-upstream-tries", DEFAULT_TRIES, minimum=0, maximum=100)
        if ann.has("proxy-next-upstream-tries") and not any(f.key == "proxy-next-upstream-tries" for f in ctx.findings):
            msg = f"up to {UNLIMITED_TRIES_RETRIES} retries (nginx: no limit)" if tries == 0 else f"{tries - 1} retries"
            ctx.converted("proxy-next-upstream-tries", msg)
        retries = UNLIMITED_TRIES_RETRIES if tries == 0 else tries - 1
        timeout = (
            self._seconds(
                ann, ctx, "proxy-next-upstream-timeout", 0.0, " (Envoy bounds the whole request, retries included)"
            )
            or 0.0
        )
        return Retries(tokens, retries, timeout)
