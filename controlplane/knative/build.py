"""Every KIngress of every source cluster -> north-south route entries per host, east-west routes per
cluster-local host, TLS bindings and what each KIngress's status should say. Pure: objects and the
Service index in, values out.

A KIngress is ours when its `networking.knative.dev/ingress.class` (or the older `ingress-class`)
annotation is `meridian.ingress.networking.knative.dev`. `ExternalIP` rules go on the north-south
HTTP and HTTPS listeners (`httpOption: Redirected` answers their plain HTTP with a 301 to HTTPS);
`ClusterLocal` rules only on the east-west listener. Paths match in spec order; a path is Knative's
literal prefix; headers match exactly; splits are weighted Service clusters (ir.names.ClusterName
`ns/svc:port`) whose endpoints merge across clusters exactly as Ingress and HTTPRoute backends,
HTTP/2 when the Service port says h2c; an ExternalName Service's DNS name is resolved by Envoy
(Knative's DomainMapping sends to one). No request timeout and no retries unless the (older)
`timeout`/`retries` fields say so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.gatewayapi.build import HostEntries
from controlplane.gatewayapi.frontend import secret_checker
from controlplane.gatewayapi.grpcroute import GRPC_UPSTREAM
from controlplane.gatewayapi.httproute import RouteEntry
from controlplane.ingress.convert import creation_time
from controlplane.ir import (
    DirectResponse,
    Forward,
    HeaderMatch,
    IngressRef,
    PathMatch,
    Redirect,
    Route,
    WeightedCluster,
)
from controlplane.ir.names import ClusterName
from controlplane.ir.policies import (
    ExternalName,
    HeaderEdits,
    HostRewrite,
    RequestHeaderEdits,
    RequestTimeout,
    Retries,
    RoutePolicy,
    UpstreamPolicy,
    cluster_variant,
)
from controlplane.knative.kinds import (
    CLUSTER_LOCAL,
    EXTERNAL,
    H2C_APP_PROTOCOLS,
    H2C_PORT_NAMES,
    HTTP_ENABLED,
    HTTP_REDIRECTED,
    is_ours,
)
from controlplane.knative.probe import HASH_HEADER, OVERRIDE, compute_hash, expanded_hosts
from controlplane.services import ServiceIndex
from controlplane.store import KINGRESS

log = logging.getLogger("controlplane.knative")

SecretRef = tuple[str, str, str]  # (cluster, namespace, name)
Objects = Mapping[str, Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]]]  # cluster -> kind -> name -> obj

_GO_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$")
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# What the older KIngress `retries` retried on (as net-istio and net-kourier did): 5xx and resets.
_RETRY_ON = ("error", "timeout", "http_502", "http_503", "http_504")


def go_duration(value: Any) -> float | None:
    """A Go/metav1 duration ("10s", "1m0s", "500ms") in seconds; None when it is not one."""
    if not isinstance(value, str) or not _GO_DURATION.match(value):
        return None
    return sum(float(n) * _UNIT[u] for n, u in _GO_PART.findall(value))


def ref_of(cluster: str, namespace: str, name: str) -> IngressRef:
    return IngressRef(cluster, namespace, name, kind=KINGRESS)


@dataclass(frozen=True)
class KIngressInfo:
    """What the status of one of our KIngresses is made of."""

    ref: IngressRef
    generation: int
    public_hosts: tuple[str, ...]
    local_hosts: tuple[str, ...]
    problems: tuple[str, ...] = ()


@dataclass
class KnativeResult:
    hosts: dict[str, HostEntries] = field(default_factory=dict)  # north-south, per host
    local: dict[str, tuple[Route, ...]] = field(default_factory=dict)  # east-west, per cluster-local host
    tls: list[tuple[tuple[str, ...], SecretRef]] = field(default_factory=list)  # SNI names -> certificate
    ingresses: dict[IngressRef, KIngressInfo] = field(default_factory=dict)
    # KIngresses -> the cluster variants they forward to (HTTP/2 for h2c ports, ExternalName Services),
    # and each variant's upstream policies.
    variant_users: dict[IngressRef, frozenset[ClusterName]] = field(default_factory=dict)
    variant_policies: dict[str, tuple[UpstreamPolicy, ...]] = field(default_factory=dict)


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token (RFC 9110), as Envoy checks it
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?(:[0-9]{1,5})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _pairs(value: Any, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """appendHeaders as (name, value) pairs; names that are not HTTP tokens and values with control
    characters (Envoy would reject the whole route table) are left out and reported."""
    out = []
    for k, v in sorted((str(k), str(v)) for k, v in _as_map(value).items()):
        if not _HEADER_NAME.match(k) or k.startswith(":") or _CONTROL.search(v):
            problems.append(f"{where}: header {k!r} is not a valid header name and value; left out")
            continue
        out.append((k, v))
    return tuple(out)


def valid_host(host: str) -> bool:
    return bool(_HOST.match(host))


def path_match(path: Any) -> PathMatch | None:
    """Knative's path is a literal prefix (not path-element aware): "/foo" also matches "/foobar"."""
    p = str(path or "")
    if p in ("", "/"):
        return PathMatch("prefix", "/")
    if not p.startswith("/"):
        return None
    return PathMatch("string_prefix", p)


