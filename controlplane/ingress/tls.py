"""Which certificate (and which TLS policies) each host gets, and which hosts pass TLS through.

Pure: Ingresses in conflict order plus the names of usable certificates in, a plan out. The
oldest Ingress naming a host wins it; ssl-passthrough hosts are never terminated.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from controlplane.ingress import registry
from controlplane.ingress.convert import IngressIR
from controlplane.ir import Finding, Passthrough, TlsHost
from controlplane.ir.names import secret_name
from controlplane.ir.policies import TlsPolicy


@dataclass(frozen=True)
class TlsPlan:
    certs: dict[str, str] = field(default_factory=dict)  # host -> SDS secret name
    policies: dict[str, tuple[TlsPolicy, ...]] = field(default_factory=dict)  # host -> TLS policies
    passthrough: dict[str, str] = field(default_factory=dict)  # host -> cluster

    def chains(self) -> tuple[list[TlsHost], list[Passthrough]]:
        """One filter chain per (certificate, TLS policies), and one per passthrough cluster."""
        grouped: dict[tuple[str, tuple[TlsPolicy, ...]], list[str]] = {}
        for host, secret in sorted(self.certs.items()):
            grouped.setdefault((secret, self.policies.get(host, ())), []).append(host)
        tls_hosts = [
            TlsHost(tuple(hosts), secret, policies)
            for (secret, policies), hosts in sorted(grouped.items(), key=lambda kv: kv[1])
        ]
        by_cluster: dict[str, list[str]] = {}
        for host, cluster in sorted(self.passthrough.items()):
            by_cluster.setdefault(cluster, []).append(host)
        return tls_hosts, [Passthrough(tuple(h), c) for c, h in sorted(by_cluster.items())]


def plan_tls(ordered: Iterable[IngressIR], usable: Container[str]) -> TlsPlan:
    """`ordered`: served Ingresses with TLS or passthrough, oldest first; `usable`: good certificates.

    A binding whose Secret is broken now still names the last good certificate of that Secret.
    """
    plan = TlsPlan()
    for ir in ordered:
        if registry.passes_tls_through(ir.annotations):
            for rule in ir.rules:
                if rule.host and rule.backend is not None:
                    # TCP needs the plain Service cluster, not an HTTP variant of it.
                    plan.passthrough.setdefault(rule.host, str(rule.backend.base))
        for binding in ir.tls:
            name = binding.secret or secret_name(*binding.secret_ref)
            if name not in usable:
                continue
            for host in binding.hosts:
                if host not in plan.certs:
                    plan.certs[host] = name
                    plan.policies[host] = ir.annotations.tls
    for host in plan.passthrough:
        plan.certs.pop(host, None)
        plan.policies.pop(host, None)
    return plan


def tls_findings(ir: IngressIR, plan: TlsPlan, usable: Container[str]) -> list[Finding]:
    """What each missing or unusable TLS Secret of `ir` means for its hosts right now.

    Computed when reported, not when built: it depends on other Ingresses (one may give the host a
    certificate) and on whether a last good certificate is kept (`usable`). A host with no
    certificate is served as ingress-nginx serves a host without one: no HTTPS filter chain for it
    and no ssl-redirect (that needs a certificate for the host); force-ssl-redirect still redirects.
    """
    out: list[Finding] = []
    # ssl-redirect's hook: does this Ingress redirect plain HTTP even for a host without TLS?
    force = registry.redirect_to_https(ir.annotations, host_has_tls=False)
    for binding in ir.tls:
        if binding.problem is None:
            continue
        _cluster, namespace, name = binding.secret_ref
        what = f"secret {namespace}/{name}: {binding.problem}"
        if secret_name(*binding.secret_ref) in usable:
            out.append(Finding("warning", binding.location,
                               f"{what}; its last good certificate is still served until the Secret is fixed or "
                               "deleted"))  # fmt: skip
            continue
        bare = [h for h in binding.hosts if h not in plan.certs and h not in plan.passthrough]
        if not bare:
            message = f"{what}; its hosts are served with another Ingress's certificate"
        else:
            message = f"{what}; no certificate for {', '.join(bare)}: served over plain HTTP only"
            if force:
                message += " (force-ssl-redirect still redirects them to HTTPS, which has no certificate for them)"
        out.append(Finding("warning", binding.location, message))
    return out
