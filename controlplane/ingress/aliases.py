"""Which host gets which server-alias names (ingress-nginx's createServers), across all Ingresses.

An alias adds a domain to a host's virtual host, so it must never equal another virtual host's
domain (Envoy would reject the route table): aliases that name a host of a served Ingress, or that
an earlier host (in name order) already has, are dropped and reported on the Ingress that asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controlplane.ingress.convert import IngressIR
from controlplane.ir import Finding, IngressRef
from controlplane.ir.policies import Canary, ServerAlias

AliasFindings = tuple[tuple[IngressRef, Finding], ...]
AliasPlan = dict[str, tuple[tuple[str, ...], AliasFindings]]  # host -> (aliases kept, findings)


def assign_aliases(irs: Iterable[IngressIR], is_host: Callable[[str], bool]) -> AliasPlan:
    """`irs`: served Ingresses (any order; those without server-alias are skipped);
    `is_host(name)`: a served Ingress has a rule for `name`."""
    owners: dict[str, tuple[IngressIR, tuple[str, ...]]] = {}
    for ir in sorted(irs, key=IngressIR.order_key):
        policy = ir.annotations.get(ServerAlias)
        if policy is None or ir.annotations.get(Canary) is not None or not ir.served:
            continue
        for host in sorted(ir.hosts):
            if host and host not in owners:
                owners[host] = (ir, policy.aliases)
    plan: AliasPlan = {}
    taken: dict[str, str] = {}
    for host in sorted(owners):
        ir, aliases = owners[host]
        kept: list[str] = []
        findings: list[tuple[IngressRef, Finding]] = []
        for alias in aliases:
            if alias == host:
                continue
            if is_host(alias):
                why = f"alias {alias} of {host} is a host of an Ingress; dropped"
            elif alias in taken:
                why = f"alias {alias} of {host} is already an alias of {taken[alias]}; dropped"
            else:
                kept.append(alias)
                taken[alias] = host
                continue
            findings.append((ir.ref, Finding("warning", "server-alias", why)))
        plan[host] = (tuple(kept), tuple(findings))
    return plan
