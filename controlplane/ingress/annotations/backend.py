"""backend-protocol, proxy-ssl-*, upstream-vhost, x-forwarded-prefix and service-upstream.

Upstream TLS and HTTP/2 are cluster settings (a cluster variant); Host rewrite and the
X-Forwarded-Prefix header are route settings.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from controlplane.ingress.annotations.base import BOOLEAN, Annotations, Family, Key, ParseContext
from controlplane.ingress.annotations.tlsnames import BORINGSSL_CIPHERS, TLS_VERSIONS
from controlplane.ir.policies import (
    ConnectionHeader,
    ForwardedPrefix,
    HostRewrite,
    ServiceUpstream,
    UpstreamPolicy,
    UpstreamProtocol,
)

PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS", "HTTP2")
UNSUPPORTED_PROTOCOLS = ("AUTO_HTTP", "FCGI")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")


def _secret_bytes(secret: Any, key: str) -> bytes:
    data = (secret or {}).get("data") or {}
    value = data.get(key)
    if value:
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return b""
    string = ((secret or {}).get("stringData") or {}).get(key)
    return str(string).encode() if string else b""


class BackendFamily(Family):
    name = "backend"
    fields = (
        Key(
            ("backend-protocol",),
            (
                "`HTTP`; `HTTPS` → TLS transport socket (no verification unless `proxy-ssl-verify`); "
                "`GRPC`/`HTTP2` → HTTP/2 cleartext; `GRPCS` → HTTP/2 over TLS (cluster variant)"
            ),
            default="`HTTP`",
            difference="`AUTO_HTTP`, `FCGI`: unsupported, HTTP used",
        ),
        Key(
            ("proxy-ssl-verify",),
            "verify the backend certificate with `ca.crt` of `proxy-ssl-secret`",
            default="`off`",
            difference="needs `ca.crt`, else warning",
        ),
        Key(
            ("proxy-ssl-secret",),
            "`ns/name`: CA and client certificate for upstream TLS",
            difference="missing secret: warning",
        ),
        Key(("proxy-ssl-name", "proxy-ssl-server-name"), "upstream SNI"),
        Key(
            ("proxy-ssl-verify-depth", "proxy-ssl-protocols", "proxy-ssl-ciphers"),
            "upstream TLS parameters",
            default="Envoy defaults",
            difference="ciphers BoringSSL lacks are dropped (warning)",
        ),
        Key(("upstream-vhost",), "route `host_rewrite_literal`"),
        Key(("x-forwarded-prefix",), "adds `X-Forwarded-Prefix` (only with `rewrite-target`, as in nginx)"),
        Key(("connection-proxy-header",), "the `Connection` header sent to the backend (route request header)"),
        Key(
            ("service-upstream",), "the Service's ClusterIP is the only endpoint", default="`false`", validator=BOOLEAN
        ),
    )

    def parse(self, ann: Annotations, ctx: ParseContext) -> list[Any]:
        out: list[Any] = []
        proto = self._protocol(ann, ctx)
        if proto is not None:
            out.append(proto)
        if ctx.boolean(ann, "service-upstream", False):
            out.append(ServiceUpstream())
            ctx.converted("service-upstream", "the Service's ClusterIP is the only endpoint")
        vhost = ann.get("upstream-vhost")
        if vhost is not None:
            if _HOST.match(vhost):
                out.append(HostRewrite(vhost))
                ctx.converted("upstream-vhost", f"Host sent upstream: {vhost}")
            else:
                ctx.warn("upstream-vhost", f"invalid host {vhost!r}; ignored")
        prefix = ann.get("x-forwarded-prefix")
        if prefix is not None:
            if not ann.has("rewrite-target"):
                ctx.warn("x-forwarded-prefix", "ignored without rewrite-target (as in ingress-nginx)")
            elif not prefix or any(c in prefix for c in "\r\n\0"):
                ctx.warn("x-forwarded-prefix", f"invalid value {prefix!r}; ignored")
            else:
                out.append(ForwardedPrefix(prefix))
                ctx.converted("x-forwarded-prefix")
        connection = ann.get("connection-proxy-header")
        if connection is not None:
            if _TOKEN.fullmatch(connection):
                out.append(ConnectionHeader(connection))
                ctx.converted("connection-proxy-header", f"Connection: {connection} sent upstream")
            else:
                ctx.warn("connection-proxy-header", f"invalid value {connection!r}; ignored")
        return out

    def uses_service_address(self, upstream: tuple[UpstreamPolicy, ...]) -> bool:
        """service-upstream: the Service's ClusterIP is the cluster's single endpoint."""
        return any(isinstance(p, ServiceUpstream) for p in upstream)

    def _protocol(self, ann: Annotations, ctx: ParseContext) -> UpstreamProtocol | None:
        raw = ann.get("backend-protocol")
        protocol = "HTTP"
        if raw is not None:
            up = raw.upper()
            if up in UNSUPPORTED_PROTOCOLS:
                ctx.report("unsupported", "backend-protocol", f"{up} is not supported; using HTTP")
            elif up not in PROTOCOLS:
                ctx.warn("backend-protocol", f"invalid protocol {raw!r}; using HTTP")
            else:
                protocol = up
                ctx.converted("backend-protocol", {"HTTPS": "TLS to the backend", "GRPC": "HTTP/2 cleartext",
                                                   "GRPCS": "HTTP/2 over TLS", "HTTP2": "HTTP/2 cleartext",
                                                   "HTTP": ""}[up])  # fmt: skip
        tls = protocol in ("HTTPS", "GRPCS")
        ssl_keys = [k for k in self.keys[1:8] if ann.has(k)]
        if not tls:
            for k in ssl_keys:
                ctx.warn(k, "ignored: backend-protocol is not HTTPS or GRPCS")
            return UpstreamProtocol(protocol) if protocol != "HTTP" else None
        verify_raw = (ann.get("proxy-ssl-verify") or "off").lower()
        if verify_raw not in ("on", "off", "true", "false"):
            ctx.warn("proxy-ssl-verify", f"invalid value {verify_raw!r} (on/off); using off")
            verify_raw = "off"
        verify = verify_raw in ("on", "true")
        ca = cert = key = b""
        version = ""
        ref = ann.get("proxy-ssl-secret")
        if ref:
            ns, _, name = ref.rpartition("/")
            ns = ns or ctx.ingress.namespace
            secret = ctx.lookup_secret(ns, name)
            if secret is None:
                ctx.warn("proxy-ssl-secret", f"secret {ns}/{name} not found")
            else:
                ca, cert, key = (_secret_bytes(secret, k) for k in ("ca.crt", "tls.crt", "tls.key"))
                if bool(cert) != bool(key):
                    ctx.warn("proxy-ssl-secret", "tls.crt and tls.key must both be set; no client certificate")
                    cert = key = b""
                version = hashlib.blake2b(ca + cert + key, digest_size=6).hexdigest()
                ctx.converted("proxy-ssl-secret", ("CA" if ca else "") + (" + client certificate" if cert else ""))
        if verify and not ca:
            ctx.warn("proxy-ssl-verify", "no ca.crt in proxy-ssl-secret; the backend certificate is not verified")
            verify = False
        elif ann.has("proxy-ssl-verify"):
            ctx.converted("proxy-ssl-verify", "backend certificate verified" if verify else "not verified")
        sni = ann.get("proxy-ssl-name") or ""
        if sni and not _HOST.match(sni):
            ctx.warn("proxy-ssl-name", f"invalid name {sni!r}; ignored")
            sni = ""
        server_name = _on_off(ctx, ann, "proxy-ssl-server-name")
        if server_name is False:
            sni = ""
        auto_sni = bool(server_name) and not sni
        depth = ctx.integer(ann, "proxy-ssl-verify-depth", 0, minimum=0, maximum=100)
        min_tls = max_tls = ""
        raw_protocols = ann.get("proxy-ssl-protocols")
        if raw_protocols:
            names = raw_protocols.split()
            if not names or any(n not in TLS_VERSIONS for n in names):
                ctx.warn("proxy-ssl-protocols", f"invalid protocols {raw_protocols!r}; using Envoy defaults")
            else:
                versions = sorted(TLS_VERSIONS[n] for n in names)
                min_tls, max_tls = versions[0], versions[-1]
                ctx.converted("proxy-ssl-protocols")
        ciphers: tuple[str, ...] = ()
        raw_ciphers = ann.get("proxy-ssl-ciphers")
        if raw_ciphers:
            wanted = [c for c in re.split(r"[:\s,]+", raw_ciphers) if c]
            items = tuple(c for c in wanted if c in BORINGSSL_CIPHERS)
            if items:
                ciphers = items
                dropped = [c for c in wanted if c not in BORINGSSL_CIPHERS]
                if dropped:
                    ctx.warn("proxy-ssl-ciphers", f"ciphers Envoy does not support dropped: {' '.join(dropped)}")
                else:
                    ctx.converted("proxy-ssl-ciphers")
            else:
                ctx.warn("proxy-ssl-ciphers", f"invalid cipher list {raw_ciphers!r}; using Envoy defaults")
        return UpstreamProtocol(protocol, sni, auto_sni, verify, ca if verify else b"", cert, key, version,
                                depth, min_tls, max_tls, ciphers)  # fmt: skip


def _on_off(ctx: ParseContext, ann: Annotations, key: str) -> bool | None:
    raw = ann.get(key)
    if raw is None:
        return None
    low = raw.lower()
    if low in ("on", "true"):
        return True
    if low in ("off", "false"):
        return False
    ctx.warn(key, f"invalid value {raw!r} (on/off); using off")
    return False
