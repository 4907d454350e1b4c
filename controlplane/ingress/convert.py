"""One Ingress object -> its contribution to the gateway (`IngressIR`), with findings.

Pure: everything it needs from other objects (Services for port names,
Secrets for certificates and auth data) comes through the `Lookups` it is
given, and the names it asked for are recorded as dependencies so the
controller knows what to recompute when they change.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.ingress.annotations.base import ParseContext, ParsedAnnotations
from controlplane.ingress.registry import parse_annotations
from controlplane.ir import DirectResponse, Finding, Forward, IngressRef, WeightedCluster
from controlplane.ir.model import find_policy
from controlplane.ir.names import ClusterName, secret_name
from controlplane.ir.policies import (
    DefaultBackendService,
    FallbackBackend,
    FallbackHeaders,
    UpstreamPolicy,
    cluster_variant,
)

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
DEPRECATED_APIS = ("extensions/v1beta1", "networking.k8s.io/v1beta1")


@dataclass(frozen=True, slots=True)
class PathRule:
    """One host+path of an Ingress, before merging with other Ingresses of the host."""

    host: str  # "" is the catch-all
    path: str
    path_type: str
    action: Forward | DirectResponse
    location: str  # e.g. "rules[0].paths[1]", for reports
    backend: ClusterName | None = None  # the cluster `action` forwards to, if any


@dataclass(frozen=True, slots=True)
class TlsBinding:
    hosts: tuple[str, ...]
    secret: str | None  # SDS name, None when the Secret is missing or invalid
    secret_ref: tuple[str, str, str]  # (cluster, namespace, name)
    problem: str | None = None  # why the Secret cannot serve now (reported with its consequence, build/tls.py)
    location: str = ""  # e.g. "tls[0]", for reports


@dataclass(frozen=True)
class IngressIR:
    ref: IngressRef
    created: str
    class_accepted: bool
    rules: tuple[PathRule, ...]
    default_backend: Forward | DirectResponse | None
    tls: tuple[TlsBinding, ...]
    annotations: ParsedAnnotations
    findings: tuple[Finding, ...]
    rejected: bool
    services: frozenset[tuple[str, str]] = frozenset()  # (namespace, name) it depends on
    secrets: frozenset[tuple[str, str, str]] = frozenset()  # (cluster, namespace, name)
    default_backend_cluster: ClusterName | None = None
    fallback_cluster: ClusterName | None = None  # default-backend annotation
    variant: str = ""
    # Variants besides `variant` (default-backend stand-ins): variant -> its upstream policies.
    extra_variants: tuple[
        tuple[str, tuple[UpstreamPolicy, ...]], ...
    ] = ()  # ClusterName.variant of every cluster it forwards to (its upstream policies)

    def backends(self) -> set[ClusterName]:
        """The clusters its rules and default backend forward to."""
        out = {r.backend for r in self.rules if r.backend is not None}
        if isinstance(self.default_backend, Forward) and self.default_backend_cluster is not None:
            out.add(self.default_backend_cluster)
        if self.fallback_cluster is not None:
            out.add(self.fallback_cluster)
        policy = find_policy(self.annotations.route, FallbackBackend)
        if policy is not None:
            out |= {ClusterName.parse(fb) for _own, fb in policy.pairs}
        return out

    @property
    def served(self) -> bool:
        return self.class_accepted and not self.rejected

    @functools.cached_property
    def hosts(self) -> frozenset[str]:  # asked for many times per change; the IR never changes
        return frozenset(r.host for r in self.rules)

    def order_key(self) -> tuple[str, bytes, str]:
        """Conflict order, first wins: ingress-nginx's `sortIngressSlice`
        (internal/ingress/controller/store/store.go): creationTimestamp, oldest first, a missing one
        being Go's zero time (older than any); equal times put the *greater* "namespace/name" string
        first (`return in > jn`). The source cluster breaks what is left (Meridian only)."""
        return (self.created, descending(f"{self.ref.namespace}/{self.ref.name}"), self.ref.cluster)


_INVERTED = bytes(255 - b for b in range(256))


def descending(text: str) -> bytes:
    """A key that sorts strings in reverse byte order (as Go compares them), in C: each UTF-8 byte
    inverted, then 0xff so that a string sorts after the longer strings it is a prefix of."""
    return text.encode().translate(_INVERTED) + b"\xff"


def creation_time(value: Any) -> tuple[str, str | None]:
    """metadata.creationTimestamp as a canonical UTC "YYYY-MM-DDTHH:MM:SSZ" ("" when unset), and a
    problem when it is not a time. Seconds, as Kubernetes stores it; a YAML datetime is accepted."""
    if value is None or value == "":
        return "", None
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return "", f"{value!r} is not an RFC 3339 time; treated as unset"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), None


@dataclass
class Lookups:
    """Read access to other objects; records what was read."""

    resolve_port: Callable[[str, str, Mapping[str, Any], str], tuple[int | None, str]]
    get_secret: Callable[[str, str, str], Mapping[str, Any] | None]
    services: set[tuple[str, str]] = field(default_factory=set)
    secrets: set[tuple[str, str, str]] = field(default_factory=set)


def normalize_host(host: str | None) -> str:
    host = (host or "").strip().lower().rstrip(".")
    return "" if host == "*" else host


def valid_host(host: str) -> bool:
    if host == "":
        return True
    labels = host.split(".")
    if host.startswith("*."):
        labels = labels[1:]
    return (
        all(
            label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and label[0] != "-"
            for label in labels
        )
        and len(host) <= 253
    )


def _backend(
    backend: Mapping[str, Any] | None, namespace: str, cluster: str, where: str, lk: Lookups, out: list[Finding]
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Normalize v1 / v1beta1 backends to (service name, port ref). Returns (port_ref, service)."""
    if not backend:
        out.append(Finding("rejected", where, "path has no backend"))
        return None, None
    if "service" in backend:
        svc = backend.get("service") or {}
        return (svc.get("port") or {}), svc.get("name")
    if "serviceName" in backend:
        port = backend.get("servicePort")
        ref = {"number": port} if isinstance(port, int) or str(port).isdigit() else {"name": str(port)}
        if isinstance(ref.get("number"), str):
            ref = {"number": int(ref["number"])}
        return ref, backend.get("serviceName")
    if "resource" in backend:
        out.append(Finding("unsupported", where, "resource backends are not supported"))
        return None, None
    out.append(Finding("rejected", where, "backend names no service"))
    return None, None


