"""auth-url (+ auth-signin, auth-response-headers, auth-method): external HTTP authorization.

nginx's auth_request sends a subrequest to auth-url; 2xx lets the request through (copying
the listed response headers upstream), 401/403 are returned to the client, and with
auth-signin a 401 becomes a 302 to the sign-in URL carrying `rd` (the original URL).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from controlplane.ingress.annotations.base import Annotations, Family, Key, ParseContext
from controlplane.ir.policies import ESCAPED_REQUEST_URI, SELF_HOST, ExtAuth

_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


# nginx variables -> Envoy access-log formatter operators (used in the sign-in redirect).
_SIGNIN_VARS = {
    "$escaped_request_uri": ESCAPED_REQUEST_URI,
    "$request_uri": "%REQ(:path)%",
    "$http_host": "%REQ(:authority)%",
    "$host": "%REQ(:authority)%",
    "$scheme": "%REQ(x-forwarded-proto)%",
    "$pass_access_scheme": "%REQ(x-forwarded-proto)%",
}


def signin_template(url: str, param: str = "rd") -> tuple[str | None, list[str]]:
    """auth-signin -> Envoy formatter string for the Location header; adds `rd` as nginx does.

    Returns (template or None if unusable, unknown variables).
    """
    unknown: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(0)
        if name in _SIGNIN_VARS:
            return _SIGNIN_VARS[name]
        unknown.append(name)
        return ""

    if re.search(r"[\s\x00-\x1f\x7f]", url):
        return None, unknown
    out = re.sub(r"\$[a-z_]+", sub, url.replace("%", "%%"))
    if not re.match(r"^(https?://|/)", out):
        return None, unknown
    if not re.search(rf"[?&]{re.escape(param)}=", url):
        # ingress-nginx appends rd=$scheme://$http_host$escaped_request_uri unless rd is present.
        sep = "&" if "?" in out else "?"
        out += f"{sep}{param}=%REQ(x-forwarded-proto)%://%REQ(:authority)%{ESCAPED_REQUEST_URI}"
    return out, unknown


class ExtAuthFamily(Family):
    name = "ext-auth"
    fields = (
        Key(
            ("auth-url",),
            "ext_authz HTTP service (a cluster for the URL): 2xx passes, 401/403 returned to the client",
            difference="invalid URL **rejects** the Ingress; nginx variables in the auth path are dropped (warning)",
        ),
        Key(
            ("auth-signin",),
            "a 401 from the auth service becomes a 302 to this URL with `rd` (unless it has one) = scheme, Host and "
            "the request URI escaped as a query component, as nginx's `$escaped_request_uri` (`/p?a=b` -> "
            "`%2Fp%3Fa%3Db`; a small Lua step on the route escapes it)",
            difference="unsupported variables left empty (warning)",
        ),
        Key(("auth-response-headers",), "listed auth-response headers copied upstream"),
        Key(
            ("auth-method",),
            "—",
            default="`GET`",
            difference="Envoy sends the client's method to the auth service (warning if another is set)",
        ),
        Key(
            ("auth-request-redirect", "auth-signin-redirect-param", "auth-always-set-cookie"),
            "unsupported with Envoy ext_authz",
            default="—",
            difference="ignored",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out = self._parse(ann, ctx)
        if not out:
            reported = {f.key for f in ctx.findings}
            for key in self.keys:
                if ann.has(key) and key not in reported:
                    ctx.warn(key, "ignored: no usable auth-url")
        return out

    def _parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        url = ann.get("auth-url")
        if url is None:
            for key in self.keys[1:]:
                if ann.has(key):
                    ctx.warn(key, "no auth-url on this Ingress; ignored")
            return []
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"[\s\x00-\x1f\x7f]", url):
            ctx.reject("auth-url", f"invalid URL {url!r}; the Ingress is not served (nginx would answer 500)")
            return []
        self_host = (parts.netloc or "").lower() in ("$host", "$http_host", "$best_http_host")
        if self_host:
            # The auth service is behind this gateway, on the request's own host (oauth2-proxy style).
            parts = urlsplit(url.replace(parts.netloc, SELF_HOST, 1))
        elif "$" in (parts.netloc or ""):
            ctx.reject(
                "auth-url",
                f"{url!r}: an auth service chosen per request ($host) is not supported; the Ingress is not served "
                "rather than served without authentication. Point auth-url at the auth Service",
            )
            return []
        path = parts.path or "/"
        if "$" in path or "$" in parts.query:
            ctx.warn("auth-url", "nginx variables in the auth-url path/query are not expanded; they are dropped")
            path = path.split("$", 1)[0] or "/"
        elif parts.query:
            path += "?" + parts.query
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        if not 0 < port < 65536 or not re.fullmatch(r"[A-Za-z0-9.-]+|[0-9a-fA-F:]+", parts.hostname):
            ctx.reject("auth-url", f"invalid host or port in {url!r}; the Ingress is not served")
            return []
        method = "GET"
        raw_method = ann.get("auth-method")
        if raw_method is not None:
            if raw_method.upper() in _METHODS:
                method = raw_method.upper()
                if method != "GET":
                    ctx.warn("auth-method", f"Envoy sends the client's method to the auth service, not {method}")
                else:
                    ctx.converted("auth-method")
            else:
                ctx.warn("auth-method", f"invalid method {raw_method!r}; using GET")
        headers: list[str] = []
        raw_headers = ann.get("auth-response-headers")
        if raw_headers is not None:
            for h in (x.strip() for x in raw_headers.split(",")):
                if not h:
                    continue
                if _HEADER.match(h):
                    if h.lower() not in headers:
                        headers.append(h.lower())
                else:
                    ctx.warn("auth-response-headers", f"invalid header name {h!r} ignored")
            if not any(f.key == "auth-response-headers" for f in ctx.findings):
                ctx.converted("auth-response-headers", f"copied upstream: {', '.join(headers)}")
        param = ann.get("auth-signin-redirect-param") or "rd"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", param):
            ctx.warn("auth-signin-redirect-param", f"invalid parameter name {param!r}; using rd")
            param = "rd"
        elif ann.has("auth-signin-redirect-param"):
            ctx.converted("auth-signin-redirect-param", f"sign-in redirect carries the URL in {param}=")
        set_cookie = ctx.boolean(ann, "auth-always-set-cookie", False)
        if set_cookie:
            ctx.converted("auth-always-set-cookie", "Set-Cookie of the auth service is passed to the client")
        signin: str | None = None
        raw_signin = ann.get("auth-signin")
        if raw_signin is not None:
            signin, unknown = signin_template(raw_signin, param)
            if signin is None:
                ctx.warn("auth-signin", f"invalid URL {raw_signin!r}; 401 is returned instead of a redirect")
            elif unknown:
                ctx.warn("auth-signin", f"variables {', '.join(unknown)} are not supported and left empty")
            else:
                ctx.converted("auth-signin", "401 from the auth service becomes a 302 to the sign-in URL")
        for key in ("auth-request-redirect",):
            if ann.has(key):
                ctx.report("unsupported", key, "not supported with Envoy ext_authz; ignored")
        if self_host:
            ctx.converted("auth-url", f"external auth via this gateway: {parts.scheme}://<request host>{path}")
        else:
            ctx.converted("auth-url", f"external auth via {parts.scheme}://{parts.hostname}:{port}{path}")
        return [ExtAuth(parts.scheme, parts.hostname, port, path, method, tuple(headers), signin, set_cookie)]
