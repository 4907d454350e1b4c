"""The request set `--verify` replays: derived from each served Ingress's rules.

Per rule: its host (a wildcard host gets a name under it, the catch-all one no virtual host
has), plain HTTP and, for a host with TLS, HTTPS with its SNI; per path, the path itself and
its boundaries (Exact: with a trailing "/"; Prefix: "/", a sub-path, and the same characters
without the "/" boundary, which a path-element prefix must not match; regex paths: a sample
the pattern accepts); a query string on the first. A canary Ingress's rules add its header
(value, "never", a pattern sample) and cookie ("always", "never"). On a host with a weighted
canary every probe is a batch of identical requests whose backend shares are compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.gatewayapi.verify import regex_sample
from controlplane.ingress.annotations.canary import Canary
from controlplane.ingress.convert import IngressIR, PathRule
from controlplane.ir import IngressRef
from controlplane.ir.policies import RegexPaths

CATCH_ALL_HOST = "unmatched.verify.invalid"
WEIGHT_SAMPLES = 200  # requests per side for a weighted split (see replay.shares_differ)


@dataclass(frozen=True, order=True)
class Probe:
    """One request (or a batch of `repeat` identical ones), attributed to the Ingress it comes from."""

    source: IngressRef
    scheme: str
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    repeat: int = 1

    def __str__(self) -> str:
        extra = "".join(f" [{k}: {v}]" for k, v in self.headers)
        batch = f" x{self.repeat}" if self.repeat > 1 else ""
        return f"{self.scheme}://{self.host}{self.path}{extra}{batch}"


def _host_name(rule_host: str) -> str:
    """The Host a rule's requests carry: the catch-all gets a name no virtual host has; a wildcard
    one more label."""
    if not rule_host:
        return CATCH_ALL_HOST
    return "verify." + rule_host[2:] if rule_host.startswith("*.") else rule_host


def rule_paths(rule: PathRule, regex_mode: bool) -> list[str]:
    """The paths of one rule: the path and its boundaries."""
    p = rule.path
    if rule.path_type == "Exact":
        return [p] if p.endswith("/") else [p, p + "/"]
    if regex_mode and re.search(r"[\\^$.|?*+()\[\]{}]", p):
        sample = regex_sample(f"(?i)^{p}.*", True)
        return [sample] if sample else []
    base = p.rstrip("/")
    if not base:
        return ["/", "/verify-probe", "/verify-probe/"]
    out = [p, base + "/", base + "/verify-probe", base + "/verify-probe/"]
    if not base.endswith(("-", ".")):
        out.append(base + "x")  # not a path-element prefix: another rule (or none) answers
    return list(dict.fromkeys(out))


def _canary_headers(c: Canary) -> list[tuple[tuple[str, str], ...]]:
    out: list[tuple[tuple[str, str], ...]] = []
    if c.header:
        if c.header_value:
            out.append(((c.header, c.header_value),))
        elif c.header_pattern and not c.header_pattern_invalid:
            sample = regex_sample(c.header_pattern, False)
            if sample:
                out.append(((c.header, sample.lstrip("/")),))
        out += [((c.header, "always"),), ((c.header, "never"),)]
    if c.cookie:
        out += [(("cookie", f"{c.cookie}=always"),), (("cookie", f"{c.cookie}=never"),)]
    return out


def _covered(host: str, tls_hosts: Iterable[str]) -> bool:
    for t in tls_hosts:
        if t == host or (t.startswith("*.") and host.endswith(t[1:]) and "." not in host[: -len(t) + 1]):
            return True
    return False


def derive(irs: Mapping[IngressRef, IngressIR]) -> list[Probe]:
    """Every probe of every served Ingress, deduplicated per Ingress, in a stable order."""
    served = [ir for ir in irs.values() if ir.served]
    tls_hosts = {h for ir in served for b in ir.tls for h in b.hosts}
    regex_hosts = {r.host for ir in served if ir.annotations.get(RegexPaths) for r in ir.rules}
    # A host with a weighted canary answers any request from either backend: every probe is a batch.
    weighted = {r.host for ir in served if (c := ir.annotations.get(Canary)) is not None
                and 0 < c.weight < c.weight_total for r in ir.rules}  # fmt: skip
    out: list[Probe] = []
    for ir in sorted(served, key=lambda i: i.ref):
        canary = ir.annotations.get(Canary)
        seen: set[Probe] = set()
        for rule in ir.rules:
            host = _host_name(rule.host)
            schemes = ["http", "https"] if rule.host and _covered(rule.host, tls_hosts) else ["http"]
            variants: list[tuple[tuple[str, str], ...]] = [()]
            if canary is not None:
                variants += _canary_headers(canary)
            repeat = WEIGHT_SAMPLES if rule.host in weighted else 1
            for scheme in schemes:
                for i, path in enumerate(rule_paths(rule, rule.host in regex_hosts)):
                    paths = [path, path + ("&" if "?" in path else "?") + "verify=1"] if i == 0 else [path]
                    for p in paths:
                        for headers in variants:
                            seen.add(Probe(ir.ref, scheme, host, p, headers, repeat))
        if ir.default_backend is not None:  # spec.defaultBackend: what no rule of any Ingress matches
            seen.update(Probe(ir.ref, "http", CATCH_ALL_HOST, p) for p in ("/", "/verify-default"))
        out.extend(sorted(seen))
    return out
