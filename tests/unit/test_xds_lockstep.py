"""Delta streams in lockstep share one decision per change, and end exactly as if each had been
worked out on its own (`Responses.delta`, `_Lockstep`)."""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.xds.cache import SnapshotCache, Waker, make_resource
from controlplane.xds.resources import ENDPOINT
from controlplane.xds.responses import Responses
from controlplane.xds.tracking import ACK, NACK, StreamState, on_delta_request

Req = discovery_pb2.DeltaDiscoveryRequest
GROUP = "gw"


def _cla(name: str, content: bytes) -> Any:
    return make_resource(name, ENDPOINT, content)


def _world() -> tuple[SnapshotCache, Responses, list[Responses]]:
    cache = SnapshotCache()
    cache.apply({ENDPOINT: {n: _cla(n, n.encode()) for n in ("a", "b", "c", "d")}})
    return cache, Responses(cache, "test", cache.lineage), []


def _stream(sid: int, names: list[str]) -> StreamState:
    s = StreamState(id=sid, protocol="delta", peer="p", wake=Waker(), group=GROUP)
    on_delta_request(s, Req(type_url=ENDPOINT, resource_names_subscribe=names))
    return s


def _ack(s: StreamState, nack: bool = False) -> str:
    st = s.types[ENDPOINT]
    req = Req(type_url=ENDPOINT, response_nonce=st.nonce)
    if nack:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message="bad"))
    return on_delta_request(s, req)


def _state(s: StreamState) -> tuple[Any, ...]:
    st = s.types[ENDPOINT]
    held = [st.known.get(n) for n in "abcd"]
    return (st.sent_version, st.sent_cache_version, st.sent_resources, st.pending, st.examined, st.synced,
            st.synced_lineage, st.current, st.owed, st.in_sync, sorted(st.known), held)  # fmt: skip


def _counting(responses: Responses) -> list[int]:
    calls: list[int] = []
    full = responses._delta

    def counted(*args: Any) -> Any:
        calls.append(1)
        return full(*args)

    responses._delta = counted  # type: ignore[method-assign]
    return calls


def test_streams_in_lockstep_share_the_change_and_end_as_the_full_path_leaves_them() -> None:
    cache, shared, _ = _world()
    alone_cache, _, _ = _world()
    names = ["a", "b", "c"]
    fleet = [_stream(i, names) for i in range(1, 4)]
    for s in fleet:  # first responses: everything each asked for
        assert shared.delta(s, s.types[ENDPOINT], cache.get(ENDPOINT, GROUP)) is not None
        assert _ack(s) == ACK
    calls = _counting(shared)
    cache.apply({ENDPOINT: {"b": _cla("b", b"b2"), "d": _cla("d", b"d2")}})  # d: not subscribed
    snap = cache.get(ENDPOINT, GROUP)
    bodies = [shared.delta(s, s.types[ENDPOINT], snap) for s in fleet]
    assert len(calls) == 1  # worked out for the first stream only
    assert bodies[0] is not None and bodies[1] is bodies[0] and bodies[2] is bodies[0]
    # The same stream worked out on its own, by a Responses that never shares a decision.
    alone = Responses(alone_cache, "test", alone_cache.lineage)
    ref = _stream(9, names)
    alone.delta(ref, ref.types[ENDPOINT], alone_cache.get(ENDPOINT, GROUP))
    _ack(ref)
    alone_cache.apply({ENDPOINT: {"b": _cla("b", b"b2"), "d": _cla("d", b"d2")}})
    ref_body = alone._delta(ref, ref.types[ENDPOINT], alone_cache.get(ENDPOINT, GROUP), "*")
    ref_msg = discovery_pb2.DeltaDiscoveryResponse.FromString(ref_body or b"")
    msg = discovery_pb2.DeltaDiscoveryResponse.FromString(bodies[0])
    assert [r.name for r in msg.resources] == [r.name for r in ref_msg.resources] == ["b"]
    assert msg.system_version_info == ref_msg.system_version_info and not msg.removed_resources
    assert [_state(s) for s in fleet] == [_state(ref)] * 3
    for s in fleet:
        assert _ack(s) == ACK and s.types[ENDPOINT].current == snap.version
    # A change none of them subscribed to: nothing due, shared too, and each is current.
    cache.apply({ENDPOINT: {"d": _cla("d", b"d3")}})
    snap = cache.get(ENDPOINT, GROUP)
    assert [shared.delta(s, s.types[ENDPOINT], snap) for s in fleet] == [None, None, None]
    assert len(calls) == 2
    assert all(s.types[ENDPOINT].current == snap.version and not s.types[ENDPOINT].pending for s in fleet)


def test_a_stream_out_of_step_is_worked_out_on_its_own() -> None:
    cache, shared, _ = _world()
    fleet = [_stream(i, ["a", "b"]) for i in range(1, 4)]
    other = _stream(4, ["a", "c"])  # other names: another decision
    for s in [*fleet, other]:
        shared.delta(s, s.types[ENDPOINT], cache.get(ENDPOINT, GROUP))
    assert _ack(fleet[0]) == ACK and _ack(fleet[1]) == ACK and _ack(other) == ACK
    assert _ack(fleet[2], nack=True) == NACK  # rejected its first response: not in lockstep
    calls = _counting(shared)
    cache.apply({ENDPOINT: {"a": _cla("a", b"a2")}})
    snap = cache.get(ENDPOINT, GROUP)
    results = [shared.delta(s, s.types[ENDPOINT], snap) for s in [*fleet, other]]
    assert len(calls) == 3  # fleet[0] (then shared with fleet[1]), the NACKed one, the other names
    assert results[1] is results[0] and results[3] is not None
    assert results[2] is not None  # the NACKed stream gets the newer content by the full path
    # A stream subscribing to more names since is out of step until that is reconciled.
    on_delta_request(fleet[1], Req(type_url=ENDPOINT, response_nonce=fleet[1].types[ENDPOINT].nonce,
                                   resource_names_subscribe=["c"]))  # fmt: skip
    _ack(fleet[0])
    cache.apply({ENDPOINT: {"a": _cla("a", b"a3")}})
    snap = cache.get(ENDPOINT, GROUP)
    first = shared.delta(fleet[0], fleet[0].types[ENDPOINT], snap)
    second = shared.delta(fleet[1], fleet[1].types[ENDPOINT], snap)
    got = discovery_pb2.DeltaDiscoveryResponse.FromString(second or b"")
    assert sorted(r.name for r in got.resources) == ["a", "c"] and first is not second
