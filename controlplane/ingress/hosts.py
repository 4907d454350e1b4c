"""Merge every served Ingress's rules for one host into the host's ordered routes.

Implements the ingress-nginx rules users rely on: oldest Ingress wins a
host+path+pathType conflict (the loser is reported), regex mode spreads to the
whole host, canaries attach to the primary with the same host/path/pathType,
`spec.defaultBackend` is the fallback of the hosts its Ingress names (the catch-all only
without rules), plain-HTTP requests for TLS hosts are redirected, a denied Ingress (an auth Secret
that does not exist) answers 503 on its paths, and from-to-www-redirect's twin name redirects to the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from controlplane.ingress import registry
from controlplane.ingress.aliases import www_twin
from controlplane.ingress.annotations.base import Family
from controlplane.ingress.convert import IngressIR, PathRule
from controlplane.ingress.locations import locations, valid_path_regex
from controlplane.ir import (
    DirectResponse,
    Finding,
    Forward,
    HeaderMatch,
    IngressRef,
    PathMatch,
    Redirect,
    Route,
    VirtualHost,
    find_policy,
)
from controlplane.ir.names import vhost_name
from controlplane.ir.policies import (
    Canary,
    ClientCert,
    ClientCertCheck,
    CookieAffinity,
    Cors,
    DeniedLocation,
    HttpsLocation,
    Policy,
    RedirectOrigin,
    RegexPaths,
    RewriteTarget,
    SslRedirect,
    UrlRedirect,
    WwwRedirect,
)

# nginx.tmpl's `return 503` for a denied location (its error page names the status).
DENIED = DirectResponse(503, "503 Service Temporarily Unavailable\n")


@dataclass(frozen=True)
class HostResult:
    http: VirtualHost
    https: VirtualHost
    findings: tuple[tuple[IngressRef, Finding], ...] = ()


def host_domains(host: str) -> tuple[tuple[str, ...], str | None]:
    """Envoy domains for a host, and the authority regex that limits a wildcard to one label (host names
    match case-insensitively, as Envoy's domains and nginx's server_name do)."""
    if host == "":
        return ("*",), None
    if host.startswith("*."):
        suffix = re.escape(host[1:])
        return (host,), f"(?i)[^.:]+{suffix}(:[0-9]+)?"
    return (host,), None


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
    aliases: tuple[str, ...] = (),
    alias_findings: tuple[tuple[IngressRef, Finding], ...] = (),
) -> HostResult:
    """All routes of `host` from the served Ingresses in `irs` (any order); `aliases` (from
    aliases.assign_aliases) are more names of the same virtual host."""
    ordered = sorted((ir for ir in irs if ir.served), key=IngressIR.order_key)
    findings: list[tuple[IngressRef, Finding]] = list(alias_findings)
    regex_mode = any(ir.annotations.get(RegexPaths) for ir in ordered if host in ir.hosts and not _catch_all(host, ir))

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

    # spec.defaultBackend, as ingress-nginx's createServers: a host's root location is the default backend
    # of the oldest (non-canary) Ingress naming the host, if it has one; the catch-all's is that of the
    # oldest Ingress with a default backend and no rules at all (unknown hosts otherwise get a 404).
    if ("/", "Prefix") not in primaries:
        for ir in ordered:
            if alternatives[ir.ref]:
                continue
            if host == "" and (ir.has_rules or ir.default_backend is None):
                continue
            if host != "" and host not in ir.hosts:
                continue
            if ir.default_backend is not None:
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
    if aliases:
        domains = (*domains, *aliases)
        if authority is not None:  # a wildcard host's one-label rule must not refuse its aliases
            named = (host_domains(a)[1] or "(?i)" + re.escape(a) + "(:[0-9]+)?" for a in aliases)
            authority = "|".join([authority, *named])
    extra: list[Route] = []
    for ir in ordered:
        if host in ir.hosts and not alternatives[ir.ref] and not _catch_all(host, ir):
            extra.extend(registry.extra_routes(ir.annotations, host, ir.ref))

    routes: list[Route] = list(extra)
    redirects: dict[IngressRef, bool] = {}
    for key, (ir, rule), match, suffix in locations(primaries, regex_mode):
        if match.kind == "regex" and not valid_path_regex(match.value):
            # Envoy would reject the whole route table over one bad pattern: drop the path, say why.
            findings.append(
                (ir.ref, Finding("warning", rule.location, f"path {rule.path!r} is not a valid RE2 regex; not served"))
            )
            continue
        name = f"{ir.ref}#{rule.location}{suffix}"
        catch_all = _catch_all(host, ir)
        policies = ir.annotations.route
        if catch_all:
            policies = tuple(p for p in policies if not isinstance(p, (UrlRedirect, RedirectOrigin, RewriteTarget)))
        policies = _cookie_path_default(policies, rule.path)
        policies = _redirect_origin_port(policies, https_port)
        denied = ir.annotations.get(DeniedLocation) is not None
        base = Route(
            name=name,
            match=match,
            action=DENIED if denied else rule.action,
            source=ir.ref,
            policies=policies,
            case_insensitive=match.kind == "regex",
        )
        routes.extend(_with_alternative(base, canary_by_key.get(key)))
        redirects[ir.ref] = not catch_all and registry.redirect_to_https(ir.annotations, host in tls_hosts)

    check = _client_cert_check(host, ordered) if host in tls_hosts else None
    if check is not None:
        routes = [replace(r, policies=(*r.policies, check)) for r in routes]
    secure = tuple(_secure_cookie(r) for r in routes)
    www = _www_source(host, ordered, aliases)
    https_vhost = VirtualHost(vhost_name(host), domains, www_routes(host, www, "https", https_port) + secure, authority)
    if any(redirects.values()) or secure != tuple(routes) or www is not None:
        ssl = {ir.ref: ir.annotations.get(SslRedirect) or SslRedirect() for ir in ordered}
        http_routes: list[Route] = []
        for r in routes:
            if redirects.get(r.source):
                http_routes.extend(
                    https_redirect_routes(r, "" if aliases else host, https_port, ssl.get(r.source, SslRedirect()))
                )
            else:
                http_routes.append(r)
        http_routes[:0] = www_routes(host, www, "http", 80)
        http_vhost = VirtualHost(vhost_name(host), domains, tuple(http_routes), authority)
    else:
        http_vhost = https_vhost
    return HostResult(http=http_vhost, https=https_vhost, findings=tuple(findings))


def _client_cert_check(host: str, ordered: list[IngressIR]) -> ClientCertCheck | None:
    """The per-request check of `host`'s client certificates, from the Ingress whose TLS settings its
    chain gets (the oldest listing the host in a tls entry, else the oldest with TLS naming it), as
    nginx's server-level ssl_verify_client holds for every location of the server."""
    named = [ir for ir in ordered if any(host in b.hosts for b in ir.tls)]
    source = next(iter(named or [ir for ir in ordered if ir.tls and host in ir.hosts]), None)
    policy = None if source is None else source.annotations.get(ClientCert)
    if policy is None:
        return None
    return ClientCertCheck(policy.mode, policy.error_page, policy.match_cn)


