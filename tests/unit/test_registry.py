"""The table of annotation families: every family's features exist in the translator, every
feature belongs to a family, keys are owned once, and hooks reach the frontend."""

from __future__ import annotations

from controlplane.ingress import registry
from controlplane.ingress.annotations.base import Family
from controlplane.ir import Forward, IngressRef, PathMatch, Route, WeightedCluster
from controlplane.ir.policies import Canary, ServiceUpstream
from controlplane.translate.policies import FEATURES

REF = IngressRef("c", "ns", "ing")


def parse(annotations: dict[str, str]) -> registry.ParsedAnnotations:
    return registry.parse_annotations(
        {f"nginx.ingress.kubernetes.io/{k}": v for k, v in annotations.items()}, registry.ParseContext(REF, {})
    )


def test_every_family_feature_is_a_translator_feature_and_back() -> None:
    named = {f for e in registry.REGISTRY for f in e.features}
    features = {f.name for f in FEATURES}
    assert named == features, (named ^ features)


def test_keys_are_owned_by_one_family_and_families_are_instances_of_the_contract() -> None:
    seen: dict[str, str] = {}
    for e in registry.REGISTRY:
        assert isinstance(e.family, Family)
        for key in e.family.keys:
            assert key not in seen, f"{key} owned by {seen[key]} and {e.family.name}"
            seen[key] = e.family.name


def test_hooks_act_through_the_registry() -> None:
    primary = Route("p", PathMatch("prefix", "/"), Forward((WeightedCluster("ns/a:80", 100),)), REF)
    canary = parse({"canary": "true", "canary-weight": "30"})
    found = registry.alternative(canary)
    assert found is not None and isinstance(found[1], Canary)
    family, policy = found
    (split,) = family.alternative_routes(primary, Forward((WeightedCluster("ns/b:80", 100),)), policy)
    assert isinstance(split.action, Forward) and [c.weight for c in split.action.clusters] == [70, 30]
    assert registry.alternative(parse({})) is None

    assert registry.redirect_to_https(parse({}), host_has_tls=True) is True
    assert registry.redirect_to_https(parse({}), host_has_tls=False) is False
    assert registry.redirect_to_https(parse({"ssl-redirect": "false"}), host_has_tls=True) is False
    assert registry.redirect_to_https(parse({"force-ssl-redirect": "true"}), host_has_tls=False) is True

    assert registry.passes_tls_through(parse({"ssl-passthrough": "true"}))
    assert not registry.passes_tls_through(parse({}))
    assert registry.uses_service_address((ServiceUpstream(),)) and not registry.uses_service_address(())

    (root,) = registry.extra_routes(parse({"app-root": "/app"}), "h", REF)
    assert root.match == PathMatch("exact", "/") and root.name.endswith("#app-root")
    assert registry.extra_routes(parse({}), "h", REF) == []
