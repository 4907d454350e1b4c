"""A sample of fuzzed Ingresses (tests/unit/test_fuzz.py strategies) against a real Envoy: zero NACKs.

Each example is a batch of 30 generated Ingresses written as one file, plus a marker Ingress whose
host answering proves the batch was processed; then every type must be ACKed, none rejected.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until
from tests.unit.test_fuzz import FUZZ, ingress_objects, supporting_objects

API_VERSIONS = {"Service": "v1", "Secret": "v1", "EndpointSlice": "discovery.k8s.io/v1"}
_batch = itertools.count()


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("fuzz")), serve_args=("--watch-ingress-without-class",))
    try:
        gw.start()
        echo = gw.fleet.add(service="web", pod="web-0")
        objs = [{"apiVersion": API_VERSIONS[kind], **obj} for kind, obj in supporting_objects(echo.port)]
        gw.write("supporting.yaml", objs)
        yield gw
    finally:
        gw.stop()


def settled(gw: Gateway) -> list[dict[str, Any]] | None:
    """Every stream has answered (ACK or NACK) the last version sent of every type."""
    streams = gw.admin("/debug/syncz")
    if not streams:
        return None
    for s in streams:
        for t in s["types"].values():
            nack = t.get("last_nack")
            answered = t.get("acked_version") == t.get("sent_version") or (
                nack is not None and nack.get("version") == t.get("sent_version")
            )
            if t.get("pending") or not answered:
                return None
    return streams


@settings(FUZZ, max_examples=2)
@given(batch=st.lists(ingress_objects(), min_size=30, max_size=30))
def test_fuzzed_batch_is_accepted_by_envoy(fuzz_gateway: Gateway, batch: list[dict[str, Any]]) -> None:
    gw = fuzz_gateway
    n = next(_batch)
    for i, obj in enumerate(batch):
        obj["metadata"]["name"] = f"fuzzed-{i}"
    marker = f"marker-{n}.meridian.invalid"
    gw.write("fuzzed.yaml", [*batch, ingress(f"marker-{n}", [rule(marker, ("/", "Prefix", "web", 80))])])
    try:
        gw.wait_served_by(marker, "/", "web", timeout=20)
    except AssertionError:
        nacks = [t["last_nack"] for s in gw.admin("/debug/syncz") for t in s["types"].values() if t.get("last_nack")]
        errors = [line for line in gw.log_text().splitlines() if "ERROR" in line or "Error" in line]
        pytest.fail(f"batch {n} never applied; NACKs: {nacks}; control plane errors: {errors[-5:]}")
    streams = wait_until(lambda: settled(gw), timeout=20, message="Envoy never answered the last push")
    nacks = {short: t["last_nack"] for s in streams for short, t in s["types"].items() if t.get("last_nack")}
    assert not nacks, f"Envoy rejected fuzzed config: {nacks}"
    reports = [r for r in gw.admin("/debug/ingresses") if r["name"].startswith("fuzzed-")]
    assert len(reports) == len(batch)
    assert not [r for r in reports for f in r["findings"] if "internal error" in f["message"]]


NASTY_PATHS = ["/(", "/[a-", "/a{99999}", "/a\\", "/a?x=1", "/a#f", "/a\tb", "/é", "/" + "a" * 3000, "/(?P<n>x)"]


@pytest.mark.parametrize("regex", [False, True], ids=["plain", "use-regex"])
def test_nasty_paths_are_accepted_by_envoy(fuzz_gateway: Gateway, regex: bool) -> None:
    """Paths that are invalid RE2 or invalid Envoy prefixes: reported or made inert, never a NACK."""
    gw = fuzz_gateway
    n = next(_batch)
    ann = {"nginx.ingress.kubernetes.io/use-regex": "true"} if regex else {}
    objs = [
        ingress(f"nasty-{i}-{t}", [rule(f"nasty{i}.example", (p, t, "web", 80))], annotations=ann)
        for i, p in enumerate(NASTY_PATHS)
        for t in ("Prefix", "Exact", "ImplementationSpecific")
    ]
    marker = f"marker-{n}.meridian.invalid"
    gw.write("fuzzed.yaml", [*objs, ingress(f"marker-{n}", [rule(marker, ("/", "Prefix", "web", 80))])])
    try:
        gw.wait_served_by(marker, "/", "web", timeout=20)
    except AssertionError:
        nacks = [t["last_nack"] for s in gw.admin("/debug/syncz") for t in s["types"].values() if t.get("last_nack")]
        pytest.fail(f"nasty paths never applied; NACKs: {str(nacks)[:3000]}")
    streams = wait_until(lambda: settled(gw), timeout=20, message="Envoy never answered the last push")
    nacks = {short: t["last_nack"] for s in streams for short, t in s["types"].items() if t.get("last_nack")}
    assert not nacks, f"Envoy rejected: {str(nacks)[:3000]}"
