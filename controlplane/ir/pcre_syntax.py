"""PCRE1's pattern syntax (8.45, the library ingress-nginx's OpenResty links), read into a small tree.

ngx.re.match(value, pattern) with no options: byte mode (no UTF), default C-locale tables (ASCII
classes and case folding), newline LF, no PCRE_EXTRA (an unknown letter escape is the letter). Every
node that consumes a character is a set of bytes, so escapes (\\h, \\v, \\R, \\N, \\C...), POSIX classes
and `\\p` are all resolved here; the matcher only sees sets, sequences, alternatives, repeats, groups,
assertions, backreferences, recursion and conditions. A pattern PCRE refuses raises PcreError with
PCRE's message.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

ALL = frozenset(range(256))
DIGIT = frozenset(range(48, 58))
UPPER, LOWER = frozenset(range(65, 91)), frozenset(range(97, 123))
WORD = DIGIT | UPPER | LOWER | {95}
SPACE = frozenset(b" \t\n\r\f\v")
HSPACE = frozenset({9, 32, 0xA0})
VSPACE = frozenset({10, 11, 12, 13, 0x85})
_POSIX = {
    "alpha": UPPER | LOWER, "lower": LOWER, "upper": UPPER, "alnum": UPPER | LOWER | DIGIT,
    "ascii": frozenset(range(128)), "blank": frozenset({9, 32}), "cntrl": frozenset(range(32)) | {127},
    "digit": DIGIT, "graph": frozenset(range(33, 127)), "print": frozenset(range(32, 127)),
    "punct": frozenset(range(33, 127)) - UPPER - LOWER - DIGIT, "space": SPACE, "word": WORD,
    "xdigit": DIGIT | frozenset(b"abcdefABCDEF"),
}  # fmt: skip
_CLASS_ESCAPES = {"d": DIGIT, "s": SPACE, "w": WORD, "h": HSPACE, "v": VSPACE}
_SIMPLE = {"a": 7, "e": 27, "f": 12, "n": 10, "r": 13, "t": 9}
_REPEAT_MAX = 65535
_OPTION_LETTERS = "imsxJUX"


class PcreError(ValueError):
    """PCRE refuses the pattern (ngx.re.match then returns an error)."""


# -- the tree ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chars:
    """One byte from the set."""

    codes: frozenset[int]


@dataclass(frozen=True)
class Seq:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Alt:
    branches: tuple[Any, ...]


@dataclass(frozen=True)
class Group:
    """A capturing group (index >= 1)."""

    index: int
    body: Any


@dataclass(frozen=True)
class Repeat:
    low: int
    high: int | None  # None: unbounded
    mode: str  # "greedy", "lazy", "possessive"
    body: Any


@dataclass(frozen=True)
class Atomic:
    body: Any


@dataclass(frozen=True)
class Look:
    negative: bool
    body: Any


@dataclass(frozen=True)
class Backref:
    index: int
    fold: bool


@dataclass(frozen=True)
class Recurse:
    """(?R) (index 0) or a subroutine call (?n): atomic in PCRE1, captures restored afterwards."""

    index: int


@dataclass(frozen=True)
class Cond:
    """(?(cond)yes|no): kind "group" (arg: its index), "recursion" (arg: group, -1 for any), "assert"
    (arg: a Look), "define" (never true)."""

    kind: str
    arg: Any
    yes: Any
    no: Any


@dataclass(frozen=True)
class Anchor:
    """begin, end, begin_line, end_line (multiline), start (\\A, \\G), end_string (\\z), end_nl (\\Z),
    boundary, non_boundary."""

    kind: str


@dataclass(frozen=True)
class Verb:
    """(*ACCEPT), (*FAIL), (*COMMIT), (*PRUNE), (*SKIP), (*THEN); (*MARK:x) and callouts are no-ops
    and not kept."""

    name: str


@dataclass(frozen=True)
class Parsed:
    tree: Any
    groups: int
    uses: frozenset[str]  # the constructs only PCRE (not RE2) runs, by name


EMPTY = Seq(())


def _fold(codes: frozenset[int]) -> frozenset[int]:
    return codes | {c ^ 0x20 for c in codes if c in UPPER or c in LOWER}


def _unicode_property(name: str) -> frozenset[int]:
    """\\p{name} in byte mode: the byte read as the code point U+00XX."""
    cats = {c: unicodedata.category(chr(c)) for c in range(256)}
    if name == "Any":
        return ALL
    if name == "L&":
        return frozenset(c for c, k in cats.items() if k in ("Lu", "Ll", "Lt"))
    if name in ("Xan", "Xwd"):
        s = frozenset(c for c, k in cats.items() if k[0] in "LN")
        return s | {95} if name == "Xwd" else s
    if name in ("Xsp", "Xps"):
        return frozenset(c for c, k in cats.items() if k[0] == "Z") | SPACE | {0x85}
    if name == "Xuc":  # what C99's universal character names can spell
        return frozenset({0x24, 0x40, 0x60}) | frozenset(range(0xA0, 256))
    if name == "Latin":
        return frozenset(c for c in range(256) if cats[c][0] == "L" and c not in (0xB5,))
    if name == "Common":
        return ALL - frozenset(c for c in range(256) if cats[c][0] == "L" and c not in (0xB5,))
    if len(name) == 1 and name in "CLMNPSZ":
        return frozenset(c for c, k in cats.items() if k[0] == name or (name == "C" and k == "Cn"))
    if len(name) == 2 and name in _CATEGORIES:
        return frozenset(c for c, k in cats.items() if k == name)
    if name in _SCRIPTS:
        return frozenset()  # no character of that script is a single byte
    raise PcreError("unknown property name after \\P or \\p")


_CATEGORIES = frozenset((
    "Cc", "Cf", "Cn", "Co", "Cs", "Ll", "Lm", "Lo", "Lt", "Lu", "Mc", "Me", "Mn", "Nd", "Nl", "No", "Pc", "Pd",
    "Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So", "Zl", "Zp", "Zs",
))
# PCRE 8.45's script names other than Latin and Common (none has a character below U+0100 but Greek's
# none either: µ is Common).
_SCRIPTS = frozenset((
    "Arabic", "Armenian", "Avestan", "Balinese", "Bamum", "Bassa_Vah", "Batak", "Bengali", "Bopomofo", "Brahmi",
    "Braille", "Buginese", "Buhid", "Canadian_Aboriginal", "Carian", "Caucasian_Albanian", "Chakma", "Cham",
    "Cherokee", "Coptic", "Cuneiform", "Cypriot", "Cyrillic", "Deseret", "Devanagari", "Duployan",
    "Egyptian_Hieroglyphs", "Elbasan", "Ethiopic", "Georgian", "Glagolitic", "Gothic", "Grantha", "Greek",
    "Gujarati", "Gurmukhi", "Han", "Hangul", "Hanunoo", "Hebrew", "Hiragana", "Imperial_Aramaic", "Inherited",
    "Inscriptional_Pahlavi", "Inscriptional_Parthian", "Javanese", "Kaithi", "Kannada", "Katakana", "Kayah_Li",
    "Kharoshthi", "Khmer", "Khojki", "Khudawadi", "Lao", "Lepcha", "Limbu", "Linear_A", "Linear_B", "Lisu",
    "Lycian", "Lydian", "Mahajani", "Malayalam", "Mandaic", "Manichaean", "Meetei_Mayek", "Mende_Kikakui",
    "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Modi", "Mongolian", "Mro", "Myanmar", "Nabataean",
    "New_Tai_Lue", "Nko", "Ogham", "Ol_Chiki", "Old_Italic", "Old_North_Arabian", "Old_Permic", "Old_Persian",
    "Old_South_Arabian", "Old_Turkic", "Oriya", "Osmanya", "Pahawh_Hmong", "Palmyrene", "Pau_Cin_Hau",
    "Phags_Pa", "Phoenician", "Psalter_Pahlavi", "Rejang", "Runic", "Samaritan", "Saurashtra", "Sharada",
    "Shavian", "Siddham", "Sinhala", "Sora_Sompeng", "Sundanese", "Syloti_Nagri", "Syriac", "Tagalog",
    "Tagbanwa", "Tai_Le", "Tai_Tham", "Tai_Viet", "Takri", "Tamil", "Telugu", "Thaana", "Thai", "Tibetan",
    "Tifinagh", "Tirhuta", "Ugaritic", "Vai", "Warang_Citi", "Yi",
))


@dataclass
class _Options:
    caseless: bool = False
    multiline: bool = False
    dotall: bool = False
    ungreedy: bool = False


@dataclass
class _Parser:
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
        if isinstance(atom, Look):  # PCRE: an assertion repeated at most once
            return atom if bounds[0] > 0 else Repeat(0, 1, "greedy", atom)
        low, high = bounds
        return Repeat(low, high, mode, atom)

    def _counted_repeat_follows(self) -> bool:
        saved = self.pos
        try:
            return self.repeat_bounds() is not None
        finally:
            self.pos = saved

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

    def close(self, node: Any) -> Any:
        if self.peek() != ")":
            raise PcreError("missing )")
        self.pos += 1
        return node

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


class Unsupported(ValueError):
    """Valid PCRE that the matcher does not evaluate."""


@dataclass(frozen=True)
class _LiteralRun:
    """\\Q..\\E: literal characters; a quantifier after it repeats the last one only."""

    chars: tuple[Chars, ...]


_NOT_REPEATABLE = Seq(())  # \K: matches empty, and a quantifier after it is "nothing to repeat"


def _wrap(node: Any) -> Any:
    """A group around an anchor or a verb: the group may be repeated where its content may not."""
    return Seq((node,)) if isinstance(node, (Anchor, Verb)) or node is _NOT_REPEATABLE else node


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
    if "(*" in pattern and pattern.startswith("(*") and _start_option(pattern):
        raise Unsupported("a (*...) start-of-pattern option")
    p = _Parser(pattern)
    tree = p.alternation(_Options())
    if p.pos < len(pattern):
        raise PcreError("unmatched parentheses")
    if any(n > p.groups for n in p.refs) or any(n > p.groups for n in p.calls):
        raise PcreError("reference to non-existent subpattern")
    tree = _flatten(tree)
    if p.calls:
        _check_recursion_loops(tree)
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
    """PCRE1 refuses a recursion that its own group reaches without consuming a character."""

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
        elif isinstance(node, Cond):
            walk(node.yes, empty_so_far)
            walk(node.no, empty_so_far)

    walk(tree, {0: True})
