"""`--verify` compares Envoy's upstream-reset answers by what they mean, not by their timing-dependent
status and reason (controlplane/migration/replay.py), and counts requests no backend answered."""

from __future__ import annotations

from controlplane.ir import IngressRef
from controlplane.migration.replay import Answer, Batch, compare, is_upstream_reset, unanswered
from controlplane.migration.verify import SetResult, Verdict, format_results

HEAD = "upstream connect error or disconnect/reset before headers. "


def test_envoy_reset_replies_are_recognised_whatever_the_reason() -> None:
    # The four texts one gRPC probe on the HTTP/1 echo got in different runs (and a TLS mismatch's).
    for status, reason in ((502, "reset reason: protocol error"), (503, "reset reason: connection termination"),
                           (503, "retried and the latest reset reason: remote connection failure"),
                           (503, "reset reason: remote connection failure")):  # fmt: skip
        assert is_upstream_reset(status, HEAD + reason)
    assert not is_upstream_reset(503, "no healthy upstream")  # no endpoints: configuration, not timing
    assert not is_upstream_reset(503, "503 Service Temporarily Unavailable\n")
    assert not is_upstream_reset(200, HEAD + "reset reason: protocol error")  # a backend's own body


def test_a_reset_on_both_sides_is_alike_and_counted_unanswered() -> None:
    reset = Answer(None, headers=(("content-type", "text/plain"),), reset=True)
    backend = Answer(200, backend="shop/web:80", upstream_path="/")
    assert compare([reset], [reset]) == [None] and unanswered(reset, reset)
    assert not unanswered(reset, backend) and not unanswered(backend, backend)
    # One side reached the backend, the other did not: a difference whose text has no timing in it.
    assert reset.first_difference(backend) == "status: upstream reset vs 200"
    assert backend.first_difference(reset) == "status: 200 vs upstream reset"
    assert reset.brief() == "upstream reset"
    # A batch whose every answer is a reset is unanswered too; one with a backend answer is not.
    assert unanswered(Batch(((reset, 200),), 200), Batch(((reset, 200),), 200))
    assert not unanswered(Batch(((reset, 199), (backend, 1)), 200), Batch(((reset, 200),), 200))


def test_cli_says_how_many_requests_were_unanswered() -> None:
    ref = IngressRef("local", "grpc", "api")
    out = format_results([SetResult("f.yaml", {ref: Verdict(ref, requests=4, equal=4, unanswered=4)}, [], [])])
    note = "4 unanswered: an upstream reset on both sides, the backend never answered"
    assert f"local/grpc/api  equal (4 requests; {note})" in out
    assert out.rstrip().endswith(f"4/4 requests answered alike; {note}")
