"""NACK handling with a real Envoy: a resource Envoy rejects is injected through the cache seam.

Envoy must keep serving its last good config, /debug/syncz must show the NACK with Envoy's own
error text, meridian_xds_nacks_total must count it, the rejected version must not be re-sent
(other types keep flowing), and the next good version must be ACKed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.translate import listeners as lst
from controlplane.xds import resources as rt
from controlplane.xds.cache import Resource, SnapshotCache, make_resource
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(Path(tmp_path_factory.mktemp("nack")), in_process=True)
    try:
        g.start()
        yield g
    finally:
        g.stop()


def lds_state(gw: Gateway) -> dict[str, Any]:
    streams = gw.admin("/debug/syncz")
    assert len(streams) == 1, streams
    return streams[0]["types"]["LDS"]


def nack_metric(gw: Gateway) -> float:
    text = gw.admin("/metrics")
    total = 0.0
    for m in re.finditer(r'^meridian_xds_nacks_total\{type="([^"]+)"\} ([0-9.e+]+)$', text, re.M):
        total += float(m.group(2))
    return total


def apply_listener(cache: SnapshotCache, res: Resource) -> tuple[int, str]:
    """Put the HTTP listener in the cache: (cache generation, the LDS version Envoy is told)."""
    generation = cache.apply({rt.LISTENER: {lst.HTTP_LISTENER: res}})
    return generation, cache.get(rt.LISTENER).digest


def test_rejected_listener_keeps_last_good_config(gw: Gateway) -> None:
    gw.backend("web")
    gw.write("ing.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    gw.wait_served_by("web.example.com", "/", "web")
    gw.wait_converged()
    assert lds_state(gw)["last_nack"] is None
    assert gw.envoy is not None
    rejected_before = gw.envoy.stat("listener_manager.lds.update_rejected")
    nacks_before = nack_metric(gw)
    cache = gw.app.cache
    good = cache.get(rt.LISTENER).resources[lst.HTTP_LISTENER]

    # The same HTTP listener with its filter chain twice: Envoy refuses identical chain matches.
    cfg = gw.app.controller.config
    bad_pb = lst.http_listener(lst.HTTP_LISTENER, cfg.listen_address, cfg.http_port, lst.HTTP_ROUTES, [])
    bad_pb.filter_chains.add().CopyFrom(bad_pb.filter_chains[0])
    bad = make_resource(lst.HTTP_LISTENER, rt.LISTENER, bad_pb)
    bad_version, bad_digest = gw.inproc.run(apply_listener, cache, bad)  # type: ignore[union-attr]

    st = wait_until(lambda: (s := lds_state(gw))["last_nack"] and s, timeout=15, message="no NACK in syncz")
    nack = st["last_nack"]
    assert nack["version"] == bad_digest, st
    assert "has the same matching rules" in nack["error"] and "http" in nack["error"], nack
    assert st["acked_version"] != bad_digest
    wait_until(lambda: nack_metric(gw) >= nacks_before + 1, timeout=5, message="NACK metric did not move")
    assert gw.envoy.stat("listener_manager.lds.update_rejected") == rejected_before + 1

    # Envoy stays on the last good listener.
    for _ in range(5):
        r = gw.get("web.example.com", "/")
        assert r.status == 200 and r.json()["service"] == "web"

    # Other types keep flowing; the rejected LDS version is not sent again.
    nonce = st["nonce"]
    gw.backend("api")
    gw.write("ing2.yaml", [ingress("api", [rule("api.example.com", ("/", "Prefix", "api", 80))])])
    gw.wait_served_by("api.example.com", "/", "api")
    st2 = lds_state(gw)
    assert st2["nonce"] == nonce and st2["sent_version"] == bad_digest, st2
    assert gw.envoy.stat("listener_manager.lds.update_rejected") == rejected_before + 1
    assert nack_metric(gw) == nacks_before + 1

    # The next good version is sent and ACKed.
    good_version, good_digest = gw.inproc.run(apply_listener, cache, good)  # type: ignore[union-attr]
    assert good_version > bad_version

    def acked() -> dict[str, Any] | None:
        s = lds_state(gw)
        return s if s["acked_version"] == good_digest and not s["pending"] else None

    st3 = wait_until(acked, timeout=15, message="good LDS version never ACKed")
    assert st3["last_nack"]["version"] == bad_digest  # history kept for operators
    gw.wait_converged()
    assert gw.get("web.example.com", "/").status == 200
    assert gw.envoy.stat("listener_manager.lds.update_rejected") == rejected_before + 1
