"""A tiny HTTP/1.1 test client: connect to 127.0.0.1:PORT but send any Host header and any TLS SNI.

Gateways route on Host/SNI, so tests must set them freely without DNS. Stdlib http.client + ssl.
TLS responses carry the served certificate and the negotiated version so tests can check which
certificate a filter chain presented.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID
from multidict import CIMultiDict, CIMultiDictProxy

# What the Kubernetes Ingress conformance suite's Go client sends; override per request.
DEFAULT_USER_AGENT = "Go-http-client/1.1"

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None
CertInput = str | tuple[str, str] | None


@dataclass
class Response:
    """A fully read response. `headers` is case-insensitive (multidict; `getall` for repeats)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    version: str = "HTTP/1.1"
    tls_version: str | None = None
    cipher: str | None = None
    alpn_protocol: str | None = None
    peer_cert_der: bytes | None = field(default=None, repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The leaf certificate the server presented (TLS only)."""
        return x509.load_der_x509_certificate(self.peer_cert_der) if self.peer_cert_der else None

    def peer_cert_names(self) -> list[str]:
        """Subject CN(s) followed by DNS SANs of the served certificate."""
        cert = self.peer_certificate
        if cert is None:
            return []
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        try:
            san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            names += san.get_values_for_type(x509.DNSName)  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            pass
        return names


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _host_only(host: str) -> str:
    """'foo.com:8443' -> 'foo.com'; '[::1]:80' -> '::1'."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def tls_context(
    *,
    ca: str | bytes | None = None,
    client_cert: CertInput = None,
    verify_hostname: bool = True,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """Client context. With `ca` (path or PEM text) the chain is verified; without it nothing is."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        text = ca.decode() if isinstance(ca, bytes) else ca
        if "-----BEGIN" in text:
            ctx.load_verify_locations(cadata=text)
        else:
            ctx.load_verify_locations(cafile=text)
        ctx.check_hostname = verify_hostname
    if client_cert is not None:
        if isinstance(client_cert, tuple):
            ctx.load_cert_chain(client_cert[0], client_cert[1])
        else:
            ctx.load_cert_chain(client_cert)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class _Connection(http.client.HTTPConnection):
    """HTTPConnection that dials (address, port) and, with TLS, uses an arbitrary SNI."""

    def __init__(
        self, address: str, port: int, timeout: float,
        ctx: ssl.SSLContext | None, server_hostname: str | None,
    ) -> None:
        super().__init__(address, port, timeout=timeout)
        self._ctx = ctx
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ctx is not None:
            if self._ctx.check_hostname and not self._server_hostname:
                self._ctx.check_hostname = False
            sock = self._ctx.wrap_socket(sock, server_hostname=self._server_hostname or None)
        self.sock = sock


class Client:
    """A kept-alive connection to 127.0.0.1:port (reconnects when the server closes it)."""

    def __init__(
        self,
        port: int,
        *,
        address: str = "127.0.0.1",
        host: str | None = None,
        tls: bool = False,
        sni: str | None = None,
        ca: str | bytes | None = None,
        client_cert: CertInput = None,
        verify_hostname: bool = True,
        tls_min_version: ssl.TLSVersion | None = None,
        tls_max_version: ssl.TLSVersion | None = None,
        alpn: list[str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """`host` is the default Host header; `sni=None` derives SNI from it (none for IPs), '' sends none."""
        self.port = port
        self.address = address
        self.host = host
        self.timeout = timeout
        self.ctx: ssl.SSLContext | None = None
        if tls or ca is not None or client_cert is not None:
            self.ctx = tls_context(
                ca=ca, client_cert=client_cert, verify_hostname=verify_hostname,
                min_version=tls_min_version, max_version=tls_max_version, alpn=alpn,
            )
        if sni is None and host:
            sni = _host_only(host)
        self.sni = sni if sni and not _is_ip(sni) else None
        self._conn: _Connection | None = None

    def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = _Connection(self.address, self.port, self.timeout, self.ctx, self.sni)
        return self._conn

    def request(
        self,
        method: str,
        path: str = "/",
        *,
        host: str | None = None,
        headers: HeaderInput = None,
        body: bytes | str | None = None,
        user_agent: str | None = DEFAULT_USER_AGENT,
    ) -> Response:
        """Send one request and read the whole response. Header values of None are not sent."""
        if isinstance(body, str):
            body = body.encode()
        items = list(headers.items() if isinstance(headers, Mapping) else (headers or []))
        names = {k.lower() for k, _ in items}
        conn = self._connection()
        try:
            conn.putrequest(method, path or "/", skip_host=True, skip_accept_encoding=True)
            if "host" not in names:
                conn.putheader("Host", host or self.host or f"{self.address}:{self.port}")
            if "user-agent" not in names and user_agent is not None:
                conn.putheader("User-Agent", user_agent)
            if "content-length" not in names and "transfer-encoding" not in names and (
                body is not None or method.upper() in ("POST", "PUT", "PATCH")
            ):
                conn.putheader("Content-Length", str(len(body or b"")))
            for k, v in items:
                if v is not None:
                    conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        tls_info: dict[str, Any] = {}
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):
            c = sock.cipher()
            tls_info = {
                "tls_version": sock.version(),
                "cipher": c[0] if c else None,
                "alpn_protocol": sock.selected_alpn_protocol(),
                "peer_cert_der": sock.getpeercert(binary_form=True),
            }
        out = Response(
            status=resp.status,
            reason=resp.reason,
            headers=CIMultiDictProxy(CIMultiDict(resp.getheaders())),
            body=data,
            version="HTTP/1.0" if resp.version == 10 else "HTTP/1.1",
            **tls_info,
        )
        if resp.will_close:
            self.close()
        return out

    def get(self, path: str = "/", **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(
    method: str,
    port: int,
    path: str = "/",
    *,
    host: str | None = None,
    headers: HeaderInput = None,
    body: bytes | str | None = None,
    tls: bool = False,
    sni: str | None = None,
    ca: str | bytes | None = None,
    client_cert: CertInput = None,
    verify_hostname: bool = True,
    tls_min_version: ssl.TLSVersion | None = None,
    tls_max_version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
    user_agent: str | None = DEFAULT_USER_AGENT,
    timeout: float = 5.0,
    address: str = "127.0.0.1",
) -> Response:
    """One request on a fresh connection to address:port with the given Host and SNI."""
    with Client(
        port, address=address, host=host, tls=tls, sni=sni, ca=ca, client_cert=client_cert,
        verify_hostname=verify_hostname, tls_min_version=tls_min_version,
        tls_max_version=tls_max_version, alpn=alpn, timeout=timeout,
    ) as c:
        return c.request(method, path, headers=headers, body=body, user_agent=user_agent)


def get(port: int, path: str = "/", **kw: Any) -> Response:
    return request("GET", port, path, **kw)


async def request_async(method: str, port: int, path: str = "/", **kw: Any) -> Response:
    """`request` in a worker thread, for asyncio tests."""
    return await asyncio.to_thread(request, method, port, path, **kw)
