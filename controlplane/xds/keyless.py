"""What an unauthenticated stream may see: everything except private keys.

Only `--xds-insecure` lets a client in without credentials. Such a stream still gets listeners,
routes, clusters and endpoints, but every private key is taken out first:

- a Secret (SDS) keeps its certificate chain and loses `private_key` (Envoy then NACKs it, so
  HTTPS on that gateway does not serve: the NACK in /debug/syncz says why);
- a Cluster whose upstream TLS context carries a client certificate (`proxy-ssl-secret`) loses
  that certificate and key, and connects without a client certificate.

Redacted copies are made once per resource version and shared by every such stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2

from controlplane.xds.cache import Resource, TypeSnapshot, pack
from controlplane.xds.resources import CLUSTER, SECRET

_UPSTREAM_TLS = b"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
KEYLESS_TYPES = frozenset({CLUSTER, SECRET})


def _redact_secret(any_bytes: bytes) -> bytes | None:
    msg = secret_pb2.Secret.FromString(any_pb2.Any.FromString(any_bytes).value)
    if not msg.HasField("tls_certificate"):
        return None
    cert = msg.tls_certificate
    cert.ClearField("private_key")
    cert.ClearField("private_key_provider")
    cert.ClearField("pkcs12")
    cert.ClearField("password")
    return msg.SerializeToString(deterministic=True)


def _redact_cluster(any_bytes: bytes) -> bytes | None:
    if _UPSTREAM_TLS not in any_bytes:  # no TLS context packed anywhere in it: nothing to take out
        return None
    msg = cluster_pb2.Cluster.FromString(any_pb2.Any.FromString(any_bytes).value)
    changed = False
    sockets = [msg.transport_socket, *(m.transport_socket for m in msg.transport_socket_matches)]
    for sock in sockets:
        if not sock.typed_config.Is(tls_pb2.UpstreamTlsContext.DESCRIPTOR):
            continue
        ctx = tls_pb2.UpstreamTlsContext()
        sock.typed_config.Unpack(ctx)
        if ctx.common_tls_context.tls_certificates:
            ctx.common_tls_context.ClearField("tls_certificates")
            sock.typed_config.Pack(ctx)
            changed = True
    return msg.SerializeToString(deterministic=True) if changed else None


class KeylessView:
    """Snapshots of CDS and SDS as an unauthenticated stream may see them."""

    def __init__(self) -> None:
        self._redacted: dict[tuple[str, str, str], Resource] = {}

    def snapshot(self, type_url: str, snap: TypeSnapshot) -> TypeSnapshot:
        if type_url not in KEYLESS_TYPES:
            return snap
        # Resource versions (and so the type's digest) stay the content's: what a keyless stream
        # holds is still named by what the objects are, the same on every replica.
        return replace(snap, resources=self._resources(type_url, snap.resources))

    def _resources(self, type_url: str, resources: Mapping[str, Resource]) -> dict[str, Resource]:
        out: dict[str, Resource] = {}
        for name, res in resources.items():
            key = (type_url, name, res.version)
            safe = self._redacted.get(key)
            if safe is None:
                redact = _redact_secret if type_url == SECRET else _redact_cluster
                value = redact(res.any_bytes)
                # The version stays the content's: per stream it still says "changed or not".
                safe = res if value is None else Resource(name, res.version, pack(type_url, value))
                if len(self._redacted) > 100_000:
                    self._redacted.clear()
                self._redacted[key] = safe
            out[name] = safe
        return out