def _probe(path: Mapping[str, Any], probe_hash: str) -> dict[str, Any]:
    """A path's probe twin (InsertProbe): it also matches `K-Network-Hash: override` and sends the hash."""
    out = dict(path)
    out["headers"] = {**_as_map(path.get("headers")), HASH_HEADER: {"exact": OVERRIDE}}
    out["appendHeaders"] = {**_as_map(path.get("appendHeaders")), HASH_HEADER: probe_hash}
    return out


def spec_order(entry: RouteEntry) -> tuple[str, str, str, int, int]:
    """KIngress paths match in the order the spec lists them (Knative puts a tag's header-matched
    path before the default one); KIngresses sharing a host: the oldest first."""
    r = entry.route
    return (entry.created or "~", r.source.namespace, r.source.name, entry.rule, entry.match)


@dataclass
class Built:
    """One KIngress built: its entries, certificates, status and variants, and what they were built
    from (the object, the Services and Secrets it read), so an unchanged KIngress is not rebuilt."""

    obj: Mapping[str, Any]
    entries: list[tuple[int, str, RouteEntry]] = field(default_factory=list)  # (table, host, entry)
    tls: list[tuple[tuple[str, ...], SecretRef]] = field(default_factory=list)
    info: KIngressInfo | None = None
    used: set[ClusterName] = field(default_factory=set)
    policies: dict[str, tuple[UpstreamPolicy, ...]] = field(default_factory=dict)
    services: dict[tuple[str, str], tuple[tuple[str, Any], ...]] = field(default_factory=dict)
    secrets: dict[SecretRef, Any] = field(default_factory=dict)


Cache = dict[IngressRef, Built]
_HTTPS, _HTTP, _LOCAL = 0, 1, 2  # the tables of Built.entries


