"""The issue's "done means", through a real Envoy and the real `meridian` CLI:

a good Ingress is served; a typo'd Service lands (503); `meridian history` shows both versions
and `meridian diff` the change; `meridian rollback` puts the good version back within a bounded
time with no failed request; new changes are recorded as pending; a control plane restart keeps
the pin; `meridian resume` serves the fixed state.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.gateway import REPO, Gateway, ingress, rule
from tests.support.http import request
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


class Loop:
    """GETs back to back through Envoy on several hosts, each outcome kept with its start time."""

    def __init__(self, port: int, hosts: dict[str, str]) -> None:
        self.port, self.hosts = port, hosts  # host -> the service that must answer
        self.results: list[tuple[float, str, str]] = []  # (started, host, "ok" or what went wrong)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loop")

    def _run(self) -> None:
        while not self._stop.is_set():
            for host, service in self.hosts.items():
                started = time.monotonic()
                try:
                    r = request("GET", self.port, "/", host=host, timeout=3)
                    ok = r.status == 200 and r.json().get("service") == service
                    self.results.append((started, host, "ok" if ok else f"{r.status} {r.text[:60]}"))
                except Exception as exc:  # a failed request is what this test looks for
                    self.results.append((started, host, repr(exc)))
            self._stop.wait(0.002)

    def failures(self, host: str, after: float = 0.0) -> list[str]:
        return [o for t, h, o in list(self.results) if h == host and t >= after and o != "ok"]

    def count(self, host: str, after: float = 0.0) -> int:
        return sum(1 for t, h, o in list(self.results) if h == host and t >= after and o == "ok")

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def meridian(gw: Gateway, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "controlplane", *args, "--server", f"http://127.0.0.1:{gw.admin_port}",
           "--admin-token-file", str(gw.root / "state" / "admin-token")]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def history_rows(gw: Gateway) -> dict[int, str]:
    return {r["version"]: r for r in gw.admin("/debug/history")["records"]}


def post(gw: Gateway, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}{path}", data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_bad_change_rollback_restart_resume(make_gateway) -> None:
    gw = make_gateway(delta=True).start()
    gw.backend("web")
    gw.backend("api")
    gw.write("api.yaml", [ingress("api", [rule("api.example.com", ("/", "Prefix", "api", 80))])])
    good_ing = ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])

    # 1. A good Ingress is served.
    gw.write("web.yaml", [good_ing])
    gw.wait_served_by("web.example.com", "/", "web")
    gw.wait_converged()
    good = gw.admin("/debug/history")["latest"]

    # 2. A bad change lands: a typo'd Service gives a 503.
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "wbe", 80))])])
    gw.wait_status("web.example.com", "/", 503)
    gw.wait_converged()
    bad = gw.admin("/debug/history")["latest"]
    assert bad > good
    # How the fleet took each version: the one Envoy (group meridian-gateway) ACKed both.
    for v in (good, bad):
        wait_until(lambda v=v: history_rows(gw)[v]["fleet"].get("meridian-gateway", {}).get("acked") == 1,
                   timeout=10, message=f"no ACK recorded for version {v}")  # fmt: skip

    # 3. `meridian history` shows both versions; `meridian diff` shows the change.
    table = meridian(gw, "history").stdout
    lines = {line.split()[0]: line for line in table.splitlines()[1:] if line.split() and line.split()[0].isdigit()}
    assert str(good) in lines and str(bad) in lines, table
    assert "Ingress default/web changed" in lines[str(bad)] and "served" in lines[str(bad)], table
    shown = meridian(gw, "history", "show", str(bad)).stdout
    assert "spec.rules[0].http.paths[0].backend.service.name: web -> wbe" in shown, shown
    diff = meridian(gw, "diff", str(good), str(bad)).stdout
    assert f"--- v{good} RDS" in diff and f"+++ v{bad} RDS" in diff, diff
    assert "+      status: 503" in diff and "-      cluster: default/web:80" in diff, diff
    sources = meridian(gw, "diff", str(good), str(bad), "--sources").stdout
    assert "changed  c1:Ingress/default/web" in sources and "web -> wbe" in sources, sources

    # Mutating endpoints: POST only, and only with the token.
    assert post(gw, "/history/resume", None) == 401
    assert post(gw, "/history/resume", "wrong") == 401
    assert gw.admin_status("/history/rollback") == 405

    with Loop(gw.http_port, {"api.example.com": "api", "web.example.com": "web"}) as loop:
        wait_until(lambda: loop.count("api.example.com") >= 20, timeout=15, message="loop not running")
        # 4. Rollback: the good version is back within a bounded time, and nothing fails on the way.
        started = time.monotonic()
        out = meridian(gw, "rollback", str(good), "--reason", "typo in web backend")
        assert f"pinned to version {good}" in out.stdout
        back = wait_until(lambda: next((t for t, h, o in list(loop.results)
                                        if h == "web.example.com" and t >= started and o == "ok"), None),
                          timeout=10, message="good version not served after rollback")  # fmt: skip
        rollback_ready = back - started
        wait_until(lambda: loop.count("web.example.com", after=back) >= 200, timeout=30, message="too few requests")
        assert loop.failures("web.example.com", after=back) == []
        assert loop.failures("api.example.com") == []
        assert rollback_ready < 5, rollback_ready  # the CLI (a new Python process) dominates; see the bench
        assert gw.metric("meridian_config_pinned") == 1

        # 5. New changes are recorded as pending, not served.
        fixed = ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80)),
                                rule("new.example.com", ("/", "Prefix", "web", 80))])  # fmt: skip
        gw.write("web.yaml", [fixed])
        pending = wait_until(lambda: (v := gw.admin("/debug/history")["latest"]) > bad and v,
                             timeout=10, message="change while pinned not recorded")  # fmt: skip
        assert history_rows(gw)[pending]["served"] is False
        table = meridian(gw, "history").stdout
        assert table.splitlines()[0].startswith(f"PINNED: configuration pinned to version {good}"), table
        assert "pending" in next(line for line in table.splitlines() if line.startswith(f"{pending} ")), table
        assert gw.get("new.example.com", "/").status == 404  # the pinned version has no such host
        pinned_resp = urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/debug/snapshot", timeout=5)
        assert f"version {good}" in pinned_resp.headers["X-Meridian-Pinned"]
        assert gw.admin_status("/readyz") == 200

        # 6. A restart keeps the pin (and Envoy keeps serving while the control plane is away).
        restart_at = time.monotonic()
        gw.kill_control_plane()
        gw.start_control_plane()
        gw.wait_converged(timeout=30)
        assert gw.admin("/debug/history")["pin"]["version"] == good
        assert gw.get("new.example.com", "/").status == 404
        restarted = time.monotonic()
        wait_until(lambda: loop.count("web.example.com", after=restarted) >= 50, timeout=15, message="loop stalled")
        assert loop.failures("web.example.com", after=back) == []
        assert loop.failures("api.example.com") == []
        assert loop.count("web.example.com", after=restart_at) > 0

    # 7. Resume: a diff summary first, then the fixed state is served.
    out = meridian(gw, "resume").stdout
    assert out.startswith(f"resuming: v{good} -> live:"), out
    assert "pin on version" in out
    gw.wait_served_by("new.example.com", "/", "web")
    gw.wait_served_by("web.example.com", "/", "web")
    assert gw.metric("meridian_config_pinned") == 0
    assert "PINNED" not in meridian(gw, "history").stdout
    assert [e["action"] for e in gw.admin("/debug/history")["pin_events"]] == ["rollback", "resume"]
    print(f"rollback ready (CLI to first good response through Envoy): {rollback_ready * 1000:.0f} ms")


def test_token_file_absent_means_mutations_are_disabled(tmp_path: Path) -> None:
    """Without a state dir or --admin-token-file nothing can be changed through the admin API."""
    from controlplane.history.wiring import load_token

    assert load_token(None, None) is None
    token = load_token(None, str(tmp_path))
    assert token and (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
    assert load_token(None, str(tmp_path)) == token  # stable across restarts