def https_redirect_routes(route: Route, host: str, https_port: int, ssl: SslRedirect) -> list[Route]:
    """The plain-HTTP routes that send `route`'s requests to HTTPS, as ingress-nginx's lua_ingress:
    Location `https://<host without port>[:public port]<request URI>`, 308, and unless
    preserve-trailing-slash one trailing "/" of the request URI (`:path`, query included) dropped.

    The HttpsLocation policy makes Envoy compute that Location from the request (the Host as the
    client spelled it, any port dropped); the redirect actions below say the same for readers of
    the IR (and are what Envoy would send without the policy)."""
    port = None if https_port == 443 and not ssl.port_in_redirects else https_port
    preserve_slash = ssl.preserve_trailing_slash
    named = host if host and not host.startswith("*.") else None
    to_https = Redirect(code=308, scheme="https", port=port, host=named)
    # CORS stays: nginx answers its preflight (a rewrite-phase `return`) before lua_ingress redirects,
    # and sets its headers on the redirect too.
    kept = tuple(p for p in route.policies if isinstance(p, Cors))
    location = HttpsLocation(port=port, strip_trailing_slash=not preserve_slash)
    plain = replace(route, action=to_https, policies=(*kept, location))
    if preserve_slash:
        return [plain]
    out: list[Route] = []
    if route.match.kind == "regex" or route.match.value == "/":
        # "/" becomes the bare origin, which Envoy's redirect action cannot spell (it always sends a path).
        origin = named or "%REQ(:authority)%"
        where = f"https://{origin}" + (f":{port}" if port else "")
        only_root = HeaderMatch(":path", exact="/")
        out.append(replace(plain, name=f"{route.name}#root", action=DirectResponse(308, headers=(("location", where),)),
                           headers=(*route.headers, only_root)))  # fmt: skip
    out.append(replace(plain, name=f"{route.name}#slash", action=replace(to_https, strip_trailing_slash=True),
                       headers=(*route.headers, HeaderMatch(":path", regex=".*/"))))  # fmt: skip
    out.append(plain)
    return out


