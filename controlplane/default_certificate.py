"""The default certificate: what HTTPS serves for a host whose own certificate is missing or unusable,
for SNI names no host has, and for clients that send no SNI, as ingress-nginx's default certificate.

Two sources, in this order (as ingress-nginx's `getDefaultSSLCertificate`):
- `--default-ssl-certificate NAMESPACE/NAME`: a TLS Secret of the primary cluster (an object, so every
  replica serves the same one). Unusable or missing: the generated one below, if there is one.
- a self-signed "Kubernetes Ingress Controller Fake Certificate" kept in `--state-dir` (file mode only):
  created once, atomically, and reused by every later start, so a restart serves the same certificate.
  In Kubernetes mode nothing is generated per process (replicas would disagree): the chart makes one
  Secret with Helm's `genSelfSignedCert` and passes the flag; without the flag the leader creates
  `OWN_SECRET` in Meridian's namespace if it is absent (create only, never replaced), and every replica
  serves it as if the flag named it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from controlplane.ingress.secrets import decode_tls_secret
from controlplane.ir import CertificateSecret

log = logging.getLogger("controlplane.default_certificate")

# As ingress-nginx's `ssl.GetFakeSSLCert`: the subject users and tools recognise.
FAKE_CERTIFICATE_CN = "Kubernetes Ingress Controller Fake Certificate"
FAKE_CERTIFICATE_ORG = "Acme Co"
FAKE_CERTIFICATE_DNS = "ingress.local"
# The SDS name of the generated certificate (Secrets' names are `cluster/namespace/name`: no clash).
GENERATED_NAME = "meridian/default-certificate"
VALID_DAYS = 3650
RENEW_BEFORE = datetime.timedelta(days=30)
CERT_FILE = "default-certificate.pem"
KEY_FILE = "default-certificate-key.pem"
# Kubernetes mode without the flag: the Secret the leader creates in Meridian's namespace.
OWN_SECRET = "meridian-default-certificate"


def fake_certificate(name: str = GENERATED_NAME) -> CertificateSecret:
    """A new self-signed certificate with ingress-nginx's fake certificate's subject (RSA 2048)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, FAKE_CERTIFICATE_ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CERTIFICATE_CN),
    ])  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(FAKE_CERTIFICATE_DNS)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertificateSecret(name, cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _load(cert_path: Path, key_path: Path) -> CertificateSecret | None:
    """The stored certificate when both files are there, match and are not near their end."""
    try:
        cert, key = cert_path.read_bytes(), key_path.read_bytes()
    except OSError:
        return None
    try:
        decode_tls_secret({"stringData": {"tls.crt": cert.decode(), "tls.key": key.decode()}})
        end = x509.load_pem_x509_certificate(cert).not_valid_after_utc
    except (ValueError, UnicodeDecodeError):
        return None
    if end - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return None
    return CertificateSecret(GENERATED_NAME, cert, key)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic, with the final permissions from the start (the key is never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The state directory's lock (shared with the local CA): two processes never both generate."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def state_dir_certificate(state_dir: str | Path) -> CertificateSecret:
    """The generated default certificate kept in `state_dir`: created on first use, then the same one
    on every start (replaced only when missing, broken or within 30 days of its end)."""
    directory = Path(state_dir)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    with _locked(directory):
        stored = _load(cert_path, key_path)
        if stored is not None:
            return stored
        made = fake_certificate()
        _write(key_path, made.private_key, 0o600)
        _write(cert_path, made.cert_chain, 0o644)
        log.info("generated the default certificate (%s) in %s", FAKE_CERTIFICATE_CN, directory)
        return made


def parse_secret_ref(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name); ValueError otherwise (the flag's argparse type)."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def create_secret_if_absent(api: Any, namespace: str, name: str) -> bool:
    """Create the TLS Secret `namespace/name` with a new fake certificate unless it exists (the
    leader's job in Kubernetes mode without the flag). True when created; an existing one, or one
    another replica created first (409), is left as it is. Blocking: run it in a thread."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api)
    try:
        core.read_namespaced_secret(name, namespace)
        return False
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise
    made = fake_certificate()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "meridian"}},
        "data": {"tls.crt": base64.b64encode(made.cert_chain).decode(),
                 "tls.key": base64.b64encode(made.private_key).decode()},
    }  # fmt: skip
    try:
        core.create_namespaced_secret(namespace, body)
    except k8s.ApiException as exc:
        if exc.status == 409:  # another replica was first: its certificate is the one
            return False
        raise
    log.info("created the default certificate Secret %s/%s (%s)", namespace, name, FAKE_CERTIFICATE_CN)
    return True
