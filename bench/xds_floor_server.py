"""A bare grpc.aio Delta ADS server that replays a real Meridian's bytes: the transport's floor.

It keeps no snapshot, computes no difference, tracks no version: each stream is answered with the
same pre-encoded DeltaDiscoveryResponses, in the same order, that a Meridian sent a client
subscribing like a gateway (captured by `bench/xds_floor.py`), one in flight per type (the next of
a type after the client's ACK of the previous, as Meridian sends). On SIGUSR1 every stream is
written the next captured EDS change response, and its ACK read. What it does share with Meridian
is what a control plane in this stack cannot drop: grpc.aio with Meridian's server options and
identity serializer (responses written as bytes), one task per stream plus its reader, the
fleet-sized young-GC threshold, the GIL switch interval, and, for TLS, either Meridian's own
`TlsFront` (in-process, same local CA, the relayed peer looked up per stream as `XdsAuth` does) or
gRPC's native TLS requiring a client certificate from the same CA.

    python -m bench.xds_floor_server --responses R.json --address 127.0.0.1:PORT --security front \
        --state-dir DIR    # prints "listening PORT" once it serves

The response file is JSON: {"initial": [[type_url, base64], ...], "changes": [base64, ...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.addresses import split_host_port
from controlplane.app import GIL_SWITCH_INTERVAL
from controlplane.xds.cache import Waker
from controlplane.xds.localca import DEFAULT_SERVER_NAMES, LocalCA
from controlplane.xds.resources import ENDPOINT
from controlplane.xds.server import _GRPC_OPTIONS, SERVICE, fit_young_gc
from controlplane.xds.tlsfront import TlsFiles, TlsFront

SECURITIES = ("plaintext", "front", "native")


@dataclass(frozen=True)
class Replay:
    """What every stream is sent: the initial responses in order, and the change responses in turn."""

    initial: tuple[tuple[str, bytes], ...]
    changes: tuple[bytes, ...]

    @classmethod
    def load(cls, path: Path) -> Replay:
        data = json.loads(path.read_text())
        return cls(tuple((t, base64.b64decode(b)) for t, b in data["initial"]),
                   tuple(base64.b64decode(b) for b in data["changes"]))  # fmt: skip

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({"initial": [[t, base64.b64encode(b).decode()] for t, b in self.initial],
                                    "changes": [base64.b64encode(b).decode() for b in self.changes]}))  # fmt: skip


def _identity(data: bytes) -> bytes:
    return data


@dataclass(eq=False)
class _Stream:
    """One stream's whole state: which types were asked for, which await an ACK, how far it got."""

    replay: Replay
    requested: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    sent: int = 0  # of replay.initial
    changes_owed: int = 0
    change: int = 0
    closed: bool = False
    wake: Waker = field(default_factory=Waker)

    def on_request(self, req: Any) -> None:
        if req.response_nonce:
            self.in_flight.discard(req.type_url)  # an ACK (a NACK would be the same here: none come)
        else:
            self.requested.add(req.type_url)

    def due(self) -> bytes | None:
        initial = self.replay.initial
        if self.sent < len(initial):
            type_url, body = initial[self.sent]
            if type_url not in self.requested or type_url in self.in_flight:
                return None
            self.sent += 1
        elif self.changes_owed and ENDPOINT not in self.in_flight:
            type_url, body = ENDPOINT, self.replay.changes[self.change % len(self.replay.changes)]
            self.changes_owed -= 1
            self.change += 1
        else:
            return None
        self.in_flight.add(type_url)
        return body


class FloorServer:
    """The bare server: streams are answered from the replay, nothing else."""

    def __init__(self, replay: Replay, front: TlsFront | None = None) -> None:
        self.replay = replay
        self.front = front
        self.streams: set[_Stream] = set()

    def push_change(self) -> None:
        for s in self.streams:
            s.changes_owed += 1
            s.wake.set()

    async def _delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        if self.front is not None and self.front.relayed(context.peer()) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "connection did not come through the TLS front")
        s = _Stream(self.replay)
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        s.on_request(first)
        del first, requests
        self.streams.add(s)
        fit_young_gc(len(self.streams))
        reader = asyncio.create_task(self._read(s, context))
        try:
            while not s.closed:
                s.wake.clear()
                while (body := s.due()) is not None:
                    await context.write(body)
                await s.wake.wait()
        finally:
            reader.cancel()
            self.streams.discard(s)
            fit_young_gc(len(self.streams))

    async def _read(self, s: _Stream, context: grpc.aio.ServicerContext) -> None:
        try:
            while (req := await context.read()) is not grpc.aio.EOF:
                s.on_request(req)
                if s.sent < len(s.replay.initial) or s.changes_owed:
                    s.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # the stream is going away
            pass
        finally:
            s.closed = True
            s.wake.set()

    async def start(self, address: str, native: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        handler = grpc.stream_stream_rpc_method_handler(
            self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_identity)  # fmt: skip
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"DeltaAggregatedResources": handler}),)
        )
        if self.front is not None:
            if not server.add_insecure_port(self.front.backend.grpc_address):
                raise OSError("cannot bind gRPC's Unix socket")
            await server.start()
            return server, await self.front.start(address)
        port = server.add_secure_port(address, native) if native else server.add_insecure_port(address)
        if not port:
            raise OSError(f"cannot bind {address}")
        await server.start()
        return server, port


def tls_files(state_dir: Path, address: str) -> TlsFiles:
    """The server certificate `meridian serve` would use: its local CA in `state_dir`, same names."""
    host, _ = split_host_port(address, 18000)
    names = [*DEFAULT_SERVER_NAMES, *([host] if host not in ("0.0.0.0", "::", "") else [])]
    issued = LocalCA(state_dir).server(list(dict.fromkeys(names)))
    return TlsFiles(issued.cert, issued.key, issued.ca)


async def serve(args: argparse.Namespace) -> None:
    replay = Replay.load(args.responses)
    front: TlsFront | None = None
    native: grpc.ServerCredentials | None = None
    if args.security != "plaintext":
        files = tls_files(args.state_dir, args.address)
        if args.security == "front":
            front = TlsFront(files, lambda reason, message: None)
        else:
            native = grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())],
                                                 root_certificates=files.ca.read_bytes(),
                                                 require_client_auth=True)  # fmt: skip
    floor = FloorServer(replay, front)
    server, port = await floor.start(args.address, native)
    # As `meridian serve` once started: what exists now is frozen out of collections, and the GIL is
    # handed to gRPC's poller thread as often.
    gc.freeze()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, floor.push_change)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {port}", flush=True)
    try:
        await stop.wait()
    finally:
        if front is not None:
            await front.stop()
        await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A bare Delta ADS server replaying pre-encoded responses")
    p.add_argument("--responses", type=Path, required=True)
    p.add_argument("--address", default="127.0.0.1:0")
    p.add_argument("--security", choices=SECURITIES, default="plaintext")
    p.add_argument("--state-dir", type=Path, help="the local CA's directory (TLS)")
    args = p.parse_args(argv)
    if args.security != "plaintext" and args.state_dir is None:
        p.error("TLS needs --state-dir")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
