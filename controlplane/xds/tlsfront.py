"""TLS in front of the gRPC xDS server: one port for client certificates and tokens alike.

grpcio's server credentials either require a client certificate (then a token client cannot
connect, and a refused handshake never reaches Meridian's logs or metrics) or do not ask for one
at all (then no certificate is ever seen). So TLS is terminated here, with Python's `ssl`:

- the handshake asks for a client certificate and verifies it against Meridian's CA when one is
  presented (a certificate from another CA fails the handshake: logged, counted);
- each accepted connection is relayed to the gRPC server over a Unix socket in a private
  directory (mode 0700, removed on shutdown): a send on it costs a fraction of a loopback TCP
  send, and every response and ACK of every stream crosses it. The relay's end of each connection
  is bound to a name used once (on Linux an abstract name with a random part, elsewhere `c<n>` in
  that directory, unlinked once connected), and the peer's verified certificate is recorded under
  that name, which is what the gRPC handler sees as its peer. A connection that did not come
  through here (a process of the same user dialling the socket directly) has no name on record
  and is refused as unauthenticated.
- the certificate files are re-read when they change (checked on each new connection), so a
  rotated server certificate or CA is used without a restart; open connections keep theirs.

The relay is two asyncio protocols per connection doing TLS in memory (`ssl.MemoryBIO`): no
stream reader buffers, no tasks, no per-connection read buffer (asyncio's own TLS transport
allocates 256 KiB per connection up front, which was most of a gateway's cost to the control
plane). Each direction pauses reading the other side while its own writes are backed up.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import itertools
import logging
import os
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from controlplane.addresses import split_host_port
from controlplane.xds.identity import certificate_identities

log = logging.getLogger("controlplane.xds.auth")

_RECORD = 16 * 1024  # the largest TLS record's plaintext: one ssl read at a time
# What a client sends is fed to OpenSSL this much at a time: the incoming memory BIO then never
# grows past ~5 KiB (it keeps its largest size for the connection's life; 16 KiB slices left ~22
# KiB per connection). Clients send little (ACKs), so the extra slices cost next to nothing.
_IN_SLICE = 4 * 1024
# Decrypted bytes land here and are copied out at once (all relays run on the event loop's thread):
# one exact-size copy per read instead of a 16 KiB allocation shrunk afterwards.
_READ_BUFFER = bytearray(_RECORD)
_READ_VIEW = memoryview(_READ_BUFFER)
_HANDSHAKE_TIMEOUT = 10.0
# gRPC's bytes are encrypted into records of this much plaintext: the outgoing memory BIO holds one
# record at a time but keeps its largest size for the connection's life (~22 KiB with 16 KiB
# records, ~5.5 KiB with 4 KiB ones); the extra records cost ~22 bytes each on the wire.
_OUT_RECORD = 4 * 1024


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
        # No session tickets: issuing them (two per TLS 1.3 handshake by default, one with TLS 1.2)
        # re-encodes the session with the client's certificate, about a third of the server's
        # handshake CPU, and a gateway keeps its one connection for hours. TLS 1.2 clients (Envoy's
        # default) can still resume from the server's session cache after a dropped connection.
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
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


class BackendSocket:
    """The private directory holding the gRPC server's Unix socket, which only the front dials."""

    def __init__(self) -> None:
        self._names = itertools.count(1)
        self._abstract = sys.platform == "linux"
        self._prefix = f"meridian-xds-{secrets.token_hex(8)}-"
        self._lock: IO[bytes] | None = None

    @functools.cached_property
    def directory(self) -> Path:
        """Made when first needed (a server that never starts leaves nothing behind)."""
        remove_stale_directories(Path(tempfile.gettempdir()))
        directory = Path(tempfile.mkdtemp(prefix="meridian-xds-"))  # mode 0700, this user only
        # Held while this process lives: how a later start tells this directory from a stale one.
        self._lock = open(directory / "lock", "wb")  # noqa: SIM115 - kept open on purpose
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return directory

    @property
    def path(self) -> Path:
        return self.directory / "grpc.sock"

    @property
    def grpc_address(self) -> str:
        return f"unix:{self.path}"

    def client_name(self) -> tuple[str, str]:
        """A name for the relay's end of one connection, never used twice, and how gRPC will name
        that peer. On Linux an abstract name (no file to create and remove: binding a path name
        was ~8% of the front's CPU while 1,000 gateways connected); a name another local process
        took first (it would have to guess the random part) only fails that one connection."""
        n = next(self._names)
        if self._abstract:
            name = f"{self._prefix}{n}"
            return f"\0{name}", f"unix-abstract:{name}"
        path = str(self.directory / f"c{n}")
        return path, f"unix:{path}"

    def remove(self) -> None:
        """The directory and the socket in it (again after a first time: nothing to do)."""
        if "directory" in self.__dict__:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def remove_stale_directories(parent: Path, min_age_s: float = 60.0) -> None:
    """Directories killed processes left behind. A live process holds an exclusive lock on its
    directory's `lock` file for as long as it runs (the kernel drops it when the process dies), so a
    directory whose lock can be taken is stale; one without a lock file only once it is older than
    `min_age_s` (a process starting now has not made it yet). This user's directories only."""
    for d in parent.glob("meridian-xds-*"):
        try:
            st = d.lstat()
            if not d.is_dir() or d.is_symlink() or st.st_uid != os.getuid():
                continue
            lock = d / "lock"
            if lock.exists():
                with open(lock, "rb") as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its process is alive
            elif time.time() - st.st_mtime < min_age_s:
                continue
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


