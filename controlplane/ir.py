"""Intermediate representation: what the gateway should do, free of Kubernetes and Envoy types.

Builders turn Kubernetes objects into these plain, immutable values; the
translator turns them into Envoy protobufs. Annotation families attach typed
policies (frozen dataclasses defined next to their parser) to routes, clusters
and TLS hosts; the translator's feature modules read them back by type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

P = TypeVar("P")

FindingLevel = Literal["converted", "warning", "rejected", "unsupported", "not-applicable", "unknown", "conflict"]


def find_policy(policies: tuple[Any, ...], kind: type[P]) -> P | None:
    """The first policy of `kind` (families attach at most one policy of each type)."""
    for p in policies:
        if isinstance(p, kind):
            return p
    return None


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of an Ingress report: what happened to an annotation or a part of the spec."""

    level: FindingLevel
    key: str  # annotation key (short form), or a spec location such as "rules[0].paths[1]"
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "key": self.key, "message": self.message}


@dataclass(frozen=True, slots=True, order=True)
class IngressRef:
    cluster: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PathMatch:
    """kind: exact | prefix (path-element prefix) | regex (RE2, full match)."""

    kind: Literal["exact", "prefix", "regex"]
    value: str

    def sort_key(self) -> tuple[int, int, str]:
        # Exact first, then longer prefixes before shorter, regex last (longer first).
        rank = {"exact": 0, "prefix": 1, "regex": 2}[self.kind]
        return (rank, -len(self.value), self.value)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A request header condition. `regex` is RE2 full match; `present` matches any value."""

    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool = False
    invert: bool = False


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: str
    weight: int


@dataclass(frozen=True, slots=True)
class Forward:
    """Send to one cluster, or split by weight (canary)."""

    clusters: tuple[WeightedCluster, ...]
    total_weight: int = 100

    @property
    def single(self) -> str | None:
        return self.clusters[0].cluster if len(self.clusters) == 1 else None


@dataclass(frozen=True, slots=True)
class Redirect:
    code: int = 301
    scheme: str | None = None  # "https" for ssl-redirect
    url: str | None = None  # a full URL (permanent/temporal redirect)
    path: str | None = None  # app-root
    port: int | None = None


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


RouteAction = Forward | Redirect | DirectResponse


@dataclass(frozen=True, slots=True)
class Route:
    """One route of a virtual host, in final match order once the host is merged."""

    name: str
    match: PathMatch
    action: RouteAction
    source: IngressRef
    headers: tuple[HeaderMatch, ...] = ()
    policies: tuple[Any, ...] = ()  # typed policies of annotation families
    case_insensitive: bool = False  # regex paths in ingress-nginx are case-insensitive

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """All routes of one host, merged across Ingresses and clusters."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    # Wildcard hosts match exactly one extra DNS label: every route carries this authority regex.
    authority_regex: str | None = None


@dataclass(frozen=True, slots=True)
class TlsHost:
    """Certificate binding for an SNI set on the HTTPS listener."""

    hosts: tuple[str, ...]
    secret: str  # SDS secret name
    policies: tuple[Any, ...] = ()

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind)


@dataclass(frozen=True, slots=True)
class Passthrough:
    """ssl-passthrough: TLS for these SNI names is not terminated; TCP goes to `cluster`."""

    hosts: tuple[str, ...]
    cluster: str


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class LocalityEndpoints:
    """The endpoints of one source cluster for one Service port."""

    cluster_id: str
    endpoints: tuple[Endpoint, ...]
    priority: int = 0

    @property
    def ready_count(self) -> int:
        return sum(1 for e in self.endpoints if e.ready)


@dataclass(frozen=True, slots=True)
class ServiceCluster:
    """One Envoy cluster: a Service port merged across source clusters, plus upstream policies."""

    name: str
    eds_name: str  # ClusterLoadAssignment shared by all variants of the same Service port
    namespace: str
    service: str
    port: int
    policies: tuple[Any, ...] = ()
    static_address: tuple[str, int] | None = None  # service-upstream / external targets

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind)


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    name: str
    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)  # never logged: repr hides it

