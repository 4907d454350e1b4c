"""Delta responses in chunks (`controlplane.xds.chunking`) with a real Envoy.

The control plane sends its large Delta responses a few resources at a time, one chunk per ACK.
What could break: Envoy could end up missing clusters, assignments or route tables sent in a
later chunk, a route could reach Envoy before its cluster (a 503), or an update arriving while
chunks are still going out could be lost. A real Envoy (Delta, two workers) starts against a
gateway of many Services with a tiny chunk size; every host must answer from its own Service, and
a Service added afterwards too; the push counters show the responses really were chunked.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from controlplane.devtools.envoy_proc import EnvoyProcess
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until

SERVICES = 40
CHUNK = 7


def host(i: int) -> str:
    return f"h{i}.example.com"


def state(gw: Gateway, envoy: EnvoyProcess, host_name: str) -> str:
    """What each side holds, for a failure message: which step of the chunked start did not happen."""
    parts = []
    for what, read in (
        ("envoy stats", lambda: envoy.admin_get("/stats?filter=^(control_plane\\.|cluster_manager\\.|listener_manager"
                                                "\\.total_listeners|http\\.[a-z_]+\\.rds\\.)")),
        ("last answer", lambda: (lambda r: f"{r.status} {r.text[:200]}")(gw.get(host_name, "/"))),
        ("meridian syncz", lambda: json.dumps(gw.admin("/debug/syncz"))[:4000]),
    ):  # fmt: skip
        try:
            parts.append(f"{what}: {read()}")
        except Exception as exc:  # the diagnosis must not hide the failure
            parts.append(f"{what}: unreadable ({exc!r})")
    return "\n".join(parts)


def test_chunked_delta_start_converges_and_serves(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(envoy=False, delta=True)
    gw.env["MERIDIAN_XDS_DELTA_CHUNK"] = str(CHUNK)
    gw.start()
    pods = {i: gw.backend(f"svc{i}")[0].pod for i in range(SERVICES)}
    gw.write("ing.yaml", [ingress("apps", [rule(host(i), ("/", "Prefix", f"svc{i}", 80)) for i in range(SERVICES)])])
    wait_until(lambda: len(gw.admin("/debug/snapshot")["types"]["CDS"]["resources"]) >= SERVICES, timeout=30,
               message="the control plane never had every cluster")  # fmt: skip
    envoy = EnvoyProcess(gw.bootstrap("gw-chunks"), workdir=gw.root / "envoy-chunks", concurrency=2)
    try:
        envoy.start().wait_ready(30)
        for i in range(SERVICES):  # every Service, whichever chunk its cluster, endpoints or routes came in
            try:
                r = gw.wait_status(host(i), "/", 200, timeout=30)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{state(gw, envoy, host(i))}") from None
            assert r.json()["pod"] == pods[i]
        for kind in ("CDS", "EDS"):
            pushes = gw.metric("meridian_xds_pushes_total", {"type": kind}) or 0
            assert pushes >= SERVICES // CHUNK, f"{kind} not chunked: {pushes} responses"
        assert not gw.metric("meridian_xds_nacks_total", {"type": "CDS"})

        # A new Service after the chunked start: a small change, one response, served.
        fresh = gw.backend("fresh")[0]
        gw.write("fresh.yaml", [ingress("fresh", [rule("fresh.example.com", ("/", "Prefix", "fresh", 80))])])
        r = gw.wait_status("fresh.example.com", "/", 200, timeout=30)
        assert r.json()["pod"] == fresh.pod
        stats = envoy.admin_get("/stats?filter=^cluster_manager\\.(active|warming)_clusters$")
        assert "cluster_manager.warming_clusters: 0" in stats, stats
    finally:
        envoy.stop()
