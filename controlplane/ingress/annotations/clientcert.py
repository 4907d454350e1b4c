"""auth-tls-*: client certificate validation on the host's TLS filter chain, optionally forwarded upstream."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext, integer
from controlplane.ingress.secrets import decode_ca_bundle
from controlplane.ir.pcre import classify
from controlplane.ir.policies import ClientCert, PassClientCert

MODES = ("on", "off", "optional", "optional_no_ca")


class ClientCertFamily(Family):
    name = "client-cert"
    fields = (
        Key(
            ("auth-tls-secret",),
            "client-certificate validation (CA from the Secret) on the host's TLS filter chain",
            difference="missing or invalid Secret **rejects** the Ingress",
        ),
        Key(
            ("auth-tls-verify-client",),
            "`on`, `optional`, `optional_no_ca`, `off`",
            default="`on`",
            difference="as nginx, the TLS handshake completes without a certificate; a request without one "
            "(`on`) or with one that fails verification (`on`, `optional`) gets **400**; a request whose TLS "
            "SNI names another host than its Host (any mode; e.g. through the default certificate) gets "
            "**421** as nginx (the checks run on every route of the host, whichever filter chain the "
            "connection came through)",
        ),
        Key(("auth-tls-verify-depth",), "verification depth", default="`1`", validator=integer(1, 100)),
        Key(
            ("auth-tls-pass-certificate-to-upstream",),
            "certificate forwarded in header `ssl-client-cert`",
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("auth-tls-error-page",),
            "a missing or failed certificate is answered with a **302** to this URL instead of the 400",
            default="—",
        ),
        Key(
            ("auth-tls-match-cn",),
            "`CN=...` PCRE pattern matched against the certificate's subject DN; **403** when it does not match",
            default="—",
            difference="a value not starting with `CN=` is ignored (as nginx); a pattern PCRE refuses or "
            "Meridian cannot run **rejects** the Ingress",
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        ref = ann.get("auth-tls-secret")
        if ref is None:
            for key in self.keys[1:]:
                if ann.has(key):
                    ctx.warn(key, "no auth-tls-secret on this Ingress; ignored")
            return []
        ns, _, name = ref.rpartition("/")
        ns = ns or ctx.ingress.namespace
        if not name:
            ctx.reject("auth-tls-secret", f"invalid secret reference {ref!r}; the Ingress is not served")
            return []
        secret = ctx.lookup_secret(ns, name)
        if secret is None:
            ctx.reject("auth-tls-secret", f"secret {ns}/{name} not found; the Ingress is not served")
            return []
        try:
            ca = decode_ca_bundle(secret)
        except ValueError as exc:
            ctx.reject("auth-tls-secret", f"secret {ns}/{name}: {exc}; the Ingress is not served")
            return []
        mode = (ann.get("auth-tls-verify-client") or "on").lower()
        if mode not in MODES:
            ctx.warn("auth-tls-verify-client", f"invalid value {mode!r}; using on")
            mode = "on"
        depth = ctx.integer(ann, "auth-tls-verify-depth", 1, minimum=1, maximum=100)
        out: list[Any] = []
        if mode != "off":
            match_cn = self._match_cn(ann, ctx)
            if match_cn is None:
                return []
            error_page = (ann.get("auth-tls-error-page") or "").strip()
            out.append(ClientCert(ca, mode, depth, error_page, match_cn))
            ctx.converted("auth-tls-secret", f"client certificates verified against {ns}/{name} ({mode})")
            if error_page:
                ctx.converted("auth-tls-error-page", "a missing or failed certificate redirects (302) here")
        else:
            ctx.converted("auth-tls-secret", "auth-tls-verify-client off: client certificates are not requested")
            for key in ("auth-tls-error-page", "auth-tls-match-cn"):
                if ann.has(key):
                    ctx.warn(key, "auth-tls-verify-client is off; ignored")
        if ctx.boolean(ann, "auth-tls-pass-certificate-to-upstream", False) and mode != "off":
            out.append(PassClientCert())
            ctx.converted("auth-tls-pass-certificate-to-upstream", "certificate forwarded in header ssl-client-cert")
        return out

    @staticmethod
    def _match_cn(ann: Annotations, ctx: ParseContext) -> str | None:
        """The auth-tls-match-cn pattern ("" for none), or None when the Ingress is rejected for it."""
        value = ann.get("auth-tls-match-cn")
        if value is None:
            return ""
        if not value.startswith("CN="):
            ctx.warn("auth-tls-match-cn", f"{value!r} does not start with CN=; ignored (as ingress-nginx)")
            return ""
        kind = classify(value)
        if kind.kind in ("invalid", "unsupported"):
            ctx.reject("auth-tls-match-cn", f"pattern {value!r}: {kind.why}; the Ingress is not served")
            return None
        ctx.converted("auth-tls-match-cn", "requests whose certificate subject does not match get 403")
        return value
