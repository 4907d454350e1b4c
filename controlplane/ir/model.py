"""The IR's building blocks: matches, actions, routes, virtual hosts, TLS bindings and backends.

Frontends turn their objects (Ingresses today) into these plain, immutable values; the
translator turns them into Envoy protobufs. Routes, clusters and TLS hosts carry typed policies
(controlplane/ir/policies.py) that the translator's feature modules read back by type.
`validate()` on each value lists the impossible combinations a frontend must never produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeVar

from controlplane.ir.policies import RoutePolicy, TlsPolicy, UpstreamPolicy

P = TypeVar("P")

FindingLevel = Literal["converted", "warning", "rejected", "unsupported", "not-applicable", "unknown", "conflict"]


def find_policy(policies: tuple[object, ...], kind: type[P]) -> P | None:
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
    """The object a route, finding or report comes from: (source cluster, namespace, name), and its
    kind when it is not an Ingress (a Gateway API HTTPRoute, say)."""

    cluster: str
    namespace: str
    name: str
    kind: str = "Ingress"

    def __str__(self) -> str:
        base = f"{self.cluster}/{self.namespace}/{self.name}"
        return base if self.kind == "Ingress" else f"{self.kind}:{base}"


@dataclass(frozen=True, slots=True)
class PathMatch:
    """kind: exact | prefix (path-element prefix) | regex (RE2, full match) | string_prefix (a plain
    string prefix: "/foo" also matches "/foobar", as a KIngress path)."""

    kind: Literal["exact", "prefix", "regex", "string_prefix"]
    value: str

    def problems(self) -> list[str]:
        if self.kind not in ("exact", "prefix", "regex", "string_prefix"):
            return [f"unknown path match kind {self.kind!r}"]
        if self.kind != "regex" and not self.value.startswith("/"):
            return [f"{self.kind} path {self.value!r} does not start with '/'"]
        return []

    def sort_key(self) -> tuple[int, int, str]:
        # Exact first, then longer prefixes before shorter, regex last (longer first).
        rank = {"exact": 0, "prefix": 1, "string_prefix": 1, "regex": 2}[self.kind]
        return (rank, -len(self.value), self.value)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A request header condition. `regex` is RE2 full match; `present` matches any value."""

    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool = False
    invert: bool = False

    def problems(self) -> list[str]:
        if self.exact is not None and self.regex is not None:
            return [f"header {self.name!r} has both an exact value and a regex"]
        return []


@dataclass(frozen=True, slots=True)
class QueryMatch:
    """A query parameter condition (Gateway API): `exact` value, or RE2 full match `regex`."""

    name: str
    exact: str | None = None
    regex: str | None = None

    def problems(self) -> list[str]:
        if (self.exact is None) == (self.regex is None):
            return [f"query parameter {self.name!r} needs exactly one of an exact value or a regex"]
        return []


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    """One backend of a Forward and its share of `Forward.total_weight`; `request_headers` are set
    on requests sent to this backend only (a KIngress split's appendHeaders)."""

    cluster: str
    weight: int
    request_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Forward:
    """Send to one cluster, or split by weight (canary)."""

    clusters: tuple[WeightedCluster, ...]
    total_weight: int = 100

    @property
    def single(self) -> str | None:
        """The only cluster, when there is one and it adds no headers of its own."""
        if len(self.clusters) == 1 and not self.clusters[0].request_headers:
            return self.clusters[0].cluster
        return None

    def problems(self) -> list[str]:
        if not self.clusters:
            return ["forward to no cluster"]
        if any(wc.weight < 0 for wc in self.clusters):
            return ["negative cluster weight"]
        if len(self.clusters) > 1 and sum(wc.weight for wc in self.clusters) != self.total_weight:
            return [f"cluster weights do not add up to {self.total_weight}"]
        return []


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a redirect: to https (ssl-redirect), to a full URL, or to a path (app-root); Gateway
    API's RequestRedirect may also set the host and replace the matched path prefix."""

    code: int = 301
    scheme: str | None = None  # "https" for ssl-redirect
    url: str | None = None  # a full URL (permanent/temporal redirect)
    path: str | None = None  # app-root
    port: int | None = None
    host: str | None = None  # replaces the request's Host (and its port, unless `port` is set)
    # Drop one trailing "/" of the path (ingress-nginx's ssl-redirect without preserve-trailing-slash;
    # its route matches only request URIs that end in "/").
    strip_trailing_slash: bool = False
    prefix: str | None = None  # replaces the matched path prefix (the route's match is a prefix)

    def problems(self) -> list[str]:
        out = [] if self.code in (301, 302, 303, 307, 308) else [f"redirect code {self.code} Envoy cannot send"]
        if self.url is not None and (self.path is not None or self.scheme is not None):
            out.append("redirect to a full URL also rewrites scheme or path")
        return out


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """Answer with a fixed status, body and response headers (503 for a backend that does not exist,
    a CORS preflight's 204, a redirect whose Location Envoy's redirect action cannot spell).
    A header value may use Envoy's %REQ(...)% formatters."""

    status: int
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def problems(self) -> list[str]:
        out = [] if 200 <= self.status <= 599 else [f"direct response status {self.status} out of range"]
        if any(not name or any(c in value for c in "\r\n\0") for name, value in self.headers):
            out.append("direct response header without a name or with a control character")
        return out


