"""permanent-redirect, temporal-redirect and app-root: answers the gateway gives without a backend.

As ingress-nginx: temporal wins over permanent; permanent-redirect-code outside 300-308 and
temporal-redirect-code outside 300-307 fall back to 301 / 302; the URL is sent exactly as written,
except that a path (`/new-location`) gets the request's origin in front as nginx's default
`absolute_redirect on` does, unless relative-redirects turns that off (RedirectOrigin).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from controlplane.ingress.annotations.base import (
    BOOLEAN,
    Annotations,
    Family,
    Key,
    ParseContext,
    ParsedAnnotations,
    Validator,
    integer,
)
from controlplane.ir import IngressRef, PathMatch, Redirect, Route
from controlplane.ir.policies import AppRoot, RedirectOrigin, UrlRedirect


def app_root_routes(policy: AppRoot, host: str, source: IngressRef) -> list[Route]:
    """app-root: a request for exactly `/` on each host of the Ingress gets a 302 to the path."""
    return [Route(name=f"{source}#app-root", match=PathMatch("exact", "/"), action=Redirect(302, path=policy.path),
                  source=source)]  # fmt: skip


# ingress-nginx's validator for the URLs (parser.URLIsValidRegex): a value with any other character
# fails validation, and its redirect parser then fails the whole Ingress, which is not served.
_URL_CHARS = re.compile(r"^[\-._~a-zA-Z0-9/:,?&=]*$")
_INT = re.compile(r"^[+-]?[0-9]+$")  # Go's strconv.Atoi (parser.ValidateInt)


def _numeric_port(url: str) -> bool:
    """Go's url.Parse refuses a port that is not a number (isValidURL, run on temporal-redirect only)."""
    try:
        _ = urlsplit(url).port
    except ValueError:
        return False
    return True


def _http_url(url: str) -> bool:
    """ingress-nginx's isValidURL for temporal-redirect: Go parses it and its scheme starts with http."""
    return _numeric_port(url) and urlsplit(url).scheme.startswith("http")


def _code_validator(low: int, high: int) -> Validator:
    """Out of range: the default (a warning). Not an integer at all: rejected (not a warning), so the
    examples of values it refuses are the out-of-range ones."""
    within = integer(low, high)
    return Validator(f"integer {low}..{high}", within.accepts, within.valid, (str(low - 1), str(high + 1)))


