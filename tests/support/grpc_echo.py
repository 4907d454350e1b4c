"""A real grpcio server for backend-protocol GRPC tests: unary `/echo.Echo/Say` returns who answered.

Messages are raw bytes (no generated stubs): the reply is `<pod>:<request bytes>`, and the
server records the `:authority` it saw.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc

METHOD = "/echo.Echo/Say"


class GrpcEcho:
    """One gRPC pod on 127.0.0.1 with a port chosen at run time (`port`, like EchoServer)."""

    def __init__(self, pod: str = "grpc-0") -> None:
        self.pod = pod
        self.authorities: list[str] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(self._say)}
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _say(self, request: bytes, context: Any) -> bytes:
        meta = dict(context.invocation_metadata())
        self.authorities.append(str(meta.get(":authority", "")))
        return self.pod.encode() + b":" + request

    def stop(self) -> None:
        self._server.stop(0)


def call(
    port: int, authority: str, payload: bytes, timeout: float = 5.0, metadata: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """One unary call through 127.0.0.1:port with the given :authority (h2c prior knowledge)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", authority)]) as ch:
        say = ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        return say(payload, timeout=timeout, metadata=metadata or None)
