"""Control plane restart: kill -9 `meridian serve` while a client sends requests through Envoy.

Envoy must keep serving from its last config while the control plane is gone (zero failed
requests), reconnect to the restarted control plane (same ports) and ACK its current version,
and then pick up a change made after the restart.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.gateway import ingress, rule
from tests.support.http import request

pytestmark = pytest.mark.e2e


class Traffic:
    """A thread sending GETs through Envoy back to back, recording every outcome."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = request("GET", self.port, "/", host=self.host, timeout=3)
                if r.status == 200 and r.json().get("service") == "web":
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status} {r.text[:80]}")
            except Exception as exc:  # a failed request is what this test looks for
                self.failures.append(repr(exc))
            self._stop.wait(0.005)  # leave CPU for the control plane restarting beside us

    def count_after(self, n: int, timeout: float = 10) -> None:
        """Wait (bounded) until `n` more successful requests have gone through."""
        want = self.ok + n
        deadline = time.monotonic() + timeout
        while self.ok < want and not self.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.ok >= want, f"only {self.ok}/{want} ok; failures: {self.failures[:5]}"

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_kill_9_and_restart(make_gateway) -> None:
    gw = make_gateway().start()
    gw.backend("web", replicas=2)
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    gw.wait_served_by("web.example.com", "/", "web")
    gw.wait_converged()
    assert gw.envoy is not None
    before = {s["types"]["CDS"]["acked_version"] for s in gw.admin("/debug/syncz")}

    with Traffic(gw.http_port, "web.example.com") as traffic:
        traffic.count_after(20)
        gw.kill_control_plane()
        assert gw.admin_status("/healthz") is None  # really gone
        traffic.count_after(100)  # served while the control plane is down
        assert gw.envoy.stat("control_plane.connected_state") == 0

        gw.start_control_plane()  # same xDS/admin ports
        gw.wait_converged(timeout=30)
        streams = gw.admin("/debug/syncz")
        assert len(streams) == 1 and streams[0]["node_id"] == "gw-1", streams
        snap = gw.admin("/debug/snapshot")
        for short, t in streams[0]["types"].items():
            assert t["acked_version"] == str(snap["types"][short]["version"]), (short, t)
            assert t["last_nack"] is None, (short, t)
        assert gw.envoy.stat("control_plane.connected_state") == 1
        traffic.count_after(50)
    assert traffic.failures == [], traffic.failures[:10]
    assert before  # the pre-kill stream had ACKed something

    # A change made after the restart is served.
    gw.backend("api")
    gw.write("api.yaml", [ingress("api", [rule("api.example.com", ("/", "Prefix", "api", 80))])])
    gw.wait_served_by("api.example.com", "/", "api")
    assert gw.get("web.example.com", "/").status == 200
    gw.wait_converged()
