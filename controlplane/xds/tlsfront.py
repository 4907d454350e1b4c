"""TLS in front of the gRPC xDS server: one port for client certificates and tokens alike.

grpcio's server credentials either require a client certificate (then a token client cannot
connect, and a refused handshake never reaches Meridian's logs or metrics) or do not ask for one
at all (then no certificate is ever seen). So TLS is terminated here, with Python's `ssl`:

- the handshake asks for a client certificate and verifies it against Meridian's CA when one is
  presented (a certificate from another CA fails the handshake: logged, counted);
- each accepted connection is relayed to the gRPC server on a loopback port, and the peer's
  verified certificate is recorded under the relay's local port, which is what the gRPC handler
  sees as its peer. A connection that did not come through here (someone dialling the internal
  port directly) has no record and is refused as unauthenticated.
- the certificate files are re-read when they change (checked on each new connection), so a
  rotated server certificate or CA is used without a restart; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controlplane.addresses import split_host_port
from controlplane.xds.identity import certificate_identities

log = logging.getLogger("controlplane.xds.auth")

_CHUNK = 256 * 1024
_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Relayed:
    """A connection accepted here: where it came from, and who its verified certificate names."""

    client: str
    identities: frozenset[str]  # its certificate's URI and DNS SANs (empty: no certificate)


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA that client certificates must chain to."""

    cert: Path
    key: Path
    ca: Path


class _ContextSource:
    """An SSLContext for the current contents of the files; rebuilt when they change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp: tuple[tuple[int, int, int], ...] = ()
        self._ctx = self._load()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for p in (self.files.cert, self.files.key, self.files.ca):
            st = os.stat(p)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> ssl.SSLContext:
        stamp = self._stat()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.files.cert, self.files.key)
        ctx.load_verify_locations(cafile=self.files.ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # tokens come without one; a presented one must verify
        ctx.set_alpn_protocols(["h2"])
        self._stamp = stamp
        return ctx

    def current(self) -> ssl.SSLContext:
        try:
            if self._stat() != self._stamp:
                self._ctx = self._load()
                log.info("xDS server certificate reloaded from %s", self.files.cert)
        except (OSError, ssl.SSLError) as exc:  # half-written rotation: keep serving the last good one
            log.warning("xDS server certificate not reloaded (keeping the previous one): %s", exc)
        return self._ctx


class TlsFront:
    """Accepts TLS on the public xDS address and relays plaintext to the internal gRPC port."""

    def __init__(self, files: TlsFiles, on_handshake_failure: Callable[[str, str], None]) -> None:
        self._contexts = _ContextSource(files)  # fails fast on unreadable files at startup
        self._on_failure = on_handshake_failure
        self._peers: dict[int, Relayed] = {}  # relay's local port (the gRPC peer port) -> client
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._backend: tuple[str, int] = ("127.0.0.1", 0)

    async def start(self, address: str, backend_port: int) -> int:
        host, port = split_host_port(address, 18000)
        self._backend = ("127.0.0.1", backend_port)
        self._server = await asyncio.start_server(self._accept, host.strip("[]"), port, limit=_CHUNK)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def relayed(self, grpc_peer: str) -> Relayed | None:
        """The client behind a gRPC peer string; None if it did not come through the TLS front."""
        host, _, port = grpc_peer.rpartition(":")
        if not host.startswith(("ipv4:127.0.0.1", "ipv6:[::1]")) or not port.isdigit():
            return None
        return self._peers.get(int(port))

    # -- per connection -------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        try:
            await self._relay(reader, writer, where)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels these; asyncio's start_server would log a cancelled handler as an error.
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        try:
            await writer.start_tls(self._contexts.current(), ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = "bad_certificate" if "CERTIFICATE" in str(exc).upper() else "tls_handshake"
            self._on_failure(reason, f"TLS handshake from {where} failed: {_short(exc)}")
            return
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        identities = certificate_identities(der) if der else frozenset()
        up_reader, up_writer = await asyncio.open_connection(*self._backend, limit=_CHUNK)
        local_port = int(up_writer.get_extra_info("sockname")[1])
        self._peers[local_port] = Relayed(where, identities)
        try:
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            # Forget the port before it can be reused by anyone else's connection.
            self._peers.pop(local_port, None)
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


async def _pipe_both(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:  # fmt: skip
    """Copy both ways until either side is done; then both close."""
    a = asyncio.create_task(_pipe(reader, up_writer))
    b = asyncio.create_task(_pipe(up_reader, writer))
    try:
        await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (a, b):
            t.cancel()
        for t in (a, b):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]

