"""A PCRE pattern (as classified "pcre" by controlplane.ir.pcre) as a Lua backtracking matcher.

The matcher follows PCRE's semantics for a match / no match answer on a header value: byte mode,
ASCII classes and case folding, leftmost search from every start position, greedy, lazy and
possessive repeats, groups and backreferences, lookahead, conditionals, anchors and word
boundaries. It counts its steps: past STEP_LIMIT it stops with an error, which the caller treats as
ngx.re.match's error (PCRE's own match limit is 10 million steps; Envoy's worker must not spin).

The generated Lua builds the matcher once per worker (at script load) from combinators in RUNTIME.
"""

from __future__ import annotations

from re import _constants as c
from typing import Any

STEP_LIMIT = 200_000

IGNORECASE, MULTILINE, DOTALL = c.SRE_FLAG_IGNORECASE, c.SRE_FLAG_MULTILINE, c.SRE_FLAG_DOTALL

RUNTIME = """
local S, N, CAPS, STEPS = "", 0, {}, 0
local LIMIT = @LIMIT@
local byte, sub, lower = string.byte, string.sub, string.lower
local function step()
  STEPS = STEPS + 1
  if STEPS > LIMIT then error("meridian: match limit") end
end
local function set(str)
  local t = {}
  for k = 1, #str do t[byte(str, k)] = true end
  return t
end
local WORD = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
local function isword(i) return i >= 1 and i <= N and WORD[byte(S, i)] == true end
local function chr(t)
  return function(i, k)
    step()
    if i <= N and t[byte(S, i)] then return k(i + 1) end
    return false
  end
end
local function seq(list)
  local n = #list
  local function at(idx, i, k)
    if idx > n then return k(i) end
    return list[idx](i, function(j) return at(idx + 1, j, k) end)
  end
  return function(i, k) return at(1, i, k) end
end
local function alt(list)
  return function(i, k)
    for _, m in ipairs(list) do
      if m(i, k) then return true end
    end
    return false
  end
end
local function snapshot()
  local t = {}
  for key, v in pairs(CAPS) do t[key] = v end
  return t
end
local function restore(t)
  for key in pairs(CAPS) do CAPS[key] = nil end
  for key, v in pairs(t) do CAPS[key] = v end
end
local function rep(min, max, greedy, body)
  return function(i, k)
    local function try(n, j)
      step()
      if n >= min and not greedy and k(j) then return true end
      if n < max and body(j, function(x)
        if x == j then return k(x) end -- an empty iteration ends the loop (as PCRE)
        return try(n + 1, x)
      end) then return true end
      if n >= min and greedy then return k(j) end
      return false
    end
    return try(0, i)
  end
end
local function atomic(m)
  return function(i, k)
    local saved, stop = snapshot(), nil
    if m(i, function(j) stop = j return true end) and k(stop) then return true end
    restore(saved)
    return false
  end
end
local function ahead(m, negative)
  return function(i, k)
    local saved = snapshot()
    local found = m(i, function() return true end)
    if negative then
      restore(saved)
      if found then return false end
      return k(i)
    end
    if found and k(i) then return true end
    restore(saved)
    return false
  end
end
local function group(g, m)
  return function(i, k)
    return m(i, function(j)
      local ps, pe = CAPS[2 * g - 1], CAPS[2 * g]
      CAPS[2 * g - 1], CAPS[2 * g] = i, j
      if k(j) then return true end
      CAPS[2 * g - 1], CAPS[2 * g] = ps, pe
      return false
    end)
  end
end
local function backref(g, fold)
  return function(i, k)
    step()
    local s, e = CAPS[2 * g - 1], CAPS[2 * g]
    if s == nil then return false end
    local piece, here = sub(S, s, e - 1), sub(S, i, i + e - s - 1)
    if fold then piece, here = lower(piece), lower(here) end
    if piece == here then return k(i + e - s) end
    return false
  end
end
local function exists(g, yes, no)
  return function(i, k)
    if CAPS[2 * g - 1] ~= nil then return yes(i, k) end
    return no(i, k)
  end
end
local function at(kind, multiline)
  return function(i, k)
    local ok
    if kind == "begin" then ok = i == 1 or (multiline and byte(S, i - 1) == 10)
    elseif kind == "begin_string" then ok = i == 1
    elseif kind == "end" then
      ok = i == N + 1 or (i == N and byte(S, N) == 10) or (multiline and byte(S, i) == 10)
    elseif kind == "end_string" then ok = i == N + 1
    elseif kind == "boundary" then ok = isword(i - 1) ~= isword(i)
    else ok = isword(i - 1) == isword(i) end
    if ok then return k(i) end
    return false
  end
end
local function empty(i, k) return k(i) end
""".replace("@LIMIT@", str(STEP_LIMIT))

