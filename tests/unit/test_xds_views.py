"""Compact per-stream xDS state: shared name sets, SotW's held resources and Delta's known versions."""

from __future__ import annotations

import sys

from controlplane.xds.cache import Resource
from controlplane.xds.views import EMPTY_NAMES, Known, Subset, shared_names, sorted_names


def res(name: str, version: str) -> Resource:
    return Resource(name=name, version=version, any_bytes=f"{name}:{version}".encode())


def test_equal_name_sets_are_one_object_and_different_ones_are_not() -> None:
    a = shared_names(["x", "y"])
    b = shared_names({"y", "x"})
    assert a is b and a == {"x", "y"}
    assert shared_names(["x"]) is not a
    assert shared_names([]) is EMPTY_NAMES


def test_subset_is_the_named_resources_in_name_order() -> None:
    resources = {"b": res("b", "1"), "a": res("a", "1"), "c": res("c", "1")}
    view = Subset(resources, shared_names(["c", "a", "gone"]))
    assert list(view) == ["a", "c"] and len(view) == 2
    assert "b" not in view and view.get("b") is None and view["a"] is resources["a"]
    assert dict(Subset(resources, None)) == resources
    assert view.same_as(Subset(resources, view.names)) and not view.same_as(Subset(dict(resources), view.names))


def test_known_is_a_shared_base_plus_this_streams_differences() -> None:
    snapshot = {"a": res("a", "1"), "b": res("b", "1"), "c": res("c", "1")}
    known = Known({"old": "7"})
    assert known.get("old") == "7" and "a" not in known
    known.rebase(snapshot, shared_names(["a", "b"]))
    assert sorted(known) == ["a", "b"] and known.get("c") is None and known.get("old") is None
    known["c"] = "2"
    known.discard("a")
    assert sorted(known) == ["b", "c"] and known.get("a") is None and known.get("c") == "2"
    assert len(known) == 2
    known.discard("c")
    assert sorted(known) == ["b"]
    assert known.base is snapshot  # by reference: nothing per resource was copied


def test_sorted_names_are_sorted_once_per_shared_set_and_never_mixed_up() -> None:
    names = shared_names(["b", "c", "a"])
    first = sorted_names(names)
    assert first == ("a", "b", "c")
    assert sorted_names(shared_names(["c", "a", "b"])) is first  # the same shared set: sorted once
    other = frozenset({"z", "y"})
    assert sorted_names(other) == ("y", "z")  # a set that is not shared is still sorted right
    assert sorted_names(frozenset({"x"})) == ("x",)


def test_extend_and_without_names_share_the_set_shared_names_would_give() -> None:
    from controlplane.xds.views import extend_names, without_names

    base = shared_names(["a", "b", "c"])
    grown = extend_names(base, ["d", "a"])
    assert grown == {"a", "b", "c", "d"} and grown is shared_names(["d", "c", "b", "a"])
    added = "".join(["d"])  # a name not interned by the caller
    assert next(n for n in extend_names(base, [added]) if n == "d") is sys.intern("d")
    shrunk = without_names(grown, ["d", "x"])
    assert shrunk is base
    assert without_names(base, ["a", "b", "c"]) is EMPTY_NAMES


def test_a_first_subscription_is_the_fleets_shared_set_its_names_interned() -> None:
    from controlplane.xds.views import extend_names

    fleet = shared_names([f"svc-{i}" for i in range(50)])
    fresh = ["".join(["svc-", str(i)]) for i in range(50)]  # equal strings, other objects (as parsed)
    assert extend_names(EMPTY_NAMES, fresh) is fleet
    new = extend_names(EMPTY_NAMES, ["".join(["other-", str(i)]) for i in range(3)])
    assert new == {"other-0", "other-1", "other-2"} and all(n is sys.intern(n) for n in new)
    assert extend_names(EMPTY_NAMES, []) is EMPTY_NAMES