RouteAction = Forward | Redirect | DirectResponse


@dataclass(frozen=True, slots=True)
class Route:
    """One route of a virtual host, in final match order once the host is merged."""

    name: str
    match: PathMatch
    action: RouteAction
    source: IngressRef
    headers: tuple[HeaderMatch, ...] = ()
    policies: tuple[RoutePolicy, ...] = ()
    case_insensitive: bool = False  # regex paths in ingress-nginx are case-insensitive
    query: tuple[QueryMatch, ...] = ()

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind) if self.policies else None

    def problems(self) -> list[str]:
        out = [f"route {self.name}: {p}" for p in self.match.problems() + self.action.problems()]
        for h in self.headers:
            out.extend(f"route {self.name}: {p}" for p in h.problems())
        for q in self.query:
            out.extend(f"route {self.name}: {p}" for p in q.problems())
        kinds = [type(p) for p in self.policies]
        if len(set(kinds)) != len(kinds):
            out.append(f"route {self.name}: two policies of one type")
        return out


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """All routes of one host, merged across Ingresses and clusters."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    # Wildcard hosts match exactly one extra DNS label: every route carries this authority regex.
    authority_regex: str | None = None

    def problems(self) -> list[str]:
        out = [] if self.domains else [f"virtual host {self.name} has no domain"]
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            out.append(f"virtual host {self.name}: two routes with one name")
        for r in self.routes:
            out.extend(r.problems())
        return out


@dataclass(frozen=True, slots=True)
class TlsHost:
    """Certificate binding for an SNI set on the HTTPS listener."""

    hosts: tuple[str, ...]
    secret: str  # SDS secret name
    policies: tuple[TlsPolicy, ...] = ()

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind)

    def problems(self) -> list[str]:
        return [] if self.hosts and self.secret else [f"TLS binding {self.secret!r} without hosts or secret"]


@dataclass(frozen=True, slots=True)
class Passthrough:
    """ssl-passthrough: TLS for these SNI names is not terminated; TCP goes to `cluster`."""

    hosts: tuple[str, ...]
    cluster: str

    def problems(self) -> list[str]:
        return [] if self.hosts and self.cluster else ["passthrough without hosts or cluster"]


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service (merged across source clusters)."""

    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend address; only ready endpoints get traffic, terminating ones drain."""

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
    policies: tuple[UpstreamPolicy, ...] = ()
    static_address: tuple[str, int] | None = None  # service-upstream / external targets

    def policy(self, kind: type[P]) -> P | None:
        return find_policy(self.policies, kind)

    def problems(self) -> list[str]:
        out = [] if 0 < self.port < 65536 else [f"cluster {self.name}: port {self.port} out of range"]
        if self.static_address is not None and not 0 < self.static_address[1] < 65536:
            out.append(f"cluster {self.name}: static port out of range")
        return out


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    """A certificate and its key, served over SDS under `name`."""

    name: str
    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)  # never logged: repr hides it
