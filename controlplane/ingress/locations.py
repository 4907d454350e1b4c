"""The order of a host's paths, as ingress-nginx's controller and nginx match them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from controlplane.ingress.annotations.base import valid_re2
from controlplane.ir import PathMatch
from controlplane.ir.policies import RegexPaths

if TYPE_CHECKING:
    from controlplane.ingress.convert import IngressIR, PathRule


def valid_path_regex(pattern: str) -> bool:
    """What Envoy's RE2 compiles: Python re syntax minus lookarounds/backrefs, repeats up to 1000."""
    for low, high in re.findall(r"\{(\d+)(?:,(\d*))?\}", pattern):
        if int(low) > 1000 or (high and int(high) > 1000):
            return False
    return valid_re2(pattern)


def path_match(rule_path: str, path_type: str, regex_mode: bool) -> PathMatch:
    if path_type == "Exact":
        return PathMatch("exact", rule_path)
    if regex_mode:
        return PathMatch("regex", f"(?i)^{rule_path}.*")
    trimmed = rule_path.rstrip("/")
    return PathMatch("prefix", trimmed or "/")


Location = tuple[tuple[str, str], tuple["IngressIR", "PathRule"], PathMatch, str]


def locations(primaries: dict[tuple[str, str], tuple[IngressIR, PathRule]], regex_mode: bool) -> list[Location]:
    """The host's paths as (key, owner, match, name suffix) in match order.

    Without regex mode: exact first, then longer prefixes first (nginx's longest prefix). In regex mode
    every location is nginx's `~* "^<path>"` and the first match in ingress-nginx's order wins: its
    getBackendServers sorts a server's locations by path, descending, then stably by length, longest
    first; afterwards updateServerLocations turns a Prefix path of an Ingress without
    use-regex/rewrite-target into two adjacent locations, `<path>/` and `<path>` (only the first when
    an Exact location has the same path).
    """
    if not regex_mode:
        plain = [(key, own, path_match(own[1].path, own[1].path_type, False), "") for key, own in primaries.items()]
        return sorted(plain, key=lambda loc: loc[2].sort_key())
    ordered = sorted(primaries.items(), key=lambda kv: kv[1][1].path, reverse=True)
    ordered.sort(key=lambda kv: len(kv[1][1].path), reverse=True)  # stable: equal lengths keep path order
    exact_paths = {rule.path for _ir, rule in primaries.values() if rule.path_type == "Exact"}
    out: list[Location] = []
    for key, (ir, rule) in ordered:
        split = rule.path_type == "Prefix" and rule.path != "/" and not ir.annotations.get(RegexPaths)
        if not split:
            out.append((key, (ir, rule), PathMatch("regex", f"(?i)^{rule.path}.*"), ""))
            continue
        normalized = rule.path if rule.path.endswith("/") else rule.path + "/"
        out.append((key, (ir, rule), PathMatch("regex", f"(?i)^{normalized}.*"), ""))
        if rule.path not in exact_paths and normalized != rule.path:
            out.append((key, (ir, rule), PathMatch("regex", f"(?i)^{rule.path}.*"), "#exact"))
    return out
