"""PCRE1's pattern tree (controlplane.ir.pcre_syntax reads patterns into it): byte sets, sequences,
alternatives, repeats, groups, assertions, backreferences, recursion, conditions, verbs; and the byte
sets of PCRE1's escapes, POSIX classes and Unicode properties in byte mode."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Settings:
    """Start-of-pattern settings: (*LIMIT_MATCH=n), (*NO_START_OPT), (*NO_AUTO_POSSESS)."""

    match_limit: int | None
    start_optimisations: bool
    auto_possess: bool
    body: Any


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
# PCRE1's script names (Unicode 7, as libpcre3 8.39 accepts them) other than Latin and Common: none
# has a character below U+0100 (µ is Common), so in byte mode they match no byte.
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


class Unsupported(ValueError):
    """Valid PCRE that the matcher does not evaluate."""


@dataclass(frozen=True)
class _LiteralRun:
    """\\Q..\\E: literal characters; a quantifier after it repeats the last one only."""

    chars: tuple[Chars, ...]


_NOT_REPEATABLE = Seq(())  # \K: matches empty, and a quantifier after it is "nothing to repeat"


def _wrap(node: Any) -> Any:
    """A group around an anchor or a verb: the group may be repeated where its content may not; around
    a \\Q..\\E run: a quantifier after the group repeats the whole run, not its last character."""
    if isinstance(node, _LiteralRun):
        return Seq(node.chars)
    return Seq((node,)) if isinstance(node, (Anchor, Verb)) or node is _NOT_REPEATABLE else node
