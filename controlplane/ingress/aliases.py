"""Which host gets which server-alias names (ingress-nginx's createServers), across all Ingresses.

from-to-www-redirect's name (`www.<host>`, or `<host>` for `www.<host>`) is planned the same way, after
the aliases (ingress-nginx's buildRedirects skips it when an Ingress has that host); merge_host makes its
requests redirect to the host.

An alias adds a domain to a host's virtual host, so it must never equal another virtual host's
domain (Envoy would reject the route table): aliases that name a host of a served Ingress, or that
an earlier host (in name order) already has, are dropped and reported on the Ingress that asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controlplane.ingress.convert import IngressIR
from controlplane.ir import Finding, IngressRef
from controlplane.ir.policies import Canary, ServerAlias, WwwRedirect

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
    www: dict[str, IngressIR] = {}  # host -> the oldest Ingress asking for its www redirect
    for ir in sorted(irs, key=IngressIR.order_key):
        if ir.annotations.get(WwwRedirect) is None or ir.annotations.get(Canary) is not None or not ir.served:
            continue
        for host in sorted(ir.hosts):
            if host and not host.startswith("*.") and host not in www:
                www[host] = ir
    plan: AliasPlan = {}
    taken: dict[str, str] = {}
    for host in sorted(owners.keys() | www.keys()):
        owner, aliases = owners.get(host, (None, ()))
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
            assert owner is not None  # aliases come from their owner
            findings.append((owner.ref, Finding("warning", "server-alias", why)))
        if host in www:
            twin = www_twin(host)
            if is_host(twin) or twin in taken:
                why = f"{twin} is a host of an Ingress or an alias; no redirect from it to {host}"
                findings.append((www[host].ref, Finding("warning", "from-to-www-redirect", why)))
            elif twin not in kept:
                kept.append(twin)
                taken[twin] = host
        plan[host] = (tuple(kept), tuple(findings))
    return plan


def www_twin(host: str) -> str:
    """The name redirected to `host` by from-to-www-redirect (ingress-nginx's buildRedirects)."""
    return host.removeprefix("www.") if host.startswith("www.") else f"www.{host}"
