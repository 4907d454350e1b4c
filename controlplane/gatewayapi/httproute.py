"""One HTTPRoute rule -> IR routes: matches, filters, weighted backends and timeouts.

Precedence (the spec's order, HTTPRouteRule docs): Exact path, then the longest prefix, then a
method match, then more header matches, then more query matches, then the oldest route, then
"namespace/name" alphabetically, then rule and match order. RegularExpression paths (their place is
implementation-specific) come after Exact and before every prefix, longer patterns first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.gatewayapi.kinds import as_list, as_map, parse_duration
from controlplane.ingress.hosts import valid_path_regex
from controlplane.ir import (
    DirectResponse,
    Forward,
    HeaderMatch,
    IngressRef,
    PathMatch,
    QueryMatch,
    Redirect,
    Route,
    RouteAction,
    WeightedCluster,
)
from controlplane.ir.policies import (
    ClusterMirrors,
    HeaderEdits,
    HostRewrite,
    PathRewrite,
    RequestHeaderEdits,
    RequestTimeout,
    ResponseHeaderEdits,
    RoutePolicy,
)

# The translator features (controlplane/translate/policies/httproute.py) only this frontend's policies use.
FEATURES_USED = ("header-edits", "path-rewrite", "request-timeout", "cluster-mirror")

Problem = tuple[str, str, str]  # (condition type, reason, message)
# A backendRef -> (cluster name, None) or (None, (reason, message)).
ResolveBackend = Callable[[Mapping[str, Any]], tuple[str | None, tuple[str, str] | None]]


@dataclass(frozen=True)
class RouteEntry:
    """One IR route of an HTTPRoute with what orders it among the routes of its host."""

    route: Route
    created: str
    rule: int
    match: int

    def precedence(self) -> tuple[Any, ...]:
        r = self.route
        return (merge_key(r), self.created, f"{r.source.namespace}/{r.source.name}", self.rule, self.match)


_RANK = {"exact": 0, "regex": 1, "prefix": 2, "string_prefix": 2}


def merge_key(route: Route) -> tuple[Any, ...]:
    """The part of the precedence that also orders an HTTPRoute's routes among an Ingress's: exact,
    then regular expressions (longer first; before prefixes, as Envoy Gateway orders them, else a
    PathPrefix "/" would hide every one), then longer prefixes; then method, header, query counts."""
    method = any(h.name == ":method" for h in route.headers)
    headers = sum(1 for h in route.headers if h.name != ":method")
    m = route.match
    return (_RANK[m.kind], -len(m.value), m.value, not method, -headers, -len(route.query))


@dataclass(frozen=True)
class RuleResult:
    entries: tuple[RouteEntry, ...]
    problems: tuple[Problem, ...]


def _path(raw: Mapping[str, Any] | None) -> tuple[PathMatch | None, str | None]:
    raw = raw or {}
    kind = str(raw.get("type") or "PathPrefix")
    value = str(raw.get("value") or "/")
    if kind == "Exact":
        return PathMatch("exact", value), None
    if kind == "PathPrefix":
        if not value.startswith("/"):
            return None, f"path prefix {value!r} does not start with '/'"
        return PathMatch("prefix", value.rstrip("/") or "/"), None
    if kind == "RegularExpression":
        if not valid_path_regex(value):
            return None, f"path {value!r} is not a valid RE2 regex"
        return PathMatch("regex", value), None
    return None, f"path match type {kind!r} is not supported"


def header_matches(raw: list[Any]) -> tuple[tuple[HeaderMatch, ...], str | None]:
    out: list[HeaderMatch] = []
    seen: set[str] = set()
    for h in raw:
        name = str(h.get("name") or "").lower()
        if not name or name in seen:  # the spec: the first of equal names wins
            continue
        seen.add(name)
        value = str(h.get("value") or "")
        if str(h.get("type") or "Exact") == "RegularExpression":
            if not valid_path_regex(value):
                return (), f"header {name} regex {value!r} is not valid RE2"
            out.append(HeaderMatch(name, regex=value))
        else:
            out.append(HeaderMatch(name, exact=value))
    return tuple(out), None


def _query(raw: list[Any]) -> tuple[tuple[QueryMatch, ...], str | None]:
    out: list[QueryMatch] = []
    seen: set[str] = set()
    for q in raw:
        name = str(q.get("name") or "")
        if not name or name in seen:
            continue
        seen.add(name)
        value = str(q.get("value") or "")
        if str(q.get("type") or "Exact") == "RegularExpression":
            if not valid_path_regex(value):
                return (), f"query parameter {name} regex {value!r} is not valid RE2"
            out.append(QueryMatch(name, regex=value))
        else:
            out.append(QueryMatch(name, exact=value))
    return tuple(out), None


def _edits(raw: Mapping[str, Any] | None) -> HeaderEdits:
    raw = as_map(raw)

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        return tuple((str(h.get("name") or ""), str(h.get("value") or "")) for h in as_list(raw.get(key))
                     if isinstance(h, Mapping) and h.get("name"))  # fmt: skip

    return HeaderEdits(pairs("set"), pairs("add"), tuple(str(n) for n in as_list(raw.get("remove"))))


@dataclass
class Filters:
    policies: list[RoutePolicy]
    redirect: Redirect | None = None
    rewrite_prefix: str | None = None
    unsupported: str | None = None


def parse_filters(raw: list[Any], resolve: ResolveBackend, problems: list[Problem]) -> Filters:
    out = Filters([])
    mirrors: list[tuple[str, float]] = []
    for f in raw:
        if not isinstance(f, Mapping):
            continue
        kind = str(f.get("type") or "")
        if kind == "RequestHeaderModifier":
            out.policies.append(RequestHeaderEdits(_edits(f.get("requestHeaderModifier"))))
        elif kind == "ResponseHeaderModifier":
            out.policies.append(ResponseHeaderEdits(_edits(f.get("responseHeaderModifier"))))
        elif kind == "RequestRedirect":
            r = as_map(f.get("requestRedirect"))
            path = as_map(r.get("path"))
            ptype = path.get("type")
            scheme, port = r.get("scheme"), r.get("port")
            if port is None and scheme is not None:  # the spec: the scheme's well-known port
                port = {"http": 80, "https": 443}.get(str(scheme))
                if r.get("hostname"):  # the new Host carries no port: the well-known one goes unsaid (SHOULD NOT)
                    port = None
            # Neither: the listener's port, which is the port the client used (kept from its Host).
            code = r.get("statusCode") or 302
            if code not in (301, 302, 303, 307, 308):
                problems.append(("Accepted", "UnsupportedValue", f"redirect statusCode {code!r}; 302 sent"))
                code = 302
            out.redirect = Redirect(
                code=code,
                scheme=scheme,
                host=r.get("hostname"),
                port=port,
                path=path.get("replaceFullPath") if ptype == "ReplaceFullPath" else None,
                prefix=path.get("replacePrefixMatch") if ptype == "ReplacePrefixMatch" else None,
            )
        elif kind == "URLRewrite":
            r = as_map(f.get("urlRewrite"))
            if r.get("hostname"):
                out.policies.append(HostRewrite(str(r["hostname"])))
            path = as_map(r.get("path"))
            if path.get("type") == "ReplaceFullPath":
                out.policies.append(PathRewrite(full=str(path.get("replaceFullPath") or "/")))
            elif path.get("type") == "ReplacePrefixMatch":
                out.policies.append(PathRewrite(prefix=str(path.get("replacePrefixMatch") or "/")))
        elif kind == "RequestMirror":
            m = as_map(f.get("requestMirror"))
            cluster, problem = resolve(as_map(m.get("backendRef")))
            if cluster is None:
                problems.append(("ResolvedRefs", *(problem or ("BackendNotFound", "mirror backend not found"))))
                continue
            percent = 100.0
            if isinstance(m.get("percent"), int):
                percent = float(m["percent"])
            elif isinstance(m.get("fraction"), Mapping):
                frac = m["fraction"]
                percent = 100.0 * int(frac.get("numerator") or 0) / int(frac.get("denominator") or 100)
            mirrors.append((cluster, percent))
        else:
            out.unsupported = f"filter {kind!r} is not supported"
    if mirrors:
        out.policies.append(ClusterMirrors(tuple(mirrors)))
    return out


def backend_action(raw: list[Any], resolve: ResolveBackend, problems: list[Problem]) -> RouteAction:
    clusters: list[WeightedCluster] = []
    for b in raw:
        if not isinstance(b, Mapping):
            continue
        weight = b.get("weight", 1)
        weight = weight if isinstance(weight, int) and weight >= 0 else 1
        cluster, problem = resolve(b)
        if cluster is None:
            problems.append(("ResolvedRefs", *(problem or ("BackendNotFound", "backend not found"))))
            continue
        if b.get("filters"):
            problems.append(("Accepted", "UnsupportedValue", "backendRefs[].filters are not supported; ignored"))
        if weight > 0:
            clusters.append(WeightedCluster(cluster, weight))
    merged: dict[str, int] = {}
    for wc in clusters:  # one backend named twice: its weights add up
        merged[wc.cluster] = merged.get(wc.cluster, 0) + wc.weight
    if not merged:
        # No usable backend: the spec asks for a 500 (BackendNotFound, omitted or zero-weight backends).
        return DirectResponse(500)
    return Forward(tuple(WeightedCluster(c, w) for c, w in merged.items()), total_weight=sum(merged.values()))


def rule_routes(
    ref: IngressRef, created: str, index: int, rule: Mapping[str, Any], resolve: ResolveBackend
) -> RuleResult:
    """The routes of `rule` (one per match; a rule without matches matches every path)."""
    problems: list[Problem] = []
    label = str(rule.get("name") or f"rules[{index}]")
    filters = parse_filters(as_list(rule.get("filters")), resolve, problems)
    policies = list(filters.policies)
    timeouts = as_map(rule.get("timeouts"))
    if timeouts:
        request, backend = parse_duration(timeouts.get("request")), parse_duration(timeouts.get("backendRequest"))
        if (timeouts.get("request") and request is None) or (timeouts.get("backendRequest") and backend is None):
            problems.append(("Accepted", "UnsupportedValue", "timeouts: not a Gateway API duration"))
        elif request is not None or backend is not None:
            policies.append(RequestTimeout(request, backend))
    action: RouteAction
    if filters.unsupported:
        problems.append(("Accepted", "UnsupportedValue", filters.unsupported))
        action = DirectResponse(500)
    elif filters.redirect is not None:
        action = filters.redirect
        policies = [p for p in policies if not isinstance(p, ClusterMirrors)]
    else:
        action = backend_action(as_list(rule.get("backendRefs")), resolve, problems)
    entries: list[RouteEntry] = []
    matches = as_list(rule.get("matches")) or [{}]
    for j, m in enumerate(matches):
        if not isinstance(m, Mapping):
            continue
        path, bad = _path(as_map(m.get("path")))
        headers, bad_h = header_matches([h for h in as_list(m.get("headers")) if isinstance(h, Mapping)])
        query, bad_q = _query([q for q in as_list(m.get("queryParams")) if isinstance(q, Mapping)])
        if path is None or bad_h or bad_q:
            problems.append(("Accepted", "UnsupportedValue", str(bad or bad_h or bad_q)))
            continue
        if m.get("method"):
            headers = (HeaderMatch(":method", exact=str(m["method"])), *headers)
        if isinstance(action, Redirect) and action.prefix is not None and path.kind != "prefix":
            problems.append(("Accepted", "UnsupportedValue", "ReplacePrefixMatch needs a PathPrefix match"))
            continue
        route = Route(name=f"{ref}#{label}.matches[{j}]", match=path, action=action, source=ref,
                      headers=headers, policies=tuple(policies), query=query)  # fmt: skip
        entries.append(RouteEntry(route, created, index, j))
    return RuleResult(tuple(entries), tuple(problems))