def resolve_backend(
    backend: Mapping[str, Any] | None,
    namespace: str,
    cluster: str,
    where: str,
    lk: Lookups,
    out: list[Finding],
    variant: str = "",
) -> tuple[Forward | DirectResponse, ClusterName | None] | None:
    port_ref, service = _backend(backend, namespace, cluster, where, lk, out)
    if port_ref is None or not service:
        return None
    lk.services.add((namespace, service))
    port, problem = lk.resolve_port(namespace, service, port_ref, cluster)
    if port is None:
        out.append(Finding("warning", where, f"{problem}; requests get 503"))
        return DirectResponse(503, "no such service port\n"), None
    if problem:
        out.append(Finding("warning", where, problem))
    name = ClusterName(namespace, service, port, variant)
    return Forward((WeightedCluster(str(name), 100),)), name


def build_ingress(
    obj: Mapping[str, Any],
    ref: IngressRef,
    *,
    class_accepted: bool,
    lookups: Lookups,
) -> IngressIR:
    """Translate one Ingress. Never raises on bad input: problems become findings."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    findings: list[Finding] = []
    api = obj.get("apiVersion", "networking.k8s.io/v1")
    if api in DEPRECATED_APIS:
        findings.append(Finding("warning", "apiVersion", f"{api} is deprecated; read as networking.k8s.io/v1"))

    ctx = ParseContext(
        ingress=ref,
        obj=obj,
        lookup_secret=lambda ns, name: _record_secret(lookups, ref.cluster, ns, name),
        resolve_service_port=lambda ns, name, port_ref: _record_service(lookups, ns, name, port_ref, ref.cluster),
    )
    parsed = parse_annotations(meta.get("annotations") or {}, ctx)
    findings.extend(parsed.findings)
    variant = cluster_variant(parsed.upstream)
    fallback: ClusterName | None = None
    dbs = parsed.get(DefaultBackendService)
    if dbs is not None:
        # default-backend: its Service's cluster, with this Ingress's upstream policies (nginx copies the
        # location's upstream); each path's own Service gets a stand-in variant carrying nginx's headers.
        fallback = ClusterName(dbs.namespace, dbs.service, dbs.port, variant)
    stand_ins: dict[tuple[str, str], ClusterName] = {}

    def stand_in(service: str, port: str) -> ClusterName:
        assert dbs is not None
        if (service, port) not in stand_ins:
            headers = FallbackHeaders(ref.namespace, ref.name, service, port)
            stand_ins[(service, port)] = ClusterName(
                dbs.namespace, dbs.service, dbs.port, cluster_variant((*parsed.upstream, headers))
            )
        return stand_ins[(service, port)]

    rules: list[PathRule] = []
    fallback_pairs: list[tuple[str, str]] = []
    for i, rule in enumerate(spec.get("rules") or []):
        if not isinstance(rule, Mapping):
            findings.append(Finding("rejected", f"rules[{i}]", "rule is not an object"))
            continue
        host = normalize_host(rule.get("host"))
        if not valid_host(host):
            findings.append(Finding("rejected", f"rules[{i}].host", f"invalid host {rule.get('host')!r}"))
            continue
        http = rule.get("http") or {}
        for j, path in enumerate(http.get("paths") or []):
            where = f"rules[{i}].paths[{j}]"
            if not isinstance(path, Mapping):
                findings.append(Finding("rejected", where, "path is not an object"))
                continue
            path_type = path.get("pathType") or "ImplementationSpecific"
            if path_type not in PATH_TYPES:
                findings.append(Finding("rejected", where, f"invalid pathType {path_type!r}; path not served"))
                continue
            value = path.get("path") or "/"
            if not isinstance(value, str) or not value.startswith("/"):
                findings.append(Finding("rejected", where, f"path {value!r} must start with '/'"))
                continue
            res = resolve_backend(path.get("backend"), ref.namespace, ref.cluster, where, lookups, findings, variant)
            if res is None:
                continue
            if fallback is not None:
                port_ref, service = _backend(path.get("backend"), ref.namespace, ref.cluster, where, lookups, [])
                port_text = str((port_ref or {}).get("number") or (port_ref or {}).get("name") or "")
                fb = stand_in(service or "", port_text)
                if isinstance(res[0], DirectResponse):
                    # No such Service (port): the default-backend serves the path.
                    res = (Forward((WeightedCluster(str(fb), 100),)), fb)
                    findings[-1] = replace(findings[-1], message=findings[-1].message.replace(
                        "requests get 503", f"served by default-backend {dbs.service}"))  # fmt: skip
                elif res[1] is not None:
                    fallback_pairs.append((str(res[1]), str(fb)))
            rules.append(PathRule(host, value, path_type, res[0], where, res[1]))

    if dbs is not None:
        parsed = replace(parsed, route=(*parsed.route, FallbackBackend(tuple(sorted(set(fallback_pairs))))))
    extra_variants = tuple(
        (fb.variant, (*parsed.upstream, FallbackHeaders(ref.namespace, ref.name, svc, port)))
        for (svc, port), fb in sorted(stand_ins.items())
    )
    default: Forward | DirectResponse | None = None
    default_cluster: ClusterName | None = None
    if spec.get("defaultBackend") or spec.get("backend"):
        resolved = resolve_backend(
            spec.get("defaultBackend") or spec.get("backend"),
            ref.namespace,
            ref.cluster,
            "defaultBackend",
            lookups,
            findings,
            variant,
        )
        if resolved is not None:
            default, default_cluster = resolved

    tls: list[TlsBinding] = []
    for i, entry in enumerate(spec.get("tls") or []):
        if not isinstance(entry, Mapping):
            continue
        hosts = tuple(sorted({normalize_host(h) for h in entry.get("hosts") or [] if normalize_host(h)}))
        name = entry.get("secretName")
        if not hosts and not name:
            # ingress-nginx: no certificate to match the rule hosts against; they get the default one
            tls.append(TlsBinding((), None, (ref.cluster, ref.namespace, ""), None, f"tls[{i}]"))
            continue
        if not name:  # ingress-nginx serves these hosts the default certificate (reported by ingress/tls.py)
            tls.append(TlsBinding(hosts, None, (ref.cluster, ref.namespace, ""), "no secretName", f"tls[{i}]"))
            continue
        secret_ref = (ref.cluster, ref.namespace, str(name))
        secret = _record_secret(lookups, *secret_ref)
        problem = tls_secret_problem(secret)
        tls.append(TlsBinding(hosts, None if problem else secret_name(*secret_ref), secret_ref, problem, f"tls[{i}]"))

    created, created_problem = creation_time(meta.get("creationTimestamp"))
    if created_problem:
        findings.append(Finding("warning", "metadata.creationTimestamp", created_problem))
    rejected = parsed.rejected or any(f.level == "rejected" and f.key in ("spec",) for f in findings)
    if not rules and default is None and not rejected:
        findings.append(Finding("warning", "spec", "no rules and no defaultBackend: nothing to serve"))
    return IngressIR(
        ref=ref,
        created=created,
        class_accepted=class_accepted,
        rules=tuple(rules),
        default_backend=default,
        tls=tuple(tls),
        annotations=parsed,
        findings=tuple(findings),
        rejected=rejected,
        services=frozenset(lookups.services),
        secrets=frozenset(lookups.secrets),
        variant=variant,
        default_backend_cluster=default_cluster,
        fallback_cluster=fallback,
        extra_variants=extra_variants,
    )


def _record_service(
    lk: Lookups, namespace: str, name: str, port_ref: Mapping[str, Any], cluster: str
) -> tuple[int | None, str]:
    lk.services.add((namespace, name))
    return lk.resolve_port(namespace, name, port_ref, cluster)


def _record_secret(lk: Lookups, cluster: str, namespace: str, name: str) -> Mapping[str, Any] | None:
    lk.secrets.add((cluster, namespace, name))
    return lk.get_secret(cluster, namespace, name)


def tls_secret_problem(secret: Mapping[str, Any] | None) -> str | None:
    """Why a Secret cannot serve as a certificate, or None if it can."""
    from controlplane.ingress.secrets import decode_tls_secret

    if secret is None:
        return "not found"
    try:
        decode_tls_secret(secret)
    except ValueError as exc:
        return str(exc)
    return None