_CATEGORIES = {
    c.CATEGORY_DIGIT: (set(range(48, 58)), False),
    c.CATEGORY_NOT_DIGIT: (set(range(48, 58)), True),
    c.CATEGORY_SPACE: (set(b" \t\n\r\f\v"), False),
    c.CATEGORY_NOT_SPACE: (set(b" \t\n\r\f\v"), True),
    c.CATEGORY_WORD: (set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), False),
    c.CATEGORY_NOT_WORD: (set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), True),
}
_AT = {
    c.AT_BEGINNING: "begin",
    c.AT_BEGINNING_STRING: "begin_string",
    c.AT_END: "end",
    c.AT_END_STRING: "end_string",
    c.AT_BOUNDARY: "boundary",
    c.AT_NON_BOUNDARY: "non_boundary",
}


class NotCompiled(ValueError):
    """A construct the matcher does not implement (the pattern is then treated as invalid)."""


def _fold(codes: set[int], flags: int) -> set[int]:
    if not flags & IGNORECASE:
        return codes
    out = set(codes)
    for b in codes:
        if 65 <= b <= 90:
            out.add(b + 32)
        elif 97 <= b <= 122:
            out.add(b - 32)
    return out


def _byte_set(codes: set[int]) -> str:
    if any(b > 255 for b in codes):
        raise NotCompiled("a character outside one byte")
    return "chr({" + ",".join(f"[{b}]=true" for b in sorted(codes)) + "})"


def _class(items: list[tuple[Any, Any]], flags: int) -> str:
    negate = False
    codes: set[int] = set()
    for op, arg in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            codes.add(arg)
        elif op is c.RANGE:
            codes.update(range(arg[0], arg[1] + 1))
        elif op is c.CATEGORY:
            members, inverted = _CATEGORIES[arg]
            codes.update(set(range(256)) - members if inverted else members)
        else:
            raise NotCompiled(f"class item {op}")
    codes = _fold(codes, flags)
    if negate:
        codes = set(range(256)) - codes
    return _byte_set(codes)


def _seq(items: Any, flags: int) -> str:
    parts = [_node(op, arg, flags) for op, arg in items]
    if not parts:
        return "empty"
    return parts[0] if len(parts) == 1 else "seq({" + ", ".join(parts) + "})"


def _node(op: Any, arg: Any, flags: int) -> str:
    if op is c.LITERAL:
        return _byte_set(_fold({arg}, flags))
    if op is c.NOT_LITERAL:
        return _byte_set(set(range(256)) - _fold({arg}, flags))
    if op is c.ANY:
        return _byte_set(set(range(256)) if flags & DOTALL else set(range(256)) - {10})
    if op is c.IN:
        return _class(arg, flags)
    if op is c.BRANCH:
        return "alt({" + ", ".join(_seq(b, flags) for b in arg[1]) + "})"
    if op is c.SUBPATTERN:
        group, add, remove, body = arg
        inner = _seq(body, (flags | add) & ~remove)
        return inner if group is None else f"group({group}, {inner})"
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        low, high, body = arg
        high_text = "math.huge" if high == c.MAXREPEAT else str(high)
        rep = f"rep({low}, {high_text}, {'false' if op is c.MIN_REPEAT else 'true'}, {_seq(body, flags)})"
        return f"atomic({rep})" if op is c.POSSESSIVE_REPEAT else rep
    if op is c.ATOMIC_GROUP:
        return f"atomic({_seq(arg, flags)})"
    if op in (c.ASSERT, c.ASSERT_NOT):
        direction, body = arg
        if direction != 1:
            raise NotCompiled("lookbehind")
        return f"ahead({_seq(body, flags)}, {'true' if op is c.ASSERT_NOT else 'false'})"
    if op is c.GROUPREF:
        return f"backref({arg}, {'true' if flags & IGNORECASE else 'false'})"
    if op is c.GROUPREF_EXISTS:
        group, yes, no = arg
        return f"exists({group}, {_seq(yes, flags)}, {_seq(no, flags) if no is not None else 'empty'})"
    if op is c.AT:
        return f'at("{_AT[arg]}", {"true" if flags & MULTILINE else "false"})'
    raise NotCompiled(f"regex construct {op}")


def matcher_source(tree: Any, flags: int) -> str:
    """Lua defining `pattern_search(value) -> true | false | nil, err`: whether the pattern matches
    anywhere in `value` (nil and an error when it runs past the step limit)."""
    return (
        RUNTIME
        + f"local PATTERN = {_seq(tree.data, flags)}\n"
        + """local function found() return true end
function pattern_search(value)
  S, N, STEPS = value, #value, 0
  for start = 1, N + 1 do
    CAPS = {}
    local ok, hit = pcall(PATTERN, start, found)
    if not ok then return nil, hit end
    if hit then return true end
  end
  return false
end
"""
    )
