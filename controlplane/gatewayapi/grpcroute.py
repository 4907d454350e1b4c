"""One GRPCRoute rule -> IR routes (GRPCRoute core: service/method matches, header matches, weighted
backends; header modifier and mirror filters as for HTTPRoute).

A gRPC call is a POST to `/<service>/<method>`: an Exact match is that path (a service alone: every
method of it, a method alone: that method of any service); RegularExpression builds the path regex
from both parts. Backends are HTTP/2 clusters: the Service port's cluster variant with the upstream
protocol GRPC (ir.policies.UpstreamProtocol), the same variant a `backend-protocol: GRPC` Ingress uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controlplane.gatewayapi.httproute import (
    ResolveBackend,
    RouteEntry,
    RuleResult,
    backend_action,
    header_matches,
    parse_filters,
)
from controlplane.gatewayapi.kinds import as_list, as_map
from controlplane.ingress.hosts import valid_path_regex
from controlplane.ir import DirectResponse, IngressRef, PathMatch, Route, RouteAction
from controlplane.ir.policies import ClusterMirrors, RequestHeaderEdits, ResponseHeaderEdits, UpstreamProtocol

GRPC_UPSTREAM = (UpstreamProtocol("GRPC"),)
_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")
_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


def method_match(raw: Mapping[str, Any]) -> tuple[PathMatch | None, str | None]:
    service, method = raw.get("service"), raw.get("method")
    if str(raw.get("type") or "Exact") == "RegularExpression":
        pattern = f"/{service or '[^/]+'}/{method or '[^/]+'}"
        return (PathMatch("regex", pattern), None) if valid_path_regex(pattern) else (None, f"{pattern!r} is not RE2")
    for part in (service, method):
        if part is not None and not _NAME.match(str(part)):
            return None, f"{part!r} is not a gRPC service or method name"
    if service and method:
        return PathMatch("exact", f"/{service}/{method}"), None
    if service:
        return PathMatch("prefix", f"/{service}"), None
    if method:
        return PathMatch("regex", f"/[^/]+/{re.escape(str(method))}"), None
    return PathMatch("prefix", "/"), None


def grpc_rule_routes(
    ref: IngressRef, created: str, index: int, rule: Mapping[str, Any], resolve: ResolveBackend
) -> RuleResult:
    problems: list[tuple[str, str, str]] = []
    label = str(rule.get("name") or f"rules[{index}]")
    raw_filters = as_list(rule.get("filters"))
    known = [f for f in raw_filters if as_map(f).get("type") in _FILTERS]
    if len(known) != len(raw_filters):
        problems.append(("Accepted", "UnsupportedValue", "only header modifier and mirror filters are supported"))
    policies = [p for p in parse_filters(known, resolve, problems).policies
                if isinstance(p, RequestHeaderEdits | ResponseHeaderEdits | ClusterMirrors)]  # fmt: skip
    action: RouteAction = backend_action(as_list(rule.get("backendRefs")), resolve, problems)
    if isinstance(action, DirectResponse):
        action = DirectResponse(500)
    entries = []
    for j, m in enumerate(as_list(rule.get("matches")) or [{}]):
        m = as_map(m)
        path, bad = method_match(as_map(m.get("method")))
        headers, bad_h = header_matches([h for h in as_list(m.get("headers")) if isinstance(h, Mapping)])
        if path is None or bad_h:
            problems.append(("Accepted", "UnsupportedValue", str(bad or bad_h)))
            continue
        route = Route(name=f"{ref}#{label}.matches[{j}]", match=path, action=action, source=ref, headers=headers,
                      policies=tuple(policies))  # fmt: skip
        entries.append(RouteEntry(route, created, index, j))
    return RuleResult(tuple(entries), tuple(problems))
