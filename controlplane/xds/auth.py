"""Authentication and authorization of xDS streams, decided before anything is sent.

At the start of each stream the client is authenticated by its verified client certificate
(through the TLS front) or by a service-account bearer token (TokenReview); with neither it is
refused, unless `--xds-insecure` lets it in as anonymous (and then it never gets key material,
see `keyless`). Once its first request names its gateway group (`node.cluster`), the group is
checked against its identity. Refusals are gRPC UNAUTHENTICATED / PERMISSION_DENIED, logged
without credentials and counted in `meridian_xds_auth_failures_total{reason}`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from controlplane.metrics import Metrics
from controlplane.xds.identity import ANONYMOUS, MTLS, TOKEN, GroupPolicy, Peer
from controlplane.xds.tlsfront import TlsFront
from controlplane.xds.tokenreview import TokenRejected, TokenReviewer

log = logging.getLogger("controlplane.xds.auth")


def bearer_token(metadata: Sequence[Any] | None) -> str | None:
    for item in metadata or ():
        key, value = item[0], item[1]
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class XdsAuth:
    """Who may open an xDS stream, and which gateway group it may claim."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        insecure: bool,
        policy: GroupPolicy | None = None,
        tokens: TokenReviewer | None = None,
    ) -> None:
        self._metrics = metrics
        self.insecure = insecure
        self.policy = policy or GroupPolicy()
        self.tokens = tokens
        self.front: TlsFront | None = None  # set by the server when it terminates TLS

    def refused(self, reason: str, message: str) -> None:
        """Count and log a refusal (also for TLS handshakes, which never reach gRPC)."""
        self._metrics.xds_auth_failures.labels(reason).inc()
        log.warning("xDS client refused (%s): %s", reason, message)

    async def _refuse(self, context: Any, code: grpc.StatusCode, reason: str, message: str, client: str) -> NoReturn:
        self.refused(reason, f"{message} (client {client})")
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    async def authenticate(self, context: Any) -> tuple[Peer, str]:
        """The stream's peer and the client's address; aborts the call when it may not connect."""
        client = context.peer()
        if self.front is not None:
            relayed = self.front.relayed(client)
            if relayed is None:
                await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unknown_connection",
                                   "connection did not come through the TLS listener", client)  # fmt: skip
            client = relayed.client
            if relayed.identities:
                return self._accepted(Peer(MTLS, relayed.identities)), client
        token = bearer_token(context.invocation_metadata())
        if token is not None:
            if self.tokens is None:
                await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "token_unsupported",
                                   "bearer tokens need Kubernetes mode (TokenReview)", client)  # fmt: skip
            try:
                reviewed = await self.tokens.review(token)
            except TokenRejected as exc:
                await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "invalid_token", str(exc), client)
            return self._accepted(Peer(TOKEN, frozenset({reviewed.username}))), client
        if self.insecure:
            return self._accepted(Peer(ANONYMOUS)), client
        await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "no_credentials",
                           "a client certificate from Meridian's CA or a service-account token is required",
                           client)  # fmt: skip

    def _accepted(self, peer: Peer) -> Peer:
        self._metrics.xds_streams_authenticated.labels(peer.method).inc()
        return peer

    async def authorize(self, context: Any, peer: Peer, node_id: str, group: str, client: str) -> None:
        """Aborts unless `peer` may claim gateway group `group`. Anonymous peers get the keyless view."""
        if not peer.authenticated:
            return
        if not group:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no_group",
                               f"node {node_id!r} sent no node.cluster (its gateway group)", client)  # fmt: skip
        if not self.policy.may_claim(peer, group):
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, "group_not_allowed",
                               f"{peer.describe()} may not claim gateway group {group!r} (node {node_id!r})",
                               client)  # fmt: skip
