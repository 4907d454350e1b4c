"""`meridian history show V` against a running (in-process) Meridian, no Envoy: what a user reads."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cli import main
from tests.support.gateway import Gateway, ingress, rule
from tests.support.wait import wait_until


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path, in_process=True, envoy=False)
    g.start()
    yield g
    g.stop()


def test_history_show_says_when_in_utc_as_the_pinned_line_does(gw: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    gw.write("web.yaml", [ingress("web", [rule("web.example.com", ("/", "Prefix", "web", 80))])])
    wait_until(lambda: gw.ingress_report("web"), timeout=10)
    v = gw.admin("/debug/history")["latest"]
    code = main(["history", "show", str(v), "--server", f"http://127.0.0.1:{gw.admin_port}"])
    first = capsys.readouterr().out.splitlines()[0]
    assert code == 0
    when = re.fullmatch(rf"version {v} \(served\) at (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", first)
    assert when, first
    at = calendar.timegm(time.strptime(when[1], "%Y-%m-%d %H:%M:%S"))
    assert abs(at - time.time()) < 120, first  # now, not epoch seconds nor local time