class _Builder:
    def __init__(self, services: ServiceIndex, get_secret: Callable[[str, str, str], Any], cache: Cache) -> None:
        self.services = services
        self.get_secret = get_secret
        self.secret_problem = secret_checker(get_secret)
        self.cache = cache
        self.result = KnativeResult()
        # host -> route name -> entry: HTTPS table, HTTP table (redirects when Redirected), east-west
        self._tables: tuple[dict[str, dict[str, RouteEntry]], ...] = ({}, {}, {})
        self._cur = Built({})

    def build(self, objects: Objects) -> KnativeResult:
        seen: set[IngressRef] = set()
        for cluster, kinds in sorted(objects.items()):
            for (ns, name), obj in sorted(kinds.get(KINGRESS, {}).items()):
                if not is_ours(obj):
                    continue
                ref = ref_of(cluster, ns, name)
                seen.add(ref)
                built = self.cache.get(ref)
                if built is None or not self._fresh(built, obj):
                    built = self.cache[ref] = self._build_one(ref, obj)
                self._apply(ref, built)
        for ref in [r for r in self.cache if r not in seen]:
            del self.cache[ref]
        public, http, local = self._tables
        for host in sorted(set(public) | set(http)):
            self.result.hosts[host] = HostEntries(
                tuple(sorted(http.get(host, {}).values(), key=spec_order)),
                tuple(sorted(public.get(host, {}).values(), key=spec_order)),
            )
        for host, bucket in sorted(local.items()):
            self.result.local[host] = tuple(e.route for e in sorted(bucket.values(), key=spec_order))
        return self.result

    def _fresh(self, built: Built, obj: Mapping[str, Any]) -> bool:
        """`built` still holds: the same object, and every Service and Secret it read unchanged."""
        if built.obj is not obj:
            return False
        for key, snap in built.services.items():
            if _service_snapshot(self.services, key) != snap:
                return False
        return all(self.get_secret(*ref) is was for ref, was in built.secrets.items())

    def _build_one(self, ref: IngressRef, obj: Mapping[str, Any]) -> Built:
        self._cur = Built(obj)
        try:
            self._ingress(ref, obj)
        except Exception:  # malformed beyond what the CRD schema allows (file mode): this one only
            log.exception("KIngress %s cannot be read; it is not served", ref)
            generation = _as_map(obj.get("metadata")).get("generation")
            gen = generation if isinstance(generation, int) else 0
            self._cur = Built(obj, info=KIngressInfo(ref, gen, (), (), ("the KIngress cannot be read",)))
        return self._cur

    def _apply(self, ref: IngressRef, built: Built) -> None:
        for table, host, entry in built.entries:
            self._tables[table].setdefault(host, {})[entry.route.name] = entry
        self.result.tls.extend(built.tls)
        if built.info is not None:
            self.result.ingresses[ref] = built.info
        if built.used:
            self.result.variant_users[ref] = frozenset(built.used)
        self.result.variant_policies.update(built.policies)

    def _ingress(self, ref: IngressRef, obj: Mapping[str, Any]) -> None:
        cluster, ns, name = ref.cluster, ref.namespace, ref.name
        cur = self._cur
        meta = _as_map(obj.get("metadata"))
        spec = _as_map(obj.get("spec"))
        created, _ = creation_time(meta.get("creationTimestamp"))
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else 0
        problems: list[str] = []
        option = str(spec.get("httpOption") or HTTP_ENABLED)
        if option not in (HTTP_ENABLED, HTTP_REDIRECTED):
            problems.append(f"httpOption {option!r} is not Enabled or Redirected; Enabled is used")
            option = HTTP_ENABLED
        public: set[str] = set()
        local: set[str] = set()
        probe_hash = compute_hash(ns, name, spec)
        for i, rule in enumerate(_as_list(spec.get("rules"))):
            rule = _as_map(rule)
            visibility = str(rule.get("visibility") or EXTERNAL)
            if visibility not in (EXTERNAL, CLUSTER_LOCAL):
                problems.append(f"rules[{i}]: visibility {visibility!r} is unknown; the rule is not served")
                continue
            named = [str(h).lower() for h in _as_list(rule.get("hosts")) if h]
            for h in [h for h in named if not valid_host(h)]:
                problems.append(f"rules[{i}]: host {h!r} is not a host name; not served")
            hosts = expanded_hosts([h for h in named if valid_host(h)])
            paths = [_as_map(p) for p in _as_list(_as_map(rule.get("http")).get("paths"))]
            # Knative's InsertProbe: each path's probe twin first, then the paths.
            probes = [_probe(raw, probe_hash) for raw in paths]
            for j, raw in enumerate(probes + paths):
                probe = j < len(probes)
                where = f"rules[{i}].paths[{j - len(probes) if not probe else j}]" + ("#probe" if probe else "")
                route = self._route(ref, cluster, where, raw, [] if probe else problems, cur.used)
                if route is None:
                    continue
                entry = RouteEntry(route, created, i, j)
                for host in hosts:
                    if visibility == CLUSTER_LOCAL:
                        local.add(host)
                        cur.entries.append((_LOCAL, host, entry))
                        continue
                    public.add(host)
                    cur.entries.append((_HTTPS, host, entry))
                    plain = entry
                    if option == HTTP_REDIRECTED:
                        to_https = Redirect(code=301, scheme="https")
                        plain = RouteEntry(Route(route.name, route.match, to_https, ref, route.headers), created, i, j)
                    cur.entries.append((_HTTP, host, plain))
        self._tls(ref, spec, problems)
        cur.info = KIngressInfo(ref, generation, tuple(sorted(public)), tuple(sorted(local)), tuple(problems))

    def _tls(self, ref: IngressRef, spec: Mapping[str, Any], problems: list[str]) -> None:
        for k, raw in enumerate(_as_list(spec.get("tls"))):
            raw = _as_map(raw)
            secret = (ref.cluster, str(raw.get("secretNamespace") or ref.namespace), str(raw.get("secretName") or ""))
            named = [str(h).lower() for h in _as_list(raw.get("hosts")) if h]
            hosts = tuple(h for h in named if valid_host(h) and ":" not in h)
            if len(hosts) != len(named):
                problems.append(f"tls[{k}]: hosts that are not host names are left out")
            if secret[2]:
                self._cur.secrets[secret] = self.get_secret(*secret)
            problem = self.secret_problem(secret) if secret[2] else "no secretName"
            if problem is not None:
                problems.append(f"tls[{k}]: Secret {secret[1]}/{secret[2]}: {problem}")
            if secret[2] and hosts:  # bound as an Ingress's TLS is: add_certificates binds only usable ones,
                self._cur.tls.append((hosts, secret))  # so a Secret turned invalid keeps its last good one

    def _route(self, ref: IngressRef, cluster: str, where: str, raw: Mapping[str, Any], problems: list[str],
               used: set[ClusterName]) -> Route | None:  # fmt: skip
        match = path_match(raw.get("path"))
        if match is None:
            problems.append(f"{where}: path {raw.get('path')!r} does not start with '/'; not served")
            return None
        headers = tuple(HeaderMatch(str(n).lower(), exact=str(_as_map(m).get("exact") or ""))
                        for n, m in sorted(_as_map(raw.get("headers")).items()))  # fmt: skip
        bad = [h.name for h in headers if not _HEADER_NAME.match(h.name) or _CONTROL.search(h.exact or "")]
        if bad:
            problems.append(f"{where}: header match {bad[0]!r} is not a valid header; the path is not served")
            return None
        splits = [_as_map(s) for s in _as_list(raw.get("splits"))]
        clusters: list[WeightedCluster] = []
        weights = [s.get("percent") if isinstance(s.get("percent"), int) else 0 for s in splits]
        if len(splits) == 1 and not weights[0]:
            weights = [100]
        elif splits and not any(weights):
            weights = [1] * len(splits)  # no percentages at all: an even split
        for k, (split, weight) in enumerate(zip(splits, weights, strict=True)):
            cluster_ = self._backend(cluster, ref.namespace, split, f"{where}.splits[{k}]", problems, used)
            if cluster_ is not None and weight > 0:
                headers_ = _pairs(split.get("appendHeaders"), f"{where}.splits[{k}].appendHeaders", problems)
                clusters.append(WeightedCluster(cluster_, weight, headers_))
        add = dict(_pairs(raw.get("appendHeaders"), f"{where}.appendHeaders", problems))
        if len(clusters) == 1 and clusters[0].request_headers:  # one backend: its headers are the route's
            add.update(clusters[0].request_headers)
            clusters = [WeightedCluster(clusters[0].cluster, clusters[0].weight)]
        policies: list[RoutePolicy] = []
        if add:
            policies.append(RequestHeaderEdits(HeaderEdits(set=tuple(sorted(add.items())))))
        rewrite = str(raw.get("rewriteHost") or "")
        if rewrite and valid_host(rewrite.lower()):
            policies.append(HostRewrite(rewrite.lower()))
        elif rewrite:
            problems.append(f"{where}: rewriteHost {rewrite!r} is not a host name; not rewritten")
        policies.extend(self._timeouts(raw, where, problems))
        action: Forward | DirectResponse
        if clusters:
            action = Forward(tuple(clusters), total_weight=sum(c.weight for c in clusters))
        else:
            action = DirectResponse(503, "no backend of this KIngress path exists\n")
        return Route(f"{ref}#{where}", match, action, ref, headers, tuple(policies))

    def _timeouts(self, raw: Mapping[str, Any], where: str, problems: list[str]) -> list[RoutePolicy]:
        """The older KIngress `timeout` and `retries` fields, honoured where a KIngress still has them."""
        out: list[RoutePolicy] = []
        request = go_duration(raw.get("timeout")) if raw.get("timeout") is not None else None
        if raw.get("timeout") is not None and request is None:
            problems.append(f"{where}: timeout {raw.get('timeout')!r} is not a duration; ignored")
        retries = _as_map(raw.get("retries"))
        per_try = go_duration(retries.get("perTryTimeout")) if retries.get("perTryTimeout") is not None else None
        if request is not None or per_try is not None:
            out.append(RequestTimeout(request, per_try))
        attempts = retries.get("attempts")
        if isinstance(attempts, int) and attempts > 0:
            out.append(Retries(_RETRY_ON, attempts, 0.0))
        return out

    def _backend(self, cluster: str, namespace: str, split: Mapping[str, Any], where: str, problems: list[str],
                 used: set[ClusterName]) -> str | None:  # fmt: skip
        ns = str(split.get("serviceNamespace") or namespace)
        name = str(split.get("serviceName") or "")
        self._cur.services[(ns, name)] = _service_snapshot(self.services, (ns, name))
        port = split.get("servicePort")
        ref = {"number": port} if isinstance(port, int) else {"name": str(port)} if port else {}
        number, why = self.services.resolve_port(ns, name, ref, cluster)
        if number is None:
            problems.append(f"{where}: {why}")
            return None
        sp = next((p for p in self.services.ports((ns, name)) if p.port == number), None)
        h2c = sp is not None and (sp.name in H2C_PORT_NAMES or (sp.app_protocol or "") in H2C_APP_PROTOCOLS)
        external = self.services.external_name((ns, name))
        upstream: tuple[UpstreamPolicy, ...] = (GRPC_UPSTREAM if h2c else ()) + (
            (ExternalName(external),) if external else ()
        )
        if not upstream:
            return str(ClusterName(ns, name, number))
        variant = ClusterName(ns, name, number, cluster_variant(upstream))
        self._cur.policies[variant.variant] = upstream
        used.add(variant)
        return str(variant)


