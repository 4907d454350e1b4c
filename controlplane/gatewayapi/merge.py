"""One host's Gateway API routes merged with its Ingress routes.

Rule (documented in README "Gateway API"): when an HTTPRoute route and an Ingress route claim the
same host and the same path (same match kind and value, the HTTPRoute match having no header, query
or method condition, the Ingress route no header condition), the older object wins by
creationTimestamp, then the smaller "namespace/name", then Ingress before HTTPRoute; the loser's
route is dropped and reported (an Ingress `conflict` finding, an HTTPRoute parent condition).
Otherwise routes of both are interleaved: the Ingress routes keep their order and each HTTPRoute
route goes before the first Ingress route it takes precedence over (exact before prefix, longer
prefix first, more conditions first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from controlplane.gatewayapi.build import HostEntries
from controlplane.gatewayapi.httproute import RouteEntry, merge_key
from controlplane.ingress.hosts import HostResult
from controlplane.ir import Finding, IngressRef, Route, VirtualHost
from controlplane.ir.names import vhost_name
from controlplane.ir.policies import ClientCertCheck


def _claim(route: Route) -> tuple[str, str] | None:
    if route.headers or route.query:
        return None
    return (route.match.kind, route.match.value)


def _winner_is_ingress(ing: Route, ing_created: str, gw: RouteEntry) -> bool:
    a = (ing_created or "0", f"{ing.source.namespace}/{ing.source.name}", 0)
    b = (gw.created or "0", f"{gw.route.source.namespace}/{gw.route.source.name}", 1)
    return a <= b


def _merge_table(
    host: str,
    ingress: Sequence[Route],
    gateway: Sequence[RouteEntry],
    created: Mapping[IngressRef, str],
    findings: list[tuple[IngressRef, Finding]],
) -> tuple[Route, ...]:
    claims = {}
    for r in ingress:
        c = _claim(r)
        if c is not None:
            claims.setdefault(c, r)
    dropped: set[str] = set()
    kept: list[Route] = []
    where = f"{host or '*'}"
    for e in gateway:
        c = _claim(e.route)
        rival = claims.get(c) if c is not None else None
        if rival is None:
            kept.append(e.route)
        elif _winner_is_ingress(rival, created.get(rival.source, ""), e):
            message = f"{where}{e.route.match.value} is served by Ingress {rival.source}"
            findings.append((e.route.source, Finding("conflict", e.route.name.partition("#")[2], message)))
        else:
            dropped.add(rival.name)
            kept.append(e.route)
            message = f"{where}{rival.match.value} is served by {e.route.source}"
            findings.append((rival.source, Finding("conflict", rival.name.partition("#")[2], message)))
    ing = [r for r in ingress if r.name not in dropped]
    out: list[Route] = []
    i = 0
    for r in kept:  # both lists stay in their own order
        key = merge_key(r)
        while i < len(ing) and merge_key(ing[i]) <= key:
            out.append(ing[i])
            i += 1
        out.append(r)
    out.extend(ing[i:])
    return tuple(out)


def merge_gateway_routes(
    host: str, result: HostResult | None, entries: HostEntries | None, created: Mapping[IngressRef, str]
) -> HostResult | None:
    """The host's result with its Gateway API routes added (either side may be missing)."""
    if entries is None or not (entries.http or entries.https):
        return result
    if result is None:
        domains = ("*",) if host == "" else (host,)
        empty = VirtualHost(vhost_name(host), domains, ())
        result = HostResult(http=empty, https=empty)
    findings = list(result.findings)
    http = _merge_table(host, result.http.routes, entries.http, created, findings)
    https = _with_client_cert_check(_merge_table(host, result.https.routes, entries.https, created, findings))
    return HostResult(http=replace(result.http, routes=http), https=replace(result.https, routes=https),
                      findings=tuple(findings))  # fmt: skip


def _with_client_cert_check(routes: tuple[Route, ...]) -> tuple[Route, ...]:
    """A host whose Ingress asks for client certificates accepts any certificate in the handshake and
    checks it per route (see translate/policies/clientcert.py): its other frontends' routes on the
    shared HTTPS listener get the same check, or they would be reachable without one."""
    check = next((p for r in routes for p in r.policies if isinstance(p, ClientCertCheck)), None)
    if check is None:
        return routes
    return tuple(r if check in r.policies else replace(r, policies=(*r.policies, check)) for r in routes)
