"""Secrets in the history: a name plus a certificate fingerprint, never the bytes (they hold keys)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from controlplane.store import SECRET, ClusterRegistry
from controlplane.xds.cache import Resource


def fingerprint(res: Resource) -> str:
    """`sha256:<hex>` of the first certificate (or trusted CA) of an SDS Secret resource."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from google.protobuf import any_pb2

    secret = secret_pb2.Secret.FromString(any_pb2.Any.FromString(res.any_bytes).value)
    if secret.HasField("tls_certificate"):
        src = secret.tls_certificate.certificate_chain
    else:
        src = secret.validation_context.trusted_ca
    pem = src.inline_bytes or src.inline_string.encode()
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
        return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
    except (ValueError, IndexError):  # not PEM: still a stable id that holds no key material
        return "sha256:" + hashlib.sha256(pem).hexdigest()


class Fingerprints:
    """Fingerprints by content version, computed once per Secret content."""

    def __init__(self) -> None:
        self._by_version: dict[str, str] = {}

    def of(self, res: Resource) -> str:
        fp = self._by_version.get(res.version)
        if fp is None:
            fp = self._by_version[res.version] = fingerprint(res)
        return fp

    def index(self, resources: Mapping[str, Resource]) -> dict[str, Resource]:
        """fingerprint -> a current resource carrying that certificate."""
        live = {self.of(r): r for r in resources.values()}
        self._by_version = {v: f for v, f in self._by_version.items() if f in live}
        return live


class SecretFinder:
    """Finds a current TLS Secret (in any source cluster) by certificate fingerprint, to serve a
    rolled-back version's certificate with a key that still exists. Decoded once per object."""

    def __init__(self, registry: ClusterRegistry) -> None:
        self.registry = registry
        self._seen: dict[tuple[str, str, str], tuple[str, str, tuple[bytes, bytes]]] = {}  # key -> rv, fp, pair

    def find(self, fp: str) -> tuple[bytes, bytes] | None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        from controlplane.ingress.secrets import decode_tls_secret

        for store in self.registry.stores():
            for (ns, name), obj in store.items(SECRET):
                key = (store.cluster_id, ns, name)
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or id(obj))
                seen = self._seen.get(key)
                if seen is None or seen[0] != rv:
                    try:
                        cert, pkey = decode_tls_secret(obj)
                        digest = x509.load_pem_x509_certificates(cert)[0].fingerprint(hashes.SHA256()).hex()
                    except (ValueError, IndexError):
                        continue
                    seen = self._seen[key] = (rv, "sha256:" + digest, (cert, pkey))
                if seen[1] == fp:
                    return seen[2]
        return None
