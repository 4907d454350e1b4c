"""A Delta EDS subscription to an assignment the snapshot lacks is answered at once, as removed.

Envoy subscribes to a new EDS cluster's assignment while it applies the CDS response, and the cluster
warms until the assignment comes; Envoy ACKs CDS only once its new clusters are warm. When the cluster
(and its assignment) was deleted right after its CDS response went out, an unanswered subscription made
Envoy warm the cluster for its initial_fetch_timeout (15 s) and withhold the CDS ACK that long; while CDS
is in flight with a newer version due, the server holds listeners, routes and the next CDS
(make-before-break, `XdsServer._push`), so every change to that gateway waited 15 s. Found by a
randomized Delta client acting as Envoy. A removal is the Delta protocol's "does not exist": Envoy's EDS
takes it as an update without endpoints and ends the warming.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from controlplane.bootstrap import local_client_tls, render_bootstrap
from controlplane.metrics import Metrics
from controlplane.xds.auth import XdsAuth
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.localca import LocalCA
from controlplane.xds.resources import CLUSTER, ENDPOINT
from controlplane.xds.server import XdsServer
from controlplane.xds.tlsfront import TlsFiles
from tests.unit.test_xds_server import (  # noqa: F401 (env: the fixture)
    Delta,
    Env,
    _envoy_binary,
    _free_port,
    applied,
    cla,
    cluster,
    env,
    initial_snapshot,
    until,
)


async def test_an_assignment_deleted_before_envoy_asked_for_it_is_said_removed(env: Env) -> None:  # noqa: F811
    client = Delta(env, "eds-missing")
    await client.send(CLUSTER, [])
    cds = await client.recv()
    await client.send(ENDPOINT, ["backend"])
    eds = await client.recv()
    await client.ack(cds)
    await client.ack(eds)
    env.cache.apply({CLUSTER: {"brief": cluster("brief")}, ENDPOINT: {"brief": cla("brief", 9100)}})
    cds = await client.recv()
    assert [r.name for r in cds.resources] == ["brief"]
    # Deleted again before Envoy, applying that CDS response, subscribes to the assignment; Envoy does not
    # ACK CDS while the cluster warms.
    env.cache.apply({CLUSTER: {"brief": None}, ENDPOINT: {"brief": None}})
    await client.send(ENDPOINT, ["brief"])
    answer = await client.recv(timeout=3)  # it used to get nothing (Envoy waited 15 s)
    assert answer.type_url == ENDPOINT and "brief" in answer.removed_resources, answer


async def test_a_first_subscription_to_missing_assignments_gets_them_removed_then_sent_when_they_come(
    env: Env,  # noqa: F811
) -> None:
    client = Delta(env, "eds-first")
    await client.send(ENDPOINT, ["backend", "later"])
    eds = await client.recv()
    assert [r.name for r in eds.resources] == ["backend"]
    assert list(eds.removed_resources) == ["later"]
    await client.ack(eds)
    env.cache.apply({CLUSTER: {"later": cluster("later")}, ENDPOINT: {"later": cla("later", 9101)}})
    eds = await client.recv()
    assert [r.name for r in eds.resources] == ["later"] and not eds.removed_resources


@pytest.mark.e2e
async def test_a_real_envoy_finishes_warming_a_cluster_whose_assignment_does_not_exist() -> None:
    """The case above with Envoy 1.40 itself: a cluster whose assignment the snapshot lacks (as in the
    race, where it is deleted right after its cluster went out) is warm and its CDS ACKed in well under
    the 15 s initial_fetch_timeout it used to take."""
    listen_port = _free_port()
    cache = SnapshotCache()
    cache.apply(initial_snapshot(listen_port))
    cache.ready = True
    workdir = Path(tempfile.mkdtemp(prefix="xds-eds-missing-"))
    issued = LocalCA(workdir / "state").server(["127.0.0.1"])
    metrics = Metrics()
    server = XdsServer(cache, metrics, auth=XdsAuth(metrics, insecure=False),
                       tls=TlsFiles(issued.cert, issued.key, issued.ca))  # fmt: skip
    xds_port = await server.start("127.0.0.1:0")
    bootstrap = render_bootstrap(
        xds_address=f"127.0.0.1:{xds_port}", node_id="envoy-eds-missing", admin_port=0, delta=True,
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
