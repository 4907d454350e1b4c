"""TlsParams -> the host's DownstreamTlsContext tls_params (version range, TLS 1.2 ciphers)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from controlplane.ir import TlsHost
from controlplane.ir.policies import TlsParams
from controlplane.translate.features import Feature


class TlsParamsFeature(Feature):
    name = "tls-params"

    def patch_tls(
        self, host: TlsHost, chain: listener_components_pb2.FilterChain, ctx: tls_pb2.DownstreamTlsContext
    ) -> None:
        policy = host.policy(TlsParams)
        if policy is None:
            return
        params = ctx.common_tls_context.tls_params
        if policy.min_version:
            params.tls_minimum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(policy.min_version)
        if policy.max_version:
            params.tls_maximum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(policy.max_version)
        params.cipher_suites.extend(policy.ciphers)
