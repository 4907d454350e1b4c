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

from controlplane.ingress import registry
from controlplane.ingress.annotations.base import Family, valid_re2
from controlplane.ingress.convert import IngressIR, PathRule
from controlplane.ir import Finding, Forward, IngressRef, PathMatch, Redirect, Route, VirtualHost
from controlplane.ir.names import vhost_name
from controlplane.ir.policies import Policy, RegexPaths


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

    # Alternative backends (canaries) attach to the primary with the same host, path and type.
    alternatives = {ir.ref: registry.alternative(ir.annotations) for ir in ordered}
    primaries: dict[tuple[str, str], tuple[IngressIR, PathRule]] = {}
    canaries: list[tuple[IngressIR, PathRule, tuple[Family, Policy]]] = []
    for ir in ordered:
        canary = alternatives[ir.ref]
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
            if ir.default_backend is None or alternatives[ir.ref]:
                continue
            if host in ir.hosts or host == "":
                primaries[("/", "Prefix")] = (
                    ir,
                    PathRule(host, "/", "Prefix", ir.default_backend, "defaultBackend", ir.default_backend_cluster),
                )
                break

    canary_by_key: dict[tuple[str, str], tuple[IngressIR, PathRule, tuple[Family, Policy]]] = {}
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
        if host in ir.hosts and not alternatives[ir.ref]:
            extra.extend(registry.extra_routes(ir.annotations, host, ir.ref))

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
        routes.extend(_with_alternative(base, canary_by_key.get(key)))
        redirects[ir.ref] = registry.redirect_to_https(ir.annotations, host in tls_hosts)

    https_vhost = VirtualHost(vhost_name(host), domains, tuple(routes), authority)
    if any(redirects.values()):
        port = None if https_port == 443 else https_port
        to_https = Redirect(code=308, scheme="https", port=port)
        http_routes = tuple(replace(r, action=to_https, policies=()) if redirects.get(r.source) else r for r in routes)
        http_vhost = VirtualHost(vhost_name(host), domains, http_routes, authority)
    else:
        http_vhost = https_vhost
    return HostResult(http=http_vhost, https=https_vhost, findings=tuple(findings))


def _with_alternative(primary: Route, alt: tuple[IngressIR, PathRule, tuple[Family, Policy]] | None) -> list[Route]:
    """The routes that replace one primary rule when an alternative backend attaches to it."""
    if alt is None:
        return [primary]
    _ir, rule, (family, policy) = alt
    if not isinstance(rule.action, Forward):
        return [primary]
    return family.alternative_routes(primary, rule.action, policy)
