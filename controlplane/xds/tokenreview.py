"""Kubernetes service-account tokens for xDS clients, verified with the TokenReview API.

The token arrives as gRPC metadata (`authorization: Bearer <token>`). It is checked by the
primary cluster's API server for our audience, as istiod and kgateway do; the API server also
enforces expiry and revocation (a deleted ServiceAccount or Pod). A successful review is
remembered for a short while, keyed by a hash of the token, so a reconnect storm does not become
a TokenReview storm. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("controlplane.xds.auth")

DEFAULT_AUDIENCE = "meridian-xds"
_CACHE_TTL = 60.0
_CACHE_MAX = 4096


class TokenRejected(Exception):
    """The token is not valid for us (reason is safe to log: it never contains the token)."""


@dataclass(frozen=True)
class ReviewedToken:
    username: str  # system:serviceaccount:NS:NAME


class TokenReviewer:
    """Verifies bearer tokens against one cluster's TokenReview API."""

    def __init__(self, api_client: Any, audience: str = DEFAULT_AUDIENCE, *, timeout: float = 5.0) -> None:
        from kubernetes import client as k8s

        self._api = k8s.AuthenticationV1Api(api_client)
        self._k8s = k8s
        self.audience = audience
        self._timeout = timeout
        self._cache: dict[str, tuple[float, ReviewedToken]] = {}

    async def review(self, token: str) -> ReviewedToken:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        result = await asyncio.to_thread(self._review, token)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (now + _CACHE_TTL, result)
        return result

    def _review(self, token: str) -> ReviewedToken:
        k8s = self._k8s
        body = k8s.V1TokenReview(api_version="authentication.k8s.io/v1", kind="TokenReview",
                                 spec=k8s.V1TokenReviewSpec(token=token, audiences=[self.audience]))  # fmt: skip
        try:
            resp = self._api.create_token_review(body, _request_timeout=self._timeout)
        except Exception as exc:  # the API server is down or refuses us; the message holds no token
            status = getattr(exc, "status", None)
            raise TokenRejected(f"TokenReview failed ({status or type(exc).__name__})") from None
        st = resp.status
        if st is None or not st.authenticated:
            raise TokenRejected("token not authenticated")
        # An audience-aware server names the audience it checked; without it the token might be
        # one minted for something else entirely.
        if self.audience not in (st.audiences or []):
            raise TokenRejected(f"token not valid for audience {self.audience!r}")
        username = st.user.username if st.user is not None else ""
        if not username:
            raise TokenRejected("token review returned no user")
        return ReviewedToken(username)
