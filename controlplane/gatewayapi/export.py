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
from controlplane.ir import DirectResponse, Finding, Forward, IngressRef, Redirect, Route, TlsHost
from controlplane.ir.policies import HostRewrite, RewriteTarget, UrlRedirect

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

    def note(self, ref: IngressRef, level: str, key: str, message: str) -> None:
        self.findings.setdefault(ref, []).append(Finding(level, key, message))  # type: ignore[arg-type]


def _backend(cluster: str, namespace: str, weight: int | None, export: Export, ref: IngressRef) -> dict[str, Any]:
    m = _CLUSTER.match(cluster)
    if m is None:
        export.note(ref, "unsupported", "backend", f"cluster {cluster} is not a Service port")
        return {"name": cluster}
    out: dict[str, Any] = {"name": m["svc"], "port": int(m["port"])}
    if m["ns"] != namespace:
        out["namespace"] = m["ns"]
    if weight is not None:
        out["weight"] = weight
    if m["variant"]:
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
        if h.name == ":authority" or h.invert or h.present:
            continue
        headers.append({"type": "RegularExpression", "name": h.name, "value": h.regex} if h.regex is not None
                       else {"name": h.name, "value": h.exact})  # fmt: skip
    if headers:
        out["headers"] = headers
    return out


def _redirect(url: str, code: int, export: Export | None = None, ref: IngressRef | None = None) -> dict[str, Any]:
    if code not in (301, 302, 303, 307, 308) and export is not None and ref is not None:
        export.note(ref, "warning", "redirect", f"status {code} is not a Gateway API redirect code; 302 is sent")
    parts = urlsplit(url)
    r: dict[str, Any] = {"statusCode": code if code in (301, 302, 303, 307, 308) else 302}
    if parts.scheme:
        r["scheme"] = parts.scheme
    if parts.hostname:
        r["hostname"] = parts.hostname
    if parts.port:
        r["port"] = parts.port
    r["path"] = {"type": "ReplaceFullPath", "replaceFullPath": parts.path or "/"}
    return {"type": "RequestRedirect", "requestRedirect": r}


def _rule(route: Route, namespace: str, export: Export) -> dict[str, Any] | None:
    ref = route.source
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
        export.note(ref, "warning", route.name.partition("#")[2] or "route",
                    f"answers {action.status} (no backend); Gateway API answers 500 for a rule without backends")
        rule["backendRefs"] = []
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
) -> Export:
    """See the module docstring."""
    export = Export()
    tls = {h: t for t in tls_hosts for h in t.hosts}
    listeners: list[dict[str, Any]] = [{"name": "http", "protocol": "HTTP", "port": 80,
                                        "allowedRoutes": {"namespaces": {"from": "All"}}}]  # fmt: skip
    grants: dict[str, set[str]] = {}
    for i, host in enumerate(sorted(tls)):
        _cluster, sns, sname = tls[host].secret.split("/", 2)
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
                rules = [r for r in (_rule(route, ref.namespace, export) for route in routes) if r is not None]
                suffix = (host or "any").replace("*", "wildcard") + ("" if len(tables) == 1 else f"-{table}")
                spec: dict[str, Any] = {"parentRefs": parents, "rules": rules}
                if host:
                    spec["hostnames"] = [host]
                export.objects.append({"apiVersion": API, "kind": "HTTPRoute",
                                       "metadata": {"name": f"{ref.name}-{suffix}"[:253], "namespace": ref.namespace},
                                       "spec": spec})  # fmt: skip
    for ref, ir in sorted(irs.items()):
        for f in ir.findings:
            if f.level == "converted" and f.key not in EXPRESSED and not f.key.startswith(("rules", "tls", "spec")):
                export.note(ref, "unsupported", f.key, "no Gateway API (standard) equivalent; not carried over")
            elif f.level == "converted":
                export.note(ref, "converted", f.key, f.message)
        if not ir.served:
            export.note(ref, "not-applicable", "ingress", "not served by Meridian; not exported")
    return export
