"""Which certificate (and which TLS policies) each host gets, and which hosts pass TLS through.

Pure: Ingresses in conflict order plus the names of usable certificates in, a plan out. The
oldest Ingress naming a host wins it; ssl-passthrough hosts are never terminated.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

from controlplane.ingress import registry
from controlplane.ingress.convert import IngressIR
from controlplane.ingress.secrets import certificate_names, covers
from controlplane.ir import Finding, Passthrough, TlsHost
from controlplane.ir.names import secret_name
from controlplane.ir.policies import TlsPolicy

# A filter chain without server names: any SNI no other chain names, and none (translate.listeners.CATCH_ALL).
CATCH_ALL = "*"


@dataclass(frozen=True)
class TlsPlan:
    certs: dict[str, str] = field(default_factory=dict)  # host -> SDS secret name
    policies: dict[str, tuple[TlsPolicy, ...]] = field(default_factory=dict)  # host -> TLS policies
    passthrough: dict[str, str] = field(default_factory=dict)  # host -> cluster
    default: str | None = None  # SDS name of the default certificate, when there is one

    def chains(self) -> tuple[list[TlsHost], list[Passthrough]]:
        """One filter chain per (certificate, TLS policies), and one per passthrough cluster. The
        default certificate also answers any SNI (and none) no other chain names, as ingress-nginx's
        default server on 443 does, unless a Gateway API listener without a hostname holds that."""
        grouped: dict[tuple[str, tuple[TlsPolicy, ...]], list[str]] = {}
        certs = dict(self.certs)
        if self.default is not None:
            certs.setdefault(CATCH_ALL, self.default)
        for host, secret in sorted(certs.items()):
            grouped.setdefault((secret, self.policies.get(host, ())), []).append(host)
        tls_hosts = [
            TlsHost(tuple(hosts), secret, policies)
            for (secret, policies), hosts in sorted(grouped.items(), key=lambda kv: kv[1])
        ]
        by_cluster: dict[str, list[str]] = {}
        for host, cluster in sorted(self.passthrough.items()):
            by_cluster.setdefault(cluster, []).append(host)
        return tls_hosts, [Passthrough(tuple(h), c) for c, h in sorted(by_cluster.items())]


def plan_tls(
    ordered: Iterable[IngressIR],
    usable: Container[str],
    default: str | None = None,
    chain_of: Callable[[str], bytes] | None = None,
) -> TlsPlan:
    """`ordered`: served Ingresses with TLS or passthrough, oldest first; `usable`: good certificates;
    `default`: the default certificate's SDS name, if any; `chain_of`: a usable certificate's PEM chain
    (for the hosts a TLS Ingress does not list: the certificate whose names cover them).

    A binding whose Secret is broken now still names the last good certificate of that Secret. The
    oldest Ingress with a TLS section that names a host decides its certificate, as ingress-nginx's
    createServers: the Secret its entry lists for the host, else the first of its certificates whose
    names cover the host (extractTLSSecretName), else (Secret missing, invalid, no secretName, no
    entry covers the host) the default certificate, which a newer Ingress's real one does not replace.
    Without a default certificate such a host is left to the next Ingress.
    """
    ordered = list(ordered)
    plan = TlsPlan(default=default)

    def bind(host: str, name: str, ir: IngressIR) -> None:
        if host not in plan.certs:
            plan.certs[host] = name
            plan.policies[host] = ir.annotations.tls

    for ir in ordered:
        if registry.passes_tls_through(ir.annotations):
            for rule in ir.rules:
                if rule.host and rule.backend is not None:
                    # TCP needs the plain Service cluster, not an HTTP variant of it.
                    plan.passthrough.setdefault(rule.host, str(rule.backend.base))
        if not ir.tls:
            continue
        for binding in ir.tls:
            name = binding.secret or secret_name(*binding.secret_ref)
            for host in binding.hosts:
                if name in usable:
                    bind(host, name, ir)
                elif default is not None:
                    bind(host, default, ir)
        # A rule host no tls entry of this Ingress lists: the first of its certificates whose names
        # cover it (a `tls:` entry without hosts, a wildcard), else the default.
        listed = {h for b in ir.tls for h in b.hosts}
        unlisted = sorted({r.host for r in ir.rules if r.host} - listed)
        names = []
        if chain_of is not None and unlisted:
            names = [(n, certificate_names(chain_of(n))) for b in ir.tls
                     if (n := b.secret or secret_name(*b.secret_ref)) in usable]  # fmt: skip
        for host in unlisted:
            match = next((n for n, covered in names if covers(covered, host)), None)
            if match is not None:
                bind(host, match, ir)
            elif default is not None:
                bind(host, default, ir)
    for host in plan.passthrough:
        plan.certs.pop(host, None)
        plan.policies.pop(host, None)
    return plan


def tls_findings(ir: IngressIR, plan: TlsPlan, usable: Container[str]) -> list[Finding]:
    """What each missing or unusable TLS Secret of `ir` means for its hosts right now.

    Computed when reported, not when built: it depends on other Ingresses (one may give the host a
    certificate), on whether a last good certificate is kept (`usable`) and on the default
    certificate. A host without a certificate of its own is served with the default certificate, as
    in ingress-nginx (HTTPS, and ssl-redirect to it); only with no default certificate at all
    (Kubernetes mode before its Secret exists) does it stay plain HTTP.
    """
    out: list[Finding] = []
    # ssl-redirect's hook: does this Ingress redirect plain HTTP even for a host without TLS?
    force = registry.redirect_to_https(ir.annotations, host_has_tls=False)
    for binding in ir.tls:
        if binding.problem is None:
            continue
        _cluster, namespace, name = binding.secret_ref
        what = f"secret {namespace}/{name}: {binding.problem}" if name else binding.problem
        if name and secret_name(*binding.secret_ref) in usable:
            out.append(Finding("warning", binding.location,
                               f"{what}; its last good certificate is still served until the Secret is fixed or "
                               "deleted"))  # fmt: skip
            continue
        if not binding.hosts:  # a tls entry without hosts: its certificate would serve the hosts it covers
            fate = "served with the default certificate" if plan.default else "served over plain HTTP only"
            out.append(Finding("warning", binding.location, f"{what}; the hosts it would cover are {fate}"))
            continue
        defaulted = [h for h in binding.hosts if plan.default is not None and plan.certs.get(h) == plan.default]
        other = [h for h in binding.hosts if h in plan.certs and h not in defaulted]
        bare = [h for h in binding.hosts if h not in plan.certs and h not in plan.passthrough]
        clauses = []
        if defaulted:
            clauses.append(f"{', '.join(defaulted)} served with the default certificate ({plan.default}) "
                           "until it is fixed")  # fmt: skip
        if other:
            clauses.append(f"{', '.join(other)} served with another Ingress's certificate")
        if bare:
            clause = f"no certificate for {', '.join(bare)}: served over plain HTTP only"
            if force:
                clause += " (force-ssl-redirect still redirects them to HTTPS, which has no certificate for them)"
            clauses.append(clause)
        if not clauses:  # every host passes TLS through
            continue
        out.append(Finding("warning", binding.location, f"{what}; {'; '.join(clauses)}"))
    return out
