"""A plain Delta ACK is recognised from its bytes, and means exactly what the parsed request would."""

from __future__ import annotations

import asyncio

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.xds.resources import CLUSTER, ENDPOINT
from controlplane.xds.tracking import ACK, REQUEST, STALE, DeltaAck, StreamState, delta_ack, on_delta_request

Req = discovery_pb2.DeltaDiscoveryRequest


def test_a_request_with_only_type_url_and_nonce_is_an_ack() -> None:
    ack = delta_ack(Req(type_url=ENDPOINT, response_nonce="42").SerializeToString())
    assert isinstance(ack, DeltaAck)
    assert (ack.type_url, ack.response_nonce) == (ENDPOINT, "42")
    assert not ack.HasField("error_detail") and not ack.HasField("node")


@pytest.mark.parametrize(
    "req",
    [
        Req(type_url=ENDPOINT, response_nonce="1", resource_names_subscribe=["a"]),
        Req(type_url=ENDPOINT, response_nonce="1", resource_names_unsubscribe=["a"]),
        Req(type_url=ENDPOINT, response_nonce="1", initial_resource_versions={"a": "v"}),
        Req(type_url=ENDPOINT, response_nonce="1", error_detail=status_pb2.Status(code=3, message="bad")),
        Req(type_url=ENDPOINT, response_nonce="1", node={"id": "n"}),
        Req(type_url=ENDPOINT),  # a first request, no nonce
        Req(response_nonce="1"),
        Req(type_url=ENDPOINT, response_nonce="n" * 200),  # a length that takes two varint bytes
    ],
)
def test_anything_else_is_left_to_the_parser(req: Req) -> None:
    assert delta_ack(req.SerializeToString()) is None


def test_truncated_or_trailing_bytes_are_not_an_ack() -> None:
    raw = Req(type_url=ENDPOINT, response_nonce="42").SerializeToString()
    assert delta_ack(raw[:-1]) is None
    assert delta_ack(raw + b"\x3a\x00") is None
    assert delta_ack(b"") is None


def _stream() -> StreamState:
    s = StreamState(id=1, protocol="delta", peer="p", wake=asyncio.Event())
    on_delta_request(s, Req(type_url=CLUSTER, resource_names_subscribe=["*"]))
    st = s.types[CLUSTER]
    st.record_sent("v1", 3, "n1", 1)
    return s


@pytest.mark.parametrize("nonce", ["n1", "old"])
def test_an_ack_from_bytes_has_the_same_outcome_and_state_as_the_parsed_one(nonce: str) -> None:
    raw = Req(type_url=CLUSTER, response_nonce=nonce).SerializeToString()
    fast, parsed = _stream(), _stream()
    fast_ack = delta_ack(raw)
    assert fast_ack is not None
    outcomes = (on_delta_request(fast, fast_ack), on_delta_request(parsed, Req.FromString(raw)))
    assert outcomes == ((ACK, ACK) if nonce == "n1" else (STALE, STALE))
    a, b = fast.types[CLUSTER], parsed.types[CLUSTER]
    assert (a.pending, a.acked_version, a.current, a.wildcard, a.names) == (
        b.pending, b.acked_version, b.current, b.wildcard, b.names)  # fmt: skip
    # Answered once: a repeat is a request (not pending any more), the same either way.
    assert on_delta_request(fast, fast_ack) == on_delta_request(parsed, Req.FromString(raw))
    if nonce == "n1":
        assert on_delta_request(fast, fast_ack) == REQUEST


def test_an_ack_for_a_type_never_requested_takes_the_full_path() -> None:
    s = StreamState(id=1, protocol="delta", peer="p", wake=asyncio.Event())
    ack = delta_ack(Req(type_url=CLUSTER, response_nonce="7").SerializeToString())
    assert ack is not None
    assert on_delta_request(s, ack) == STALE  # no response was sent with that nonce
    assert s.types[CLUSTER].requested and s.types[CLUSTER].wildcard  # CDS without names: wildcard


def test_names_subscribed_before_the_first_full_comparison_are_not_tracked_separately() -> None:
    """The first response compares every subscribed name; only later subscriptions are noted."""
    s = StreamState(id=1, protocol="delta", peer="p", wake=asyncio.Event(), identity="", keyless=False)
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["a", "b"])
    assert on_delta_request(s, first) == REQUEST
    st = s.types[ENDPOINT]
    assert st.names == {"a", "b"} and not st.subscribed_since and not st.synced
    st.synced = 5  # a full comparison happened (what `Responses.delta` records)
    more = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["b", "c"])
    on_delta_request(s, more)
    assert st.names == {"a", "b", "c"} and st.subscribed_since == {"c"}
