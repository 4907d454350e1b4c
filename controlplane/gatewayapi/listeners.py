"""Which Gateways are ours, and their listeners: table (the fleet's shared HTTP or HTTPS listener),
hostname, which routes may attach (allowedRoutes) and the certificate of an HTTPS listener.

A listener shares the fleet's HTTP listener when its port is 80 or --http-port and its protocol
HTTP; the HTTPS listener when its port is 443 or --https-port and its protocol HTTPS (TLS
Terminate). A listener on any other port gets an Envoy listener of its own on that port (`shared`
False; engine/gateway_ports.py), shared by every listener of our Gateways on that port and protocol.
Ports the fleet reserves (the shared ports with the other protocol, the east-west port) are
Accepted=False, PortUnavailable; two protocols on one port are Conflicted (ProtocolConflict) for
every listener but the first (resolve_conflicts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from controlplane.gatewayapi.kinds import CONTROLLER_NAME, GROUP, ROUTE_KINDS, as_list, as_map, generation, meta, spec
from controlplane.gatewayapi.refs import Grants
from controlplane.ir import IngressRef

Condition = tuple[str, str, str, str]  # (type, status "True"/"False", reason, message)
SecretRef = tuple[str, str, str]  # (cluster, namespace, name)


@dataclass(frozen=True)
class Listener:
    gateway: IngressRef
    name: str
    protocol: str
    port: int
    hostname: str | None
    table: Literal["http", "https"] | None  # None: not served
    shared: bool = True  # served on the fleet's shared listener; else on its port's own listener
    namespaces: str = "Same"
    selector: Mapping[str, Any] | None = field(default=None, compare=False)
    kinds: tuple[str, ...] = ROUTE_KINDS
    certificate: SecretRef | None = None
    conditions: tuple[Condition, ...] = ()

    def admits_namespace(self, namespace: str, labels: Callable[[str], Mapping[str, str] | None]) -> bool:
        if self.namespaces == "All":
            return True
        if self.namespaces == "Selector":
            found = labels(namespace)
            return found is not None and self.selector is not None and selector_matches(self.selector, found)
        return namespace == self.gateway.namespace


@dataclass(frozen=True)
class GatewayInfo:
    ref: IngressRef
    class_name: str
    created: str
    generation: int
    listeners: tuple[Listener, ...]
    conditions: tuple[Condition, ...] = ()


def accepted_classes(classes: Mapping[tuple[str, str], Mapping[str, Any]]) -> set[str]:
    """Names of the GatewayClasses this controller owns."""
    return {name for (_ns, name), obj in classes.items() if spec(obj).get("controllerName") == CONTROLLER_NAME}


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels (matchLabels and matchExpressions)."""
    for k, v in as_map(selector.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for expr in as_list(selector.get("matchExpressions")):
        if not isinstance(expr, Mapping):
            return False
        key, op, values = expr.get("key"), expr.get("operator"), as_list(expr.get("values"))
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


_PROTOCOL_TABLE = {"HTTP": "http", "HTTPS": "https"}
# Listeners on ports of their own below this are not served: the gateway runs without the capability
# to bind them (its 80/443 are the Service's, mapped to --http-port/--https-port), and a port Envoy
# cannot bind would be refused at every update (a NACK that keeps Programmed pending).
PRIVILEGED = 1024


def gateway_info(
    cluster: str,
    obj: Mapping[str, Any],
    *,
    http_ports: frozenset[int],
    https_ports: frozenset[int],
    reserved: frozenset[int] = frozenset(),
    grants: Grants,
    secret_ok: Callable[[SecretRef], str | None],
    created: str,
) -> GatewayInfo:
    """One Gateway's listeners with their conditions. `secret_ok` says why a Secret cannot serve."""
    m = meta(obj)
    ref = IngressRef(cluster, str(m.get("namespace") or ""), str(m.get("name") or ""), kind="Gateway")
    listeners = []
    names: set[str] = set()
    seen: dict[tuple[int, str, str | None], str] = {}  # (port, protocol, hostname) -> listener
    for i, raw in enumerate(as_list(spec(obj).get("listeners"))):
        if not isinstance(raw, Mapping):
            continue
        name = str(raw.get("name") or f"listener-{i}")
        conds: list[Condition] = []
        protocol = str(raw.get("protocol") or "")
        port = raw.get("port") if isinstance(raw.get("port"), int) else 0
        table = _PROTOCOL_TABLE.get(protocol)
        if name in names:
            conds.append(("Conflicted", "True", "HostnameConflict", f"listener name {name!r} is used twice"))
        names.add(name)
        shared = port in (http_ports if table == "http" else https_ports)
        if table is None:
            conds.append(("Accepted", "False", "UnsupportedProtocol", f"protocol {protocol!r} is not supported"))
        elif not shared and (port in http_ports | https_ports | reserved or not 0 < port < 65536):
            served = sorted(http_ports if table == "http" else https_ports)
            conds.append(("Accepted", "False", "PortUnavailable",
                          f"port {port} is reserved by the fleet; {protocol} is shared on ports {served}"))  # fmt: skip
            table = None
        elif not shared and port < PRIVILEGED:
            conds.append(("Accepted", "False", "PortUnavailable", f"port {port} is privileged: the gateway (not root) "
                          f"cannot listen on it; use a port from {PRIVILEGED}"))  # fmt: skip
            table = None
        allowed = as_map(raw.get("allowedRoutes"))
        ns_from = str(as_map(allowed.get("namespaces")).get("from") or "Same")
        selector = as_map(allowed.get("namespaces")).get("selector")
        kinds = [(str(k.get("group", GROUP)), str(k.get("kind") or "")) for k in as_list(allowed.get("kinds"))
                 if isinstance(k, Mapping)]  # fmt: skip
        supported = tuple(k for g, k in kinds if g == GROUP and k in ROUTE_KINDS) if kinds else ROUTE_KINDS
        if kinds and len(supported) != len(kinds):
            conds.append(("ResolvedRefs", "False", "InvalidRouteKinds", "only HTTPRoute and GRPCRoute are supported"))
        cert: SecretRef | None = None
        if table == "https":
            cert, problem = _certificate(cluster, ref, raw, grants, secret_ok)
            if problem is not None:
                conds.append(("ResolvedRefs", "False", problem[0], problem[1]))
        hostname = raw.get("hostname") if isinstance(raw.get("hostname"), str) and raw.get("hostname") else None
        usable = table is not None and not any(c[1] == "False" and c[0] in ("Accepted", "ResolvedRefs")
                                               and c[2] != "InvalidRouteKinds" for c in conds)  # fmt: skip
        key = (port, protocol, hostname)
        if usable and key in seen:
            conds.append(("Conflicted", "True", "HostnameConflict",
                          f"listener {seen[key]!r} has the same port, protocol and hostname"))  # fmt: skip
            usable = False
        seen.setdefault(key, name)
        listeners.append(Listener(ref, name, protocol, port, hostname, table if usable else None, shared,
                                  ns_from, selector if isinstance(selector, Mapping) else None, supported, cert,
                                  tuple(conds)))  # fmt: skip
    return GatewayInfo(ref, str(spec(obj).get("gatewayClassName") or ""), created, generation(obj), tuple(listeners))


def _certificate(
    cluster: str, gw: IngressRef, raw: Mapping[str, Any], grants: Grants, secret_ok: Callable[[SecretRef], str | None]
) -> tuple[SecretRef | None, tuple[str, str] | None]:
    tls = as_map(raw.get("tls"))
    if str(tls.get("mode") or "Terminate") != "Terminate":
        return None, ("InvalidCertificateRef", "only TLS mode Terminate is supported")
    refs = [r for r in as_list(tls.get("certificateRefs")) if isinstance(r, Mapping)]
    if not refs:
        return None, ("InvalidCertificateRef", "an HTTPS listener needs a certificateRef")
    r = refs[0]
    if str(r.get("group") or "") != "" or str(r.get("kind") or "Secret") != "Secret":
        return None, ("InvalidCertificateRef", "certificateRefs must name a core Secret")
    ns = str(r.get("namespace") or gw.namespace)
    name = str(r.get("name") or "")
    if not grants.allows(GROUP, "Gateway", gw.namespace, "", "Secret", ns, name):
        return None, ("RefNotPermitted", f"no ReferenceGrant in {ns} allows this Gateway to use Secret {name}")
    ref = (cluster, ns, name)
    problem = secret_ok(ref)
    if problem is not None:
        return None, ("InvalidCertificateRef", f"Secret {ns}/{name}: {problem}")
    return ref, None


def resolve_conflicts(gateways: list[GatewayInfo]) -> list[GatewayInfo]:
    """Listeners of all our Gateways on one port of their own must agree on the protocol: the first
    (oldest Gateway, then cluster/namespace/name, then listener order) decides, the others are
    Conflicted=True, ProtocolConflict, and not served. Same port and protocol: they share the port's
    Envoy listener (hostnames merge as on the shared ports)."""
    protocol: dict[int, tuple[str, str]] = {}
    for info in sorted(gateways, key=lambda g: (g.created or "0", g.ref.cluster, g.ref.namespace, g.ref.name)):
        for lst in info.listeners:
            if lst.table is not None and not lst.shared:
                protocol.setdefault(lst.port, (lst.protocol, f"{info.ref.namespace}/{info.ref.name}/{lst.name}"))
    out = []
    for info in gateways:
        listeners = []
        for lst in info.listeners:
            first = protocol.get(lst.port)
            if lst.table is not None and not lst.shared and first is not None and first[0] != lst.protocol:
                why = ("Conflicted", "True", "ProtocolConflict", f"port {lst.port} is {first[0]} (listener {first[1]})")
                lst = replace(lst, table=None, conditions=(*lst.conditions, why))
            listeners.append(lst)
        out.append(replace(info, listeners=tuple(listeners)))
    return out