def reports(result: KnativeResult) -> list[dict[str, Any]]:
    """Each KIngress of ours: what it serves and what it cannot (`/debug/kingresses`; in Kubernetes
    mode its status says the same)."""
    return [{"cluster": r.cluster, "namespace": r.namespace, "name": r.name, "generation": i.generation,
             "public_hosts": list(i.public_hosts), "local_hosts": list(i.local_hosts), "problems": list(i.problems)}
            for r, i in sorted(result.ingresses.items())]  # fmt: skip


def _service_snapshot(services: ServiceIndex, key: tuple[str, str]) -> tuple[tuple[str, Any], ...]:
    """The Service objects of every cluster behind `key`, compared by identity (a changed object is a new one)."""
    return tuple((c, _Same(o)) for c, o in sorted(services.services.get(key, {}).items()))


class _Same:
    """Equal only to a wrapper of the very same object."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def build(objects: Objects, services: ServiceIndex, get_secret: Callable[[str, str, str], Any],
          cache: Cache | None = None) -> KnativeResult:  # fmt: skip
    """See the module docstring. `cache`: what the last build made of each KIngress (kept by the
    engine between builds; a KIngress whose object, Services and Secrets are the same is not rebuilt)."""
    return _Builder(services, get_secret, {} if cache is None else cache).build(objects)
