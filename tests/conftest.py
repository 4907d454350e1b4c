"""Shared fixtures: a whole gateway (control plane + real Envoy + echo backends) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import Gateway


@pytest.fixture(scope="session", autouse=True)
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`meridian serve` keeps state under $XDG_CACHE_HOME by default: never the user's during tests."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


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