def _www_source(host: str, ordered: list[IngressIR], aliases: tuple[str, ...]) -> IngressRef | None:
    """The Ingress whose from-to-www-redirect gives `host` its redirecting twin (planned among the aliases)."""
    if www_twin(host) not in aliases:
        return None
    for ir in ordered:
        if ir.annotations.get(WwwRedirect) is not None and ir.annotations.get(Canary) is None:
            return ir.ref
    return None


def www_routes(host: str, source: IngressRef | None, scheme: str, port: int) -> tuple[Route, ...]:
    """ingress-nginx's from-to-www redirect server: requests for the twin name get a 308 to
    `<scheme>://<host>:<port><request URI>`, one trailing "/" of the request URI dropped (its
    `set_by_lua_block $redirect_to`), the port always named (nginx's `$server_port`)."""
    if source is None:
        return ()
    twin = HeaderMatch(":authority", regex=f"(?i){re.escape(www_twin(host))}(:[0-9]+)?")
    to = Redirect(code=308, scheme=scheme, host=host, port=port)
    name = f"{vhost_name(host)}#www-{scheme}"
    every = PathMatch("prefix", "/")
    return (
        Route(f"{name}-root", every, DirectResponse(308, headers=(("location", f"{scheme}://{host}:{port}"),)),
              source, headers=(twin, HeaderMatch(":path", exact="/"))),
        Route(f"{name}-slash", every, replace(to, strip_trailing_slash=True), source,
              headers=(twin, HeaderMatch(":path", regex=".*/"))),
        Route(name, every, to, source, headers=(twin,)),
    )  # fmt: skip


def _cookie_path_default(policies: tuple[Policy, ...], path: str) -> tuple[Policy, ...]:
    """nginx's sticky balancer sets the affinity cookie's Path to the location's Ingress path
    (`$location_path`) when session-cookie-path is not given."""
    cookie = find_policy(policies, CookieAffinity)
    if cookie is None or cookie.path:
        return policies
    return tuple(replace(p, path=path) if p is cookie else p for p in policies)


def _redirect_origin_port(policies: tuple[Policy, ...], https_port: int) -> tuple[Policy, ...]:
    """With use-port-in-redirects nginx names its own port unless it is the scheme's default: never
    over HTTP (it listens on 80), the public HTTPS port over HTTPS unless 443."""
    origin = find_policy(policies, RedirectOrigin)
    if origin is None or not origin.port_in_redirects or https_port == 443:
        return policies
    return tuple(replace(p, https_port=https_port) if p is origin else p for p in policies)


def _secure_cookie(route: Route) -> Route:
    """Over HTTPS nginx's sticky balancer always marks the affinity cookie Secure (`ngx.var.https`)."""
    cookie = route.policy(CookieAffinity)
    if cookie is None or cookie.secure:
        return route
    policies = tuple(replace(p, secure=True) if p is cookie else p for p in route.policies)
    return replace(route, policies=policies)


def _catch_all(host: str, ir: IngressIR) -> bool:
    """The Ingress is the catch-all's (a default backend, no rules). ingress-nginx applies its
    annotations to the catch-all location but keeps that location's own redirect and rewrite settings
    ("Redirect and rewrite can affect the catch all behavior, skip for now"): no ssl-redirect,
    permanent/temporal redirect, rewrite-target, use-regex or app-root there."""
    return host == "" and not ir.has_rules


def _with_alternative(primary: Route, alt: tuple[IngressIR, PathRule, tuple[Family, Policy]] | None) -> list[Route]:
    """The routes that replace one primary rule when an alternative backend attaches to it."""
    if alt is None:
        return [primary]
    _ir, rule, (family, policy) = alt
    if not isinstance(rule.action, Forward):
        return [primary]
    return family.alternative_routes(primary, rule.action, policy)
