"""A fast model of `translate --to gateway-api --verify`, on the IR alone: do the exported Gateway API
objects route like the Ingresses they came from?

Both are compiled (`controlplane.compile`, the reference semantics) with the same Services, Secrets
and EndpointSlices, and a request set derived from every served route (its host, a path its match
accepts, the header values it asks for) is resolved in both route tables by a model of Envoy's
route selection (exact domain then wildcard suffix then catch-all; first matching route). The
outcome compared is what Envoy would do: forward to which Service ports with which weights, or
redirect where with which code, or answer which status. The unit tests run it over every golden
input and corpus file in a second; `--verify` itself replays requests through real Envoys
(controlplane/migration), which this model cannot replace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from controlplane.ir import DirectResponse, Forward, IngressRef, Redirect, Route, VirtualHost
from controlplane.ir.policies import HostRewrite, PathRewrite, RewriteTarget, UrlRedirect


@dataclass(frozen=True)
class Probe:
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    tls: bool = False


@dataclass
class IngressVerdict:
    ref: IngressRef
    checked: int = 0
    equal: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.equal == self.checked


def _base(cluster: str) -> str:
    return cluster.partition("~")[0]


def upstream_request(route: Route, path: str) -> tuple[str, str | None]:
    """The path and Host the backend would get (rewrite-target, URLRewrite, upstream-vhost)."""
    target = route.policy(RewriteTarget)
    rewrite = route.policy(PathRewrite)
    m = route.match
    if target is not None:
        pattern = m.value if m.kind == "regex" else "^" + re.escape(m.value) + ("$" if m.kind == "exact" else ".*")
        flags = re.IGNORECASE if route.case_insensitive else 0
        path = re.sub(pattern, target.substitution(), path, count=1, flags=flags)
    elif rewrite is not None and rewrite.full is not None:
        path = rewrite.full
    elif rewrite is not None and rewrite.prefix is not None:
        matched = m.value if m.kind == "prefix" else "/"
        rest = path[len(matched.rstrip("/")):] if matched != "/" else path[1:]
        keep = rewrite.prefix.rstrip("/")
        path = (keep + "/" + rest.lstrip("/")) if matched == "/" or not keep else keep + rest
        path = path or "/"
    host = route.policy(HostRewrite)
    return path, host.host if host is not None else None


_DEFAULT_PORT = {"http": 80, "https": 443}


def _location(scheme: str, host: str, port: int | None, path: str) -> str:
    shown = "" if port is None or port == _DEFAULT_PORT.get(scheme) else f":{port}"
    return f"{scheme}://{host}{shown}{path or '/'}"


def _port(parts: SplitResult) -> int | None:
    """The URL's port; None when it is not a number (permanent-redirect `http://h:x` is sent as written)."""
    try:
        return parts.port
    except ValueError:
        return None


def redirect_location(route: Route, probe: Probe) -> tuple[int, str] | None:
    """(code, Location) a redirecting route answers `probe` with (the request's own port omitted)."""
    url = route.policy(UrlRedirect)
    if url is not None:
        parts = urlsplit(url.url)
        return url.code, _location(parts.scheme or "http", parts.hostname or probe.host, _port(parts), parts.path)
    a = route.action
    if not isinstance(a, Redirect):
        return None
    if a.url is not None:
        parts = urlsplit(a.url)
        return a.code, _location(parts.scheme or "http", parts.hostname or probe.host, parts.port, parts.path)
    scheme = a.scheme or ("https" if probe.tls else "http")
    path = probe.path
    if a.path is not None:
        path = a.path
    elif a.prefix is not None and route.match.kind == "prefix":
        path = a.prefix.rstrip("/") + probe.path[len(route.match.value.rstrip("/")):] or "/"
    return a.code, _location(scheme, a.host or probe.host, a.port, path)


