"""Real PCRE1 (Debian's libpcre3, 8.39) through ctypes: the oracle for canary-by-header-pattern.

ingress-nginx's OpenResty links Alpine's PCRE1 8.45 (images/nginx/rootfs/build.sh: pcre-dev), and
balancer.lua calls `ngx.re.match(value, pattern)` with no options: pcre_compile without flags, then
pcre_exec with the default 10,000,000 match limit. `calls` finds how many calls of PCRE's internal
match() a search needs (the least match limit that still answers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Literal

Outcome = Literal["match", "nomatch", "error", "invalid"]
_EXTRA_MATCH_LIMIT = 0x0002
_NOMATCH, _LIMIT = -1, -8


class _Extra(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_ulong), ("study_data", ctypes.c_void_p), ("match_limit", ctypes.c_ulong),
                ("callout_data", ctypes.c_void_p), ("tables", ctypes.c_void_p),
                ("match_limit_recursion", ctypes.c_ulong), ("mark", ctypes.c_void_p),
                ("executable_jit", ctypes.c_void_p)]  # fmt: skip


@cache
def library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("pcre") or "libpcre.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.pcre_compile.restype = ctypes.c_void_p
    lib.pcre_compile.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                 ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]  # fmt: skip
    lib.pcre_exec.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]  # fmt: skip
    return lib


def compile_error(pattern: str) -> str | None:
    """PCRE's compile error message, or None when it accepts the pattern."""
    lib = library()
    assert lib is not None
    err, offset = ctypes.c_char_p(), ctypes.c_int()
    code = lib.pcre_compile(pattern.encode("latin-1"), 0, ctypes.byref(err), ctypes.byref(offset), None)
    if not code:
        return (err.value or b"?").decode()
    return None


def _exec(pattern: str, value: bytes, limit: int) -> int:
    lib = library()
    assert lib is not None
    err, offset = ctypes.c_char_p(), ctypes.c_int()
    code = lib.pcre_compile(pattern.encode("latin-1"), 0, ctypes.byref(err), ctypes.byref(offset), None)
    assert code, err.value
    extra = _Extra(flags=_EXTRA_MATCH_LIMIT, match_limit=limit)
    ovector = (ctypes.c_int * 300)()
    return int(lib.pcre_exec(code, ctypes.byref(extra), value, len(value), 0, 0, ovector, 300))


def search(pattern: str, value: bytes, limit: int = 10_000_000) -> Outcome:
    """What `ngx.re.match(value, pattern)` answers: a match, none, or an error (match limit...)."""
    if compile_error(pattern) is not None:
        return "invalid"
    rc = _exec(pattern, value, limit)
    return "nomatch" if rc == _NOMATCH else "error" if rc < 0 else "match"


def calls(pattern: str, value: bytes, top: int = 10_000_000) -> int | None:
    """The calls of PCRE's match() the search makes (None: more than `top`)."""
    if _exec(pattern, value, top) == _LIMIT:
        return None
    low, high = 0, top  # the least limit that does not stop it
    while low < high:
        mid = (low + high) // 2
        if _exec(pattern, value, mid) == _LIMIT:
            low = mid + 1
        else:
            high = mid
    return low
