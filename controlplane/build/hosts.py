"""Merge every served Ingress's rules for one host into the host's ordered routes.

Implements the ingress-nginx rules users rely on: oldest Ingress wins a
host+path+pathType conflict (the loser is reported), regex mode spreads to the
whole host, canaries attach to the primary with the same host/path/pathType,
`spec.defaultBackend` is the fallback of the hosts its Ingress names, and
plain-HTTP requests for TLS hosts are redirected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from controlplane.annotations.base import valid_re2
from controlplane.annotations.registry import EXTRA_ROUTES
from controlplane.build.ingress import IngressIR, PathRule
from controlplane.ir import (
    Finding,
    Forward,
    HeaderMatch,
    IngressRef,
    PathMatch,
    Redirect,
    Route,
    VirtualHost,
    WeightedCluster,
)
from controlplane.ir.names import vhost_name
from controlplane.ir.policies import Canary, RegexPaths, SslRedirect


@dataclass(frozen=True)
class HostResult:
    http: VirtualHost
    https: VirtualHost
    findings: tuple[tuple[IngressRef, Finding], ...] = ()


def host_domains(host: str) -> tuple[tuple[str, ...], str | None]:
    """Envoy domains for a host, and the authority regex that limits a wildcard to one label."""
    if host == "":
        return ("*",), None
    if host.startswith("*."):
        suffix = re.escape(host[1:])
        return (host,), f"[^.:]+{suffix}(:[0-9]+)?"
    return (host,), None


def valid_path_regex(pattern: str) -> bool:
    """What Envoy's RE2 compiles: Python re syntax minus lookarounds/backrefs, repeats up to 1000."""
    for low, high in re.findall(r"\{(\d+)(?:,(\d*))?\}", pattern):
        if int(low) > 1000 or (high and int(high) > 1000):
            return False
    return valid_re2(pattern)


def path_match(rule_path: str, path_type: str, regex_mode: bool) -> PathMatch:
    if path_type == "Exact":
        return PathMatch("exact", rule_path)
    if regex_mode:
        return PathMatch("regex", f"(?i)^{rule_path}.*")
    trimmed = rule_path.rstrip("/")
    return PathMatch("prefix", trimmed or "/")


def _conflict_key(rule: PathRule) -> tuple[str, str]:
    ptype = "Prefix" if rule.path_type == "ImplementationSpecific" else rule.path_type
    path = rule.path.rstrip("/") or "/" if ptype == "Prefix" else rule.path
    return (path, ptype)


