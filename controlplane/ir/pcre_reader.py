"""Reading a pattern with PCRE1's grammar (8.45) into controlplane.ir.pcre_tree's nodes, split by
what starts a construct: escapes, classes, groups; PcreError where PCRE refuses the pattern."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from controlplane.ir.pcre_tree import (
    _CLASS_ESCAPES,
    _NOT_REPEATABLE,
    _OPTION_LETTERS,
    _POSIX,
    _REPEAT_MAX,
    _SIMPLE,
    ALL,
    EMPTY,
    VSPACE,
    Alt,
    Anchor,
    Atomic,
    Backref,
    Chars,
    Cond,
    Group,
    Look,
    PcreError,
    Recurse,
    Repeat,
    Seq,
    Unsupported,
    Verb,
    _fold,
    _LiteralRun,
    _Options,
    _unicode_property,
    _wrap,
)


@dataclass
class _Reader:
    """The text being read, the groups seen so far and what the pattern uses; small lexing steps.
    The methods the other readers provide are declared here so each reader can call them."""

    src: str
    pos: int = 0
    groups: int = 0
    refs: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    uses: set[str] = field(default_factory=set)
    open_groups: list[int] = field(default_factory=list)

    # -- helpers --

    def peek(self, n: int = 0) -> str:
        i = self.pos + n
        return self.src[i] if i < len(self.src) else ""

    def starts(self, text: str) -> bool:
        return self.src.startswith(text, self.pos)

    def number(self) -> int | None:
        start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        return int(self.src[start : self.pos]) if self.pos > start else None

    # -- grammar --

    def repeat_bounds(self) -> tuple[int, int | None] | None:
        """{n}, {n,}, {n,m} (a `{` that is not one of these is a literal, `{,n}` included)."""
        src, i = self.src, self.pos + 1
        j = i
        while j < len(src) and src[j].isdigit():
            j += 1
        if j == i:
            return None
        low = int(src[i:j])
        if j < len(src) and src[j] == "}":
            self.pos = j + 1
            high: int | None = low
        elif j < len(src) and src[j] == ",":
            k = j + 1
            while k < len(src) and src[k].isdigit():
                k += 1
            if k >= len(src) or src[k] != "}":
                return None
            high = int(src[j + 1 : k]) if k > j + 1 else None
            self.pos = k + 1
        else:
            return None
        if low > _REPEAT_MAX or (high is not None and high > _REPEAT_MAX):
            raise PcreError("number too big in {} quantifier")
        if high is not None and high < low:
            raise PcreError("numbers out of order in {} quantifier")
        return low, high

    def _counted_repeat_follows(self) -> bool:
        saved = self.pos
        try:
            return self.repeat_bounds() is not None
        finally:
            self.pos = saved

    def _counted_repeat_follows_at(self, at: int) -> bool:
        saved = self.pos
        self.pos = at
        try:
            return self.repeat_bounds() is not None
        finally:
            self.pos = saved

    def literal(self, code: int, opts: _Options) -> Chars:
        if code > 255:
            raise PcreError("character value in \\x{} or \\o{} is too large")
        return Chars(_fold(frozenset({code})) if opts.caseless else frozenset({code}))

    # -- escapes --

    def close(self, node: Any) -> Any:
        if self.peek() != ")":
            raise PcreError("missing )")
        self.pos += 1
        return node

    def alternation(self, opts: _Options) -> Any:
        raise NotImplementedError

    def char_escape(self, c: str) -> int:
        raise NotImplementedError

    def octal(self, most: int) -> int:
        raise NotImplementedError

    def property(self, negated: bool) -> frozenset[int]:
        raise NotImplementedError

    def sequence(self, opts: _Options) -> Any:
        raise NotImplementedError


class _Escapes(_Reader):
    """Backslash escapes outside a class: byte sets, anchors, backreferences, \\Q..\\E."""

    def escape(self, opts: _Options) -> Any:
        c = self.peek()
        if not c:
            raise PcreError("\\ at end of pattern")
        self.pos += 1
        if c in _CLASS_ESCAPES or c.lower() in _CLASS_ESCAPES:
            s = _CLASS_ESCAPES[c.lower()]
            if c in "hHvV":
                self.uses.add("\\" + c)
            return Chars(ALL - s if c.isupper() else s)
        if c in "pP":
            self.uses.add("\\p")
            return Chars(self.property(c == "P"))
        if c == "N":
            if self.peek() == "{" and not self._counted_repeat_follows():
                raise PcreError("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u")
            self.uses.add("\\N")
            return Chars(ALL - {10})
        if c == "C":
            self.uses.add("\\C")
            return Chars(ALL)
        if c == "R":
            self.uses.add("\\R")
            return Atomic(Alt((Seq((Chars(frozenset({13})), Chars(frozenset({10})))), Chars(VSPACE))))
        if c == "X":
            self.uses.add("\\X")
            control = frozenset(c for c in range(256) if unicodedata.category(chr(c)) in ("Cc", "Cf"))
            # An extended grapheme cluster of Latin-1: CR LF, or one character (no Extend marks there).
            return Atomic(Alt((Seq((Chars(frozenset({13})), Chars(frozenset({10})))), Chars(control), Chars(ALL))))
        if c in "LlUu":
            raise PcreError("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u")
        anchors = {"b": "boundary", "B": "non_boundary", "A": "start", "G": "start", "z": "end_string",
                   "Z": "end_nl"}  # fmt: skip
        if c in anchors:
            if c == "G":
                self.uses.add("\\G")
            return Anchor(anchors[c])
        if c == "K":
            self.uses.add("\\K")
            return _NOT_REPEATABLE  # \K only moves the reported start: nothing for match / no match
        if c == "Q":
            end = self.src.find("\\E", self.pos)
            text = self.src[self.pos :] if end < 0 else self.src[self.pos : end]
            self.pos = len(self.src) if end < 0 else end + 2
            self.uses.add("\\Q")
            if not text:
                return None
            lits = [self.literal(ord(t), opts) for t in text]
            if len(lits) == 1:
                return lits[0]
            return _LiteralRun(tuple(lits))  # a quantifier after it repeats the last character only
        if c == "E":
            return None
        if c == "g":
            return self.g_reference(opts)
        if c == "k":
            if self.peek() == "{":
                raise PcreError("reference to non-existent subpattern")  # no group can have a name here
            raise PcreError("\\k is not followed by a braced, angle-bracketed, or quoted name")
        if c.isdigit() and c != "0":
            self.pos -= 1
            start = self.pos
            n = self.number()
            assert n is not None
            if n < 8 or n <= self.groups:
                return self.backref(n, opts)
            if c in "89":
                self.pos = start + 1
                return self.literal(ord(c), opts)
            self.pos = start
            return self.literal(self.octal(3), opts)
        code = self.char_escape(c)
        return self.literal(code, opts)

    def octal(self, most: int) -> int:
        start = self.pos
        while self.pos - start < most and self.peek() in "01234567" and self.peek():
            self.pos += 1
        return int(self.src[start : self.pos] or "0", 8) & 0xFF

    def char_escape(self, c: str) -> int:
        """A character escape (\\n, \\x.., \\0.., \\c., \\o{..}) or an escaped literal."""
        if c in _SIMPLE:
            self.uses.add("\\e") if c == "e" else None
            return _SIMPLE[c]
        if c == "0":
            return self.octal(2)
        if c == "x":
            if self.peek() == "{":
                end = self.src.find("}", self.pos)
                digits = self.src[self.pos + 1 : end] if end > 0 else ""
                if end > 0 and digits and all(d in "0123456789abcdefABCDEF" for d in digits):
                    self.pos = end + 1
                    value = int(digits, 16)
                    if value > 255:
                        raise PcreError("character value in \\x{} or \\o{} is too large")
                    return value
                return 0  # \x followed by "{" that is not a hex number: \x is NUL, the rest literal
            start = self.pos
            while self.pos - start < 2 and self.peek() and self.peek() in "0123456789abcdefABCDEF":
                self.pos += 1
            return int(self.src[start : self.pos] or "0", 16)
        if c == "o":
            if self.peek() != "{":
                raise PcreError("missing opening brace after \\o")
            end = self.src.find("}", self.pos)
            digits = self.src[self.pos + 1 : end] if end > 0 else ""
            if end < 0 or not digits or any(d not in "01234567" for d in digits):
                raise PcreError("non-octal character in \\o{} (closing brace missing?)")
            self.pos = end + 1
            if int(digits, 8) > 255:
                raise PcreError("character value in \\x{} or \\o{} is too large")
            return int(digits, 8)
        if c == "c":
            x = self.peek()
            if not x:
                raise PcreError("\\c at end of pattern")
            self.pos += 1
            self.uses.add("\\c")
            return ord(x.upper()) ^ 0x40
        return ord(c)

    def property(self, negated: bool) -> frozenset[int]:
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            if end < 0:
                raise PcreError("malformed \\P or \\p sequence")
            name = self.src[self.pos + 1 : end]
            self.pos = end + 1
            if name.startswith("^"):
                negated, name = not negated, name[1:]
        else:
            name = self.peek()
            if not name:
                raise PcreError("malformed \\P or \\p sequence")
            self.pos += 1
        codes = _unicode_property(name)
        return ALL - codes if negated else codes

    def g_reference(self, opts: _Options) -> Any:
        self.uses.add("\\g")
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            inner = self.src[self.pos + 1 : end] if end > 0 else ""
            if end < 0 or not inner:
                raise PcreError("a numbered reference must not be zero")
            self.pos = end + 1
            if not (inner.lstrip("-").isdigit()):
                raise PcreError("reference to non-existent subpattern")
            text = inner
        else:
            start = self.pos
            if self.peek() in "+-":
                self.pos += 1
            if self.number() is None:
                raise PcreError("a numbered reference must not be zero")
            text = self.src[start : self.pos]
        if text.startswith("+"):
            raise PcreError("a numbered reference must not be zero")
        n = int(text)
        if n == 0:
            raise PcreError("a numbered reference must not be zero")
        if n < 0:
            n = self.groups + 1 + n
            if n <= 0:
                raise PcreError("reference to non-existent subpattern")
        return self.backref(n, opts)

    def backref(self, n: int, opts: _Options) -> Backref:
        self.uses.add("backreference")
        self.refs.append(n)
        return Backref(n, opts.caseless)

    # -- classes --


class _Classes(_Reader):
    """Character classes `[...]`, POSIX classes included."""

    def char_class(self, opts: _Options) -> frozenset[int]:
        negate = False
        if self.peek() == "^":
            negate = True
            self.pos += 1
        codes: set[int] = set()
        first = True
        prev: int | None = None  # the last single character, a possible range start
        while True:
            c = self.peek()
            if not c:
                raise PcreError("missing terminating ] for character class")
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            if c == "[" and self.peek(1) in ":.=":
                end = self._posix_end()
                if end is not None:
                    kind, name = self.peek(1), self.src[self.pos + 2 : end]
                    if kind != ":":
                        raise PcreError("POSIX collating elements are not supported")
                    neg = name.startswith("^")
                    name = name[1:] if neg else name
                    if name not in _POSIX:
                        raise PcreError("unknown POSIX class name")
                    self.uses.add("POSIX class")
                    codes |= (ALL - _POSIX[name]) if neg else _POSIX[name]
                    self.pos = end + 2
                    prev = None
                    continue
            self.pos += 1
            if c == "\\":
                e = self.peek()
                if not e:
                    raise PcreError("\\ at end of pattern")
                self.pos += 1
                if e == "Q":
                    end = self.src.find("\\E", self.pos)
                    text = self.src[self.pos :] if end < 0 else self.src[self.pos : end]
                    self.pos = len(self.src) if end < 0 else end + 2
                    for t in text:
                        codes.add(ord(t))
                    prev = ord(text[-1]) if text else prev
                    continue
                if e == "E":
                    continue
                if e in _CLASS_ESCAPES or e.lower() in _CLASS_ESCAPES:
                    s = _CLASS_ESCAPES[e.lower()]
                    codes |= (ALL - s) if e.isupper() else s
                    prev = None
                    continue
                if e in "pP":
                    codes |= self.property(e == "P")
                    prev = None
                    continue
                if e == "N":
                    raise PcreError("\\N is not supported in a class")
                if e in "LlUu":
                    raise PcreError("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u")
                if e in "RXB":  # PCRE1 reads these as the letters in a class
                    code = ord(e)
                elif e == "b":
                    code = 8
                elif e.isdigit() and e != "0":
                    if e in "89":
                        code = ord(e)
                    else:
                        self.pos -= 1
                        code = self.octal(3)
                elif e == "g" or e == "k":
                    code = ord(e)
                else:
                    code = self.char_escape(e)
                    if code > 255:
                        raise PcreError("character value in \\x{} or \\o{} is too large")
            else:
                code = ord(c)
            # a range?
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                save = self.pos
                self.pos += 1
                high = self._range_end()
                if high is None:
                    self.pos = save
                else:
                    if high < code:
                        raise PcreError("range out of order in character class")
                    codes.update(range(code, high + 1))
                    prev = None
                    continue
            codes.add(code)
            prev = code
        del prev
        result = frozenset(codes)
        if opts.caseless:
            result = _fold(result)
        return ALL - result if negate else result

    def _range_end(self) -> int | None:
        """The character after `-` in a class, or None when it is not one (then `-` is literal)."""
        c = self.peek()
        if c == "[" and self.peek(1) in ":.=" and self._posix_end() is not None:
            return None
        self.pos += 1
        if c != "\\":
            return ord(c)
        e = self.peek()
        if not e:
            raise PcreError("\\ at end of pattern")
        self.pos += 1
        if e in _CLASS_ESCAPES or e.lower() in _CLASS_ESCAPES or e in "pPQE":
            self.pos -= 2
            return None
        if e == "N":
            raise PcreError("\\N is not supported in a class")
        if e in "LlUu":
            raise PcreError("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u")
        if e == "b":
            return 8
        if e in "RXBgk":
            return ord(e)
        if e.isdigit() and e != "0":
            if e in "89":
                return ord(e)
            self.pos -= 1
            return self.octal(3)
        return self.char_escape(e)

    def _posix_end_at(self, at: int) -> int | None:
        saved = self.pos
        self.pos = at
        try:
            return self._posix_end()
        finally:
            self.pos = saved

    def _posix_end(self) -> int | None:
        """Where a POSIX `[:name:]` (or `[.x.]`, `[=x=]`) ends (the index of its closing `:`), or None."""
        kind = self.peek(1)
        i = self.pos + 2
        while i < len(self.src):
            ch = self.src[i]
            if ch == "\\" or (ch == "[" and i + 1 < len(self.src) and self.src[i + 1] in ":.="):
                return None
            if ch == "]":
                return i - 1 if self.src[i - 1] == kind and i - 1 >= self.pos + 2 else None
            i += 1
        return None

    # -- groups --


class _Groups(_Reader):
    """Everything that starts with `(`: groups, options, recursion, conditions, verbs."""

    def group(self, opts: _Options) -> Any:
        if self.peek() == "*":
            return self.verb()
        if self.peek() != "?":
            return self.capture(opts)
        self.pos += 1
        c = self.peek()
        inner = _Options(**vars(opts))
        if c == ":":
            self.pos += 1
            return _wrap(self.close(self.alternation(inner)))
        if c == "|":
            self.pos += 1
            self.uses.add("branch reset")
            return self.close(self.branch_reset(inner))
        if c == ">":
            self.pos += 1
            self.uses.add("atomic group")
            return Atomic(self.close(self.alternation(inner)))
        if c in "=!":
            self.pos += 1
            self.uses.add("lookahead")
            return Look(c == "!", self.close(self.alternation(inner)))
        if c == "<":
            raise PcreError("lookbehind")  # never reached: ingress-nginx's validator refuses "<"
        if c == "R" or c.isdigit() or (c in "+-" and self.peek(1).isdigit()):
            return self.recursion()
        if c == "&" or (c == "P" and self.peek(1) in "=>"):
            raise PcreError("reference to non-existent subpattern")  # no group can have a name here
        if c == "P":
            raise PcreError("unrecognized character after (?P")
        if c == "(":
            return self.conditional(inner)
        if c == "C":
            self.pos += 1
            self.number()
            if self.peek() != ")":
                raise PcreError("closing ) for (?C expected")
            self.pos += 1
            return _NOT_REPEATABLE  # a callout: nginx sets no callout function
        return self.options(opts)

    def capture(self, opts: _Options) -> Group:
        self.groups += 1
        index = self.groups
        self.open_groups.append(index)
        body = self.close(self.alternation(_Options(**vars(opts))))
        self.open_groups.pop()
        return Group(index, body)

    def branch_reset(self, opts: _Options) -> Any:
        base = self.groups
        most = base
        branches = []
        while True:
            self.groups = base
            branches.append(self.sequence(opts))
            most = max(most, self.groups)
            if self.peek() != "|":
                break
            self.pos += 1
        self.groups = most
        return branches[0] if len(branches) == 1 else Alt(tuple(branches))

    def options(self, opts: _Options) -> Any:
        on = True
        changed = _Options(**vars(opts))
        while True:
            c = self.peek()
            if not c:
                raise PcreError("missing )")
            self.pos += 1
            if c == "-":
                on = False
                continue
            if c in ")":
                # (?i): changes the rest of the enclosing group (its later branches too)
                opts.caseless, opts.multiline = changed.caseless, changed.multiline
                opts.dotall, opts.ungreedy = changed.dotall, changed.ungreedy
                return _NOT_REPEATABLE
            if c == ":":
                return _wrap(self.close(self.alternation(changed)))
            if c not in _OPTION_LETTERS:
                raise PcreError("unrecognized character after (? or (?-")
            if c == "i":
                changed.caseless = on
            elif c == "m":
                changed.multiline = on
            elif c == "s":
                changed.dotall = on
            elif c == "U":
                changed.ungreedy = on

    def recursion(self) -> Recurse:
        self.uses.add("recursion")
        if self.peek() == "R":
            self.pos += 1
            n = 0
        else:
            sign = self.peek() if self.peek() in "+-" else ""
            if sign:
                self.pos += 1
            num = self.number()
            assert num is not None
            if sign == "-":
                n = self.groups + 1 - num
                if num == 0 or n <= 0:
                    raise PcreError("reference to non-existent subpattern")
            elif sign == "+":
                if num == 0:
                    raise PcreError("a numbered reference must not be zero")
                n = self.groups + num
            else:
                n = num
        if self.peek() != ")":
            raise PcreError("(?R or (?[+-]digits must be followed by )")
        self.pos += 1
        self.calls.append(n)
        return Recurse(n)

    def conditional(self, opts: _Options) -> Cond:
        self.uses.add("conditional")
        self.pos += 1  # the "(" of the condition
        c = self.peek()
        if c == "?" and self.peek(1) in "=!":
            self.pos += 2
            look = Look(self.src[self.pos - 1] == "!", self.close(self.alternation(_Options(**vars(opts)))))
            kind, arg = "assert", look
        else:
            end = self.src.find(")", self.pos)
            if end < 0:
                raise PcreError("malformed number or name after (?(")
            text = self.src[self.pos : end]
            self.pos = end + 1
            if text == "DEFINE":
                kind, arg = "define", None
            elif text == "R":
                kind, arg = "recursion", -1
            elif text.startswith("R") and text[1:].isdigit():
                kind, arg = "recursion", int(text[1:])
            elif text.lstrip("+-").isdigit() and text:
                n = int(text)
                if text[0] == "-":
                    n = self.groups + 1 + n
                elif text[0] == "+":
                    n = self.groups + n
                if n <= 0:
                    raise PcreError("invalid condition (?(0)")
                kind, arg = "group", n
                self.refs.append(n)
            elif text.startswith("R&") or text:
                raise PcreError("reference to non-existent subpattern")
            else:
                raise PcreError("malformed number or name after (?(")
        body = self.alternation(_Options(**vars(opts)))
        self.close(None)
        branches = body.branches if isinstance(body, Alt) else (body,)
        if len(branches) > 2:
            raise PcreError("conditional group contains more than two branches")
        if kind == "define" and len(branches) > 1:
            raise PcreError("DEFINE group contains more than one branch")
        return Cond(kind, arg, branches[0], branches[1] if len(branches) == 2 else EMPTY)

    def verb(self) -> Any:
        end = self.src.find(")", self.pos)
        if end < 0:
            raise PcreError("(*VERB) not recognized or malformed")
        text = self.src[self.pos + 1 : end]
        name, _, arg = text.partition(":")
        self.pos = end + 1
        if name in ("FAIL", "F"):
            return Verb("FAIL")
        if name == "ACCEPT":
            self.uses.add("(*ACCEPT)")
            return Verb("ACCEPT")
        if name in ("MARK", "") and arg:
            return _NOT_REPEATABLE
        if name in ("COMMIT", "PRUNE", "SKIP", "THEN") and not (name == "COMMIT" and arg):
            if name == "SKIP" and arg:
                raise Unsupported("(*SKIP:NAME)")
            self.uses.add(f"(*{name})")
            return Verb(name)
        raise PcreError("(*VERB) not recognized or malformed")


class Reader(_Groups, _Classes, _Escapes):
    """PCRE1's grammar: alternatives, sequences, quantifiers and atoms."""

    def alternation(self, opts: _Options) -> Any:
        branches = [self.sequence(opts)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(opts))
        return branches[0] if len(branches) == 1 else Alt(tuple(branches))

    def sequence(self, opts: _Options) -> Any:
        items: list[Any] = []
        while self.pos < len(self.src) and self.peek() not in "|)":
            atom = self.atom(opts)
            if atom is None:  # \E or an empty \Q\E: a quantifier after it applies to what came before
                if items and self.peek() in ("*", "+", "?", "{"):
                    items[-1] = self.quantified(items[-1], opts)
                continue
            items.append(self.quantified(atom, opts))
        return items[0] if len(items) == 1 and items[0] is not _NOT_REPEATABLE else Seq(tuple(items))

    def quantified(self, atom: Any, opts: _Options) -> Any:
        c = self.peek()
        if c == "*":
            bounds: tuple[int, int | None] | None = (0, None)
            self.pos += 1
        elif c == "+":
            bounds = (1, None)
            self.pos += 1
        elif c == "?":
            bounds = (0, 1)
            self.pos += 1
        elif c == "{":
            bounds = self.repeat_bounds()
            if bounds is None:
                return atom
        else:
            return atom
        if isinstance(atom, (Anchor, Verb)) or atom is _NOT_REPEATABLE:
            raise PcreError("nothing to repeat")
        mode = "lazy" if opts.ungreedy else "greedy"
        if self.peek() == "+":
            mode = "possessive"
            self.pos += 1
            self.uses.add("possessive")
        elif self.peek() == "?":
            mode = "greedy" if opts.ungreedy else "lazy"
            self.pos += 1
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._counted_repeat_follows()):
            raise PcreError("nothing to repeat")
        low, high = bounds
        if isinstance(atom, Look):  # PCRE1 runs an assertion at most once: a minimum over 0 drops the
            if low > 0:  # quantifier (and its mode); {0} skips the assertion; else {0,1}, lazy or
                return atom  # possessive as written (a lazy one tries without the assertion first)
            return Repeat(0, 0 if high == 0 else 1, mode, atom)
        return Repeat(low, high, mode, atom)

    def atom(self, opts: _Options) -> Any:
        c = self.peek()
        self.pos += 1
        if c == "(":
            return self.group(opts)
        if c == "[":
            if self.peek() in (":", ".", "=") and self._posix_end_at(self.pos - 1) is not None:
                raise PcreError("POSIX named classes are supported only within a class")
            return Chars(self.char_class(opts))
        if c == "\\":
            return self.escape(opts)
        if c == ".":
            return Chars(ALL if opts.dotall else ALL - {10})
        if c == "^":
            return Anchor("begin_line" if opts.multiline else "begin")
        if c == "$":
            return Anchor("end_line" if opts.multiline else "end")
        if c in "*+?":
            raise PcreError("nothing to repeat")
        if c == "{" and self._counted_repeat_follows_at(self.pos - 1):
            raise PcreError("nothing to repeat")
        return self.literal(ord(c), opts)
