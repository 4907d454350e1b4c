"""canary-by-header-pattern as ingress-nginx runs it: PCRE (`ngx.re.match(value, pattern)`, no options:
byte mode, ASCII classes, case-sensitive, unanchored). Shared by the frontend (which patterns can be
served, and how) and the translator (which runs the ones RE2 cannot).

A pattern is one of:
- "re2": RE2 accepts it and means the same on a header value (Envoy matches it natively);
- "pcre": only PCRE accepts it (lookahead, backreferences, possessive repeats, conditionals...):
  Envoy runs it with a small backtracking matcher in Lua, built from Python's parse of it;
- "invalid": PCRE refuses it too (ngx.re.match returns an error; balancer.lua then keeps the request
  on the main Service);
- "unsupported": valid PCRE that Meridian cannot evaluate exactly (PCRE-only escapes such as \\h or
  \\R, POSIX classes, recursion, `{,n}` whose meaning depends on the PCRE version): treated as invalid
  and reported.

Python's parser stands in for PCRE's: for the characters ingress-nginx's validator lets through
(`[-./:_~a-zA-Z0-9^$[\\](){}*+?|&=\\\\]`) the two read patterns the same once the escapes and groups
refused below are out of the way. Header values carry no newline, so `\\Z`, `\\z` and `$` agree.
"""

from __future__ import annotations

import re
import re._parser as sre_parse
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["re2", "pcre", "invalid", "unsupported"]

# Escapes PCRE refuses outright (PCRE2: "does not support \\L, \\l, \\N{name}, \\U, or \\u").
_PCRE_ERRORS = frozenset("LlUu")
# Escapes (and groups) only PCRE has: valid there, but not readable here.
_PCRE_ONLY = frozenset("hHvVRKGXCgkoeEQcpPN")
_PCRE_ONLY_GROUPS = re.compile(r"\(\?(?:R|[0-9+\-]|\||&|[UJXn]|[a-zA-Z]*[auL])")


@dataclass(frozen=True)
class Classified:
    kind: Kind
    why: str = ""
    tree: Any = None  # Python's parse (re._parser.SubPattern) for "pcre"
    flags: int = 0


def classify(pattern: str, *, re2_valid: bool) -> Classified:
    """What the pattern is to PCRE and to Meridian (see the module docstring)."""
    if re2_valid:
        return Classified("re2")
    escaped = ""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            c = pattern[i + 1]
            if c in _PCRE_ERRORS:
                return Classified("invalid", f"PCRE refuses \\{c}")
            if c in _PCRE_ONLY:
                return Classified("unsupported", f"\\{c} (a PCRE-only escape)")
            escaped += "\\Z" if c == "z" else pattern[i : i + 2]
            i += 2
            continue
        escaped += pattern[i]
        i += 1
    if "[:" in pattern:
        return Classified("unsupported", "POSIX character classes")
    if re.search(r"\{,", pattern):
        return Classified("unsupported", "{,n} (its meaning depends on the PCRE version)")
    if _PCRE_ONLY_GROUPS.search(pattern):
        return Classified("unsupported", "a PCRE-only group or option")
    try:
        parsed = sre_parse.parse(escaped)
    except (re.error, RecursionError, OverflowError) as exc:
        return Classified("invalid", str(exc))
    problem = _unsupported(parsed.data)
    if problem:
        return Classified("unsupported", problem)
    return Classified("pcre", tree=parsed, flags=parsed.state.flags)


_C = sre_parse  # node names (re._constants, re-exported by the parser)
_LEAVES = {_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.AT, _C.GROUPREF}


def _unsupported(items: Any) -> str:
    """What in a parsed pattern the Lua matcher (controlplane.translate.pcre_lua) does not run, or ""."""
    for op, arg in items:
        if op in (_C.LITERAL, _C.NOT_LITERAL) and arg > 255:
            return "a character outside one byte"
        if op in _LEAVES:
            continue
        if op is _C.IN:
            if any(o not in (_C.NEGATE, _C.LITERAL, _C.RANGE, _C.CATEGORY) or (o is _C.LITERAL and a > 255)
                   or (o is _C.RANGE and a[1] > 255) for o, a in arg):  # fmt: skip
                return "a character class outside one byte"
            continue
        if op is _C.BRANCH:
            found = next((p for b in arg[1] if (p := _unsupported(b))), "")
        elif op is _C.SUBPATTERN:
            found = _unsupported(arg[3])
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
            found = _unsupported(arg[2])
        elif op is _C.ATOMIC_GROUP:
            found = _unsupported(arg)
        elif op in (_C.ASSERT, _C.ASSERT_NOT):
            found = "lookbehind" if arg[0] != 1 else _unsupported(arg[1])
        elif op is _C.GROUPREF_EXISTS:
            found = _unsupported(arg[1]) or (_unsupported(arg[2]) if arg[2] is not None else "")
        else:
            found = f"the construct {op}"
        if found:
            return found
    return ""
