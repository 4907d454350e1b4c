"""The table of annotation families: every family's features exist in the translator, every
feature belongs to a family (or to the Gateway API frontend), keys are owned once, and hooks reach the frontend."""

from __future__ import annotations

from controlplane.gatewayapi import httproute
from controlplane.ingress import registry
from controlplane.ingress.annotations.base import Family
from controlplane.ir import Forward, IngressRef, PathMatch, Route, WeightedCluster
from controlplane.ir.policies import Canary, ServiceUpstream
from controlplane.translate.policies import FEATURES

REF = IngressRef("c", "ns", "ing")


def parse(annotations: dict[str, str]) -> registry.ParsedAnnotations:
    return registry.parse_annotations(
        {f"nginx.ingress.kubernetes.io/{k}": v for k, v in annotations.items()}, registry.ParseContext(REF, {})
    )


def test_every_family_feature_is_a_translator_feature_and_back() -> None:
    named = {f for e in registry.REGISTRY for f in e.features} | set(httproute.FEATURES_USED)
    features = {f.name for f in FEATURES}
    assert named == features, (named ^ features)


def test_keys_are_owned_by_one_family_and_families_are_instances_of_the_contract() -> None:
    seen: dict[str, str] = {}
    for e in registry.REGISTRY:
        assert isinstance(e.family, Family)
        for key in e.family.keys:
            assert key not in seen, f"{key} owned by {seen[key]} and {e.family.name}"
            seen[key] = e.family.name


def test_hooks_act_through_the_registry() -> None:
    primary = Route("p", PathMatch("prefix", "/"), Forward((WeightedCluster("ns/a:80", 100),)), REF)
    canary = parse({"canary": "true", "canary-weight": "30"})
    found = registry.alternative(canary)
    assert found is not None and isinstance(found[1], Canary)
    family, policy = found
    (split,) = family.alternative_routes(primary, Forward((WeightedCluster("ns/b:80", 100),)), policy)
    assert isinstance(split.action, Forward) and [c.weight for c in split.action.clusters] == [70, 30]
    assert registry.alternative(parse({})) is None

    assert registry.redirect_to_https(parse({}), host_has_tls=True) is True
    assert registry.redirect_to_https(parse({}), host_has_tls=False) is False
    assert registry.redirect_to_https(parse({"ssl-redirect": "false"}), host_has_tls=True) is False
    assert registry.redirect_to_https(parse({"force-ssl-redirect": "true"}), host_has_tls=False) is True

    assert registry.passes_tls_through(parse({"ssl-passthrough": "true"}))
    assert not registry.passes_tls_through(parse({}))
    assert registry.uses_service_address((ServiceUpstream(),)) and not registry.uses_service_address(())

    (root,) = registry.extra_routes(parse({"app-root": "/app"}), "h", REF)
    assert root.match == PathMatch("exact", "/") and root.name.endswith("#app-root")
    assert registry.extra_routes(parse({}), "h", REF) == []


# Every key of ingress-nginx's annotations reference (docs/user-guide/nginx-configuration/annotations.md,
# controller v1.11-v1.13) without the `nginx.ingress.kubernetes.io/` prefix.
INGRESS_NGINX_KEYS = """
app-root affinity affinity-canary-behavior affinity-mode server-alias auth-realm auth-secret auth-secret-type
auth-type auth-tls-secret auth-tls-verify-depth auth-tls-verify-client auth-tls-error-page
auth-tls-pass-certificate-to-upstream auth-tls-match-cn auth-url auth-cache-key auth-cache-duration auth-keepalive
auth-keepalive-share-vars auth-keepalive-requests auth-keepalive-timeout auth-proxy-set-headers auth-snippet
enable-global-auth backend-protocol canary canary-by-header canary-by-header-value canary-by-header-pattern
canary-by-cookie canary-weight canary-weight-total client-body-buffer-size configuration-snippet custom-http-errors
custom-headers default-backend enable-cors cors-allow-origin cors-allow-methods cors-allow-headers cors-expose-headers
cors-allow-credentials cors-max-age force-ssl-redirect from-to-www-redirect http2-push-preload limit-connections
limit-rps limit-rpm limit-burst-multiplier limit-rate-after limit-rate limit-whitelist limit-allowlist
permanent-redirect permanent-redirect-code temporal-redirect temporal-redirect-code preserve-trailing-slash
proxy-body-size proxy-cookie-domain proxy-cookie-path proxy-connect-timeout proxy-send-timeout proxy-read-timeout
proxy-next-upstream proxy-next-upstream-timeout proxy-next-upstream-tries proxy-request-buffering
proxy-redirect-from proxy-redirect-to proxy-http-version proxy-ssl-secret proxy-ssl-ciphers proxy-ssl-name
proxy-ssl-protocols proxy-ssl-verify proxy-ssl-verify-depth proxy-ssl-server-name proxy-ssl-location-only
enable-rewrite-log rewrite-target satisfy server-snippet service-upstream session-cookie-change-on-failure
session-cookie-conditional-samesite-none session-cookie-domain session-cookie-expires session-cookie-max-age
session-cookie-name session-cookie-path session-cookie-samesite session-cookie-secure ssl-redirect ssl-passthrough
stream-snippet upstream-hash-by x-forwarded-prefix load-balance upstream-vhost denylist-source-range
whitelist-source-range allowlist-source-range proxy-buffering proxy-buffers-number proxy-buffer-size
proxy-max-temp-file-size ssl-ciphers ssl-prefer-server-ciphers connection-proxy-header enable-access-log
enable-opentelemetry opentelemetry-trust-incoming-span opentelemetry-operation-name enable-modsecurity
enable-owasp-core-rules modsecurity-transaction-id modsecurity-snippet mirror-request-body mirror-target mirror-host
use-regex relative-redirects disable-proxy-intercept-errors auth-method auth-signin auth-signin-redirect-param
auth-request-redirect auth-response-headers auth-always-set-cookie
""".split()  # noqa: SIM905 - read as the reference lists them


def test_no_ingress_nginx_key_is_reported_as_not_an_ingress_nginx_annotation() -> None:
    """`unknown` says "not an ingress-nginx annotation": a real one is converted, warned, unsupported or
    not applicable, never that (a user would think it misspelled)."""
    unknown = []
    for key in INGRESS_NGINX_KEYS:
        ctx = registry.ParseContext(REF, {})
        registry.parse_annotations({f"nginx.ingress.kubernetes.io/{key}": "x"}, ctx)
        if any(f.key == key and f.level == "unknown" for f in ctx.findings):
            unknown.append(key)
    assert unknown == []


def test_the_docs_lists_of_unsupported_and_not_applicable_keys_are_the_registry_s() -> None:
    import re

    from controlplane.ingress.annotation_docs import DOC

    text = DOC.read_text()
    not_applicable = text.split("## Not applicable", 1)[1].split("\n## ", 1)[0]
    unsupported = text.split("## Unsupported", 1)[1].split("\n## ", 1)[0].split("; plus", 1)[0]
    assert set(re.findall(r"`([a-z0-9-]+)`", not_applicable)) == set(registry.NOT_APPLICABLE)
    listed = set(re.findall(r"`([a-z0-9-]+)`", unsupported))
    assert set(registry.UNSUPPORTED) - {k for k in registry.UNSUPPORTED if k.startswith("lua-resty-waf-")} <= listed
