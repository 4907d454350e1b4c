"""canary-by-header-pattern as ngx.re.match runs it: the PCRE1 parser (controlplane/ir/pcre_syntax.py),
the RE2 form of ASCII-only patterns and the Lua matcher (controlplane/translate/pcre_lua.py, run in
LuaJIT, the Lua Envoy embeds), all checked against real PCRE1 (Debian's libpcre3 through ctypes,
tests/support/pcre1.py; ingress-nginx links PCRE1 8.45) on generated patterns of the characters
ingress-nginx's validator lets through and generated header values (bytes, not only ASCII)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.ir.pcre import classify
from controlplane.ir.pcre_syntax import parse
from controlplane.ir.policies import HeaderPattern
from controlplane.translate.pcre_lua import STEP_LIMIT, matcher_source
from controlplane.translate.policies.headerpattern import script
from tests.support import pcre1

luajit = pytest.importorskip("lupa.luajit21")
if pcre1.library() is None:  # installed by `make system-packages` (libpcre3)
    pytest.skip("libpcre3 (real PCRE1) is not installed", allow_module_level=True)

# ingress-nginx's validator for the pattern: parser.IsValidRegex.
VALIDATOR = re.compile(r"^[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*$")
ATOMS = ["a", "b", "-", ".", "\\d", "\\w", "\\W", "[ab]", "[^a]", "(a|b)", "(ab)", "(?:a|ab)", "\\b", "\\h", "\\H",
         "\\v", "\\V", "\\R", "\\N", "\\C", "\\X", "\\e", "\\ca", "\\K", "\\G", "\\Qa.\\E", "\\pL", "\\p{Lu}",
         "\\P{N}", "[[:alpha:]]", "[[:^digit:]-]", "[\\h:]", "a{2}", "{", "\\x41", "\\0", "\\g1", "\\g{-1}",
         "(?i)", "(?i:A)", "(?s:.)", "(?1)", "(?-1)", "(?R)", "(*FAIL)", "(*ACCEPT)", "\\y", "\\8", "[\\d-z]",
         "(?|(a)|(b))", "\\Z", "\\z", "\\A", "$", "^", "(?C1)", "(*MARK:x)", "[\\x{e9}]",
         "\\o{351}", "(*COMMIT)", "(*PRUNE)", "(*SKIP)", "(*THEN)", "(*PRUNE:x)", "(*THEN:x)"]  # fmt: skip
VALUES = st.lists(st.binary(max_size=8).map(lambda b: bytes(x % 8 + 0x60 if x < 200 else x for x in b))
                  | st.text("ab-1.AB:é\t\xa0", max_size=7).map(lambda s: s.encode("latin-1")),
                  min_size=1, max_size=10)  # fmt: skip


@st.composite
def patterns(draw: Any) -> str:
    def piece(depth: int) -> str:
        kind = draw(st.integers(0, 9 if depth < 2 else 5))
        if kind <= 5:
            atom = draw(st.sampled_from(ATOMS))
        elif kind == 6:
            atom = f"(?={seq(depth + 1)})"
        elif kind == 7:
            atom = f"({seq(depth + 1)}|{seq(depth + 1)})"
        elif kind == 8:
            atom = f"(?(1){seq(depth + 1)}|{seq(depth + 1)})"
        else:
            atom = f"(?:{seq(depth + 1)})"
        quantifiers = ["", "", "", "*", "+", "?", "*?", "+?", "*+", "++", "{2}", "{1}?", "??", "?+", "{0}"]
        return atom + draw(st.sampled_from(quantifiers))

    def seq(depth: int) -> str:
        return "".join(piece(depth) for _ in range(draw(st.integers(1, 3))))

    prefix = draw(st.sampled_from(["", "", "", "(*NO_START_OPT)", "(*NO_AUTO_POSSESS)", "(*LIMIT_MATCH=300)"]))
    return prefix + "(a|b|-)" + seq(0)


def lua_search(source: str) -> Any:
    rt = luajit.LuaRuntime(unpack_returned_tuples=True, encoding=None)
    rt.execute(source.encode())
    return rt.globals().pattern_search


def meridian(pattern: str, value: bytes) -> str:
    """What Meridian answers: match / nomatch / error / invalid (or "unsupported")."""
    kind = classify(pattern)
    if kind.kind in ("invalid", "unsupported"):
        return kind.kind
    if kind.kind == "re2":  # Envoy's RE2 on the value; Python's re stands in on ASCII-only sets
        rx = re.compile(f".*(?:{kind.re2}).*", re.DOTALL)
        text = value.decode("utf-8", errors="replace")
        return "match" if rx.fullmatch(text) else "nomatch"
    got = lua_search(matcher_source(kind.tree))(value)
    hit = got[0] if isinstance(got, tuple) else got
    return "error" if hit is None else "match" if hit else "nomatch"


# Deterministic, like every property test here: CI does not find new counterexamples at random.
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)
@given(patterns(), VALUES)
def test_meridian_answers_as_pcre1(pattern: str, values: list[bytes]) -> None:
    assert VALIDATOR.match(pattern)
    want_valid = pcre1.compile_error(pattern) is None
    kind = classify(pattern).kind
    if kind == "unsupported":
        return
    assert (kind != "invalid") == want_valid, (pattern, classify(pattern).why, pcre1.compile_error(pattern))
    if not want_valid:
        return
    for value in values:
        assert meridian(pattern, value) == pcre1.search(pattern, value), (pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value", "want"),
    [
        ("\\h", b"\xa0", "match"), ("\\h", b"\x0b", "nomatch"), ("\\v", b"\x85", "match"), ("^\\V$", b"\r", "nomatch"),
        ("^\\R$", b"\r\n", "match"), ("^\\R\\R$", b"\r\n", "nomatch"), ("^\\N$", b"\n", "nomatch"),
        ("^a\\Kb$", b"ab", "match"), ("\\Gb", b"ab", "nomatch"), ("^\\e\\c[$", b"\x1b\x1b", "match"),
        ("^\\Qa.b\\E$", b"axb", "nomatch"), ("^\\Qa.b\\E$", b"a.b", "match"), ("^\\pL$", b"\xe9", "match"),
        ("^\\p{Lu}$", b"\xc9", "match"), ("^\\P{Lu}$", b"\xc9", "nomatch"), ("\\p{Greek}", b"\xb5", "nomatch"),
        ("^[[:alpha:]]+$", b"abZ", "match"), ("[[:alpha:]]", b"\xe9", "nomatch"), ("^[[:^alpha:]]$", b"1", "match"),
        ("^a{,3}$", b"a{,3}", "match"), ("^a{,3}$", b"aa", "nomatch"),  # PCRE1: `{,3}` is literal
        ("^(a|b(?1))$", b"bba", "match"), ("^(\\((?:[^()]|(?1))*\\))$", b"(a(b)c)", "match"),
        ("^(\\((?:[^()]|(?1))*\\))$", b"(a(b c)", "nomatch"), ("^(a(?1)?b)$", b"aabb", "match"),
        ("^(a(?R)?b)$", b"aabb", "nomatch"),
        ("^(?:(a)|b)(?(1)c|d)$", b"bd", "match"), ("^(a)(?1)\\1$", b"aaa", "match"),
        ("(*FAIL)|b", b"b", "match"), ("a(*ACCEPT)b", b"ac", "match"), ("^\\X$", b"\r\n", "match"),
        ("(?|(a)|(b))\\1", b"bb", "match"), ("^\\8$", b"8", "match"), ("^\\10$", b"\x08", "match"),
        ("(*COMMIT)abc", b"xyzabc", "match"), ("a+(*COMMIT)b", b"aaac aab", "nomatch"),
        ("a(*PRUNE)b|ac", b"ac", "nomatch"), ("aa(*SKIP)b|a", b"aac", "nomatch"), ("a(*THEN)b|ac", b"ac", "match"),
        ("(?=a(*COMMIT)b)|c", b"ac", "nomatch"), ("(a(*THEN)b)|c(?1)", b"cac", "nomatch"),
        ("(*LIMIT_MATCH=1000)^(a|a)+$", b"a" * 12 + b"!", "error"), ("(*LIMIT_MATCH=)a", b"a", "error"),
        ("(*LIMIT_MATCH=100000)^(a|a)+$", b"a" * 12 + b"!", "nomatch"), ("(*LF)(*BSR_UNICODE)^\\R$", b"\x85", "match"),
        ("(*NO_START_OPT)(*COMMIT)abc", b"xyzabc", "nomatch"), ("(*NO_AUTO_POSSESS)a+b", b"aab", "match"),
        # A quantified assertion runs at most once, in the quantifier's mode ({0} skips it, a minimum over 0
        # drops the quantifier); a verb backtracked into inside a positive assertion ends the whole search.
        ("(a|b|-)(?=(?=(*COMMIT)aa))*?", b"a", "match"), ("(a|b|-)(?=(?=(*COMMIT)aa))?", b"a", "nomatch"),
        ("(a|b|-)(?=(*COMMIT)x)??", b"a", "match"), ("(a|b|-)(?=(*COMMIT)x){0,3}?", b"a", "match"),
        ("(a|b|-)(?=(*COMMIT)x){0}", b"a", "match"), ("(a|b|-)(?=(*COMMIT)x)+?", b"a", "nomatch"),
        ("^(?=(a))?+(?(1)b|a)", b"a", "nomatch"), ("^(?=(a))?(?(1)b|a)", b"a", "match"),
        ("^(?=(a)){2}+(?(1)b|a)", b"a", "nomatch"), ("(?=(a)){0}(?1)", b"a", "match"),
        # A quantifier after a group around \\Q..\\E repeats the whole run (after a bare run, its last character).
        ("(a|b|-)(?=(?:\\Qa.\\E)*)", b"a", "match"), ("^(?:\\Qa.\\E){2}$", b"a..", "nomatch"),
        ("^(?:\\Qa.\\E){2}$", b"a.a.", "match"), ("^\\Qa.\\E{2}$", b"a..", "match"),
        ("^(?i:\\Qa.\\E)+$", b"A.a.", "match"),
    ],
)  # fmt: skip
def test_pcre_only_syntax_as_pcre1_reads_it(pattern: str, value: bytes, want: str) -> None:
    assert pcre1.search(pattern, value) == want  # the expectation is real PCRE's
    assert meridian(pattern, value) == want


def test_patterns_pcre1_refuses_are_invalid() -> None:
    for pattern in ("foo(", "[a-", "(?R)", "a|(?R)", "(a|(?1)b)", "(a)\\2", "\\u0041", "\\N{x}", "\\c", "\\o", "\\k{x}",
                    "(?&x)", "(?P=x)", "^*", "\\b*", "a**", "[z-a]", "\\x{100}", "[:alpha:]", "[[:foo:]]",
                    "\\p{Foo}", "(?(1)a|b|c)", "\\g{x}"):  # fmt: skip
        assert pcre1.compile_error(pattern) is not None, pattern
        assert classify(pattern).kind == "invalid", pattern


def test_match_limit_counts_as_pcre_does() -> None:
    """PCRE1 gives up after 10,000,000 calls of its match(); the matcher counts the same kinds of
    steps, so the searches past PCRE's limit are past the matcher's, and light ones are far below."""
    assert STEP_LIMIT == 10_000_000
    search = lua_search(matcher_source(parse("^(a|a)+$|(z)\\2").tree))
    hit, error = search(b"a" * 30 + b"!")  # 2^30 paths
    assert hit is None and b"match limit" in error and pcre1.search("^(a|a)+$|(z)\\2", b"a" * 30 + b"!") == "error"
    assert search(b"aaaa") is True
    # Below the limit both answer: (a|a)+ on 18 a's and "!" is 2^18 paths for both.
    assert search(b"a" * 18 + b"!") is False and pcre1.search("^(a|a)+$|(z)\\2", b"a" * 18 + b"!") == "nomatch"


def test_step_counts_follow_pcres_match_calls() -> None:
    """On the searches that reach the limit (overlapping alternatives or repeats inside a repeat) the
    matcher's step count at one start position is PCRE1's count of match() calls within 1%. Elsewhere
    PCRE may count less (it makes a repeat possessive across a group's end, say), by a few steps per
    byte of the value at most."""

    def steps(pattern: str, value: bytes) -> int:
        rt = luajit.LuaRuntime(unpack_returned_tuples=True, encoding=None)
        rt.execute(matcher_source(parse(pattern).tree).replace("local S, N, CAPS, STEPS, BUDGET, MOST",
                                                               "S, N, CAPS, STEPS, BUDGET, MOST").encode())  # fmt: skip
        rt.globals().pattern_search(value)
        return int(rt.globals().MOST)  # the most at one start position, as PCRE's limit counts

    for pattern, value in (("^(a|a)+$", b"a" * 14 + b"!"), ("(a|a)+!", b"a" * 14 + b"?!"),
                           ("^(a+)+$", b"a" * 14 + b"!"), ("^(?:a+)+$", b"a" * 14 + b"!"),
                           ("^(a*)*$", b"a" * 12 + b"!"), ("^(a|aa)+$", b"a" * 20 + b"!"),
                           ("^(\\w+\\s?)+$", b"a" * 14 + b"!"), ("^([a-z]+)*[0-9]$", b"abcdefghijklmn!"),
                           ("^(a|b)$", b"abc")):  # fmt: skip
        ours, theirs = steps(pattern, value), pcre1.calls(pattern, value)
        assert theirs is not None and abs(ours - theirs) <= theirs // 100 + 2, (pattern, ours, theirs)
    value = b"abcdefgh-abcdefgx"
    ours, theirs = steps("^(\\w+)-\\1$", value), pcre1.calls("^(\\w+)-\\1$", value)
    assert theirs is not None and theirs <= ours <= 2 * len(value)


def test_the_limit_counts_each_start_position_afresh_and_all_of_them_stop_at_twice_it() -> None:
    search = lua_search(matcher_source(parse("(a|a)+!").tree))
    # n a's then "?!": 2^(n+1) calls from the first position, half that from the next, and so on.
    value = b"a" * 20 + b"?!"  # under the limit at each position: an answer, after 2^22 steps in all
    assert pcre1.search("(a|a)+!", value) == "nomatch" and search(value) is False
    value = b"a" * 23 + b"?!"  # 2^24 at the first position: past PCRE's limit there
    assert pcre1.search("(a|a)+!", value) == "error" and b"match limit" in search(value)[1]
    # A required byte before the start position: PCRE stops at once, so does the matcher.
    value = b"!" + b"a" * 30 + b"?"
    assert pcre1.search("(a|a)+!", value) == "nomatch" and search(value) is False
    # Positions that each cost nearly the limit: PCRE goes on, the matcher stops at twice the limit in all.
    value = (b"a" * 20 + b"?") * 2 + b"!"  # two runs of 2^23 + 2^22 + ... steps
    assert pcre1.search("(a|a)+!", value) == "nomatch" and b"total step limit" in search(value)[1]


def test_case_insensitive_backreference_and_the_whole_step_script_loads() -> None:
    search = lua_search(matcher_source(classify("(?i)^(be)ta-\\1").tree))
    assert search(b"BETA-be") is True and search(b"beta-ta") is False
    # The Envoy script itself (matcher and request step) is valid Lua.
    rt = luajit.LuaRuntime()
    rt.execute(script(HeaderPattern("x-canary", "^(?=.*beta)(\\w+)-\\1$")))
    assert rt.globals().envoy_on_request is not None


def test_every_class_escape_property_and_posix_class_holds_the_bytes_pcre1_matches() -> None:
    """\\d \\s \\w \\h \\v \\N (and negations), POSIX classes and \\p properties, byte by byte."""
    from controlplane.ir.pcre_tree import _CATEGORIES, _POSIX

    probes = [f"\\{e}" for e in "dDsSwWhHvVN"] + [f"[[:{n}:]]" for n in _POSIX] + [f"[[:^{n}:]]" for n in _POSIX]
    probes += [f"\\p{{{n}}}" for n in (*sorted(_CATEGORIES), *"CLMNPSZ", "Any", "L&", "Xan", "Xwd", "Xsp", "Xps",
                                       "Xuc", "Latin", "Common", "Greek", "^L")] + ["\\PL", "\\pN"]  # fmt: skip
    for probe in probes:
        codes = parse(probe).tree.codes
        want = {b for b in range(256) if pcre1.search(f"^{probe}$", bytes([b])) == "match"}
        assert codes == want, (probe, sorted(codes ^ want))


@pytest.mark.xfail(strict=True, reason="known deviation: PCRE1's required-byte shortcut is not emulated exactly")
@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        # PCRE1 keeps one required byte, the last one set; a positive lookahead sets it when nothing later does.
        # The matcher checks every required byte outside assertions: it skips searches PCRE runs past the limit
        # (nomatch where PCRE errors) and runs searches PCRE skips (an error where PCRE answers nomatch).
        # Both need a search that costs the limit; found by the property test with (*LIMIT_MATCH=300).
        ("(a|a)+x!", b"a" * 24 + b"!"),
        ("(?=(a|a)+b)", b"a" * 24),
        ("(*LIMIT_MATCH=300)(a|b|-)(?=(a|a*)*b)", b"aaaaa"),
    ],
)
def test_required_byte_shortcut_as_pcre1_known_deviation(pattern: str, value: bytes) -> None:
    assert meridian(pattern, value) == pcre1.search(pattern, value)
