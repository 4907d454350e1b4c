"""A local certificate authority for the xDS port, kept in a state directory.

File mode and the demo have no cluster to hand out certificates, so `meridian serve` and
`meridian bootstrap --state-dir` share a small CA on disk: the server certificate covers the
names clients dial, and each gateway group gets a client certificate whose SAN URI names the
group (see `controlplane.xds.identity`). Everything is reused while present and valid, so running
either command again changes nothing; a file lock keeps two processes from racing to create it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.xds.identity import group_uri

CA_DAYS = 3650
LEAF_DAYS = 365
# A certificate closer than this to its end is replaced rather than reused.
RENEW_BEFORE = datetime.timedelta(days=30)
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


def default_state_dir() -> Path:
    """`$XDG_CACHE_HOME/meridian`, else `~/.cache/meridian`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "meridian"


@dataclass(frozen=True)
class CertFiles:
    """Paths of one PEM certificate, its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic write with the final permissions from the start (keys are never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class LocalCA:
    """The CA, server certificate and per-group client certificates under one directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.ca_cert_path = self.dir / "xds-ca.pem"
        self.ca_key_path = self.dir / "xds-ca-key.pem"

    # -- public ------------------------------------------------------------------
    def ca(self) -> Path:
        """The CA certificate's path (the CA is created when missing)."""
        with self._locked():
            self._ensure_ca()
        return self.ca_cert_path

    def server(self, names: Sequence[str] = DEFAULT_SERVER_NAMES) -> CertFiles:
        """The server certificate, issued (or re-issued) so its SANs cover `names`."""
        files = CertFiles(self.dir / "xds-server.pem", self.dir / "xds-server-key.pem", self.ca_cert_path)
        wanted = {_san(n) for n in names}
        with self._locked():
            ca_cert, ca_key = self._ensure_ca()
            if not self._reusable(files, ca_cert, lambda c: wanted <= set(_sans(c))):
                self._issue(files, ca_cert, ca_key, sorted(names)[0] if names else "meridian-xds",
                            [_san(n) for n in names], ExtendedKeyUsageOID.SERVER_AUTH)  # fmt: skip
        return files

    def client(self, group: str) -> CertFiles:
        """A client certificate for gateway group `group` (SAN URI `spiffe://meridian/group/<group>`)."""
        uri = group_uri(group)
        stem = "group-" + uri.rsplit("/", 1)[-1]  # percent-encoded: no "/" can reach the path
        files = CertFiles(self.dir / "clients" / f"{stem}.pem", self.dir / "clients" / f"{stem}-key.pem",
                          self.ca_cert_path)  # fmt: skip
        with self._locked():
            ca_cert, ca_key = self._ensure_ca()
            if not self._reusable(files, ca_cert, lambda c: x509.UniformResourceIdentifier(uri) in _sans(c)):
                files.cert.parent.mkdir(mode=0o700, exist_ok=True)
                self._issue(files, ca_cert, ca_key, f"meridian-gateway {group}", [x509.UniformResourceIdentifier(uri)],
                            ExtendedKeyUsageOID.CLIENT_AUTH)  # fmt: skip
        return files

    # -- internals ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _ensure_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        loaded = _load_pair(self.ca_cert_path, self.ca_key_path)
        if loaded is not None:
            cert, key = loaded
            if _fresh(cert) and _is_ca(cert):
                return cert, key
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Meridian xDS local CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key_path, _key_pem(key), 0o600)
        _write(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert, key

    @staticmethod
    def _reusable(files: CertFiles, ca_cert: x509.Certificate, covers: object) -> bool:
        loaded = _load_pair(files.cert, files.key)
        if loaded is None:
            return False
        cert, key = loaded
        if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            return False
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return _fresh(cert) and bool(covers(cert))  # type: ignore[operator]

    @staticmethod
    def _issue(
        files: CertFiles,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        common_name: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(files.key, _key_pem(key), 0o600)
        _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return cert, key


def _fresh(cert: x509.Certificate) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
