"""ClientCert -> client certificate validation on the host's TLS chain; PassClientCert -> header."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from controlplane.ir import Route, TlsHost, VirtualHost
from controlplane.ir.policies import ClientCert, PassClientCert
from controlplane.translate.features import Feature


class ClientCertFeature(Feature):
    name = "client-cert"

    def patch_tls(
        self, host: TlsHost, chain: listener_components_pb2.FilterChain, ctx: tls_pb2.DownstreamTlsContext
    ) -> None:
        policy = host.policy(ClientCert)
        if policy is None:
            return
        ctx.require_client_certificate.value = policy.mode == "on"
        vc = ctx.common_tls_context.validation_context
        vc.trusted_ca.inline_bytes = policy.ca
        vc.max_verify_depth.value = policy.depth
        if policy.mode == "optional_no_ca":
            vc.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED

    def patch_route(self, route: Route, pb: route_components_pb2.Route, vhost: VirtualHost) -> None:
        if route.policy(PassClientCert) is None:
            return
        # nginx's $ssl_client_escaped_cert: the URL-encoded PEM. Overwrite what a client may have sent.
        for name, value in (
            ("ssl-client-cert", "%DOWNSTREAM_PEER_CERT%"),
            ("ssl-client-subject-dn", "%DOWNSTREAM_PEER_SUBJECT%"),
            ("ssl-client-issuer-dn", "%DOWNSTREAM_PEER_ISSUER%"),
        ):
            opt = pb.request_headers_to_add.add()
            opt.header.key, opt.header.value = name, value
            opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
