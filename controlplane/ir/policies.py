"""Every policy an input can attach to the gateway's routes, clusters and TLS hosts.

Frontends (today the Ingress annotation families) produce these values; the translator's
feature modules read them back by type. They are plain frozen data with no Kubernetes or Envoy
types, so a second frontend (Gateway API filters, Knative) can produce the same policies and
get the same Envoy configuration. `scope` says where a policy attaches:

- route: to every route of its source (Route.policies);
- upstream: to the cluster the source forwards to (a cluster variant, ServiceCluster.policies);
- tls: to the HTTPS filter chain of the source's hosts (TlsHost.policies);
- ingress: read by the frontend while it merges hosts (canary, regex paths, ssl-redirect, app-root,
  ssl-passthrough); the translator never sees them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from controlplane.ir.names import cluster_name

Scope = Literal["route", "upstream", "tls", "ingress"]

# -- rewrite -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegexPaths:
    """The Ingress asks for regex paths; ingress-nginx spreads this to every path of the same host."""

    scope: ClassVar[Scope] = "ingress"


@dataclass(frozen=True, slots=True)
class RewriteTarget:
    """Replace the whole path with `target`, where $1..$n refer to the path regex groups."""

    scope: ClassVar[Scope] = "route"
    target: str

    def substitution(self) -> str:
        """The RE2 substitution string: nginx `$1` becomes `\\1`."""
        return re.sub(r"\$(\d)", r"\\\1", self.target)


# -- sslredirect -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SslRedirect:
    """`enabled` applies when the host has TLS; `force` even without TLS. nginx drops one trailing
    "/" of the request URI in the Location unless `preserve_trailing_slash`."""

    scope: ClassVar[Scope] = "ingress"
    enabled: bool = True
    force: bool = False
    preserve_trailing_slash: bool = False
    port_in_redirects: bool = False  # use-port-in-redirects: the port even when it is 443


@dataclass(frozen=True, slots=True)
class HttpsLocation:
    """The Location of an HTTPS redirect, computed from the request as ingress-nginx's lua_ingress does:
    `https://<Host up to its first ":">[:port]<request URI>`, the client's spelling of the host kept,
    one trailing "/" of the URI dropped when `strip_trailing_slash` (no preserve-trailing-slash).
    Envoy's redirect action keeps a Host port other than 80 and cannot drop a lone "/"."""

    scope: ClassVar[Scope] = "route"
    port: int | None = None  # the public HTTPS port; None for 443 (no port in the Location)
    strip_trailing_slash: bool = True


# -- canary ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Canary:
    """This source is an alternative backend of the primary with the same host and path: chosen by
    header, then cookie, then weight (of `weight_total`)."""

    scope: ClassVar[Scope] = "ingress"
    header: str | None = None
    header_value: str | None = None
    header_pattern: str | None = None
    # The pattern does not compile: as ingress-nginx's balancer.lua (ngx.re.match returns an error),
    # a request carrying the header stays on the main Service and skips the cookie and weight rules.
    header_pattern_invalid: bool = False
    # The pattern is valid PCRE that RE2 cannot run (controlplane.ir.pcre): a Lua step evaluates it.
    header_pattern_pcre: bool = False
    cookie: str | None = None
    weight: int = 0
    weight_total: int = 100


PATTERN_VERDICT_HEADER = "x-meridian-pattern"


@dataclass(frozen=True, slots=True)
class HeaderPattern:
    """The route is one of a canary's routes whose header pattern only PCRE can run: before routing, a
    Lua step sets PATTERN_VERDICT_HEADER to `match` or `error` (or removes it) from `pattern` searched
    in the request's `header` (as ngx.re.match), and routing is done again with it; the routes that
    depend on it match on that header. The header never reaches a backend."""

    scope: ClassVar[Scope] = "route"
    header: str
    pattern: str


# -- alias -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerAlias:
    """server-alias: more names for every host of the Ingress (nginx `server_name host alias...`)."""

    scope: ClassVar[Scope] = "ingress"
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeniedLocation:
    """ingress-nginx's `Location.Denied`: an annotation it cannot apply safely (an auth Secret that does
    not exist) makes every path of the Ingress answer 503, rather than serve it without the check."""

    scope: ClassVar[Scope] = "ingress"
    reason: str


