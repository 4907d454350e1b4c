"""The Lua matcher for PCRE-only canary patterns (controlplane/translate/pcre_lua.py), run in LuaJIT (the
Lua Envoy embeds) and checked against Python's re, which stands in for PCRE: generated patterns with
lookahead, backreferences, lazy and possessive repeats, classes, anchors and alternation, on generated
header values."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.ir.pcre import classify
from controlplane.ir.policies import HeaderPattern
from controlplane.translate.pcre_lua import matcher_source
from controlplane.translate.policies.headerpattern import script

luajit = pytest.importorskip("lupa.luajit21")

ATOMS = ["a", "b", "-", ".", "\\d", "\\w", "[ab]", "[^a]", "(a|b)", "(ab)", "(?:a|ab)", "\\b"]


@st.composite
def patterns(draw: Any) -> str:
    def piece(depth: int) -> str:
        kind = draw(st.integers(0, 9 if depth < 2 else 5))
        if kind <= 4:
            atom = draw(st.sampled_from(ATOMS))
        elif kind == 5:
            atom = draw(st.sampled_from(["\\1", "^", "$", "\\Z"]))
        elif kind == 6:
            atom = f"(?={seq(depth + 1)})"
        elif kind == 7:
            atom = f"({seq(depth + 1)}|{seq(depth + 1)})"
        else:
            atom = f"(?:{seq(depth + 1)})"
        if atom not in ("^", "$", "\\Z", "\\b") and not atom.startswith("(?="):
            atom += draw(st.sampled_from(["", "", "*", "+", "?", "*?", "+?", "*+", "++", "{1,2}", "{2}"]))
        return atom

    def seq(depth: int) -> str:
        return "".join(piece(depth) for _ in range(draw(st.integers(1, 3))))

    return "(a|b|-)" + seq(0)  # a first group, so \1 always refers to one


def lua_search(source: str) -> Any:
    rt = luajit.LuaRuntime(unpack_returned_tuples=True)
    rt.execute(source)
    return rt.globals().pattern_search


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), st.lists(st.text("ab-1. ", max_size=7), min_size=1, max_size=12))
def test_lua_matcher_agrees_with_pythons_re(pattern: str, values: list[str]) -> None:
    kind = classify(pattern, re2_valid=False)
    if kind.kind != "pcre":
        return
    search = lua_search(matcher_source(kind.tree, kind.flags))
    rx = re.compile(pattern, re.ASCII)
    for value in values:
        got = search(value)
        hit = got[0] if isinstance(got, tuple) else got
        if hit is None:  # past the step limit: ngx.re.match's error
            continue
        assert bool(hit) == (rx.search(value) is not None), (pattern, value)


def test_exponential_backtracking_is_an_error_not_a_hang() -> None:
    kind = classify("^(a|a)+$|(z)\\2", re2_valid=False)
    search = lua_search(matcher_source(kind.tree, kind.flags))
    hit, error = search("a" * 30 + "!")
    assert hit is None and "match limit" in error
    assert search("aaaa") is True


def test_case_insensitive_backreference_and_the_whole_step_script_loads() -> None:
    kind = classify("(?i)^(be)ta-\\1", re2_valid=False)
    search = lua_search(matcher_source(kind.tree, kind.flags))
    assert search("BETA-be") is True and search("beta-ta") is False
    # The Envoy script itself (matcher and request step) is valid Lua.
    rt = luajit.LuaRuntime()
    rt.execute(script(HeaderPattern("x-canary", "^(?=.*beta)(\\w+)-\\1$")))
    assert rt.globals().envoy_on_request is not None
