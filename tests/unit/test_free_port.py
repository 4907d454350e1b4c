"""Parallel test workers choose ports from disjoint slices (no two workers race for one port)."""

from __future__ import annotations

import pytest

from controlplane.devtools.envoy_proc import free_port


@pytest.mark.parametrize("worker", [0, 1, 2])
def test_each_worker_chooses_from_its_own_slice(monkeypatch: pytest.MonkeyPatch, worker: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    ports = {free_port() for _ in range(40)}
    assert all(20000 <= p < 32000 and (p - 20000) % 3 == worker for p in ports), sorted(ports)


def test_without_workers_any_port_of_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    ports = {free_port() for _ in range(60)}
    assert all(20000 <= p < 32000 for p in ports)
    assert len({(p - 20000) % 2 for p in ports}) == 2  # both halves: no slice without workers


def test_a_port_is_never_handed_out_twice_by_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway chooses five ports one after the other before anything binds them: one port twice
    made two of its listeners share it (seen once in CI: the east-west listener's requests answered
    by the HTTP listener's default backend)."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "40")  # a slice of 300 ports: repeats would be likely
    ports = [free_port() for _ in range(150)]
    assert len(set(ports)) == len(ports), sorted(p for p in ports if ports.count(p) > 1)
