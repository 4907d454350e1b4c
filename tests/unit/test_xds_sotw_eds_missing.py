"""A State-of-the-World EDS subscription to an assignment the snapshot lacks gets an empty one.

The SotW side of tests/unit/test_xds_eds_missing.py. Envoy's SotW EDS only notifies a cluster whose
assignment is in a response (EDS is not a full-state type), so a cluster whose assignment the snapshot
lacks (deleted right after its CDS response went out) warmed for its initial_fetch_timeout (15 s) while
Envoy withheld the CDS ACK, and the server held that gateway's listeners, routes and next clusters
(make-before-break). SotW has no "does not exist" for EDS: the name is answered with an assignment
without endpoints, what Envoy would use after the timeout anyway.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.localca import LocalCA
from controlplane.xds.resources import CLUSTER, ENDPOINT
from controlplane.xds.server import XdsServer
from controlplane.xds.tlsfront import TlsFiles
from tests.unit.test_xds_server import (  # noqa: F401 (env: the fixture)
    Env,
    Sotw,
    _envoy_binary,
    _free_port,
    applied,
    cla,
    cluster,
    env,
    initial_snapshot,
    until,
)


@pytest.mark.e2e
async def test_a_real_sotw_envoy_finishes_warming_a_cluster_whose_assignment_does_not_exist() -> None:
    """State-of-the-World, with Envoy 1.40: a cluster whose assignment the snapshot lacks (a cluster
    deleted right after its CDS response went out) is warm, and its CDS ACKed, well under the
    15 s initial_fetch_timeout."""
    listen_port = _free_port()
    cache = SnapshotCache()
    cache.apply(initial_snapshot(listen_port))
    cache.ready = True
    workdir = Path(tempfile.mkdtemp(prefix="xds-sotw-eds-missing-"))
    issued = LocalCA(workdir / "state").server(["127.0.0.1"])
    metrics = Metrics()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=False),
                       tls=TlsFiles(issued.cert, issued.key, issued.ca))  # fmt: skip
    xds_port = await server.start("127.0.0.1:0")
    bootstrap = render_bootstrap(
        xds_address=f"127.0.0.1:{xds_port}", node_id="envoy-sotw-eds-missing", admin_port=0, delta=False,
        tls=local_client_tls(workdir / "state", "meridian-gateway"),
    )  # fmt: skip
    (workdir / "bootstrap.json").write_text(json.dumps(bootstrap))
    log_file = (workdir / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [_envoy_binary(), "-c", str(workdir / "bootstrap.json"), "--use-dynamic-base-id", "--concurrency", "1"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:

        def cds_acked(version: str) -> bool:
            assert proc.poll() is None, (workdir / "envoy.log").read_text()
            streams = server.syncz()
            return len(streams) == 1 and streams[0]["types"].get("CDS", {}).get("acked_version") == version

        await until(lambda: cds_acked(cache.get(CLUSTER).digest), timeout=30, what="the first CDS ACK")
        version = applied(cache, {CLUSTER: {"orphan": cluster("orphan")}}, CLUSTER)  # no assignment for it
        await until(lambda: cds_acked(version), timeout=5, what="the CDS ACK of a cluster without an assignment")
        eds = server.syncz()[0]["types"]["EDS"]
        assert eds["last_nack"] is None, eds
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
        await server.stop()


async def test_sotw_eds_answers_a_missing_name_with_an_empty_assignment_once_and_the_real_one_later(
    env: Env,  # noqa: F811
) -> None:
    client = Sotw(env, "sotw-missing")
    await client.send(CLUSTER, [])
    cds = await client.recv()
    await client.send(ENDPOINT, ["backend", "later"])
    eds = await client.recv()
    got = {name: len(c.endpoints) for name, c in assignments(eds).items()}
    assert got == {"backend": 1, "later": 0}  # "later" has none yet: said as empty, not left unanswered
    await client.ack(cds)
    await client.ack(eds, ["backend", "later"])
    version = applied(env.cache, {CLUSTER: {"later": cluster("later")}, ENDPOINT: {"later": cla("later", 9101)}},
                      ENDPOINT)  # fmt: skip
    eds = await client.recv()
    if eds.type_url == CLUSTER:  # the new cluster first, then its endpoints
        await client.ack(eds)
        eds = await client.recv()
    assert eds.version_info == version and {n: len(c.endpoints) for n, c in assignments(eds).items()} == {"later": 1}


async def test_sotw_eds_keeps_a_held_cluster_endpoints_while_its_assignment_is_gone(env: Env) -> None:  # noqa: F811
    """A name the client was sent keeps what it has when its assignment leaves the snapshot (its cluster
    may still be in use until routes move): only names never sent are answered as empty."""
    client = Sotw(env, "sotw-held")
    await client.send(ENDPOINT, ["backend"])
    eds = await client.recv()
    await client.ack(eds, ["backend"])
    env.cache.apply({ENDPOINT: {"backend": None}})
    await client.send(ENDPOINT, ["backend", "other"])  # a new subscription set: a full response
    eds = await client.recv()
    assert {n: len(c.endpoints) for n, c in assignments(eds).items()} == {"other": 0}


def assignments(resp: discovery_pb2.DiscoveryResponse) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    out = {}
    for any_msg in resp.resources:
        msg = endpoint_pb2.ClusterLoadAssignment()
        assert any_msg.Unpack(msg)
        out[msg.cluster_name] = msg
    return out
