"""The whole gateway as one value: what a frontend produces and `translate` turns into xDS.

`compile` (controlplane/compile.py) builds one of these from the objects that exist; the golden
tests dump it as YAML (the first of their two stages). The incremental controller keeps the same
pieces per host and per Service instead of one GatewayIR, so a change costs only what it touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.ir.model import (
    CertificateSecret,
    LocalityEndpoints,
    Passthrough,
    ServiceCluster,
    TlsHost,
    VirtualHost,
)


@dataclass(frozen=True, slots=True)
class Listener:
    """A port Envoy listens on, and the route table its connection manager uses.

    `tls`: the listener terminates TLS per SNI (one filter chain per TlsHost) and passes
    Passthrough hosts through as TCP. `policy_filters`: its connection manager runs the HTTP
    filters the routes' policies need (north-south); east-west traffic gets none.
    """

    name: str
    address: str
    port: int
    route_table: str
    tls: bool = False
    policy_filters: bool = True


@dataclass(frozen=True, slots=True)
class RouteTableIR:
    """One route table. Each entry is what one key contributes (a host's virtual host; the virtual
    hosts of one east-west Service's ports), in table order; partitions place an entry whole."""

    name: str
    entries: tuple[tuple[VirtualHost, ...], ...]
    ignore_port: bool = True

    @property
    def virtual_hosts(self) -> tuple[VirtualHost, ...]:
        return tuple(vh for entry in self.entries for vh in entry)


@dataclass(frozen=True, slots=True)
class ClusterEndpoints:
    """One ClusterLoadAssignment: a Service port's endpoints, one locality per source cluster."""

    name: str
    localities: tuple[LocalityEndpoints, ...]
    # Metadata of every endpoint (namespace meridian.fallback): what a default-backend stand-in's
    # endpoints tell the aggregate cluster's header filter (translate/policies/fallback.py).
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GatewayIR:
    """Everything the gateway serves. Extra clusters (auth services, mirror targets) and HTTP
    filters are not listed: the translator derives them from the routes' policies."""

    listeners: tuple[Listener, ...]
    route_tables: tuple[RouteTableIR, ...]
    tls_hosts: tuple[TlsHost, ...]
    passthrough: tuple[Passthrough, ...]
    clusters: tuple[ServiceCluster, ...]
    endpoints: tuple[ClusterEndpoints, ...]
    secrets: tuple[CertificateSecret, ...]
    route_partitions: int | None = None  # N fixed partitions per table, or None: grown with the table

    def problems(self) -> list[str]:
        """Impossible combinations (a frontend bug, never a user's mistake); empty when sound."""
        out: list[str] = []
        tables = {t.name for t in self.route_tables}
        ports = [(lst.address, lst.port) for lst in self.listeners]
        if len(set(ports)) != len(ports):
            out.append("two listeners on one address and port")
        for lst in self.listeners:
            if lst.route_table not in tables:
                out.append(f"listener {lst.name} uses unknown route table {lst.route_table}")
            if not 0 < lst.port < 65536:
                out.append(f"listener {lst.name}: port {lst.port} out of range")
        if (self.tls_hosts or self.passthrough) and not any(lst.tls for lst in self.listeners):
            out.append("TLS hosts but no TLS listener")
        clusters = {c.name for c in self.clusters}
        if len(clusters) != len(self.clusters):
            out.append("two clusters with one name")
        assignments = {e.name for e in self.endpoints}
        for c in self.clusters:
            out.extend(c.problems())
            if c.static_address is None and c.eds_name not in assignments:
                out.append(f"cluster {c.name} has no endpoint assignment {c.eds_name}")
        secrets = {s.name for s in self.secrets}
        sni: set[str] = set()
        for t in self.tls_hosts:
            out.extend(t.problems())
            if t.secret not in secrets:
                out.append(f"TLS hosts {','.join(t.hosts)} use unknown secret {t.secret}")
            if sni & set(t.hosts):
                out.append(f"SNI {sorted(sni & set(t.hosts))} bound twice")
            sni |= set(t.hosts)
        for p in self.passthrough:
            out.extend(p.problems())
            if sni & set(p.hosts):
                out.append(f"SNI {sorted(sni & set(p.hosts))} both terminated and passed through")
            sni |= set(p.hosts)
            if p.cluster not in clusters:
                out.append(f"passthrough to unknown cluster {p.cluster}")
        for table in self.route_tables:
            for vh in table.virtual_hosts:
                out.extend(f"{table.name}: {p}" for p in vh.problems())
                for r in vh.routes:
                    for wc in getattr(r.action, "clusters", ()):
                        if wc.cluster not in clusters and ":" in wc.cluster and "/" in wc.cluster:
                            out.append(f"{table.name}: route {r.name} forwards to unknown cluster {wc.cluster}")
        return out

    def validate(self) -> None:
        """Raise ValueError listing every impossible combination."""
        problems = self.problems()
        if problems:
            raise ValueError("invalid gateway IR:\n  " + "\n  ".join(problems))
