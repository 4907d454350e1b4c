"""The annotation families of the Ingress frontend: one table, and what is done with it.

`REGISTRY` lists every family with its parser and the translator features that render its
policies (by name: the frontend never imports the translator; tests/unit/test_registry.py checks
that every name is a feature in controlplane.translate.policies.FEATURES). Families without a
feature (canary, ssl-redirect, ssl-passthrough, app-root's route) act through the hooks of the
family contract (controlplane/ingress/annotations/base.py) while the frontend merges hosts.
The order of the table is the order in which families parse and policies are attached.
Nothing is registered on import: adding a family is one module and one line here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.ingress.annotations.alias import ServerAliasFamily
from controlplane.ingress.annotations.backend import BackendFamily
from controlplane.ingress.annotations.base import Annotations, Family, ParseContext, ParsedAnnotations
from controlplane.ingress.annotations.basicauth import BasicAuthFamily
from controlplane.ingress.annotations.bodysize import BodySizeFamily
from controlplane.ingress.annotations.canary import CanaryFamily
from controlplane.ingress.annotations.clientcert import ClientCertFamily
from controlplane.ingress.annotations.cors import CorsFamily
from controlplane.ingress.annotations.errors import ErrorsFamily
from controlplane.ingress.annotations.extauth import ExtAuthFamily
from controlplane.ingress.annotations.ipaccess import IpAccessFamily
from controlplane.ingress.annotations.loadbalancing import LoadBalancingFamily
from controlplane.ingress.annotations.mirror import MirrorFamily
from controlplane.ingress.annotations.passthrough import SslPassthroughFamily
from controlplane.ingress.annotations.ratelimit import RateLimitFamily
from controlplane.ingress.annotations.redirects import RedirectFamily
from controlplane.ingress.annotations.rewrite import RewriteFamily
from controlplane.ingress.annotations.sslredirect import SslRedirectFamily
from controlplane.ingress.annotations.timeouts import TimeoutsFamily
from controlplane.ingress.annotations.tlsparams import TlsParamsFamily
from controlplane.ir import IngressRef, Route
from controlplane.ir.policies import Policy, UpstreamPolicy


@dataclass(frozen=True)
class Entry:
    """One annotation family: its parser and the translator features that render its policies."""

    family: Family
    features: tuple[str, ...] = ()


REGISTRY: tuple[Entry, ...] = (
    Entry(RewriteFamily(), ("rewrite",)),
    Entry(SslRedirectFamily(), ("https-location",)),  # hook: redirect_to_https
    Entry(CanaryFamily(), ("header-pattern",)),  # hooks: alternative, alternative_routes
    Entry(SslPassthroughFamily()),  # hook: passes_tls_through
    Entry(RedirectFamily(), ("redirects", "redirect-origin")),  # hook: extra_routes (app-root)
    Entry(CorsFamily(), ("cors", "response-headers")),
    Entry(TimeoutsFamily(), ("timeouts",)),
    Entry(LoadBalancingFamily(), ("load-balancing",)),
    Entry(BackendFamily(), ("backend",)),  # hook: uses_service_address (service-upstream)
    Entry(ErrorsFamily(), ("custom-errors", "fallback")),  # hook: extra_routes (error pages)
    Entry(MirrorFamily(), ("mirror",)),
    Entry(IpAccessFamily(), ("ip-access",)),
    Entry(RateLimitFamily(), ("rate-limit",)),
    Entry(BodySizeFamily(), ("body-size",)),
    Entry(ExtAuthFamily(), ("ext-auth", "auth-responses", "signin-uri")),
    Entry(BasicAuthFamily(), ("basic-auth", "auth-responses")),
    Entry(ClientCertFamily(), ("client-cert",)),
    Entry(TlsParamsFamily(), ("tls-params",)),
    Entry(ServerAliasFamily()),  # read while hosts are merged (controlplane/ingress/aliases.py)
)

FAMILIES: tuple[Family, ...] = tuple(e.family for e in REGISTRY)


def _overriding(hook: str) -> tuple[Family, ...]:
    """The families that implement `hook` (only those are asked, so a hook costs nothing elsewhere)."""
    return tuple(f for f in FAMILIES if getattr(type(f), hook) is not getattr(Family, hook))


_EXTRA_ROUTES = _overriding("extra_routes")
_REDIRECT_TO_HTTPS = _overriding("redirect_to_https")
_ALTERNATIVE = _overriding("alternative")
_PASSTHROUGH = _overriding("passes_tls_through")
_SERVICE_ADDRESS = _overriding("uses_service_address")


def extra_routes(parsed: ParsedAnnotations, host: str, source: IngressRef) -> list[Route]:
    """Routes the Ingress adds to each of its hosts, in table order."""
    return [r for f in _EXTRA_ROUTES for r in f.extra_routes(parsed, host, source)]


def redirect_to_https(parsed: ParsedAnnotations, host_has_tls: bool) -> bool:
    """Plain-HTTP requests for the Ingress's routes on a host are redirected to HTTPS."""
    return any(f.redirect_to_https(parsed, host_has_tls) for f in _REDIRECT_TO_HTTPS)


def alternative(parsed: ParsedAnnotations) -> tuple[Family, Policy] | None:
    """(family, policy) when the Ingress is an alternative backend (a canary), else None."""
    for f in _ALTERNATIVE:
        policy = f.alternative(parsed)
        if policy is not None:
            return f, policy
    return None


def passes_tls_through(parsed: ParsedAnnotations) -> bool:
    return any(f.passes_tls_through(parsed) for f in _PASSTHROUGH)


def uses_service_address(upstream: tuple[UpstreamPolicy, ...]) -> bool:
    return any(f.uses_service_address(upstream) for f in _SERVICE_ADDRESS)


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
        "ssl-prefer-server-ciphers",
        "proxy-cookie-domain",
        "proxy-cookie-path",
        "enable-access-log",
        "enable-rewrite-log",
        "service-weight",
        "enable-global-auth",  # turns off the controller's global-auth-url, which Meridian has not
        "proxy-ssl-location-only",  # where nginx puts proxy_ssl_*: Meridian's are per cluster anyway
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
        "custom-headers",  # response headers from a ConfigMap: Meridian does not read ConfigMaps
        "disable-proxy-intercept-errors",
        "affinity-canary-behavior",
    }
)

# Meridian's own keys that are not ingress-nginx annotations (read elsewhere).
MERIDIAN_ONLY = frozenset({"failover", "cluster", "cluster-id"})


_OWNED = frozenset(k for family in FAMILIES for k in family.keys)


@functools.cache
def _defaults(family: Family) -> tuple[Policy, ...]:
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


def parse_annotations(raw: Mapping[str, Any] | None, ctx: ParseContext) -> ParsedAnnotations:
    """Run every family over the Ingress annotations; report every key exactly once."""
    ann = Annotations(raw)
    policies: list[Policy] = []
    present = ann.values.keys()
    for family in FAMILIES:
        if present.isdisjoint(family.keys):
            policies.extend(_defaults(family))
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