def outcome(route: Route | None, probe: Probe) -> tuple[Any, ...]:
    if route is None:
        return ("404",)
    path = probe.path
    location = redirect_location(route, probe)
    if location is not None:
        return ("redirect", *location)
    a = route.action
    if isinstance(a, Forward):
        split = tuple(sorted((_base(c.cluster), c.weight * 1000 // max(a.total_weight, 1))
                             for c in a.clusters if c.weight > 0))  # fmt: skip
        return ("forward", split, *upstream_request(route, path))
    if isinstance(a, DirectResponse):
        return ("status", 500 if a.status >= 500 else a.status)  # "no backend": 503 (Ingress) ~ 500 (spec)
    return ("?",)


def _matches(route: Route, probe: Probe) -> bool:
    m, path = route.match, probe.path
    if m.kind == "exact" and path != m.value:
        return False
    if m.kind == "prefix" and not (m.value == "/" or path == m.value or path.startswith(m.value.rstrip("/") + "/")):
        return False
    if m.kind == "string_prefix" and not path.startswith(m.value):
        return False
    flags = re.IGNORECASE if route.case_insensitive else 0
    if m.kind == "regex" and not re.fullmatch(m.value, path, flags):
        return False
    got = {k.lower(): v for k, v in probe.headers}
    for h in route.headers:
        if h.name == ":authority":
            continue
        value = got.get(h.name.lower())
        ok = value is not None and (h.present or (h.exact is not None and value == h.exact)
                                    or (h.regex is not None and re.fullmatch(h.regex, value) is not None))  # fmt: skip
        if ok == h.invert:
            return False
    return not route.query


def select(table: Mapping[str, VirtualHost], probe: Probe) -> Route | None:
    """Envoy's choice: the virtual host by exact domain, then the longest wildcard suffix, then "*";
    then its first matching route."""
    vhost = table.get(probe.host)
    if vhost is None:
        parts = probe.host.split(".")
        for i in range(1, len(parts)):
            vhost = table.get("*." + ".".join(parts[i:]))
            if vhost is not None:
                break
    vhost = vhost or table.get("")
    if vhost is None:
        return None
    return next((r for r in vhost.routes if _matches(r, probe)), None)


def probes(host: str, routes: Iterable[Route], tls: bool) -> list[Probe]:
    out = []
    name = host.replace("*", "any") if host else "probe.example"
    for r in routes:
        headers = tuple((h.name, h.exact) for h in r.headers if h.exact is not None and h.name != ":authority")
        paths = [r.match.value] if r.match.kind in ("exact", "string_prefix") else []
        if r.match.kind == "prefix":
            paths = [r.match.value, r.match.value.rstrip("/") + "/probe"]
        if r.match.kind == "regex":
            paths = [p for p in [regex_sample(r.match.value, r.case_insensitive)] if p is not None]
        for p in paths:
            out.append(Probe(name, p, headers, tls))
            if headers:
                out.append(Probe(name, p, (), tls))
    return out


def regex_sample(pattern: str, case_insensitive: bool) -> str | None:
    """A path the pattern accepts: its literal beginning, plus a few common tails (None if none fits)."""
    body = re.sub(r"^\(\?i\)", "", pattern).lstrip("^")
    literal = re.match(r"[A-Za-z0-9/_\-.]*", body)
    start = literal.group(0).rstrip(".") if literal else ""
    flags = re.IGNORECASE if case_insensitive else 0
    for tail in ("", "1", "a", "/a", "/1", "a/b", "/a/b", "1/a"):
        candidate = (start + tail) or "/"
        try:
            if re.fullmatch(pattern.replace("(?i)", ""), candidate, flags):
                return candidate
        except re.error:
            return None
    return None


def tables(host_results: Mapping[str, Any]) -> tuple[dict[str, VirtualHost], dict[str, VirtualHost]]:
    http = {h: r.http for h, r in host_results.items() if r.http.routes or r.https.routes}
    https = {h: r.https for h, r in host_results.items() if r.http.routes or r.https.routes}
    return http, https


def verify(original: Any, exported: Any) -> dict[IngressRef, IngressVerdict]:
    """Per Ingress: requests derived from its routes, and those whose outcome differs."""
    a_http, a_https = tables(original.host_results)
    b_http, b_https = tables(exported.host_results)
    verdicts = {ref: IngressVerdict(ref) for ref, ir in original.irs.items() if ir.served}
    tls_hosts = {h for t in original.gateway.tls_hosts for h in t.hosts}
    for host, result in sorted(original.host_results.items()):
        for tls in (False, True) if host in tls_hosts else (False,):
            vhost = result.https if tls else result.http
            for route in vhost.routes:
                verdict = verdicts.get(route.source)
                if verdict is None:
                    continue
                for probe in probes(host, [route], tls):
                    mine = select(a_https if tls else a_http, probe)
                    if mine is None or mine.source != route.source:
                        continue  # another route of the host answers it: that one's probes cover it
                    want = outcome(mine, probe)
                    got = outcome(select(b_https if tls else b_http, probe), probe)
                    verdict.checked += 1
                    if want == got:
                        verdict.equal += 1
                    else:
                        scheme = "https" if tls else "http"
                        verdict.differences.append(f"{scheme}://{probe.host}{probe.path} {dict(probe.headers)}: "
                                                   f"Ingress {want}, Gateway API {got}")  # fmt: skip
    return verdicts
