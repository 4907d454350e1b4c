"""`make demo` must keep working: run the demo's self-check (it starts everything and curls every line)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo's curl lines need curl")
@pytest.mark.parametrize("clusters", ["all", "on-demand"])
def test_demo_self_check_passes(clusters: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--check", "--clusters", clusters],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "curl -s -H 'Host: web.shop' http://127.0.0.1:15080/" in out.stdout