class TlsFront:
    """Accepts TLS on the public xDS address and relays plaintext to the gRPC server's Unix socket."""

    def __init__(self, files: TlsFiles, on_handshake_failure: Callable[[str, str], None]) -> None:
        self._contexts = _ContextSource(files)  # fails fast on unreadable files at startup
        self._on_failure = on_handshake_failure
        self._peers: dict[str, Relayed] = {}  # the gRPC peer string of the relay's socket -> client
        self._server: asyncio.Server | None = None
        self._connections: set[_TlsSide] = set()
        self.backend = BackendSocket()

    async def start(self, address: str) -> int:
        """Listen on `address`; the gRPC server must already listen on `backend.grpc_address`."""
        host, port = split_host_port(address, 18000)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TlsSide(self), host.strip("[]"), port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.close()
        self.backend.remove()

    def relayed(self, grpc_peer: str) -> Relayed | None:
        """The client behind a gRPC peer string; None if it did not come through the TLS front."""
        return self._peers.get(grpc_peer)

    async def _dial(self, tls: _TlsSide) -> tuple[str, _PlainSide]:
        """A connection to the gRPC server whose end is bound to a fresh name; returns the gRPC
        peer string that name gives."""
        loop = asyncio.get_running_loop()
        name, grpc_peer = self.backend.client_name()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind(name)
            try:
                await loop.sock_connect(sock, str(self.backend.path))
            finally:
                if not name.startswith("\0"):
                    os.unlink(name)  # the socket keeps its name; nothing stays in the directory
            _, upstream = await loop.create_unix_connection(lambda: _PlainSide(tls), sock=sock)
        except BaseException:
            sock.close()
            raise
        return grpc_peer, upstream


