"""Lease-based leader election against the fake API server, through the real kubernetes client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from controlplane.leader import LEASE_NAME, LeaderElector, LeaseTimings
from controlplane.sources.kube import api_client_from_kubeconfig
from tests.fakekube import FakeKube

NS = "meridian-system"
FAST = LeaseTimings(duration=1.0, renew_interval=0.1)
# For checks that one leader *stays* leader: long enough that a loaded CI machine never delays a
# renewal past the renew deadline (which would be a correct step-down, not what is tested).
STEADY = LeaseTimings(duration=4.0, renew_interval=0.1)


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as fk:
        yield fk


@pytest.fixture
def api(fake: FakeKube) -> Iterator[k8s.ApiClient]:
    client = api_client_from_kubeconfig(fake.kubeconfig())
    yield client
    client.close()


def holder(fake: FakeKube) -> str | None:
    lease = fake.get("Lease", NS, LEASE_NAME)
    return (lease or {}).get("spec", {}).get("holderIdentity")


async def watch_leaders(
    electors: list[LeaderElector], until: float, leaders: list[set[str]], done: asyncio.Event | None = None
) -> None:
    """Record who claims leadership, every few milliseconds, and fail on two at once."""
    while time.monotonic() < until and not (done is not None and done.is_set()):
        now = {e.identity for e in electors if e.is_leader}
        assert len(now) <= 1, f"two leaders at once: {now}"
        if now and (not leaders or leaders[-1] != now):
            leaders.append(now)
        await asyncio.sleep(0.005)


async def test_one_leader_then_takeover_on_release(fake: FakeKube, api: k8s.ApiClient) -> None:
    a = LeaderElector(api, NS, identity="a", timings=STEADY)
    b = LeaderElector(api, NS, identity="b", timings=STEADY)
    changes: list[bool] = []
    a.add_listener(changes.append)
    await a.start()
    assert await a.wait_leader(5)
    await b.start()
    leaders: list[set[str]] = []
    # b keeps trying while a renews: a stays the only leader.
    await watch_leaders([a, b], time.monotonic() + 1.6, leaders)
    assert leaders == [{"a"}]
    assert holder(fake) == "a" and not b.is_leader
    lease = fake.get("Lease", NS, LEASE_NAME)
    assert lease is not None and lease["spec"]["leaseDurationSeconds"] == 4
    renewed = lease["spec"]["renewTime"]
    assert a.holder == "a" and b.holder == "a"

    await a.stop()  # releases: b may take over without waiting for expiry
    assert changes == [True, False]
    # Released, not left to expire: a no longer holds the lease the moment stop() returns.
    assert holder(fake) in (None, "b")
    assert await b.wait_leader(5)
    assert holder(fake) == "b"
    lease = fake.get("Lease", NS, LEASE_NAME)
    assert lease is not None and lease["spec"]["renewTime"] != renewed
    assert lease["spec"]["leaseTransitions"] >= 1
    await b.stop()
    assert holder(fake) is None


async def test_takeover_after_expiry_never_two_leaders(fake: FakeKube, api: k8s.ApiClient) -> None:
    a = LeaderElector(api, NS, identity="a", timings=FAST)
    b = LeaderElector(api, NS, identity="b", timings=FAST)
    await a.start()
    assert await a.wait_leader(5)
    await b.start()
    leaders: list[set[str]] = []
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_leaders([a, b], time.monotonic() + 10, leaders, done))
    await asyncio.sleep(0.3)
    # a crashes: it stops renewing and does not release. b waits out the lease.
    crashed_at = time.monotonic()
    await a.stop(release=False)
    assert await b.wait_leader(5)
    waited = time.monotonic() - crashed_at
    assert 0.6 < waited < 3.0, waited
    await asyncio.sleep(0.3)  # keep watching a while after the takeover
    done.set()
    await watcher
    assert leaders == [{"a"}, {"b"}]
    assert holder(fake) == "b"
    await b.stop()


async def test_leader_steps_down_when_it_cannot_renew(fake: FakeKube, api: k8s.ApiClient) -> None:
    a = LeaderElector(api, NS, identity="a", timings=FAST)
    changes: list[bool] = []
    a.add_listener(changes.append)
    await a.start()
    assert await a.wait_leader(5)
    fake.stop()  # API server outage: renewals fail
    try:
        deadline = time.monotonic() + 3
        while a.is_leader or changes[-1]:
            assert time.monotonic() < deadline, "leader kept leading without renewing"
            await asyncio.sleep(0.02)
        assert changes == [True, False]
    finally:
        fake.start()
    assert await a.wait_leader(5)  # the lease is still ours: renewed on return
    assert changes == [True, False, True]
    await a.stop()


async def test_concurrent_candidates_elect_exactly_one(fake: FakeKube, api: k8s.ApiClient) -> None:
    electors = [LeaderElector(api, NS, identity=f"c{i}", timings=FAST) for i in range(4)]
    await asyncio.gather(*(e.start() for e in electors))
    deadline = time.monotonic() + 5
    while not any(e.is_leader for e in electors):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    leaders: list[set[str]] = []
    await watch_leaders(electors, time.monotonic() + 1.2, leaders)
    assert len(leaders) == 1
    (leader,) = leaders[0]
    assert holder(fake) == leader
    for e in electors:
        await e.stop()


async def test_leader_keeps_its_lease_while_the_event_loop_is_busy(fake: FakeKube, api: k8s.ApiClient) -> None:
    """A large build holds the event loop for longer than the renew deadline: renewals go on (their own
    thread), so the leader neither steps down nor lets a candidate take over."""
    a = LeaderElector(api, NS, identity="a", timings=STEADY)
    await a.start()
    assert await a.wait_leader(5)
    before = fake.get("Lease", NS, LEASE_NAME)["spec"]["renewTime"]  # type: ignore[index]
    busy_until = time.monotonic() + STEADY.deadline + 1.0
    stepped_down = False
    while time.monotonic() < busy_until:  # the loop is blocked: no task, no callback runs
        stepped_down |= not a.is_leader
        time.sleep(0.02)
    assert not stepped_down, "the leader stepped down while its event loop was busy"
    assert fake.get("Lease", NS, LEASE_NAME)["spec"]["renewTime"] != before  # type: ignore[index]
    await a.stop()


async def test_leader_keeps_its_lease_while_worker_threads_are_busy(fake: FakeKube, api: k8s.ApiClient) -> None:
    """Status writes and history I/O fill the shared worker threads: renewals do not queue behind them."""
    a = LeaderElector(api, NS, identity="a", timings=STEADY)
    await a.start()
    assert await a.wait_leader(5)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait, 10.0) for _ in range(64)]  # more than the pool has
    try:
        leaders: list[set[str]] = []
        await watch_leaders([a], time.monotonic() + STEADY.deadline + 1.0, leaders)
        assert leaders == [{"a"}] and a.is_leader
    finally:
        release.set()
        await asyncio.gather(*busy)
    await a.stop()
