"""auth-tls-*: client certificate validation on the host's TLS filter chain, optionally forwarded upstream."""

from __future__ import annotations

from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext, integer
from controlplane.ingress.secrets import decode_ca_bundle
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
            difference="with `on`, a client without a valid certificate fails the TLS handshake (nginx completes it "
            "and answers 400)",
        ),
        Key(("auth-tls-verify-depth",), "verification depth", default="`1`", validator=integer(1, 100)),
        Key(
            ("auth-tls-pass-certificate-to-upstream",),
            "certificate forwarded in header `ssl-client-cert`",
            default="`false`",
            validator=BOOLEAN,
        ),
        Key(
            ("auth-tls-error-page", "auth-tls-match-cn"),
            "unsupported (the TLS handshake fails instead; CN not matched)",
            default="—",
            difference="ignored",
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
            out.append(ClientCert(ca, mode, depth))
            ctx.converted("auth-tls-secret", f"client certificates verified against {ns}/{name} ({mode})")
        else:
            ctx.converted("auth-tls-secret", "auth-tls-verify-client off: client certificates are not requested")
        if ctx.boolean(ann, "auth-tls-pass-certificate-to-upstream", False) and mode != "off":
            out.append(PassClientCert())
            ctx.converted("auth-tls-pass-certificate-to-upstream", "certificate forwarded in header ssl-client-cert")
        if ann.has("auth-tls-error-page"):
            ctx.report("unsupported", "auth-tls-error-page", "the TLS handshake fails instead; no error page")
        if ann.has("auth-tls-match-cn"):
            ctx.report("unsupported", "auth-tls-match-cn", "subject CN matching is not enforced")
        return out
