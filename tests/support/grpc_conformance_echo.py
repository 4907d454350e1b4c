"""The gateway-api conformance gRPC echo server (upstream conformance/echo-basic/grpc), for the
transcribed GRPCRoute conformance cases.

Service `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho` (conformance/echo-basic/grpcecho.proto
of v1.6.1): `Echo` and `EchoTwo` answer an `EchoResponse` whose `assertions` carry the fully
qualified method, the request headers and the context of the pod (namespace, service name, pod
name), as upstream's server fills them from its environment (`authority` stays empty: grpcio's
server API does not expose the `:authority` pseudo-header, and upstream's checks do not read it,
nor TLS assertions: these backends are plaintext h2c, as upstream's); `EchoThree` is
intentionally unimplemented (UNIMPLEMENTED). The messages are built from that .proto's
descriptor at run time, so no generated code is needed. Upstream's client tells backends apart by
the pod name's prefix (the Service name) and checks the namespace; so does `call` here.
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "gateway_api_conformance.echo_basic.grpcecho"
SERVICE = f"{PACKAGE}.GrpcEcho"

_STRING, _MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_ONE, _MANY = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

# message -> its fields in number order: (name, type, label, message type)
_MESSAGES: dict[str, list[tuple[str, int, int, str]]] = {
    "Header": [("key", _STRING, _ONE, ""), ("value", _STRING, _ONE, "")],
    "Context": [("namespace", _STRING, _ONE, ""), ("ingress", _STRING, _ONE, ""),
                ("service_name", _STRING, _ONE, ""), ("pod", _STRING, _ONE, "")],
    "TLSAssertions": [("version", _STRING, _ONE, ""), ("negotiated_protocol", _STRING, _ONE, ""),
                      ("server_name", _STRING, _ONE, ""), ("cipher_suite", _STRING, _ONE, ""),
                      ("peer_certificates", _STRING, _MANY, "")],
    "Assertions": [("fully_qualified_method", _STRING, _ONE, ""), ("headers", _MESSAGE, _MANY, "Header"),
                   ("authority", _STRING, _ONE, ""), ("context", _MESSAGE, _ONE, "Context"),
                   ("tls_assertions", _MESSAGE, _ONE, "TLSAssertions")],
    "EchoRequest": [],
    "EchoResponse": [("assertions", _MESSAGE, _ONE, "Assertions"), ("request", _MESSAGE, _ONE, "EchoRequest")],
}  # fmt: skip


def _classes() -> dict[str, Any]:
    f = descriptor_pb2.FileDescriptorProto(name="grpcecho.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        m = f.message_type.add(name=name)
        for number, (field, ftype, label, type_name) in enumerate(fields, 1):
            fd = m.field.add(name=field, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{n}")) for n in _MESSAGES}


MESSAGES = _classes()
EchoRequest, EchoResponse = MESSAGES["EchoRequest"], MESSAGES["EchoResponse"]


class ConformanceGrpcEcho:
    """One pod of a conformance gRPC backend on 127.0.0.1, port chosen at run time (`port`)."""

    def __init__(self, service: str, namespace: str, pod: str | None = None) -> None:
        self.service, self.namespace = service, namespace
        self.pod = pod or f"{service}-0"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._echo(name), EchoRequest.FromString,
                                                              EchoResponse.SerializeToString)
                    for name in ("Echo", "EchoTwo")}  # EchoThree: unimplemented, as upstream's  # fmt: skip
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _echo(self, method: str) -> Any:
        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            resp = EchoResponse()
            a = resp.assertions
            a.fully_qualified_method = f"/{SERVICE}/{method}"
            for key, value in context.invocation_metadata():
                if isinstance(value, str):  # (binary "-bin" metadata is not echoed)
                    a.headers.add(key=key, value=value)
            a.context.namespace, a.context.service_name, a.context.pod = self.namespace, self.service, self.pod
            resp.request.CopyFrom(request)
            return resp

        return answer

    def stop(self) -> None:
        self._server.stop(0)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    response: Any | None  # an EchoResponse when code is OK


def call(port: int, method: str, *, authority: str, metadata: dict[str, str] | None = None,
         timeout: float = 5.0) -> Answer:  # fmt: skip
    """One unary call of GrpcEcho/`method` through 127.0.0.1:port (h2c) with this :authority and
    request metadata (gRPC metadata keys are lower case on the wire, as HTTP/2 headers are)."""
    meta = tuple((k.lower(), v) for k, v in (metadata or {}).items()) or None
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", authority)]) as ch:
        stub = ch.unary_unary(f"/{SERVICE}/{method}", request_serializer=EchoRequest.SerializeToString,
                              response_deserializer=EchoResponse.FromString)  # fmt: skip
        try:
            return Answer(grpc.StatusCode.OK, stub(EchoRequest(), timeout=timeout, metadata=meta))
        except grpc.RpcError as exc:
            return Answer(exc.code(), None)
