"""Knative's grpc-ping test image as a real grpcio server: `ping.PingService` (test/test_images/grpc-ping).

`Ping` and the bidirectional `PingStream` answer each `Request{msg}` with `Response{msg + SUFFIX}`.
The messages are built from ping.proto's descriptor at import time by the protobuf library (no
generated stubs to keep in the repository).
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "ping.PingService"


def _messages() -> tuple[Any, Any]:
    """ping.proto: `message Request { string msg = 1; }`, `message Response { string msg = 1; }`."""
    proto = descriptor_pb2.FileDescriptorProto(name="knative_ping.proto", package="ping", syntax="proto3")
    for name in ("Request", "Response"):
        msg = proto.message_type.add(name=name)
        msg.field.add(name="msg", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request, response = (pool.FindMessageTypeByName(f"ping.{n}") for n in ("Request", "Response"))
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


PingRequest, PingResponse = _messages()


class GrpcPing:
    """One grpc-ping pod on 127.0.0.1 with a port chosen at run time."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        codec = {"request_deserializer": PingRequest.FromString, "response_serializer": PingResponse.SerializeToString}
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Ping": grpc.unary_unary_rpc_method_handler(self._ping, **codec),
            "PingStream": grpc.stream_stream_rpc_method_handler(self._stream, **codec),
        })  # fmt: skip
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _pong(self, request: Any) -> Any:
        return PingResponse(msg=request.msg + self.suffix)

    def _ping(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._pong(request)

    def _stream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            yield self._pong(request)

    def stop(self) -> None:
        self._server.stop(0)


class PingStream:
    """One `PingStream` call on a channel: `ping(msg)` sends a message and returns the reply's text."""

    def __init__(self, channel: grpc.Channel, timeout: float = 30.0) -> None:
        self._outbox: queue.Queue[Any] = queue.Queue()
        call = channel.stream_stream(f"/{SERVICE}/PingStream", request_serializer=PingRequest.SerializeToString,
                                     response_deserializer=PingResponse.FromString)  # fmt: skip
        self._replies = call(iter(self._outbox.get, None), timeout=timeout)

    def ping(self, msg: str) -> str:
        self._outbox.put(PingRequest(msg=msg))
        return str(next(self._replies).msg)

    def close(self) -> None:
        self._outbox.put(None)
        for _ in self._replies:  # drain to the end of the call
            pass

    def __enter__(self) -> PingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
