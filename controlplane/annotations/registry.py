"""Every annotation family, and the report of keys no family owns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.annotations import security, traffic
from controlplane.annotations.base import Annotations, Family, ParseContext, ParsedAnnotations
from controlplane.annotations.canary import CanaryFamily
from controlplane.annotations.errors import error_page_routes
from controlplane.annotations.passthrough import SslPassthroughFamily
from controlplane.annotations.redirects import app_root_routes
from controlplane.annotations.rewrite import RewriteFamily
from controlplane.annotations.sslredirect import SslRedirectFamily
from controlplane.ir import IngressRef, Route
from controlplane.ir.policies import AppRoot, CustomErrors

FAMILIES: list[Family] = [
    RewriteFamily(),
    SslRedirectFamily(),
    CanaryFamily(),
    SslPassthroughFamily(),
    *traffic.FAMILIES,
    *security.FAMILIES,
]

# Policies that add routes of their own to every host of their Ingress: policy type -> hook.
EXTRA_ROUTES: dict[type, Callable[[Any, str, IngressRef], list[Route]]] = {
    AppRoot: app_root_routes,
    CustomErrors: error_page_routes,
}

# Keys with no Envoy meaning (nginx buffer tuning and the like): accepted, reported, never fatal.
NOT_APPLICABLE = frozenset(
    {
        "proxy-buffer-size",
        "proxy-buffering",
        "proxy-buffers-number",
        "proxy-busy-buffers-size",
        "proxy-max-temp-file-size",
        "proxy-request-buffering",
        "proxy-http-version",
        "client-body-buffer-size",
        "large-client-header-buffers",
        "connection-proxy-header",
        "ssl-prefer-server-ciphers",
        "proxy-cookie-domain",
        "proxy-cookie-path",
        "server-alias",
        "enable-access-log",
        "enable-rewrite-log",
        "service-weight",
        "preserve-trailing-slash",
    }
)

# Keys Meridian cannot reproduce (arbitrary nginx config, Lua, WAF).
UNSUPPORTED_SUFFIXES = ("-snippet",)
UNSUPPORTED = frozenset(
    {
        "enable-modsecurity",
        "enable-owasp-core-rules",
        "modsecurity-transaction-id",
        "modsecurity-snippet",
        "lua-resty-waf",
        "lua-resty-waf-debug",
        "lua-resty-waf-ignore-rulesets",
        "lua-resty-waf-extra-rules",
        "lua-resty-waf-allow-unknown-content-types",
        "lua-resty-waf-score-threshold",
        "lua-resty-waf-process-multipart-body",
        "enable-opentelemetry",
        "opentelemetry-trust-incoming-span",
        "opentelemetry-operation-name",
        "enable-opentracing",
        "opentracing-trust-incoming-span",
        "auth-cache-key",
        "auth-cache-duration",
        "auth-keepalive",
        "auth-keepalive-requests",
        "auth-keepalive-timeout",
        "auth-keepalive-share-vars",
        "global-rate-limit",
        "global-rate-limit-window",
        "global-rate-limit-key",
        "global-rate-limit-ignored-cidrs",
        "satisfy",
        "stream-snippet",
        "influxdb-measurement",
        "influxdb-port",
        "influxdb-host",
        "influxdb-server-name",
        "enable-influxdb",
        "mirror-request-body",
        "mirror-host",
        "http2-push-preload",
        "proxy-redirect-from",
        "proxy-redirect-to",
        "auth-proxy-set-headers",
        "auth-snippet",
        "fastcgi-index",
        "fastcgi-params-configmap",
        "denylist-source-range-extra",
    }
)

# Meridian's own keys that are not ingress-nginx annotations (read elsewhere).
MERIDIAN_ONLY = frozenset({"failover", "cluster", "cluster-id"})


_OWNED = frozenset(k for family in FAMILIES for k in family.keys)


def _defaults(family: Family) -> tuple[Any, ...]:
    """What a family yields for an Ingress that sets none of its keys (e.g. ssl-redirect's default).

    Computed once: most Ingresses set few annotations, and running every family's parser for keys
    that are absent was a tenth of a 10,000-Ingress cold build. Such a result must not depend on the
    Ingress, so it must come without findings.
    """
    ctx = ParseContext(IngressRef("", "", ""), {})
    out = tuple(family.parse(Annotations({}), ctx))
    if ctx.findings:
        raise AssertionError(f"family {family.name} reports findings for an Ingress without its keys")
    return out


_DEFAULTS = {id(family): _defaults(family) for family in FAMILIES}


def parse_annotations(raw: Mapping[str, Any] | None, ctx: ParseContext) -> ParsedAnnotations:
    """Run every family over the Ingress annotations; report every key exactly once."""
    ann = Annotations(raw)
    policies: list[Any] = []
    present = ann.values.keys()
    for family in FAMILIES:
        if present.isdisjoint(family.keys):
            policies.extend(_DEFAULTS[id(family)])
            continue
        try:
            policies.extend(family.parse(ann, ctx))
        except Exception as exc:  # a family bug must not take the Ingress (or others) down
            ctx.reject(family.name, f"internal error parsing {family.name}: {exc}")
    reported = {f.key for f in ctx.findings}
    for key in sorted(ann.values):
        if key in reported or key in MERIDIAN_ONLY:
            continue
        if key in _OWNED:
            ctx.converted(key)
        elif key in NOT_APPLICABLE:
            ctx.report("not-applicable", key, "nginx tuning with no Envoy equivalent; accepted")
        elif key in UNSUPPORTED or key.endswith(UNSUPPORTED_SUFFIXES):
            ctx.report("unsupported", key, "not supported by Meridian; ignored")
        else:
            ctx.report("unknown", key, "not an ingress-nginx annotation; ignored")
    for key in sorted(ann.legacy):
        ctx.report(
            "unknown", f"ingress.kubernetes.io/{key}", "legacy prefix is not read; use nginx.ingress.kubernetes.io/"
        )
    by_scope: dict[str, list[Any]] = {"route": [], "upstream": [], "tls": [], "ingress": []}
    for p in policies:
        by_scope[p.scope].append(p)
    return ParsedAnnotations(
        route=tuple(by_scope["route"]),
        upstream=tuple(by_scope["upstream"]),
        tls=tuple(by_scope["tls"]),
        ingress=tuple(by_scope["ingress"]),
        findings=tuple(ctx.findings),
        rejected=ctx.rejected,
    )
