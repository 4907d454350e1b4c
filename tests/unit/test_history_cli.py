"""`meridian history|diff|rollback|resume` against a running (in-process) Meridian, no Envoy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cli import main
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path, in_process=True, envoy=False,
                serve_args=("--watch-ingress-without-class", "--rollback-max-age", "0"))  # fmt: skip
    g.start()
    yield g
    g.stop()


def run(gw: Gateway, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--server", f"http://127.0.0.1:{gw.admin_port}", "--state-dir", str(gw.root / "state")])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rollback_of_an_old_version_needs_yes_and_every_output_shows_the_pin(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    wait_until(lambda: gw.ingress_report("web"), timeout=10)
    v = gw.admin("/debug/history")["latest"]
    gw.write("web.yaml", [ingress("web", [rule("www.example.com", ("/", "Prefix", "web", 80))])])
    wait_until(lambda: gw.admin("/debug/history")["latest"] > v, timeout=10)

    code, _, err = run(gw, capsys, "rollback", str(v))  # --rollback-max-age 0: every version is too old
    assert code == 2 and "needs --yes" in err and "h old" in err, err
    assert gw.admin("/debug/history")["pin"] is None
    code, out, _ = run(gw, capsys, "rollback", str(v), "--yes", "--reason", "old but fine")
    assert code == 0 and f"pinned to version {v}" in out
    for args in (("history",), ("history", "show", str(v)), ("diff", str(v))):
        code, out, _ = run(gw, capsys, *args)
        assert code == 0 and out.startswith(f"PINNED: configuration pinned to version {v}"), (args, out)
    code, _, err = run(gw, capsys, "rollback", "9999", "--yes")
    assert code == 1 and "not in the history" in err
    code, _, err = run(gw, capsys, "diff", str(v), "9999")
    assert code == 1 and "error: v9999 not in the history" in err, err  # which one
    code, out, _ = run(gw, capsys, "resume")
    assert code == 0 and out.startswith(f"resuming: v{v} -> live: RDS") and "dropped" in out, out
    code, out, _ = run(gw, capsys, "history")
    assert "PINNED" not in out
    code, out, _ = run(gw, capsys, "resume")  # nothing pinned: no "resuming" summary, just that
    assert code == 0 and out == "not pinned; nothing to resume\n", out


def test_a_wrong_token_is_refused(gw: Gateway, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("nope\n")
    code = main(["resume", "--server", f"http://127.0.0.1:{gw.admin_port}", "--admin-token-file", str(bad)])
    assert code == 1 and "valid admin token" in capsys.readouterr().err


def test_resume_summary_leaves_out_endpoints_which_a_pin_never_holds(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Endpoints follow the sources while pinned, so resuming changes none: the summary must not say so."""
    from types import SimpleNamespace

    from tests.support.gateway import service_manifests

    def write(port: int, host: str) -> None:
        gw.write("web.yaml", [*service_manifests("web", [SimpleNamespace(port=port)]),  # type: ignore[list-item]
                              ingress("web", [rule(host, ("/", "Prefix", "web", 80))])])  # fmt: skip

    write(18001, "web.example.com")
    wait_until(lambda: gw.ingress_report("web"), timeout=10)
    v = gw.admin("/debug/history")["latest"]
    write(18001, "www.example.com")
    wait_until(lambda: gw.admin("/debug/history")["latest"] > v, timeout=10)
    code, _, err = run(gw, capsys, "rollback", str(v), "--yes")
    assert code == 0, err
    latest = gw.admin("/debug/history")["latest"]
    write(18002, "www.example.com")  # a pod moved: EDS follows the sources at once, pin or not
    wait_until(lambda: gw.admin("/debug/history")["latest"] > latest, timeout=10)
    code, out, _ = run(gw, capsys, "resume")
    assert code == 0 and out.startswith(f"resuming: v{v} -> live: RDS") and "dropped" in out, out
    assert "EDS" not in out.splitlines()[0], out
