"""PCRE1's pattern syntax (8.45, the library ingress-nginx's OpenResty links), read into a small tree.

ngx.re.match(value, pattern) with no options: byte mode (no UTF), default C-locale tables (ASCII
classes and case folding), newline LF, no PCRE_EXTRA (an unknown letter escape is the letter). Every
node that consumes a character is a set of bytes, so escapes (\\h, \\v, \\R, \\N, \\C...), POSIX classes
and `\\p` are all resolved here; the matcher only sees sets, sequences, alternatives, repeats, groups,
assertions, backreferences, recursion and conditions. A pattern PCRE refuses raises PcreError with
PCRE's message.
"""

from __future__ import annotations

from typing import Any

from controlplane.ir.pcre_reader import Reader
from controlplane.ir.pcre_tree import (
    ALL,
    EMPTY,
    Alt,
    Anchor,
    Atomic,
    Backref,
    Chars,
    Cond,
    Group,
    Look,
    Parsed,
    PcreError,
    Recurse,
    Repeat,
    Seq,
    Settings,
    Unsupported,
    Verb,
    _LiteralRun,
    _Options,
)

__all__ = ["ALL", "EMPTY", "Alt", "Anchor", "Atomic", "Backref", "Chars", "Cond", "Group", "Look", "Parsed",
           "PcreError", "Recurse", "Repeat", "Seq", "Settings", "Unsupported", "Verb", "anchored", "can_be_empty",
           "first_bytes", "parse", "required_bytes"]  # fmt: skip


def required_bytes(node: Any) -> frozenset[int]:
    """Bytes every match contains (as PCRE's "required character" check: a subject without one of
    them fails at once, without a call of match()). Empty when a match may stop early ((*ACCEPT))."""

    def walk(n: Any) -> frozenset[int]:
        if isinstance(n, Chars):
            return frozenset(n.codes) if len(n.codes) == 1 else frozenset()
        if isinstance(n, Seq):
            return frozenset().union(*(walk(i) for i in n.items))
        if isinstance(n, Alt):
            sets = [walk(b) for b in n.branches]
            return frozenset.intersection(*sets) if sets else frozenset()
        if isinstance(n, Group):
            return walk(n.body)
        if isinstance(n, (Repeat, Atomic)) and (not isinstance(n, Repeat) or n.low > 0):
            return walk(n.body)
        if isinstance(n, Cond):
            return walk(n.yes) & walk(n.no)
        return frozenset()

    def accepts(n: Any) -> bool:
        if isinstance(n, Verb):
            return n.name == "ACCEPT"
        children = ([n.items] if isinstance(n, Seq) else [n.branches] if isinstance(n, Alt) else
                    [[n.body]] if isinstance(n, (Group, Repeat, Atomic, Look)) else
                    [[n.yes, n.no]] if isinstance(n, Cond) else [])  # fmt: skip
        return any(accepts(c) for group in children for c in group)

    return frozenset() if accepts(node) else walk(node)


def anchored(tree: Any) -> bool:
    """Every branch starts with ^ or \\A (not multiline): PCRE tries the first position only."""
    if isinstance(tree, Alt):
        return all(anchored(b) for b in tree.branches)
    if isinstance(tree, Seq):
        return bool(tree.items) and anchored(tree.items[0])
    if isinstance(tree, (Group, Atomic)):
        return anchored(tree.body)
    return isinstance(tree, Anchor) and tree.kind in ("begin", "start")


def first_bytes(tree: Any) -> frozenset[int]:
    """PCRE's "first character" (a byte, or a letter in both cases) every match starts with, or an
    empty set: PCRE then skips the start positions without it, with no call of match()."""

    def walk(n: Any) -> frozenset[int] | None:
        if isinstance(n, Chars):
            c = n.codes
            return c if len(c) == 1 or (len(c) == 2 and len({x | 0x20 for x in c}) == 1 and min(c) >= 65) else None
        if isinstance(n, Seq):
            items = [i for i in n.items if not (isinstance(i, Verb) and i.name in ("COMMIT", "PRUNE", "SKIP", "THEN"))]
            return walk(items[0]) if items else None
        if isinstance(n, (Group, Atomic)):
            return walk(n.body)
        if isinstance(n, Repeat):
            return walk(n.body) if n.low > 0 else None
        if isinstance(n, Alt):
            firsts = [walk(b) for b in n.branches]
            return firsts[0] if firsts and all(f is not None and f == firsts[0] for f in firsts) else None
        return None

    return walk(tree) or frozenset()