class _TlsSide(asyncio.Protocol):
    """A client's TLS connection: records in and out through memory BIOs, plaintext to `_PlainSide`."""

    def __init__(self, front: TlsFront) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._where = "?"
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upstream: _PlainSide | None = None
        self._early: list[bytes] = []  # plaintext decrypted before the upstream connection is up
        self._name = ""  # the relay's socket name, under which the client is recorded
        self._closed = False
        self._established = False  # the handshake completed; its session is in the server's cache

    # -- the client's connection ---------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._where = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._front._connections.add(self)
        self._ssl = self._front._contexts.current().wrap_bio(self._in, self._out, server_side=True)
        self._timer = asyncio.get_running_loop().call_later(_HANDSHAKE_TIMEOUT, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        # A slice at a time: a memory BIO keeps the largest size it ever held until it is freed.
        # What they decrypt to goes to gRPC in one write.
        plaintext: list[bytes] = []
        view = memoryview(data)
        for at in range(0, len(view), _IN_SLICE):
            if self._closed or not self._received(view[at : at + _IN_SLICE], plaintext):
                return
        self._forward(plaintext)

    def _forward(self, plaintext: list[bytes]) -> None:
        if not plaintext:
            return
        if self._upstream is not None:
            self._upstream.send(plaintext)
        else:
            self._early.extend(plaintext)

    def _received(self, data: memoryview, plaintext: list[bytes]) -> bool:
        """Take in TLS bytes; what they decrypt to is added to `plaintext`. False once closed."""
        assert self._ssl is not None
        self._in.write(data)
        if self._timer is not None:  # still handshaking
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return True
            except (ssl.SSLError, OSError) as exc:
                self._flush()  # the alert tells the client why
                reason = "bad_certificate" if "CERTIFICATE" in str(exc).upper() else "tls_handshake"
                self._handshake_failed(reason, exc)
                return False
            self._timer.cancel()
            self._timer = None
            self._established = True
            self._flush()
            der = self._ssl.getpeercert(binary_form=True)
            identities = certificate_identities(der) if der else frozenset()
            asyncio.get_running_loop().create_task(self._connect(Relayed(self._where, identities)))
        return self._decrypt(plaintext)

    def eof_received(self) -> bool:
        return False  # close; the upstream side follows in connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._handshake_failed("tls_handshake", exc or ConnectionError("connection closed during the handshake"))
        self.close()

    def pause_writing(self) -> None:  # the client reads slowly: stop reading from gRPC
        if self._upstream is not None:
            self._upstream.pause()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume()

    # -- relaying -------------------------------------------------------------
    async def _connect(self, relayed: Relayed) -> None:
        try:
            name, upstream = await self._front._dial(self)
        except OSError as exc:
            log.warning("xDS TLS front cannot reach the gRPC server: %s", _short(exc))
            self.close()
            return
        if self._closed:
            upstream.close()
            return
        self._upstream = upstream
        self._name = name
        # Recorded before any byte reaches gRPC, so the stream's peer is known when it starts.
        self._front._peers[name] = relayed
        if self._early:
            upstream.send(self._early)
        self._early = []

    def _decrypt(self, plaintext: list[bytes]) -> bool:
        assert self._ssl is not None
        while True:
            try:
                n = self._ssl.read(_RECORD, _READ_BUFFER)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self._flush()
                self.close()
                return False
            if not n:  # the client's close_notify: pass on what came before it, answer, close
                self._forward(plaintext)
                plaintext.clear()
                try:
                    self._ssl.unwrap()
                except (ssl.SSLError, OSError):
                    pass
                self._flush()
                self.close()
                return False
            plaintext.append(bytes(_READ_VIEW[:n]))
            if not self._in.pending and not self._ssl.pending():
                break  # nothing left to decrypt: spare the read that would raise SSLWantReadError
        self._flush()  # reading can produce records too (session tickets, key updates)
        return True

    def send(self, plaintext: bytes) -> None:
        """gRPC's bytes, encrypted to the client."""
        if self._ssl is None or self._closed:
            return
        view = memoryview(plaintext)
        records: list[bytes] = []
        try:
            while view:  # a record at a time, read out at once (see data_received)
                view = view[self._ssl.write(view[:_OUT_RECORD]) :]
                records.append(self._out.read())
        except ssl.SSLError:
            self.close()
            return
        if self._transport is not None and not self._transport.is_closing():
            _write(self._transport, records)

    def _flush(self) -> None:
        if self._out.pending and self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._out.read())

    def pause(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._front._connections.discard(self)
        if self._name:
            self._front._peers.pop(self._name, None)
        if self._upstream is not None:
            self._upstream.close()
        self._shut_down()
        if self._transport is not None:
            self._transport.close()  # after what is already buffered for the client

    def _shut_down(self) -> None:
        """Send close_notify if not yet sent. OpenSSL drops the session of a connection freed without
        one from its cache, so a gateway whose connection was cut (no close_notify from it) would
        pay a full handshake on reconnect; TLS 1.1+ allows resuming such a session. A fatal
        alert has already removed it, and then this only fails quietly."""
        if self._ssl is None or not self._established:
            return
        try:
            self._ssl.unwrap()  # writes close_notify and marks it sent; the client's answer is not awaited
        except (ssl.SSLError, OSError, ValueError):
            pass
        self._flush()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._handshake_failed("tls_handshake", TimeoutError("TLS handshake timed out"))

    def _handshake_failed(self, reason: str, exc: BaseException) -> None:
        self._timer = None
        self._front._on_failure(reason, f"TLS handshake from {self._where} failed: {_short(exc)}")
        self.close()


class _PlainSide(asyncio.Protocol):
    """The Unix-socket connection to the gRPC server, for one client connection."""

    def __init__(self, tls: _TlsSide) -> None:
        self._tls = tls
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._tls.send(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls.close()

    def pause_writing(self) -> None:  # gRPC reads slowly: stop reading from the client
        self._tls.pause()

    def resume_writing(self) -> None:
        self._tls.resume()

    def send(self, chunks: list[bytes]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            _write(self._transport, chunks)

    def pause(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _write(transport: asyncio.Transport, chunks: list[bytes]) -> None:
    """One write: `writelines` joins (copies) even a single chunk, which is the usual case (one
    response, one ACK)."""
    if len(chunks) == 1:
        transport.write(chunks[0])
    else:
        transport.writelines(chunks)


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