@dataclass(frozen=True, slots=True)
class WwwRedirect:
    """from-to-www-redirect: the www. twin of each host of the Ingress (or the bare name of a www. host)
    answers 308 to the host, as ingress-nginx's redirect server (`<scheme>://<host>:<port><request URI>`)."""

    scope: ClassVar[Scope] = "ingress"


# -- passthrough -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SslPassthrough:
    """TLS for the source's hosts is not terminated: SNI-routed TCP to its backend."""

    scope: ClassVar[Scope] = "ingress"


# -- redirects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UrlRedirect:
    """The route answers with a redirect to `url` instead of forwarding."""

    scope: ClassVar[Scope] = "route"
    url: str
    code: int


@dataclass(frozen=True, slots=True)
class RedirectOrigin:
    """The UrlRedirect's URL is a path (`/new-location`): its Location gets the request's origin in
    front, as nginx's `absolute_redirect on` (its default; relative-redirects turns it off):
    `http(s)://` by the connection's TLS + the Host lowercased without port or trailing dot, and over
    HTTPS `:https_port`: the public HTTPS port when `port_in_redirects` (use-port-in-redirects) and it
    is not 443 (set when the host's routes are merged). nginx names its own port only then: it listens
    on 80 and the public HTTPS port."""

    scope: ClassVar[Scope] = "route"
    port_in_redirects: bool = False
    https_port: int | None = None


@dataclass(frozen=True, slots=True)
class AppRoot:
    """A request for exactly `/` gets a 302 to `path` (an extra route on every host of the Ingress)."""

    scope: ClassVar[Scope] = "ingress"
    path: str


