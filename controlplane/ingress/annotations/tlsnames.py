"""TLS names shared by the families that set TLS parameters (downstream and upstream)."""

from __future__ import annotations

# nginx protocol names -> Envoy TlsParameters enum names.
TLS_VERSIONS = {
    "TLSv1": "TLSv1_0",
    "TLSv1.0": "TLSv1_0",
    "TLSv1.1": "TLSv1_1",
    "TLSv1.2": "TLSv1_2",
    "TLSv1.3": "TLSv1_3",
}
TLS_VERSION_ORDER = ["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]

# Cipher names BoringSSL (Envoy) accepts; any other name makes Envoy reject the listener or cluster.
BORINGSSL_CIPHERS = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-PSK-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA",
        "DES-CBC3-SHA",
    }
)