class RedirectFamily(Family):
    name = "redirects"
    fields = (
        Key(
            ("permanent-redirect",),
            (
                "nginx `return <code> <URL>`: a route direct response whose `Location` is the URL exactly as "
                "written (no `/` added, its own path and query kept, the request's never appended). A value with "
                "characters ingress-nginx's validator refuses (other than letters, digits and `-._~/:,?&=`) "
                "**rejects** the Ingress, as ingress-nginx then does not serve it. A port that is not a number "
                "(`http://h:x`) is sent as written too: ingress-nginx checks permanent-redirect with that "
                "validator only, never Go's url.Parse. A path (`/new-location`) is made absolute as nginx's "
                "default `absolute_redirect on`: a small per-route Lua step puts `http(s)://` (by the "
                "connection's TLS) + the Host lowercased without its port or trailing dot in front "
                "(`http://host/new-location`); with `use-port-in-redirects` and `--public-https-port` other "
                "than 443, HTTPS Locations name that port (nginx names its own port unless 80/443)"
            ),
        ),
        Key(
            ("permanent-redirect-code",),
            (
                "300-308, else 301; 301/302/303/307/308 carry the `Location`, other codes send the URL as the body "
                "without `Location` (as nginx's `return`). Not an integer: the Ingress is rejected (read even "
                "without permanent-redirect, as ingress-nginx)"
            ),
            default="`301`",
            validator=_code_validator(300, 308),
        ),
        Key(
            ("temporal-redirect",),
            (
                "as `permanent-redirect`; wins over it (permanent-redirect and its code are then not read); must "
                "be `http(s)://…`, else no redirect at all (warning), as ingress-nginx"
            ),
        ),
        Key(
            ("temporal-redirect-code",),
            "300-307, else 302 (not an integer: the Ingress is rejected, as ingress-nginx does not serve it)",
            default="`302`",
            validator=_code_validator(300, 307),
        ),
        Key(
            ("relative-redirects",),
            (
                "nginx `absolute_redirect off`: a path URL of permanent-redirect is sent as written "
                "(`Location: /new-location`); absolute URLs are never changed"
            ),
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("app-root",),
            "a request for exactly `/` gets a 302 to the path (an extra route)",
            difference="`/` or an invalid path: warning, ignored",
        ),
    )

    def _code(self, ann: Annotations, ctx: ParseContext, key: str, default: int, top: int) -> int | None:
        """The code, or None when ingress-nginx's validation fails (the Ingress is not served)."""
        raw = ann.get(key)
        if raw is not None and raw and not _INT.match(raw):
            ctx.reject(key, f"{raw!r} is not an integer: ingress-nginx does not serve the Ingress")
            return None
        code = ctx.integer(ann, key, default, minimum=300, maximum=top)
        if ann.has(key) and not any(f.key == key for f in ctx.findings):
            ctx.converted(key)
        return code

    def _url(self, ann: Annotations, ctx: ParseContext, key: str) -> str | None:
        """The URL, "" when absent or empty, None when its characters fail validation (rejected)."""
        url = ann.get(key) or ""
        if url and not _URL_CHARS.match(url):
            ctx.reject(key, f"{url!r} has characters ingress-nginx's validator refuses (allowed: letters, digits, "
                       "-._~/:,?&=): it does not serve the Ingress")  # fmt: skip
            return None
        return url

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        """In the order of ingress-nginx's redirect parser: temporal-redirect (and its code) first; only
        without it permanent-redirect-code (read even without a URL) and permanent-redirect."""
        out: list[Any] = self._app_root(ann, ctx)
        relative = self._relative(ann, ctx)
        temporal = self._url(ann, ctx, "temporal-redirect")
        if temporal is None:
            return out
        if not temporal and ann.has("temporal-redirect"):
            # ingress-nginx: an empty value is an error of the whole redirect group (permanent-redirect too).
            ctx.warn("temporal-redirect", "empty: ingress-nginx skips the redirect annotations; ignored")
            return out
        if temporal:
            t_code = self._code(ann, ctx, "temporal-redirect-code", 302, 307)
            if t_code is None:
                return out
            for key in ("permanent-redirect", "permanent-redirect-code"):
                if ann.has(key):
                    ctx.warn(key, "ignored: temporal-redirect wins")
            if not _http_url(temporal):
                ctx.warn("temporal-redirect", f"invalid redirect URL {temporal!r} (need http(s)://…); ignored, as "
                         "ingress-nginx skips the redirect")  # fmt: skip
                return out
            out.append(UrlRedirect(temporal, t_code))
            ctx.converted("temporal-redirect", f"{t_code} to {temporal}")
            return out
        if ann.has("temporal-redirect-code"):  # not read by ingress-nginx then: reported only
            ctx.integer(ann, "temporal-redirect-code", 302, minimum=300, maximum=307)
            if not any(f.key == "temporal-redirect-code" for f in ctx.findings):
                ctx.converted("temporal-redirect-code", "no effect without temporal-redirect")
        permanent = self._url(ann, ctx, "permanent-redirect")
        p_code = self._code(ann, ctx, "permanent-redirect-code", 301, 308)
        if permanent is None or p_code is None:
            return out
        if permanent:  # sent as written, even `http://h:x` (ingress-nginx runs no url.Parse on it)
            out.append(UrlRedirect(permanent, p_code))
            origin = permanent.startswith("/") and not relative
            ctx.converted("permanent-redirect", f"{p_code} to {'http(s)://<host>' if origin else ''}{permanent}")
            if origin:
                # nginx's absolute_redirect: the origin goes in front. use-port-in-redirects belongs
                # to (and is reported by) the ssl-redirect family; read here without a finding.
                port_in = (ann.get("use-port-in-redirects") or "").lower() == "true"
                out.append(RedirectOrigin(port_in_redirects=port_in))
        elif ann.has("permanent-redirect"):
            ctx.warn("permanent-redirect", "empty; ignored")
        return out

    def _relative(self, ann: Annotations, ctx: ParseContext) -> bool:
        """relative-redirects (nginx `absolute_redirect off`); only a path URL is affected (temporal-redirect
        must be http(s)://, so it always is absolute)."""
        relative = ctx.boolean(ann, "relative-redirects", False)
        if ann.has("relative-redirects") and not any(f.key == "relative-redirects" for f in ctx.findings):
            ctx.converted("relative-redirects", "a path permanent-redirect URL is sent "
                          + ("as written" if relative else "with the request's origin in front"))
        return relative

    def _app_root(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        root = ann.get("app-root")
        if root is not None:
            if not re.fullmatch(r"/[^\s?#]*(\?[^\s#]*)?", root) or root == "/":
                ctx.warn("app-root", f"invalid app-root {root!r} (need a path other than /); ignored")
            else:
                out.append(AppRoot(root))
                ctx.converted("app-root", f"/ redirects (302) to {root}")
        return out

    def extra_routes(self, parsed: ParsedAnnotations, host: str, source: IngressRef) -> list[Route]:
        root = parsed.get(AppRoot)
        return app_root_routes(root, host, source) if root is not None else []