# -- backend -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamProtocol:
    """How the gateway talks to the backend: `http2` for GRPC/GRPCS/HTTP2, `tls` for HTTPS/GRPCS."""

    scope: ClassVar[Scope] = "upstream"
    protocol: str = "HTTP"
    sni: str = ""  # proxy-ssl-name
    auto_sni: bool = False  # proxy-ssl-server-name on without a name: SNI from the Host header
    verify: bool = False
    ca: bytes = field(default=b"", repr=False)
    cert: bytes = field(default=b"", repr=False)
    key: bytes = field(default=b"", repr=False)
    secret_version: str = ""  # content digest: a new CA or certificate makes a new cluster variant
    verify_depth: int = 0
    min_tls: str = ""
    max_tls: str = ""
    ciphers: tuple[str, ...] = ()

    @property
    def http2(self) -> bool:
        return self.protocol in ("GRPC", "GRPCS", "HTTP2")

    def variant_key(self) -> str:
        """What tells two clusters apart (key material enters through `secret_version` only)."""
        return (
            f"UpstreamProtocol(protocol={self.protocol!r}, sni={self.sni!r}, auto_sni={self.auto_sni!r}, "
            f"verify={self.verify!r}, secret_version={self.secret_version!r}, verify_depth={self.verify_depth!r}, "
            f"min_tls={self.min_tls!r}, max_tls={self.max_tls!r}, ciphers={self.ciphers!r})"
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("HTTPS", "GRPCS")


@dataclass(frozen=True, slots=True)
class ServiceUpstream:
    """service-upstream: the Service's ClusterIP is the single endpoint (a cluster variant)."""

    scope: ClassVar[Scope] = "upstream"

    def variant_key(self) -> str:
        return "ServiceUpstream()"


@dataclass(frozen=True, slots=True)
class ExternalName:
    """A Service of type ExternalName: Envoy resolves its DNS name (at the cluster's port) and sends
    there (a cluster variant; KIngress splits to such Services, as Knative's DomainMapping makes)."""

    scope: ClassVar[Scope] = "upstream"
    host: str

    def variant_key(self) -> str:
        return f"ExternalName(host={self.host!r})"


@dataclass(frozen=True, slots=True)
class HostRewrite:
    """The Host header sent upstream (upstream-vhost)."""

    scope: ClassVar[Scope] = "route"
    host: str


@dataclass(frozen=True, slots=True)
class ForwardedPrefix:
    """X-Forwarded-Prefix sent upstream (with a rewritten path)."""

    scope: ClassVar[Scope] = "route"
    prefix: str


@dataclass(frozen=True, slots=True)
class ConnectionHeader:
    """connection-proxy-header: the Connection header sent upstream (nginx `proxy_set_header Connection`)."""

    scope: ClassVar[Scope] = "route"
    value: str


# -- timeouts ----------------------------------------------------------------------------------

DEFAULT_NEXT_UPSTREAM = ("error", "timeout")


DEFAULT_TRIES = 3


@dataclass(frozen=True, slots=True)
class ConnectTimeout:
    """Cluster connect timeout (needs a cluster variant)."""

    scope: ClassVar[Scope] = "upstream"
    seconds: float

    def variant_key(self) -> str:
        return f"ConnectTimeout(seconds={self.seconds!r})"


@dataclass(frozen=True, slots=True)
class IdleTimeout:
    """Route idle timeout: nginx read/send timeouts are per read/write, as Envoy's idle timeout."""

    scope: ClassVar[Scope] = "route"
    seconds: float


@dataclass(frozen=True, slots=True)
class Retries:
    """The route retry policy. `tokens` empty means `off` (no retries)."""

    scope: ClassVar[Scope] = "route"
    tokens: tuple[str, ...] = DEFAULT_NEXT_UPSTREAM
    retries: int = DEFAULT_TRIES - 1
    timeout: float = 0.0  # proxy-next-upstream-timeout, 0 = none

    @property
    def non_idempotent(self) -> bool:
        return "non_idempotent" in self.tokens

    def retry_on(self) -> list[str]:
        out: list[str] = []
        if {"error", "timeout", "invalid_header"} & set(self.tokens):
            out += ["connect-failure", "refused-stream", "reset"]
        if any(t.startswith("http_") for t in self.tokens):
            out.append("retriable-status-codes")
        return out

    def status_codes(self) -> list[int]:
        return sorted(int(t[5:]) for t in self.tokens if t.startswith("http_"))


DEFAULT_RETRIES = Retries()


# -- cors --------------------------------------------------------------------------------------

DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"


DEFAULT_HEADERS = (
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
)


DEFAULT_MAX_AGE = 1728000


@dataclass(frozen=True, slots=True)
class Cors:
    """CORS as ingress-nginx's nginx.tmpl: when the request's Origin is allowed (any origin when
    `any_origin`, else a listed one, `*.` standing for one label, matched case-insensitively at the end
    of the Origin as nginx's `~* (...)$`), every response of the route carries the CORS headers and an
    OPTIONS request is answered 204 by the gateway. With no allowed origin nothing is added."""

    scope: ClassVar[Scope] = "route"
    any_origin: bool = True
    origins: tuple[str, ...] = ()
    methods: str = DEFAULT_METHODS
    headers: str = DEFAULT_HEADERS
    expose_headers: str = ""
    credentials: bool = True
    max_age: int = DEFAULT_MAX_AGE

    def origin_regex(self) -> str | None:
        """RE2 full-match pattern for the Origin header (nginx's regex search), or None for any origin."""
        if self.any_origin:
            return None
        alternatives = "|".join(f"({re.escape(o).replace(re.escape('*'), '[A-Za-z0-9-]+', 1)})" for o in self.origins)
        return f"(?i).*(?:{alternatives})"

    def response_headers(self, allow_origin: str) -> tuple[tuple[str, str], ...]:
        """The headers nginx sets on every response, in its order (`allow_origin` is `*` or the Origin)."""
        out = [("Access-Control-Allow-Origin", allow_origin)]
        if self.credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        out += [("Access-Control-Allow-Methods", self.methods), ("Access-Control-Allow-Headers", self.headers)]
        if self.expose_headers:
            out.append(("Access-Control-Expose-Headers", self.expose_headers))
        out.append(("Access-Control-Max-Age", str(self.max_age)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    """Headers set on every response of the route, replacing the backend's (nginx more_set_headers).
    A value may use Envoy's %REQ(...)% formatters."""

    scope: ClassVar[Scope] = "route"
    headers: tuple[tuple[str, str], ...]


# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefaultBackendService:
    """default-backend as the frontend reads it: the Service port whose cluster (with the Ingress's
    upstream policies) becomes the routes' FallbackBackend."""

    scope: ClassVar[Scope] = "ingress"
    namespace: str
    service: str
    port: int


@dataclass(frozen=True, slots=True)
class FallbackBackend:
    """default-backend: while a route's own cluster has no ready endpoint, its requests go to the
    paired fallback cluster (ingress-nginx's custom default backend of a location). `pairs`:
    (the route's cluster, the default-backend cluster standing in for it)."""

    scope: ClassVar[Scope] = "route"
    pairs: tuple[tuple[str, str], ...]

    def fallback_of(self, cluster: str) -> str | None:
        return next((fb for own, fb in self.pairs if own == cluster), None)


@dataclass(frozen=True, slots=True)
class FallbackHeaders:
    """The request headers nginx sends to a custom default backend standing in for `service`:`port`
    of an Ingress (X-Code: 503, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port, X-Format)."""

    scope: ClassVar[Scope] = "upstream"
    namespace: str
    ingress: str
    service: str
    port: str

    def variant_key(self) -> str:
        return f"FallbackHeaders({self.namespace!r}, {self.ingress!r}, {self.service!r}, {self.port!r})"

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The headers, but X-Format (the request's Accept), in nginx.tmpl's order."""
        return (("X-Code", "503"), ("X-Namespace", self.namespace), ("X-Ingress-Name", self.ingress),
                ("X-Service-Name", self.service), ("X-Service-Port", self.port))  # fmt: skip


def endpoint_labels(policies: tuple[object, ...]) -> tuple[tuple[str, str], ...]:
    """The endpoint metadata of a cluster with these upstream policies (a default-backend stand-in's)."""
    headers = next((p for p in policies if isinstance(p, FallbackHeaders)), None)
    return headers.headers() if headers is not None else ()


ERROR_PATH_PREFIX = "/.meridian-errors/"


@dataclass(frozen=True, slots=True)
class ErrorRoute:
    """Marks the internal route that serves error pages (path rewritten to `/`)."""

    scope: ClassVar[Scope] = "route"
    service: str


@dataclass(frozen=True, slots=True)
class CustomErrors:
    """Codes in `codes` from the route's upstream are replaced by the answer of `cluster`."""

    scope: ClassVar[Scope] = "route"
    service: str
    namespace: str
    port: int
    codes: tuple[int, ...]
    ingress: str

    @property
    def cluster(self) -> str:
        return cluster_name(self.namespace, self.service, self.port)

    @property
    def error_path(self) -> str:
        return f"{ERROR_PATH_PREFIX}{self.namespace}/{self.service}/{self.port}"


# -- loadbalancing -----------------------------------------------------------------------------

DEFAULT_COOKIE = "INGRESSCOOKIE"


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """Cluster LB policy (an Envoy Cluster.LbPolicy name)."""

    scope: ClassVar[Scope] = "upstream"
    policy: str

    def variant_key(self) -> str:
        return f"LoadBalancer(policy={self.policy!r})"


@dataclass(frozen=True, slots=True)
class HashKey:
    """One input of the request hash: kind in source_ip | header | query | cookie."""

    kind: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class HashBy:
    """Route hash policy from upstream-hash-by (every variable hashed together)."""

    scope: ClassVar[Scope] = "route"
    keys: tuple[HashKey, ...]


@dataclass(frozen=True, slots=True)
class CookieAffinity:
    """Route cookie hash policy; Envoy generates the cookie when the request has none."""

    scope: ClassVar[Scope] = "route"
    name: str = DEFAULT_COOKIE
    path: str = ""
    ttl: int = 0  # seconds; 0 = session cookie
    samesite: str = ""
    secure: bool = False
    mode: str = "balanced"
    domain: str = ""


# -- mirror ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mirror:
    """A copy of each request goes to scheme://host:port (its answer is ignored)."""

    scope: ClassVar[Scope] = "route"
    scheme: str
    host: str
    port: int

    @property
    def cluster(self) -> str:
        """Stable per target, shared by every route mirroring to it."""
        return f"mirror{'-tls' if self.scheme == 'https' else ''}:{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


# -- ipaccess ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpAccess:
    """Deny clients in `deny`; when `allow` is not empty, deny everyone outside it (nginx deny-then-allow)."""

    scope: ClassVar[Scope] = "route"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


# -- ratelimit ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """`rate` requests per `period` seconds per client IP, bursting to `burst` at once."""

    name: str  # "rps" | "rpm"
    rate: int
    period: int
    burst: int


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-client-IP limits (all apply); clients in `exempt` are never limited. Rejections get 503."""

    scope: ClassVar[Scope] = "route"
    rules: tuple[RateLimitRule, ...]
    exempt: tuple[str, ...] = ()


# -- bodysize ----------------------------------------------------------------------------------

DEFAULT_BODY_SIZE = 1024 * 1024  # nginx client_max_body_size default (1m)


@dataclass(frozen=True, slots=True)
class BodySize:
    """Largest accepted request body in bytes; 0 means unlimited."""

    scope: ClassVar[Scope] = "route"
    max_bytes: int


# -- basicauth ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """htpasswd lines Envoy can verify, and the realm for WWW-Authenticate."""

    scope: ClassVar[Scope] = "route"
    users: str = field(repr=False)  # "user:{SHA}...\n" lines; "" = none Envoy can verify: every request gets 401
    realm: str = ""


# -- clientcert --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCert:
    """Validate client certificates against `ca` (mode as nginx ssl_verify_client), checked per request
    as nginx does: `error_page` (a URL) replaces the 400 of a missing or failed certificate with a 302
    there; `match_cn` (a PCRE pattern on the subject DN) answers 403 when it does not match."""

    scope: ClassVar[Scope] = "tls"
    ca: bytes = field(repr=False)
    mode: str = "on"
    depth: int = 1
    error_page: str = ""
    match_cn: str = ""


@dataclass(frozen=True, slots=True)
class ClientCertCheck:
    """The per-request half of a host's ClientCert, on every route of that host: every HTTPS filter
    chain shares the route table, so the check must travel with the routes, not with the host's chain
    (a client could otherwise reach them through another chain)."""

    scope: ClassVar[Scope] = "route"
    mode: str = "on"
    error_page: str = ""
    match_cn: str = ""


@dataclass(frozen=True, slots=True)
class PassClientCert:
    """Forward the client certificate (URL-encoded PEM) upstream in header ssl-client-cert."""

    scope: ClassVar[Scope] = "route"


# -- tlsparams ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsParams:
    """Envoy TlsParameters for the host: version range (enum names) and TLS 1.2 cipher list."""

    scope: ClassVar[Scope] = "tls"
    min_version: str | None = None
    max_version: str | None = None
    ciphers: tuple[str, ...] = ()


# -- extauth -----------------------------------------------------------------------------------

SELF_HOST = "meridian.self"  # auth-url host `$host`: the gateway itself, same Host as the request
# In a `signin` template: the request URI escaped as a query component (nginx $escaped_request_uri),
# which a Lua step of the translator puts in dynamic metadata on the routes whose template names it.
ESCAPED_REQUEST_URI = "%DYNAMIC_METADATA(meridian.signin:escaped_request_uri)%"


@dataclass(frozen=True, slots=True)
class ExtAuth:
    """An HTTP auth service at scheme://host:port/path (path may carry a query); `signin` is a URL
    template (Envoy formatter)."""

    scope: ClassVar[Scope] = "route"
    scheme: str
    host: str
    port: int
    path: str
    method: str = "GET"
    response_headers: tuple[str, ...] = ()
    signin: str | None = None
    always_set_cookie: bool = False  # pass the auth service's Set-Cookie to the client on success too

    @property
    def cluster(self) -> str:
        """Stable cluster name for the auth service."""
        if self.self_host:
            return f"extauth:{self.scheme}:self"
        return f"extauth:{self.scheme}:{self.host}:{self.port}"

    @property
    def self_host(self) -> bool:
        """auth-url on `$host`: sent back through this gateway with the request's Host."""
        return self.host == SELF_HOST


# -- Gateway API HTTPRoute filters ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """Headers to set (replace), add (append) and remove, in that order of precedence."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestHeaderEdits:
    """Edits of the request headers sent upstream (RequestHeaderModifier)."""

    scope: ClassVar[Scope] = "route"
    edits: HeaderEdits


@dataclass(frozen=True, slots=True)
class ResponseHeaderEdits:
    """Edits of the response headers sent to the client (ResponseHeaderModifier)."""

    scope: ClassVar[Scope] = "route"
    edits: HeaderEdits


@dataclass(frozen=True, slots=True)
class PathRewrite:
    """URLRewrite's path: replace the whole path (`full`), or the route's matched prefix (`prefix`)."""

    scope: ClassVar[Scope] = "route"
    full: str | None = None
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class RequestTimeout:
    """Gateway API `timeouts`: the whole request (`request`) and each upstream try (`backend`), seconds;
    0 means no timeout."""

    scope: ClassVar[Scope] = "route"
    request: float | None = None
    backend: float | None = None


@dataclass(frozen=True, slots=True)
class ClusterMirrors:
    """RequestMirror: copies of each request go to these Service clusters (answers ignored), each with
    the share of requests in percent."""

    scope: ClassVar[Scope] = "route"
    targets: tuple[tuple[str, float], ...]


RoutePolicy = (
    RewriteTarget
    | UrlRedirect
    | RedirectOrigin
    | HostRewrite
    | ForwardedPrefix
    | ConnectionHeader
    | IdleTimeout
    | Retries
    | Cors
    | ErrorRoute
    | CustomErrors
    | HashBy
    | CookieAffinity
    | Mirror
    | IpAccess
    | RateLimit
    | BodySize
    | BasicAuth
    | PassClientCert
    | ClientCertCheck
    | ExtAuth
    | RequestHeaderEdits
    | ResponseHeaderEdits
    | PathRewrite
    | RequestTimeout
    | ClusterMirrors
    | ResponseHeaders
    | FallbackBackend
    | HttpsLocation
    | HeaderPattern
)
"""Policies attached to routes."""

UpstreamPolicy = UpstreamProtocol | ServiceUpstream | ConnectTimeout | LoadBalancer | FallbackHeaders | ExternalName
"""Policies that make a cluster variant of a Service port."""

TlsPolicy = ClientCert | TlsParams
"""Policies of an HTTPS filter chain."""

SourcePolicy = (
    RegexPaths
    | SslRedirect
    | Canary
    | SslPassthrough
    | AppRoot
    | DefaultBackendService
    | ServerAlias
    | DeniedLocation
    | WwwRedirect
)
"""Policies the frontend reads while merging the routes of a host (never rendered directly)."""

Policy = RoutePolicy | UpstreamPolicy | TlsPolicy | SourcePolicy

ROUTE_POLICIES: tuple[type, ...] = RoutePolicy.__args__  # type: ignore[attr-defined]
UPSTREAM_POLICIES: tuple[type, ...] = UpstreamPolicy.__args__  # type: ignore[attr-defined]
TLS_POLICIES: tuple[type, ...] = TlsPolicy.__args__  # type: ignore[attr-defined]
SOURCE_POLICIES: tuple[type, ...] = SourcePolicy.__args__  # type: ignore[attr-defined]


def cluster_variant(upstream: tuple[UpstreamPolicy, ...]) -> str:
    """The variant (ClusterName.variant) of a Service port's cluster with these upstream policies:
    "" for none, else a short digest of their variant keys, so equal policies share a cluster.

    The text hashed is the one names have always been made of (it reads like the policies' tuple
    repr), so cluster names on the wire stay the same across versions.
    """
    if not upstream:
        return ""
    keys = [p.variant_key() for p in upstream]
    text = "(" + ", ".join(keys) + ("," if len(keys) == 1 else "") + ")"
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
