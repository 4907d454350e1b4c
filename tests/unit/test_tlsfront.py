"""The xDS TLS front relays bytes exactly, both ways, with backpressure, and names who came through."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
from pathlib import Path

import pytest

from controlplane.xds import tlsfront
from controlplane.xds.localca import LocalCA
from controlplane.xds.tlsfront import TlsFiles, TlsFront


async def test_large_transfers_are_relayed_byte_exact_both_ways_and_the_client_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused: list[str] = []
    for side in (tlsfront._TlsSide, tlsfront._PlainSide):

        def pause_writing(self: object, pause: object = side.pause_writing, name: str = side.__name__) -> None:
            paused.append(name)
            pause(self)  # type: ignore[operator]

        monkeypatch.setattr(side, "pause_writing", pause_writing)
    to_client: list[int] = []  # sizes of what the front writes to the client's TCP connection
    write = tlsfront._write

    def spy(transport: asyncio.Transport, chunks: list[bytes]) -> None:
        if transport.get_extra_info("socket").family == socket.AF_INET:
            to_client.extend(len(c) for c in chunks)
        write(transport, chunks)

    monkeypatch.setattr(tlsfront, "_write", spy)
    local = LocalCA(tmp_path)
    server_files, client_files = local.server(["127.0.0.1"]), local.client("gw")
    peers: list[str] = []
    backend_done = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        backend_done.set()

    failures: list[str] = []
    front = TlsFront(TlsFiles(server_files.cert, server_files.key, server_files.ca),
                     lambda reason, _message: failures.append(reason))  # fmt: skip
    backend = await asyncio.start_unix_server(echo, front.backend.path)
    port = await front.start("127.0.0.1:0")
    ctx = ssl.create_default_context(cafile=str(server_files.ca))
    ctx.load_cert_chain(client_files.cert, client_files.key)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        payload = os.urandom(24 * 1024 * 1024 + 17)  # many records, more than the socket buffers hold
        writer.write(payload)
        await asyncio.sleep(0.5)  # nothing read meanwhile: the relay must hold back, not lose bytes
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
        assert echoed == payload
        # Encrypted a small record at a time (the outgoing memory BIO keeps its largest size): 4 KiB
        # of plaintext plus the record's header, content type and tag.
        assert to_client and max(to_client) <= tlsfront._OUT_RECORD + 64
        assert {"_TlsSide", "_PlainSide"} <= set(paused)  # both directions were held back, and resumed
        peer = peers[0]  # an abstract name (Linux) comes as bytes, starting with NUL
        grpc_peer = f"unix-abstract:{peer[1:].decode()}" if isinstance(peer, bytes) else f"unix:{peer}"
        relayed = front.relayed(grpc_peer)
        assert relayed is not None and relayed.identities  # the client certificate's names
        assert front.relayed("unix:") is None and front.relayed(f"ipv4:127.0.0.1:{port}") is None
        assert sorted(os.listdir(front.backend.directory)) == ["grpc.sock", "lock"]  # the relay's own name left no file
        writer.close()
        await asyncio.wait_for(backend_done.wait(), 10)  # the relay closes the other side too
        assert front.relayed(grpc_peer) is None  # and forgets the name
        assert not failures
    finally:
        await front.stop()
        backend.close()
    assert not front.backend.directory.exists()  # stop removes the socket and its directory
    await front.stop()  # a second stop (the app's shutdown can run twice) finds nothing to remove


async def test_no_session_tickets_and_tls12_reconnects_resume_from_the_cache(tmp_path: Path) -> None:
    """Tickets cost a third of a handshake's CPU and a gateway connects once: none are issued. A TLS
    1.2 client (Envoy's default) that reconnects still resumes its session (no full handshake)."""
    local = LocalCA(tmp_path)
    server_files, client_files = local.server(["127.0.0.1"]), local.client("gw")
    front = TlsFront(TlsFiles(server_files.cert, server_files.key, server_files.ca), lambda *_: None)

    relays_closed = asyncio.Semaphore(0)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()
        relays_closed.release()  # the front closed this relay: its TLS connection is gone too

    backend = await asyncio.start_unix_server(echo, front.backend.path)
    port = await front.start("127.0.0.1:0")

    contexts = {}
    for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = contexts[maximum] = ssl.create_default_context(cafile=str(server_files.ca))
        ctx.load_cert_chain(client_files.cert, client_files.key)
        ctx.maximum_version = maximum

    def connect(maximum: ssl.TLSVersion, session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession, bool]:
        ctx = contexts[maximum]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls,
        ):
            tls.sendall(b"ping")
            assert tls.recv(4) == b"ping"  # a TLS 1.3 ticket would have arrived before this
            assert tls.session is not None
            return tls.session, tls.session_reused

    try:
        session, _ = await asyncio.to_thread(connect, ssl.TLSVersion.TLSv1_3)
        assert not session.has_ticket
        first, reused = await asyncio.to_thread(connect, ssl.TLSVersion.TLSv1_2)
        assert not first.has_ticket and not reused
        # The client closed without close_notify, as a cut connection does. Once the front has
        # closed its side and the connection is freed, its session must still be in the cache.
        for _ in range(2):
            await asyncio.wait_for(relays_closed.acquire(), 10)
        gc.collect()
        _, reused = await asyncio.to_thread(connect, ssl.TLSVersion.TLSv1_2, first)
        assert reused
    finally:
        await front.stop()
        backend.close()


def test_stale_socket_directories_of_killed_processes_are_removed(tmp_path: Path) -> None:
    """A killed process leaves its private directory behind; the next start removes it, never a live one's."""
    import subprocess
    import sys
    import time

    from controlplane.xds.tlsfront import BackendSocket, remove_stale_directories

    live = BackendSocket()
    live_dir = live.directory  # this process holds its lock
    # A process that made its directory (and lock) and was killed: the kernel released the lock.
    code = ("import os, sys; from controlplane.xds.tlsfront import BackendSocket; "
            "print(BackendSocket().directory, flush=True); os._exit(0)")  # fmt: skip
    dead_dir = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.strip())  # fmt: skip
    try:
        assert dead_dir.is_dir() and (dead_dir / "lock").exists()
        starting = tmp_path / "meridian-xds-starting"  # no lock yet: a process starting right now
        starting.mkdir()
        abandoned = tmp_path / "meridian-xds-abandoned"  # no lock, made long ago
        abandoned.mkdir()
        old = time.time() - 600
        os.utime(abandoned, (old, old))
        dead_copy = tmp_path / dead_dir.name
        dead_dir.rename(dead_copy)
        live_copy = tmp_path / "meridian-xds-live"
        live_copy.symlink_to(live_dir)  # a symlink is never followed
        remove_stale_directories(tmp_path)
        assert not dead_copy.exists() and not abandoned.exists()
        assert starting.exists() and live_copy.is_symlink()
        remove_stale_directories(live_dir.parent)  # the live directory itself, in the real temp dir
        assert live_dir.is_dir()
    finally:
        live.remove()
        assert not live_dir.exists()