def merge_host(
    host: str,
    irs: Iterable[IngressIR],
    *,
    tls_hosts: frozenset[str],
    https_port: int = 443,
) -> HostResult:
    """All routes of `host` from the served Ingresses in `irs` (any order)."""
    ordered = sorted((ir for ir in irs if ir.served), key=IngressIR.order_key)
    findings: list[tuple[IngressRef, Finding]] = []
    regex_mode = any(ir.annotations.get(RegexPaths) for ir in ordered if host in ir.hosts)

    primaries: dict[tuple[str, str], tuple[IngressIR, PathRule]] = {}
    canaries: list[tuple[IngressIR, PathRule, Canary]] = []
    for ir in ordered:
        canary = ir.annotations.get(Canary)
        for rule in ir.rules:
            if rule.host != host:
                continue
            key = _conflict_key(rule)
            if canary is not None:
                canaries.append((ir, rule, canary))
            elif key in primaries:
                winner = primaries[key][0].ref
                findings.append(
                    (ir.ref, Finding("conflict", rule.location, f"{host or '*'}{rule.path} is served by {winner}"))
                )
            else:
                primaries[key] = (ir, rule)

    # spec.defaultBackend: fallback of the hosts its Ingress names (and of the catch-all).
    if ("/", "Prefix") not in primaries:
        for ir in ordered:
            if ir.default_backend is None or ir.annotations.get(Canary):
                continue
            if host in ir.hosts or host == "":
                primaries[("/", "Prefix")] = (
                    ir,
                    PathRule(host, "/", "Prefix", ir.default_backend, "defaultBackend"),
                )
                break

    canary_by_key: dict[tuple[str, str], tuple[IngressIR, PathRule, Canary]] = {}
    for ir, rule, canary in canaries:
        key = _conflict_key(rule)
        if key not in primaries:
            findings.append((ir.ref, Finding("warning", rule.location, "canary has no primary Ingress for this path")))
        elif key in canary_by_key:
            findings.append((ir.ref, Finding("conflict", rule.location, "only one canary per primary rule")))
        else:
            canary_by_key[key] = (ir, rule, canary)

    domains, authority = host_domains(host)
    extra: list[Route] = []
    for ir in ordered:
        if host in ir.hosts and not ir.annotations.get(Canary):
            for p in ir.annotations.ingress + ir.annotations.route:
                # Looked up by exact type: an isinstance() walk over the policies cost over a second
                # per 10,000 hosts on a cold build.
                add = EXTRA_ROUTES.get(type(p))
                if add is not None:
                    extra.extend(add(p, host, ir.ref))

    entries = sorted(
        primaries.items(), key=lambda kv: path_match(kv[1][1].path, kv[1][1].path_type, regex_mode).sort_key()
    )
    routes: list[Route] = list(extra)
    redirects: dict[IngressRef, bool] = {}
    for key, (ir, rule) in entries:
        match = path_match(rule.path, rule.path_type, regex_mode)
        if match.kind == "regex" and not valid_path_regex(match.value):
            # Envoy would reject the whole route table over one bad pattern: drop the path, say why.
            findings.append(
                (ir.ref, Finding("warning", rule.location, f"path {rule.path!r} is not a valid RE2 regex; not served"))
            )
            continue
        name = f"{ir.ref}#{rule.location}"
        base = Route(
            name=name,
            match=match,
            action=rule.action,
            source=ir.ref,
            policies=ir.annotations.route,
            case_insensitive=match.kind == "regex",
        )
        routes.extend(_with_canary(base, canary_by_key.get(key)))
        ssl = ir.annotations.get(SslRedirect) or SslRedirect()
        redirects[ir.ref] = ssl.force or (ssl.enabled and host in tls_hosts)

    https_vhost = VirtualHost(vhost_name(host), domains, tuple(routes), authority)
    if any(redirects.values()):
        port = None if https_port == 443 else https_port
        to_https = Redirect(code=308, scheme="https", port=port)
        http_routes = tuple(replace(r, action=to_https, policies=()) if redirects.get(r.source) else r for r in routes)
        http_vhost = VirtualHost(vhost_name(host), domains, http_routes, authority)
    else:
        http_vhost = https_vhost
    return HostResult(http=http_vhost, https=https_vhost, findings=tuple(findings))


def _with_canary(primary: Route, canary: tuple[IngressIR, PathRule, Canary] | None) -> list[Route]:
    """The ordered routes for one primary rule: header, cookie, then weight (ingress-nginx order)."""
    if canary is None or not isinstance(primary.action, Forward):
        return [primary]
    _ir, rule, spec = canary
    if not isinstance(rule.action, Forward):
        return [primary]
    to_canary = replace(primary, name=primary.name + "~canary", action=rule.action)
    out: list[Route] = []
    if spec.header:
        h = spec.header.lower()
        if spec.header_value:
            out.append(replace(to_canary, headers=(HeaderMatch(h, exact=spec.header_value),)))
        elif spec.header_pattern:
            out.append(replace(to_canary, headers=(HeaderMatch(h, regex=f".*(?:{spec.header_pattern}).*"),)))
        else:
            out.append(replace(to_canary, headers=(HeaderMatch(h, exact="always"),)))
            out.append(replace(primary, name=primary.name + "~never", headers=(HeaderMatch(h, exact="never"),)))
    if spec.cookie:
        c = re.escape(spec.cookie)
        out.append(
            replace(
                to_canary,
                name=to_canary.name + "-cookie",
                headers=(HeaderMatch("cookie", regex=f"(.*;\\s*)?{c}=always(;.*)?"),),
            )
        )
        out.append(
            replace(
                primary,
                name=primary.name + "~never-cookie",
                headers=(HeaderMatch("cookie", regex=f"(.*;\\s*)?{c}=never(;.*)?"),),
            )
        )
    if spec.weight <= 0:
        out.append(primary)
    elif spec.weight >= spec.weight_total:
        out.append(replace(to_canary, name=to_canary.name + "-all"))
    else:
        p = primary.action.clusters[0].cluster
        c_cluster = rule.action.clusters[0].cluster
        split = Forward(
            (WeightedCluster(p, spec.weight_total - spec.weight), WeightedCluster(c_cluster, spec.weight)),
            total_weight=spec.weight_total,
        )
        out.append(replace(primary, action=split))
    return out
