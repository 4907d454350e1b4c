"""backend-protocol and proxy-ssl-* on clusters; upstream-vhost and x-forwarded-prefix on routes."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.matcher.v3 import string_pb2

from controlplane.ir import Route, ServiceCluster, VirtualHost
from controlplane.ir.policies import ConnectionHeader, ForwardedPrefix, HostRewrite, UpstreamProtocol
from controlplane.translate.features import Feature

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def upstream_tls(policy: UpstreamProtocol) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    if policy.sni:
        ctx.sni = policy.sni
    common = ctx.common_tls_context
    common.alpn_protocols.append("h2" if policy.http2 else "http/1.1")
    if policy.min_tls:
        common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(policy.min_tls)
        common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(policy.max_tls)
    if policy.ciphers:
        common.tls_params.cipher_suites.extend(policy.ciphers)
    if policy.cert and policy.key:
        cert = common.tls_certificates.add()
        cert.certificate_chain.inline_bytes = policy.cert
        cert.private_key.inline_bytes = policy.key
    if policy.verify and policy.ca:
        vc = common.validation_context
        vc.trusted_ca.inline_bytes = policy.ca
        if policy.sni:
            san = vc.match_typed_subject_alt_names.add(san_type=common_pb2.SubjectAltNameMatcher.DNS)
            san.matcher.CopyFrom(string_pb2.StringMatcher(exact=policy.sni))
        if policy.verify_depth:
            vc.max_verify_depth.value = policy.verify_depth
    return ctx


class BackendFeature(Feature):
    name = "backend"

    def patch_cluster(self, cluster: ServiceCluster, pb: cluster_pb2.Cluster) -> None:
        policy = cluster.policy(UpstreamProtocol)
        if policy is None:
            return
        if policy.http2 or policy.auto_sni:
            opts = hpo_pb2.HttpProtocolOptions()
            if policy.http2:
                opts.explicit_http_config.http2_protocol_options.SetInParent()
            else:
                opts.explicit_http_config.http_protocol_options.SetInParent()
            if policy.auto_sni:
                opts.upstream_http_protocol_options.auto_sni = True
            pb.typed_extension_protocol_options[HTTP_OPTIONS].Pack(opts)
        if policy.tls:
            pb.transport_socket.name = "envoy.transport_sockets.tls"
            pb.transport_socket.typed_config.Pack(upstream_tls(policy))

    def patch_route(self, route: Route, pb: rc_pb2.Route, vhost: VirtualHost) -> None:
        if not pb.HasField("route"):
            return
        vhost_policy = route.policy(HostRewrite)
        if vhost_policy is not None:
            pb.route.host_rewrite_literal = vhost_policy.host
        prefix = route.policy(ForwardedPrefix)
        if prefix is not None:
            pb.request_headers_to_add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="x-forwarded-prefix", value=prefix.prefix),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
        connection = route.policy(ConnectionHeader)
        if connection is not None:
            pb.request_headers_to_add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="connection", value=connection.value),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
