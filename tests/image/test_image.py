"""The container image, built the way CI can: podman, no registry, no network during the build.

`make wheelhouse` (host pip, network allowed) fills wheelhouse/; `make image` builds the Dockerfile
on a Debian base image made locally by mmdebstrap, with `--network none` and PIP_NO_INDEX=1. The
image then has to run as uid 65532, print `--help`, translate both example clusters exactly as the
host install does, and serve `/readyz` with a read-only root filesystem and no capabilities.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.image.podman_host import ensure_base_image, podman_env, write_containers_conf
from tests.support.ports import free_port
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "clusters"
UID = 65532
T = TypeVar("T")

pytestmark = [pytest.mark.image, pytest.mark.xdist_group("image"), pytest.mark.timeout(1200)]

if shutil.which("podman") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the image test: podman is missing (make system-packages installs it)")
    pytest.skip("podman is not installed (make system-packages installs it)", allow_module_level=True)


def _run(args: list[str], env: dict[str, str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def _check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return podman_env(write_containers_conf())


@pytest.fixture(scope="module")
def image(env: dict[str, str]) -> Iterator[str]:
    """Build the image offline with `make image`; yields its name. Prints how long each step took."""
    tag = f"localhost/meridian/controlplane:smoke-{uuid.uuid4().hex[:8]}"
    timings: list[str] = []

    def step(name: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        value = fn()
        timings.append(f"{name} {time.monotonic() - started:.1f}s")
        return value

    base = step("base image", lambda: ensure_base_image(env, timeout=900))
    wheelhouse = ["make", "-s", "wheelhouse", f"PYTHON={sys.executable}"]  # host pip, with network
    step("wheelhouse", lambda: _check(_run(wheelhouse, env, 600, cwd=ROOT)))
    make_image = [
        "make", "-s", "image",
        f"IMAGE={tag}",
        f"BASE_IMAGE={base}",
        "PIP_NO_INDEX=1",
        # No layer cache: nothing but the image itself is left behind, and teardown removes that.
        "PODMAN_BUILD_FLAGS=--network none --layers=false",
    ]  # fmt: skip
    step("build", lambda: _check(_run(make_image, env, 900, cwd=ROOT)))
    print("image test timings: " + ", ".join(timings))
    yield tag
    _run(["podman", "rmi", "--force", tag], env, 120)


def _podman_run(env: dict[str, str], image: str, *args: str, flags: tuple[str, ...] = ()) -> str:
    return _check(_run(["podman", "run", "--rm", "--network", "none", *flags, image, *args], env, 120))


def test_runs_as_uid_65532(env: dict[str, str], image: str) -> None:
    config = json.loads(_check(_run(["podman", "image", "inspect", image], env, 60)))[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["meridian"]
    ids = _podman_run(env, image, "-c", "import os; print(os.getuid(), os.getgid())", flags=("--entrypoint", "python3"))
    assert ids.split() == [str(UID), str(UID)]


def test_home_and_cache_are_writable_with_a_read_only_root(env: dict[str, str], image: str) -> None:
    """HOME and XDG_CACHE_HOME point into /tmp (a tmpfs here, an emptyDir in the chart): state goes there."""
    script = (
        "import os, pathlib\n"
        "for var in ('HOME', 'XDG_CACHE_HOME'):\n"
        "    d = pathlib.Path(os.environ[var], 'meridian'); d.mkdir(parents=True); (d / 'probe').write_text('ok')\n"
        "    print(var, d)\n"
        "try:\n"
        "    open('/opt/meridian/probe', 'w')\n"
        "except OSError as e:\n"
        "    print('root', e.strerror)\n"
    )
    out = _podman_run(env, image, "-c", script, flags=("--read-only", "--cap-drop=ALL", "--entrypoint", "python3"))
    assert out.splitlines() == [
        "HOME /tmp/meridian",
        "XDG_CACHE_HOME /tmp/.cache/meridian",
        "root Read-only file system",
    ]


def test_help(env: dict[str, str], image: str) -> None:
    out = _podman_run(env, image, "--help", flags=("--read-only", "--cap-drop=ALL"))
    assert "usage: meridian" in out
    for command in ("serve", "bootstrap", "translate", "create-remote-secret"):
        assert command in out


@pytest.mark.parametrize("cluster", ["east", "west"])
def test_translate_matches_the_host_install(env: dict[str, str], image: str, cluster: str) -> None:
    """The image's Meridian is this checkout's: same resources, byte for byte, as the host's."""
    mount = f"{EXAMPLES / cluster}:/manifests:ro"
    out = _podman_run(
        env, image, "translate", "-f", "/manifests", "-o", "json", flags=("--read-only", "--cap-drop=ALL", "-v", mount)
    )
    resources = json.loads(out)
    assert resources["LDS"] and resources["RDS"] and resources["CDS"], resources.keys()
    host_translate = [sys.executable, "-m", "controlplane", "translate", "-f", str(EXAMPLES / cluster), "-o", "json"]
    host = _check(_run(host_translate, env, 120))
    assert out == host


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_serve_is_ready_read_only_without_capabilities(env: dict[str, str], image: str) -> None:
    port = free_port()
    name = f"meridian-smoke-{uuid.uuid4().hex[:8]}"
    run = [
        "podman", "run", "--detach", "--name", name,
        "--read-only", "--cap-drop=ALL",
        "--publish", f"127.0.0.1:{port}:{port}",
        "--volume", f"{EXAMPLES}:/clusters:ro",
        image,
        "serve",
        "--cluster", "east=/clusters/east",
        "--cluster", "west=/clusters/west",
        "--admin-address", f"0.0.0.0:{port}",
    ]  # fmt: skip
    _check(_run(run, env, 120))
    try:

        def status() -> str | None:
            """'ready', or the container's state once it is no longer running; None while starting."""
            state = _run(["podman", "inspect", "--format", "{{.State.Status}}", name], env, 30).stdout.strip()
            if state != "running":
                return state or "gone"
            return "ready" if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200 else None

        try:
            final = wait_until(status, timeout=60, interval=0.2, message="/readyz of the containerised serve")
        except AssertionError as e:
            final = str(e)
        if final != "ready":
            logs = _run(["podman", "logs", name], env, 30)
            raise AssertionError(f"serve in the container: {final}\n{logs.stdout}{logs.stderr}")
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        # The serving process itself: uid 65532, no effective capabilities, root filesystem read-only.
        status_file = _check(_run(["podman", "exec", name, "cat", "/proc/1/status"], env, 30))
        fields = dict(line.split(":", 1) for line in status_file.splitlines() if ":" in line)
        assert fields["Uid"].split()[:2] == [str(UID), str(UID)]
        assert int(fields["CapEff"].strip(), 16) == 0
        mounts = _check(_run(["podman", "exec", name, "cat", "/proc/1/mounts"], env, 30))
        root_options = next(line.split()[3] for line in mounts.splitlines() if line.split()[1] == "/")
        assert root_options.split(",")[0] == "ro", root_options
        # PID 1 is Meridian and handles SIGTERM: a clean exit 0, not the SIGKILL (137) after --time.
        _check(_run(["podman", "stop", "--time", "20", name], env, 60))
        code = _run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name], env, 30).stdout.strip()
        assert code == "0", _run(["podman", "logs", name], env, 30).stderr
    finally:
        _run(["podman", "rm", "--force", "--time", "0", name], env, 60)