def _flatten(node: Any) -> Any:
    """Resolve the parser's helper nodes (\\Q..\\E runs) into the tree."""
    if isinstance(node, _LiteralRun):
        return Seq(node.chars)
    if isinstance(node, Repeat) and isinstance(node.body, _LiteralRun):
        *head, last = node.body.chars
        return Seq((*head, Repeat(node.low, node.high, node.mode, last)))
    if isinstance(node, Seq):
        return Seq(tuple(_flatten(i) for i in node.items))
    if isinstance(node, Alt):
        return Alt(tuple(_flatten(b) for b in node.branches))
    if isinstance(node, Group):
        return Group(node.index, _flatten(node.body))
    if isinstance(node, Repeat):
        return Repeat(node.low, node.high, node.mode, _flatten(node.body))
    if isinstance(node, Atomic):
        return Atomic(_flatten(node.body))
    if isinstance(node, Look):
        return Look(node.negative, _flatten(node.body))
    if isinstance(node, Cond):
        arg = _flatten(node.arg) if isinstance(node.arg, Look) else node.arg
        return Cond(node.kind, arg, _flatten(node.yes), _flatten(node.no))
    return node


def parse(pattern: str) -> Parsed:
    """The pattern as PCRE1 reads it; PcreError when PCRE refuses it, Unsupported when the matcher
    cannot run it."""
    limit, start_opt, auto_possess, pos = None, True, True, 0
    while pattern.startswith("(*", pos) and _start_option(pattern[pos:]):
        end = pattern.index(")", pos)
        name, _, value = pattern[pos + 2 : end].partition("=")
        if name == "LIMIT_MATCH" and value.isdigit() and int(value) < 2**32:
            limit = int(value) if limit is None else min(limit, int(value))
        elif name == "LIMIT_MATCH" and not value:
            limit = 0
        elif name == "NO_START_OPT":
            start_opt = False
        elif name == "NO_AUTO_POSSESS":
            auto_possess = False
        elif name in ("LF", "BSR_UNICODE"):  # the defaults ingress-nginx's PCRE is built with
            pass
        elif name == "LIMIT_MATCH":
            raise PcreError("(*VERB) not recognized or malformed")
        else:
            raise Unsupported(f"the start-of-pattern setting (*{name})")
        pos = end + 1
    p = Reader(pattern)
    p.pos = pos
    tree = p.alternation(_Options())
    if p.pos < len(pattern):
        raise PcreError("unmatched parentheses")
    if any(n > p.groups for n in p.refs) or any(n > p.groups for n in p.calls):
        raise PcreError("reference to non-existent subpattern")
    tree = _flatten(tree)
    if p.calls:
        _check_recursion_loops(tree)
    if pos:
        tree = Settings(limit, start_opt, auto_possess, tree)
    return Parsed(tree, p.groups, frozenset(p.uses))


def _start_option(pattern: str) -> bool:
    name = pattern[2 : pattern.find(")")] if ")" in pattern else ""
    return name.split("=")[0] in ("UTF8", "UTF", "UCP", "CR", "LF", "CRLF", "ANYCRLF", "ANY", "BSR_ANYCRLF",
                                  "BSR_UNICODE", "NO_START_OPT", "NO_AUTO_POSSESS", "LIMIT_MATCH",
                                  "LIMIT_RECURSION")  # fmt: skip


def can_be_empty(node: Any) -> bool:
    if isinstance(node, Chars):
        return False
    if isinstance(node, Seq):
        return all(can_be_empty(i) for i in node.items)
    if isinstance(node, Alt):
        return any(can_be_empty(b) for b in node.branches)
    if isinstance(node, (Group, Atomic)):
        return can_be_empty(node.body)
    if isinstance(node, Repeat):
        return node.low == 0 or can_be_empty(node.body)
    if isinstance(node, Cond):
        return can_be_empty(node.yes) or can_be_empty(node.no)
    return True  # anchors, assertions, backreferences, recursion, verbs


def _check_recursion_loops(tree: Any) -> None:
    """PCRE1 refuses a recursion that its own group reaches without consuming a character (outside
    conditional groups)."""

    def walk(node: Any, empty_so_far: dict[int, bool]) -> None:
        if isinstance(node, Recurse):
            if empty_so_far.get(node.index, False):
                raise PcreError("recursive call could loop indefinitely")
        elif isinstance(node, Seq):
            state = dict(empty_so_far)
            for item in node.items:
                walk(item, state)
                if not can_be_empty(item):
                    state = {k: False for k in state}
        elif isinstance(node, Alt):
            for b in node.branches:
                walk(b, empty_so_far)
        elif isinstance(node, Group):
            walk(node.body, {**empty_so_far, node.index: True})
        elif isinstance(node, (Atomic, Repeat, Look)):
            walk(node.body, empty_so_far)
        # PCRE1 does not check inside a conditional group (cond_depth > 0); the match reports a loop

    walk(tree, {0: True})
