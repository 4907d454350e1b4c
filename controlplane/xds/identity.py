"""Who an xDS client is, and which gateway groups it may claim.

A gateway group is the `node.cluster` an Envoy sends; resources (and certificates) are per group,
so claiming a group is what authorization is about. Identities are strings:

- a client certificate from Meridian's CA names its group in a SAN URI
  `spiffe://meridian/group/<group>` (percent-encoded), or, where the issuer cannot write URI SANs
  (Helm's genSignedCert), in a DNS SAN `<group>.group.meridian.internal`; it may claim exactly that
  group;
- a Kubernetes service account, verified by TokenReview, is `system:serviceaccount:NS:NAME`; it may
  claim a group only where `--xds-allow GROUP=IDENTITY` says so (the chart sets this for its
  gateway's ServiceAccount). `--xds-allow` also accepts a certificate's SAN (URI or DNS name),
  e.g. to let one certificate serve two groups.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from cryptography import x509

GROUP_URI_PREFIX = "spiffe://meridian/group/"
GROUP_DNS_SUFFIX = ".group.meridian.internal"

# How a stream authenticated.
MTLS = "mtls"
TOKEN = "token"
ANONYMOUS = "anonymous"  # only with --xds-insecure


def group_uri(group: str) -> str:
    """The SAN URI that lets a client certificate claim `group`."""
    return GROUP_URI_PREFIX + quote(group, safe="")


def group_dns_name(group: str) -> str:
    """The DNS SAN that lets a client certificate claim `group` (for issuers without URI SANs)."""
    return group + GROUP_DNS_SUFFIX


def group_of_uri(uri: str) -> str | None:
    return unquote(uri[len(GROUP_URI_PREFIX) :]) if uri.startswith(GROUP_URI_PREFIX) else None


def certificate_identities(der: bytes) -> frozenset[str]:
    """The URI and DNS SANs of an (already verified) peer certificate, DER encoded."""
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(sans.get_values_for_type(x509.UniformResourceIdentifier)) | frozenset(
        sans.get_values_for_type(x509.DNSName)
    )


@dataclass(frozen=True)
class Peer:
    """An xDS client as authenticated at the start of its stream."""

    method: str  # MTLS, TOKEN or ANONYMOUS
    identities: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        return self.method != ANONYMOUS

    def describe(self) -> str:
        """For logs: how, and as whom (identities are names, never credentials)."""
        return f"{self.method}:{','.join(sorted(self.identities)) or '-'}"


@dataclass(frozen=True)
class GroupPolicy:
    """Which identities may claim which gateway group."""

    allow: Mapping[str, frozenset[str]] = field(default_factory=dict)  # group -> extra identities

    @classmethod
    def from_rules(cls, rules: Iterable[tuple[str, str]]) -> GroupPolicy:
        allow: dict[str, set[str]] = {}
        for group, identity in rules:
            allow.setdefault(group, set()).add(identity)
        return cls({g: frozenset(ids) for g, ids in allow.items()})

    def may_claim(self, peer: Peer, group: str) -> bool:
        if not peer.authenticated or not group:
            return False
        if group_uri(group) in peer.identities or group_dns_name(group) in peer.identities:
            return True
        return bool(peer.identities & self.allow.get(group, frozenset()))


def allow_rule(text: str) -> tuple[str, str]:
    """argparse type for `--xds-allow GROUP=IDENTITY`."""
    group, sep, identity = text.partition("=")
    if not sep or not group or not identity:
        raise argparse.ArgumentTypeError("expected GROUP=IDENTITY, e.g. edge=system:serviceaccount:gw:envoy")
    return group, identity
