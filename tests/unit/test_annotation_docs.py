"""docs/annotations.md agrees with the families' key declarations (Family.fields)."""

from __future__ import annotations

import re

from controlplane.ingress.annotation_docs import DOC, families_in, render, update
from controlplane.ingress.registry import FAMILIES, NOT_APPLICABLE, UNSUPPORTED


def test_every_family_has_exactly_one_generated_table() -> None:
    assert sorted(families_in(DOC.read_text())) == sorted(f.name for f in FAMILIES)


def test_tables_equal_the_declarations() -> None:
    text = DOC.read_text()
    assert update(text) == text, "docs/annotations.md is stale: run python -m controlplane.ingress.annotation_docs"


def test_declarations_are_complete() -> None:
    seen: set[str] = set()
    for family in FAMILIES:
        assert family.fields, family.name
        for key in family.fields:
            assert key.names and key.envoy and key.default and key.difference, (family.name, key)
            assert all(f"`{n}" in key.cell() for n in key.names), key  # a label still names its keys
        names = [n for k in family.fields for n in k.names]
        assert len(set(names)) == len(names) and not seen & set(names), family.name
        assert not set(names) & (NOT_APPLICABLE | UNSUPPORTED), family.name
        seen |= set(names)


def test_a_changed_declaration_shows_in_the_rendered_table() -> None:
    family = FAMILIES[0]
    table = render(family)
    assert all(k.envoy in table for k in family.fields)
    stale = DOC.read_text().replace(family.fields[0].envoy, "something else", 1)
    assert update(stale) != stale


def test_parity_items_list_no_difference() -> None:
    """Issue 9's behaviours are exactly ingress-nginx's: their keys declare no difference."""
    # ssl-redirect itself states one difference, about hosts without a certificate (not issue 9's Location).
    keys = {"force-ssl-redirect", "preserve-trailing-slash", "permanent-redirect",
            "permanent-redirect-code", "temporal-redirect", "temporal-redirect-code", "enable-cors",
            "cors-allow-origin", "cors-allow-methods", "cors-allow-headers", "cors-expose-headers",
            "cors-allow-credentials", "cors-max-age", "server-alias", "default-backend"}  # fmt: skip
    declared = {n: k for f in FAMILIES for k in f.fields for n in k.names}
    assert {n: declared[n].difference for n in keys if not declared[n].difference.startswith("none")} == {}
    assert "port" not in declared["ssl-redirect"].difference and "certificate" in declared["ssl-redirect"].difference
    # A port that is not a number is sent as written, as ingress-nginx (no url.Parse on permanent-redirect).
    assert "`http://h:x`) is sent as written" in declared["permanent-redirect"].envoy
    rows = re.findall(r"^\| (Route order in a host|`spec.defaultBackend`) \|.*\| (.*) \|$", DOC.read_text(), re.M)
    assert [d for _what, d in rows] == ["none", "none"]


# Annotations a family needs before it reads the key under test (as ingress-nginx: cors-* only with
# enable-cors, canary-* only on a canary, auth-tls-* with a CA Secret).
CONTEXT = {
    "cors": {"enable-cors": "true"},
    "canary": {"canary": "true"},
    "client-cert": {"auth-tls-secret": "default/ca"},
    "rate-limit": {"limit-rps": "5"},
}


def _ca_secret() -> dict:
    import yaml

    path = DOC.parents[1] / "tests" / "golden" / "cases" / "family-client-cert" / "input.yaml"
    return next(d for d in yaml.safe_load_all(path.read_text()) if d["metadata"]["name"] == "client-ca")


def _levels(family_name: str, key: str, value: str) -> list[str]:
    from controlplane.ingress.annotations.base import ParseContext
    from controlplane.ingress.registry import parse_annotations
    from controlplane.ir import IngressRef

    ctx = ParseContext(IngressRef("c", "default", "i"), {}, lookup_secret=lambda ns, name: _ca_secret())
    raw = {f"nginx.ingress.kubernetes.io/{k}": v for k, v in {**CONTEXT.get(family_name, {}), key: value}.items()}
    return [f.level for f in parse_annotations(raw, ctx).findings if f.key == key]


def test_declared_validators_agree_with_the_parsers() -> None:
    """A value the declaration refuses is reported (warning: default used); one it accepts is not."""
    checked = 0
    for family in FAMILIES:
        for key in family.fields:
            if key.validator is None:
                continue
            for name in key.names:
                for value in key.validator.invalid:
                    assert not key.validator.accepts(value), (name, value)
                    assert "warning" in _levels(family.name, name, value), (family.name, name, value)
                for value in key.validator.valid:
                    assert key.validator.accepts(value), (name, value)
                    assert "warning" not in _levels(family.name, name, value), (family.name, name, value)
                checked += 1
    assert checked >= 15
