"""Convergence timing: a version is observed once every stream that reads it is current."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from controlplane.xds.cache import DEFAULT_GROUP
from controlplane.xds.resources import CLUSTER
from controlplane.xds.tracking import Convergence, StreamState

KEY = (CLUSTER, DEFAULT_GROUP)


def lineage(_type_url: str, _group: str) -> str:
    return DEFAULT_GROUP


def stream(sid: int, current: int) -> StreamState:
    s = StreamState(id=sid, protocol="delta", peer="p", wake=asyncio.Event())
    st = s.state(CLUSTER)
    st.requested, st.current = True, current
    return s


def observed(h: Histogram) -> float:
    return next(s.value for s in h.collect()[0].samples if s.name.endswith("_count"))


def test_each_version_is_observed_when_its_last_stream_catches_up() -> None:
    h = Histogram("conv", "x", registry=CollectorRegistry())
    conv = Convergence(h)
    streams = [stream(i, 1) for i in range(1, 501)]
    conv.note(KEY, 2, 0.0, streams, lineage)
    conv.note(KEY, 3, 0.0, streams, lineage)
    assert conv.pending() == {KEY: [2, 3]}
    for s in streams[:-1]:  # all but one ACK version 3 (which also covers 2)
        s.types[CLUSTER].current = 3
        conv.update(s, lineage)
    assert observed(h) == 0 and conv.pending() == {KEY: [2, 3]}
    last = streams[-1]
    last.types[CLUSTER].current = 2  # the last one is at 2 only: version 2 converges, 3 waits
    conv.update(last, lineage)
    assert observed(h) == 1 and conv.pending() == {KEY: [3]}
    conv.forget(last)  # it disconnects: nobody is left behind for 3
    assert observed(h) == 2 and conv.pending() == {}


def test_a_stream_already_current_is_not_waited_for() -> None:
    h = Histogram("conv2", "x", registry=CollectorRegistry())
    conv = Convergence(h)
    conv.note(KEY, 4, 0.0, [stream(1, 4), stream(2, 5)], lineage)
    assert observed(h) == 1 and conv.pending() == {}
