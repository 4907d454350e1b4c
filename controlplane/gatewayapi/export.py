"""Ingresses -> Gateway API (`meridian translate --to gateway-api`): one Gateway, one HTTPRoute per
Ingress and host, ReferenceGrants for certificates in other namespaces, and a per-Ingress report.

The routes are taken from the merged hosts (what Meridian serves for the Ingresses), not from the
annotations one by one: conflicts are already resolved, canaries are already weighted backends or
header matches, ssl-redirect is already the HTTP listener's redirect. Each route's policies become
HTTPRoute filters where Gateway API expresses them; every other annotation is reported
`unsupported` on its Ingress, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from controlplane.gatewayapi.kinds import CONTROLLER_NAME, GROUP
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.hosts import HostResult
from controlplane.ir import DirectResponse, Finding, Forward, IngressRef, PathMatch, Redirect, Route, TlsHost
from controlplane.ir.policies import HostRewrite, RewriteTarget, UpstreamProtocol, UrlRedirect

API = f"{GROUP}/v1"
# Annotation keys whose effect the exported routes carry (through the merged routes or a filter).
EXPRESSED = frozenset({
    "use-regex", "ssl-redirect", "force-ssl-redirect", "canary", "canary-weight", "canary-weight-total",
    "canary-by-header", "canary-by-header-value", "canary-by-header-pattern", "permanent-redirect",
    "permanent-redirect-code", "temporal-redirect", "temporal-redirect-code", "upstream-vhost", "app-root",
    "rewrite-target",
})  # fmt: skip
_CLUSTER = re.compile(r"^(?P<ns>[^/]+)/(?P<svc>[^:]+):(?P<port>\d+)(~(?P<variant>.+))?$")


@dataclass
class Export:
    objects: list[dict[str, Any]] = field(default_factory=list)
    findings: dict[IngressRef, list[Finding]] = field(default_factory=dict)
    ingresses: Mapping[IngressRef, Mapping[str, Any]] = field(default_factory=dict)  # the objects, as written
    expressed: set[tuple[IngressRef, str]] = field(default_factory=set)  # annotations carried for one Ingress

    def note(self, ref: IngressRef, level: str, key: str, message: str) -> None:
        finding = Finding(level, key, message)  # type: ignore[arg-type]
        if finding not in self.findings.setdefault(ref, []):
            self.findings[ref].append(finding)


def _backend(
    cluster: str, namespace: str, weight: int | None, export: Export, ref: IngressRef, *, carried: bool = False
) -> dict[str, Any]:
    m = _CLUSTER.match(cluster)
    if m is None:
        export.note(ref, "unsupported", "backend", f"cluster {cluster} is not a Service port")
        return {"name": cluster}
    out: dict[str, Any] = {"name": m["svc"], "port": int(m["port"])}
    if m["ns"] != namespace:
        out["namespace"] = m["ns"]
    if weight is not None:
        out["weight"] = weight
    if m["variant"] and not carried:
        export.note(ref, "warning", "backend", f"{m['svc']}:{m['port']} has upstream settings (backend protocol, "
                    "TLS, timeouts, load balancing) Gateway API standard cannot carry; they are dropped")  # fmt: skip
    return out


def _match(route: Route) -> dict[str, Any]:
    kind = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression",
            "string_prefix": "RegularExpression"}[route.match.kind]  # fmt: skip
    value = route.match.value
    if route.match.kind == "string_prefix":  # a KIngress's plain prefix
        value = re.escape(value) + ".*"
    out: dict[str, Any] = {"path": {"type": kind, "value": value}}
    headers = []
    for h in route.headers:
        if h.name.startswith(":") or h.invert or h.present:  # pseudo-headers are no Gateway API header names
            continue
        headers.append({"type": "RegularExpression", "name": h.name, "value": h.regex} if h.regex is not None
                       else {"name": h.name, "value": h.exact})  # fmt: skip
    if headers:
        out["headers"] = headers
    return out


def _redirect(url: str, code: int, export: Export | None = None, ref: IngressRef | None = None) -> dict[str, Any]:
    if code not in (301, 302, 303, 307, 308) and export is not None and ref is not None:
        export.note(ref, "warning", "redirect", f"status {code} is not a Gateway API redirect code; 302 is sent")
    if export is not None and ref is not None:
        export.note(ref, "warning", "redirect", f"to {url}: RequestRedirect keeps the request's query string "
                    "(ingress-nginx sends exactly the URL); Gateway API cannot drop it")  # fmt: skip
    parts = urlsplit(url)
    r: dict[str, Any] = {"statusCode": code if code in (301, 302, 303, 307, 308) else 302}
    if parts.scheme:
        r["scheme"] = parts.scheme
    if parts.hostname:
        r["hostname"] = parts.hostname
    try:
        port = parts.port
    except ValueError:  # permanent-redirect `http://h:x` is sent as written; Gateway API has no such port
        port = None
        if export is not None and ref is not None:
            export.note(ref, "unsupported", "redirect", f"to {url}: its port is not a number; left out")
    if port:
        r["port"] = port
    r["path"] = {"type": "ReplaceFullPath", "replaceFullPath": parts.path or "/"}
    return {"type": "RequestRedirect", "requestRedirect": r}


_LOCATION = re.compile(r"^rules\[(\d+)\]\.paths\[(\d+)\]")


def _declared_backend(ingress: Mapping[str, Any] | None, location: str) -> dict[str, Any] | None:
    """The Service and port number the Ingress names at `location` ("rules[i].paths[j]",
    "defaultBackend"), as a backendRef; None when unknown or the port is only a name."""
    spec = (ingress or {}).get("spec") or {}
    backend: Any = None
    m = _LOCATION.match(location)
    if location.startswith("defaultBackend"):
        backend = spec.get("defaultBackend") or spec.get("backend")
    elif m is not None:
        try:
            backend = spec["rules"][int(m[1])]["http"]["paths"][int(m[2])]["backend"]
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(backend, Mapping):
        return None
    svc = backend.get("service")
    name, port = (svc.get("name"), (svc.get("port") or {}).get("number")) if isinstance(svc, Mapping) else (
        backend.get("serviceName"), backend.get("servicePort"))  # fmt: skip
    if not name or not str(port).isdigit():
        return None
    return {"name": str(name), "port": int(port)}


def _grpc_rules(
    ir: IngressIR | None, routes: list[Route], namespace: str, export: Export
) -> list[dict[str, Any]] | None:
    """A `backend-protocol: GRPC` Ingress whose routes here all forward every path ("/"): GRPCRoute rules
    (every method, HTTP/2 to the backend), as ingress2gateway does; None when it needs an HTTPRoute."""
    if ir is None or ir.annotations.upstream != (UpstreamProtocol("GRPC"),):
        return None
    plain = all(r.match == PathMatch("prefix", "/") and not r.headers and not r.query
                and r.policy(HostRewrite) is None and r.policy(RewriteTarget) is None for r in routes)  # fmt: skip
    if not plain:
        return None
    rules = []
    for r in routes:
        if isinstance(r.action, Forward):
            weights = len(r.action.clusters) > 1
            rules.append({"backendRefs": [_backend(c.cluster, namespace, c.weight if weights else None, export,
                                                   ir.ref, carried=True) for c in r.action.clusters]})  # fmt: skip
            continue
        declared = _missing_service(r, export)
        if declared is None:
            return None
        rules.append({"backendRefs": [declared]})
    export.expressed.add((ir.ref, "backend-protocol"))
    return rules


def _missing_service(route: Route, export: Export) -> dict[str, Any] | None:
    """For a route answering 503 because its Service is not there (yet): the backendRef the Ingress
    declares, named anyway (with a warning), or None."""
    where = route.name.partition("#")[2] or "route"
    action = route.action
    if not isinstance(action, DirectResponse) or action.status != 503:
        return None
    declared = _declared_backend(export.ingresses.get(route.source), where)
    if declared is not None:
        export.note(route.source, "warning", where, f"Service {declared['name']} port {declared['port']} not "
                    "found: the route names it; 500 (BackendNotFound) until it exists (Ingress: 503)")  # fmt: skip
    return declared


def _https_redirect_variant(route: Route) -> bool:
    """One of the plain-HTTP routes ssl-redirect adds beside the redirect itself (ingress/hosts.py
    https_redirect_routes): "/" to the bare origin, a trailing "/" dropped. Both match on `:path`,
    which Gateway API cannot; the plain redirect (scheme https, 308) answers those requests instead."""
    return any(h.name == ":path" for h in route.headers)


def _rule(route: Route, namespace: str, export: Export) -> dict[str, Any] | None:
    ref = route.source
    if _https_redirect_variant(route):
        if route.name.endswith("#slash"):
            export.note(ref, "warning", "ssl-redirect", "redirects to HTTPS with RequestRedirect (scheme https, 308): "
                        "a path ending in \"/\" keeps that \"/\" (ingress-nginx drops one; Gateway API cannot "
                        "match on it); set preserve-trailing-slash to make both the same")  # fmt: skip
        return None
    rule: dict[str, Any] = {"matches": [_match(route)]}
    filters: list[dict[str, Any]] = []
    action = route.action
    url = route.policy(UrlRedirect)
    if url is not None:
        filters.append(_redirect(url.url, url.code, export, ref))
    elif isinstance(action, Redirect):
        r: dict[str, Any] = {"statusCode": action.code}
        if action.scheme:
            r["scheme"] = action.scheme
        if action.host:
            r["hostname"] = action.host
        if action.port:
            r["port"] = action.port
        if action.path:
            r["path"] = {"type": "ReplaceFullPath", "replaceFullPath": action.path}
        if action.url:
            filters.append(_redirect(action.url, action.code, export, ref))
        else:
            filters.append({"type": "RequestRedirect", "requestRedirect": r})
    elif isinstance(action, Forward):
        weights = len(action.clusters) > 1
        rule["backendRefs"] = [_backend(c.cluster, namespace, c.weight if weights else None, export, ref)
                               for c in action.clusters]  # fmt: skip
        host = route.policy(HostRewrite)
        rewrite = route.policy(RewriteTarget)
        url_rewrite: dict[str, Any] = {}
        if host is not None:
            url_rewrite["hostname"] = host.host
        if rewrite is not None:
            if "$" in rewrite.target:
                export.note(ref, "unsupported", "rewrite-target", "capture groups ($1...) have no Gateway API form")
            else:
                url_rewrite["path"] = {"type": "ReplaceFullPath", "replaceFullPath": rewrite.target}
        if url_rewrite:
            filters.append({"type": "URLRewrite", "urlRewrite": url_rewrite})
    elif isinstance(action, DirectResponse):
        declared = _missing_service(route, export)
        if declared is None:
            export.note(ref, "warning", route.name.partition("#")[2] or "route",
                        f"answers {action.status} (no backend); Gateway API answers 500 for a rule without backends")
        rule["backendRefs"] = [declared] if declared is not None else []
    if filters:
        rule["filters"] = filters
    return rule


def export_gateway_api(
    irs: Mapping[IngressRef, IngressIR],
    hosts: Mapping[str, HostResult],
    tls_hosts: Iterable[TlsHost],
    *,
    namespace: str = "default",
    name: str = "meridian",
    class_name: str = "meridian",
    ingresses: Mapping[IngressRef, Mapping[str, Any]] | None = None,
) -> Export:
    """See the module docstring. `ingresses`: the Ingress objects, for backends whose Service is
    missing (the route still names them)."""
    export = Export(ingresses=ingresses or {})
    tls: dict[str, tuple[str, str]] = {}  # host -> the certificate Secret (namespace, name)
    for t in tls_hosts:
        parts = t.secret.split("/", 2)
        if len(parts) != 3:  # the generated default certificate is no Secret a Gateway could name
            continue
        for h in t.hosts:
            if h != "*":  # the default certificate's catch-all chain: no listener hostname
                tls[h] = (parts[1], parts[2])
    for ref, ir in sorted(irs.items()):
        for b in ir.tls if ir.served else ():
            for h in b.hosts:
                # still a TLS host (ssl-redirect): its listener waits
                if b.secret is None and h not in tls and b.secret_ref[2]:
                    tls[h] = (b.secret_ref[1], b.secret_ref[2])
                    export.note(ref, "warning", b.location or "tls", f"Secret {b.secret_ref[1]}/{b.secret_ref[2]} "
                                f"{b.problem or 'is not usable'}: the HTTPS listener for {h} names it and serves "
                                "once it is valid")  # fmt: skip
    listeners: list[dict[str, Any]] = [{"name": "http", "protocol": "HTTP", "port": 80,
                                        "allowedRoutes": {"namespaces": {"from": "All"}}}]  # fmt: skip
    grants: dict[str, set[str]] = {}
    for i, host in enumerate(sorted(tls)):
        sns, sname = tls[host]
        cert: dict[str, Any] = {"name": sname}
        if sns != namespace:
            cert["namespace"] = sns
            grants.setdefault(sns, set()).add(sname)
        listeners.append({"name": f"https-{i}", "protocol": "HTTPS", "port": 443, "hostname": host,
                          "tls": {"mode": "Terminate", "certificateRefs": [cert]},
                          "allowedRoutes": {"namespaces": {"from": "All"}}})  # fmt: skip
    https_section = {host: f"https-{i}" for i, host in enumerate(sorted(tls))}
    export.objects.append({"apiVersion": API, "kind": "GatewayClass", "metadata": {"name": class_name},
                           "spec": {"controllerName": CONTROLLER_NAME}})  # fmt: skip
    export.objects.append({"apiVersion": API, "kind": "Gateway", "metadata": {"name": name, "namespace": namespace},
                           "spec": {"gatewayClassName": class_name, "listeners": listeners}})  # fmt: skip
    for sns, names in sorted(grants.items()):
        to = [{"group": "", "kind": "Secret", "name": n} for n in sorted(names)]
        export.objects.append({"apiVersion": API, "kind": "ReferenceGrant",
                               "metadata": {"name": f"{name}-certificates", "namespace": sns},
                               "spec": {"from": [{"group": GROUP, "kind": "Gateway", "namespace": namespace}],
                                        "to": to}})  # fmt: skip
    for host, result in sorted(hosts.items()):
        same = result.http is result.https
        tables = [("http", result.http)] if same else [("http", result.http), ("https", result.https)]
        for table, vhost in tables:
            by_source: dict[IngressRef, list[Route]] = {}
            for r in vhost.routes:
                by_source.setdefault(r.source, []).append(r)
            for ref, routes in sorted(by_source.items()):
                parents = [{"name": name, "namespace": namespace, "sectionName": "http"}]
                if host in https_section and (table == "https" or result.http is result.https):
                    parents = ([] if table == "https" else parents) + [
                        {"name": name, "namespace": namespace, "sectionName": https_section[host]}]
                grpc = _grpc_rules(irs.get(ref), routes, ref.namespace, export)
                rules = grpc or [r for r in (_rule(route, ref.namespace, export) for route in routes) if r is not None]
                suffix = (host or "any").replace("*", "wildcard") + ("" if len(tables) == 1 else f"-{table}")
                spec: dict[str, Any] = {"parentRefs": parents, "rules": rules}
                if host:
                    spec["hostnames"] = [host]
                export.objects.append({"apiVersion": API, "kind": "GRPCRoute" if grpc else "HTTPRoute",
                                       "metadata": {"name": f"{ref.name}-{suffix}"[:253], "namespace": ref.namespace},
                                       "spec": spec})  # fmt: skip
    for ref, ir in sorted(irs.items()):
        for f in ir.findings:
            carried = f.key in EXPRESSED or (ref, f.key) in export.expressed
            if f.level == "converted" and not carried and not f.key.startswith(("rules", "tls", "spec")):
                export.note(ref, "unsupported", f.key, "no Gateway API (standard) equivalent; not carried over")
            elif f.level == "converted":
                export.note(ref, "converted", f.key, f.message)
        if not ir.served:
            export.note(ref, "not-applicable", "ingress", "not served by Meridian; not exported")
    return export
