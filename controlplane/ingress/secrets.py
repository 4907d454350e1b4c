"""TLS Secrets -> certificate material, validated before Envoy ever sees it."""

from __future__ import annotations

import base64
import functools
from collections.abc import Collection, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID


def _field(secret: Mapping[str, Any], key: str) -> bytes | None:
    data = secret.get("data") or {}
    if key in data and data[key] is not None:
        try:
            return base64.b64decode(data[key], validate=False)
        except (ValueError, TypeError):
            raise ValueError(f"data[{key!r}] is not valid base64") from None
    string_data = secret.get("stringData") or {}
    if key in string_data and string_data[key] is not None:
        return str(string_data[key]).encode()
    return None


def decode_tls_secret(secret: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM); ValueError with a safe message if unusable.

    Error messages never include key material.
    """
    cert = _field(secret, "tls.crt")
    key = _field(secret, "tls.key")
    if not cert:
        raise ValueError("missing tls.crt")
    if not key:
        raise ValueError("missing tls.key")
    try:
        certs = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise ValueError("tls.crt is not a PEM certificate") from None
    if not certs:
        raise ValueError("tls.crt holds no certificate")
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ValueError("tls.key is not an unencrypted PEM private key") from None
    if private.public_key().public_numbers() != certs[0].public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("tls.key does not match the certificate in tls.crt")
    return cert, key


def decode_ca_bundle(secret: Mapping[str, Any]) -> bytes:
    """A CA bundle from `ca.crt` (ingress-nginx auth-tls-secret); ValueError if unusable."""
    ca = _field(secret, "ca.crt")
    if not ca:
        raise ValueError("missing ca.crt")
    try:
        if not x509.load_pem_x509_certificates(ca):
            raise ValueError("ca.crt holds no certificate")
    except ValueError:
        raise ValueError("ca.crt is not a PEM certificate bundle") from None
    return ca


def secret_bytes(secret: Mapping[str, Any], key: str) -> bytes | None:
    """Raw decoded value of a Secret key (data or stringData)."""
    return _field(secret, key)


@functools.lru_cache(maxsize=4096)
def certificate_names(chain: bytes) -> frozenset[str]:
    """The DNS names the leaf certificate of a PEM chain is for (SANs; its CN when it has none, as
    ingress-nginx's verifyHostname falls back to), lower-cased. Cached: a chain's names never change."""
    try:
        cert = x509.load_pem_x509_certificates(chain)[0]
    except (ValueError, IndexError):
        return frozenset()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return frozenset(n.lower().rstrip(".") for n in names)


def covers(names: Collection[str], host: str) -> bool:
    """Whether a certificate for `names` is valid for `host` (a wildcard covers exactly one label)."""
    host = host.lower()
    if host in names:
        return True
    _first, dot, parent = host.partition(".")
    return bool(dot) and not host.startswith("*.") and f"*.{parent}" in names
