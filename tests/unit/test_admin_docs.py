"""README's admin endpoint table against a running `meridian serve`: every GET it lists answers, in the
format the README says (JSON unless it names the exception), and the POSTs refuse without the token."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_ports
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


def _admin_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("## Admin endpoints", 1)[1].split("\n## ", 1)[0]


def _documented() -> tuple[list[str], list[str], set[str]]:
    """(GET paths, POST paths, paths README says are not JSON)."""
    section = _admin_section()
    gets: list[str] = []
    posts: list[str] = []
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        for cell in row.split(", "):
            path, _, query = cell.strip("`").partition("?")
            if query:  # from=V1&to=V2|live[&sources=1]: the parameters it names, with a real version
                path += "?" + "&".join(f"{k}={'1' if k == 'from' else 'live'}" for k in re.findall(r"(\w+)=V", query))
            if path.startswith("POST "):
                posts.append(path.removeprefix("POST "))
            elif path.startswith("/"):
                gets.append(path.replace("/V", "/1"))
    intro = section.split("(except", 1)[1].split(")", 1)[0]
    not_json = set(re.findall(r"`(/[a-z/]+)`", intro))
    return gets, posts, not_json


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state")
    xds, admin_port, http, https, east_west = free_ports(5)
    examples = REPO / "examples" / "clusters"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "serve", "--cluster", f"east={examples / 'east'}",
         "--cluster", f"west={examples / 'west'}", "--xds-address", f"127.0.0.1:{xds}",
         "--admin-address", f"127.0.0.1:{admin_port}", "--listen-address", "127.0.0.1",
         "--http-port", str(http), "--https-port", str(https), "--east-west-port", str(east_west),
         "--state-dir", str(state)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{admin_port}"

    def ready() -> bool:
        try:
            return _get(base + "/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=30, message="meridian serve never became ready")
        wait_until(lambda: b'"version": 1' in _get(base + "/debug/history")[2] or None, timeout=10,
                   message="no version 1 in the history")  # fmt: skip
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_table_is_read() -> None:
    gets, posts, not_json = _documented()
    assert {"/healthz", "/readyz", "/metrics", "/debug/snapshot", "/debug/history/1", "/ui"} <= set(gets)
    assert posts == ["/history/rollback", "/history/resume"]
    assert "/metrics" in not_json


def test_every_documented_get_answers_in_the_documented_format(admin: str) -> None:
    gets, _posts, not_json = _documented()
    for path in gets:
        status, ctype, body = _get(admin + path)
        path = path.split("?")[0]
        assert status == 200, f"{path}: {status} {body[:200]!r}"
        is_json = ctype.startswith("application/json")
        assert is_json == (path not in not_json), f"{path}: README says {'not ' * (path in not_json)}JSON, got {ctype}"


def test_documented_probe_bodies(admin: str) -> None:
    section = _admin_section()
    for path, word in (("/healthz", "ok"), ("/readyz", "ready")):
        assert f"200 `{word}`" in next(line for line in section.splitlines() if line.startswith(f"| `{path}`"))
        assert _get(admin + path)[2].decode().strip() == word


def test_documented_posts_need_the_token(admin: str) -> None:
    _gets, posts, _not_json = _documented()
    for path in posts:
        req = urllib.request.Request(admin + path, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 401, path
