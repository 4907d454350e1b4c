"""Shared fixtures: a whole gateway (control plane + real Envoy + echo backends) per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`meridian serve`/`bootstrap` keep their state (local CA, history, admin token) under
    $XDG_CACHE_HOME by default: never the user's own during tests (subprocesses inherit it)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: make_gateway(clusters=("c1",), in_process=False, delta=False, serve_args=...)."""
    made: list[Gateway] = []

    def factory(**kw: Any) -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(made)}", **kw)
        made.append(gw)
        return gw

    yield factory
    for gw in made:
        gw.stop()
