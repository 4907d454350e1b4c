"""canary-by-header-pattern as ingress-nginx runs it: PCRE1 (`ngx.re.match(value, pattern)`, no options:
byte mode, ASCII classes, case-sensitive, unanchored). Shared by the frontend (which patterns can be
served, and how) and the translator (which runs the ones RE2 cannot).

The pattern is read with PCRE1's own syntax (controlplane.ir.pcre_syntax). It is then one of:
- "re2": every character it consumes is ASCII, it needs nothing RE2 lacks, and it has no repeat
  that backtracks (so PCRE never reaches its match limit on a header value, see _most_calls); the
  RE2 regex written from the tree (explicit byte sets, no flags) matches exactly the same header
  values, so Envoy matches it natively;
- "pcre": anything else (bytes above 127, which RE2 reads as UTF-8, repeats, lookahead,
  backreferences, conditionals, recursion...): Envoy runs it with a backtracking matcher in Lua that
  counts PCRE's steps, so it fails where PCRE's match limit makes ngx.re.match fail;
- "invalid": PCRE refuses it (ngx.re.match returns an error; balancer.lua then keeps the request on
  the main Service);
- "unsupported": valid PCRE that the matcher does not run (the start-of-pattern settings for UTF-8,
  Unicode properties, newlines and the recursion limit, and (*SKIP:NAME)): treated as invalid and
  reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from controlplane.ir import pcre_syntax as px

Kind = Literal["re2", "pcre", "invalid", "unsupported"]
# Counted repeats RE2 unrolls: kept small so the program stays small (the Lua matcher takes the rest).
_RE2_REPEAT_MAX = 16
_RE2_LENGTH_MAX = 4096
MATCH_LIMIT = 10_000_000  # PCRE's default, which ngx.re.match keeps


@dataclass(frozen=True)
class Classified:
    kind: Kind
    why: str = ""
    tree: Any = None  # controlplane.ir.pcre_syntax's tree, for "pcre"
    re2: str = ""  # for "re2": the RE2 regex that matches where the pattern does (a search)


@lru_cache(maxsize=4096)
def classify(pattern: str) -> Classified:
    """What the pattern is to PCRE and to Meridian (see the module docstring)."""
    try:
        parsed = px.parse(pattern)
    except px.PcreError as exc:
        return Classified("invalid", str(exc))
    except px.Unsupported as exc:
        return Classified("unsupported", str(exc))
    except RecursionError:
        return Classified("unsupported", "nesting too deep")
    try:
        re2 = _re2(parsed.tree, top=True)
    except _NotRe2:
        return Classified("pcre", tree=parsed.tree)
    if len(re2) > _RE2_LENGTH_MAX or _most_calls(parsed.tree) > MATCH_LIMIT:
        return Classified("pcre", tree=parsed.tree)
    return Classified("re2", re2=re2)


def _most_calls(tree: Any) -> int:
    """An upper bound of PCRE's match() calls from one start position (what its limit counts) for a
    repeat-free tree: RE2 is used only when PCRE can never reach its match limit (it would then
    answer an error where RE2 answers "no match")."""

    def per_start(n: Any) -> int:
        if isinstance(n, px.Seq):
            return sum(per_start(i) for i in n.items)
        if isinstance(n, px.Alt):
            return sum(1 + per_start(b) for b in n.branches)
        if isinstance(n, px.Group):
            return 1 + per_start(n.body)
        if isinstance(n, px.Repeat):
            if n.high != n.low:
                return MATCH_LIMIT + 1  # a repeat that backtracks: its calls grow with the value
            return n.low * (1 + per_start(n.body))
        return 0

    return 1 + per_start(tree)  # PCRE counts afresh at each start position


class _NotRe2(Exception):
    pass


def _set(codes: frozenset[int]) -> str:
    if not codes or max(codes) > 127:
        raise _NotRe2
    ordered = sorted(codes)
    if len(ordered) == 1:
        return _char(ordered[0])
    runs: list[list[int]] = []
    for c in ordered:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return "[" + "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in runs) + "]"


def _char(code: int) -> str:
    return chr(code) if chr(code).isalnum() else f"\\x{code:02x}"


_ANCHORS = {"begin": "^", "start": "^", "begin_line": "^", "end": "$", "end_nl": "$", "end_line": "$",
            "end_string": "$", "boundary": "\\b", "non_boundary": "\\B"}  # fmt: skip


def _re2(node: Any, *, top: bool = False) -> str:
    """The RE2 form of an ASCII-only tree (header values hold no newline: `$` and `\\Z` agree); an
    atom or a sequence, safe to concatenate (`top`: the whole pattern, alternatives left bare)."""
    if isinstance(node, px.Chars):
        return _set(node.codes)
    if isinstance(node, px.Seq):
        return "".join(_re2(i) for i in node.items)
    if isinstance(node, px.Alt):
        inner = "|".join(_re2(b) for b in node.branches)
        return inner if top else f"(?:{inner})"
    if isinstance(node, px.Group):
        return f"(?:{_re2(node.body, top=True)})"
    if isinstance(node, px.Repeat) and node.mode != "possessive":
        if node.low > _RE2_REPEAT_MAX or (node.high or 0) > _RE2_REPEAT_MAX:
            raise _NotRe2
        body = _re2(node.body)
        if not (isinstance(node.body, (px.Chars, px.Group, px.Alt)) or len(body) == 1):
            body = f"(?:{body})"
        counts = {(0, None): "*", (1, None): "+", (0, 1): "?"}
        bounds = str(node.low) if node.high == node.low else f"{node.low},{'' if node.high is None else node.high}"
        return body + counts.get((node.low, node.high), f"{{{bounds}}}")  # lazy: the same values match
    if isinstance(node, px.Anchor):
        return _ANCHORS[node.kind]
    raise _NotRe2
