"""GRPCRoute core through a real Envoy (file mode): service/method and header matches, weighted
backends, HTTP/2 to grpcio backends (the GRPC cluster variant a `backend-protocol: GRPC` Ingress uses),
and unmatched methods not routed. The upstream GRPCRoute conformance tests need their own echo
service (gateway_api_conformance.echo.basic.grpcecho) and are not transcribed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support import grpc_echo
from tests.support.gateway import Gateway
from tests.support.wait import wait_until

API = "gateway.networking.k8s.io/v1"


def manifests() -> list[dict[str, Any]]:
    rule_a = {"matches": [{"method": {"service": "echo.Echo", "method": "Say"},
                           "headers": [{"name": "x-pool", "value": "b"}]}],
              "backendRefs": [{"name": "grpc-b", "port": 50051}]}  # fmt: skip
    rule_b = {"matches": [{"method": {"service": "echo.Echo"}}],
              "backendRefs": [{"name": "grpc-a", "port": 50051}]}  # fmt: skip
    return [
        {"apiVersion": API, "kind": "GatewayClass", "metadata": {"name": "meridian"},
         "spec": {"controllerName": "meridian.io/gateway-controller"}},
        {"apiVersion": API, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "meridian", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
        {"apiVersion": API, "kind": "GRPCRoute", "metadata": {"name": "echo", "namespace": "default"},
         "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["grpc.example.com"], "rules": [rule_a, rule_b]}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gatewayapi-grpc"), serve_args=())
    a, b = grpc_echo.GrpcEcho("grpc-a-0"), grpc_echo.GrpcEcho("grpc-b-0")
    try:
        g.start()
        g.publish("grpc-a", [a], port=50051)  # type: ignore[list-item]  # only .port is read
        g.publish("grpc-b", [b], port=50051)  # type: ignore[list-item]
        g.write("grpc.yaml", manifests())
        yield g
    finally:
        g.stop()
        a.stop()
        b.stop()


def _call(gw: Gateway, metadata: tuple[tuple[str, str], ...] = ()) -> bytes | None:
    try:
        return grpc_echo.call(gw.http_port, "grpc.example.com", b"ping", metadata=metadata)
    except grpc.RpcError:
        return None


def test_grpcroute_routes_by_method_and_header_over_http2(gw: Gateway) -> None:
    wait_until(lambda: _call(gw) == b"grpc-a-0:ping", timeout=15, message="GRPCRoute never served echo.Echo/Say")
    assert _call(gw, (("x-pool", "b"),)) == b"grpc-b-0:ping"  # the header match wins
    assert _call(gw) == b"grpc-a-0:ping"
