"""A PCRE pattern (the tree of controlplane.ir.pcre_syntax) as a Lua backtracking matcher.

The matcher follows PCRE1's semantics for a match / no match answer on a header value: byte mode,
sets of bytes (every escape, class and property is resolved by the parser), leftmost search from
every start position, greedy, lazy and possessive repeats, groups and backreferences, lookahead,
conditionals, recursion and subroutine calls (atomic, captures restored afterwards, a recursion
into the same group at the same position is PCRE's "recursion loop" error), (*ACCEPT), anchors and
word boundaries.

It counts what PCRE1 counts against its match limit, the calls of its internal match(): one per
start position, per alternative tried, per backtracking point of a repeat, per group iteration,
assertion and recursion entered, afresh at each start position as PCRE does. Past STEP_LIMIT
(PCRE's default, 10,000,000, which ngx.re.match keeps) at one start position it stops with an
error, which the caller treats as ngx.re.match's error. PCRE has no limit over all start positions;
the matcher stops at TOTAL_STEP_LIMIT in all (about 3 s of an Envoy worker's CPU), where nginx would
go on (a value crafted so that many start positions each cost nearly the limit).

The generated Lua builds the matcher once per worker (at script load) from combinators in RUNTIME.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.ir import pcre_syntax as px

STEP_LIMIT = 10_000_000
# PCRE restarts its count at each start position, so one search may cost the limit many times over;
# Meridian stops a search at twice the limit in all (see the module docstring).
TOTAL_STEP_LIMIT = 2 * STEP_LIMIT

RUNTIME = """
local S, N, CAPS, STEPS, BUDGET, MOST = "", 0, {}, 0, 0, 0
local LIMIT = @LIMIT@
local TOTAL_LIMIT = @TOTAL@
local G, RSTACK, ACCEPTK = {}, {}, nil
local byte, sub = string.byte, string.sub
local function step()
  STEPS = STEPS + 1
  if STEPS > BUDGET then
    error(STEPS > LIMIT and "meridian: match limit" or "meridian: total step limit", 0)
  end
end
local WORD = {}
for _, r in ipairs({{48, 57}, {65, 90}, {97, 122}, {95, 95}}) do
  for c = r[1], r[2] do WORD[c] = true end
end
local function isword(i) return i >= 1 and i <= N and WORD[byte(S, i)] == true end
local function chr(t)
  return function(i, k)
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
-- Backtracking verbs ((*COMMIT), (*PRUNE), (*SKIP), (*THEN)) raise a table when backtracked into;
-- the match limit and the recursion loop raise strings (always ngx.re.match's error).
local function isverb(e) return type(e) == "table" end
local USESTHEN = @THEN@
local function alt(list, id)
  if not USESTHEN then
    return function(i, k)
      for _, m in ipairs(list) do
        step()
        if m(i, k) then return true end
      end
      return false
    end
  end
  return function(i, k)
    for _, m in ipairs(list) do
      step()
      local ok, hit = pcall(m, i, k)
      if ok then
        if hit then return true end
      elseif not (isverb(hit) and hit.kind == "then" and hit.alt == id) then
        error(hit, 0)
      end
    end
    return false
  end
end
local function verb(kind, id)
  return function(i, k)
    step()
    if k(i) then return true end
    if kind == "then" and id == 0 then kind = "prune" end
    error({kind = kind, alt = id, pos = i}, 0)
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
local function rep(min, max, greedy, body, extra)
  return function(i, k)
    local function try(n, j)
      step()
      for _ = 1, extra do step() end
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
local function charrep(t, min, max, mode)
  -- a repeated byte set, as PCRE runs it: the bytes are taken inline, and only each position the
  -- rest of the pattern is tried from is a call of match() (none for a possessive repeat)
  return function(i, k)
    local n = 0
    if mode == "lazy" then
      while true do
        if n >= min then
          step()
          if k(i + n) then return true end
        end
        if n >= max or i + n > N or not t[byte(S, i + n)] then return false end
        n = n + 1
      end
    end
    while n < max and i + n <= N and t[byte(S, i + n)] do n = n + 1 end
    if n < min then return false end
    if mode == "possessive" then return k(i + n) end
    while n >= min do
      step()
      if k(i + n) then return true end
      n = n - 1
    end
    return false
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
local function look(m, negative)
  local function run(i)
    step()
    local saved, outer = snapshot(), ACCEPTK
    local inner = function() return true end
    ACCEPTK = inner
    local ok, found = pcall(m, i, inner)
    ACCEPTK = outer
    if not ok then
      -- a verb backtracked into makes a negative assertion true; a positive one lets it through
      if not (negative and isverb(found)) then error(found, 0) end
      found = false
    end
    if negative or not found then restore(saved) end
    return found, saved
  end
  return run
end
local function ahead(m, negative)
  local run = look(m, negative)
  return function(i, k)
    local found, saved = run(i)
    if negative then
      if found then return false end
      return k(i)
    end
    if found and k(i) then return true end
    restore(saved)
    return false
  end
end
local function group(g, m)
  local f = function(i, k)
    step()
    return m(i, function(j)
      local ps, pe = CAPS[2 * g - 1], CAPS[2 * g]
      CAPS[2 * g - 1], CAPS[2 * g] = i, j
      if k(j) then return true end
      CAPS[2 * g - 1], CAPS[2 * g] = ps, pe
      return false
    end)
  end
  G[g] = f
  return f
end
local function recurse(g)
  return function(i, k)
    step()
    for _, frame in ipairs(RSTACK) do
      if frame[1] == g and frame[2] == i then error("meridian: recursion loop") end
    end
    local saved, outer, stop = snapshot(), ACCEPTK, nil
    local inner = function(j) stop = j return true end
    RSTACK[#RSTACK + 1] = {g, i}
    ACCEPTK = inner
    local done, ok = pcall(G[g], i, inner)
    ACCEPTK = outer
    RSTACK[#RSTACK] = nil
    restore(saved)
    if not done then
      if not isverb(ok) then error(ok, 0) end
      ok = false -- a verb backtracked into fails the subroutine call
    end
    if ok then return k(stop) end
    return false
  end
end
local function backref(g, fold)
  return function(i, k)
    local s, e = CAPS[2 * g - 1], CAPS[2 * g]
    if s == nil then return false end
    local piece, here = sub(S, s, e - 1), sub(S, i, i + e - s - 1)
    if fold then piece, here = string.lower(piece), string.lower(here) end
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
local function inrecursion(g, yes, no)
  return function(i, k)
    local top = RSTACK[#RSTACK]
    if top ~= nil and (g < 0 or top[1] == g) then return yes(i, k) end
    return no(i, k)
  end
end
local function condlook(m, negative, yes, no)
  local run = look(m, negative)
  return function(i, k)
    local found = run(i)
    if found ~= negative then return yes(i, k) end
    return no(i, k)
  end
end
local function accept(i, k) return ACCEPTK(i) end
local function at(kind)
  return function(i, k)
    local ok
    if kind == "begin" or kind == "start" then ok = i == 1
    elseif kind == "begin_line" then ok = i == 1 or (i <= N and byte(S, i - 1) == 10)
    elseif kind == "end" or kind == "end_nl" then ok = i == N + 1 or (i == N and byte(S, N) == 10)
    elseif kind == "end_line" then ok = i == N + 1 or byte(S, i) == 10
    elseif kind == "end_string" then ok = i == N + 1
    elseif kind == "boundary" then ok = isword(i - 1) ~= isword(i)
    else ok = isword(i - 1) == isword(i) end
    if ok then return k(i) end
    return false
  end
end
local function empty(i, k) return k(i) end
""".replace("@LIMIT@", str(STEP_LIMIT)).replace("@TOTAL@", str(TOTAL_STEP_LIMIT))


class NotCompiled(ValueError):
    """A construct the matcher does not implement (the pattern is then treated as invalid)."""


def _byte_set(codes: frozenset[int]) -> str:
    return "chr({" + ",".join(f"[{b}]=true" for b in sorted(codes)) + "})"


def _possessive(item: Any, after: Any) -> Any:
    """PCRE's auto-possessification: a repeated byte set followed by a set it shares no byte with (or by
    an end anchor it cannot satisfy) never gives a byte back usefully, so it does not backtrack (the
    same answer, and PCRE's count of steps)."""
    if not (isinstance(item, px.Repeat) and item.mode != "possessive" and isinstance(item.body, px.Chars)):
        return item
    codes = item.body.codes
    disjoint = isinstance(after, px.Chars) and not codes & after.codes
    at_end = isinstance(after, px.Anchor) and (after.kind == "end_string" or
                                               (after.kind in ("end", "end_nl", "end_line") and 10 not in codes))
    return px.Repeat(item.low, item.high, "possessive", item.body) if disjoint or at_end else item


@dataclass
class _Scope:
    """The innermost alternation around a node (its id, for (*THEN)), and the next id."""

    alternation: int = 0
    ids: list[int] = field(default_factory=lambda: [0])
    auto_possess: bool = True

    def new(self) -> _Scope:
        self.ids[0] += 1
        return _Scope(self.ids[0], self.ids, self.auto_possess)


def _group_calls(body: Any) -> int:
    """The calls of match() PCRE makes per iteration of a repeated group beyond the matcher's own
    steps (its loop step, a capturing group's entry, an alternative's): measured against PCRE1."""
    if isinstance(body, px.Group):
        return 0 if isinstance(body.body, px.Alt) else 1
    return 1 if isinstance(body, px.Alt) else 2


def _node(node: Any, sc: _Scope) -> str:
    if isinstance(node, px.Chars):
        return _byte_set(node.codes)
    if isinstance(node, px.Seq):
        parts = [_node(_possessive(i, node.items[n + 1] if n + 1 < len(node.items) else None)
                       if sc.auto_possess else i, sc) for n, i in enumerate(node.items)]  # fmt: skip
        if not parts:
            return "empty"
        return parts[0] if len(parts) == 1 else "seq({" + ", ".join(parts) + "})"
    if isinstance(node, px.Alt):
        inner = sc.new()
        return f"alt({{{', '.join(_node(b, inner) for b in node.branches)}}}, {inner.alternation})"
    if isinstance(node, px.Group):
        return f"group({node.index}, {_node(node.body, sc)})"
    if isinstance(node, px.Repeat) and isinstance(node.body, px.Chars):
        high = "math.huge" if node.high is None else str(node.high)
        return f'charrep({_node(node.body, sc)[4:-1]}, {node.low}, {high}, "{node.mode}")'
    if isinstance(node, px.Repeat):
        high = "math.huge" if node.high is None else str(node.high)
        greedy = "false" if node.mode == "lazy" else "true"
        rep = f"rep({node.low}, {high}, {greedy}, {_node(node.body, sc)}, {_group_calls(node.body)})"
        return f"atomic({rep})" if node.mode == "possessive" else rep
    if isinstance(node, px.Atomic):
        return f"atomic({_node(node.body, sc)})"
    if isinstance(node, px.Look):
        return f"ahead({_node(node.body, sc)}, {'true' if node.negative else 'false'})"
    if isinstance(node, px.Backref):
        return f"backref({node.index}, {'true' if node.fold else 'false'})"
    if isinstance(node, px.Recurse):
        return f"recurse({node.index})"
    if isinstance(node, px.Cond):
        yes, no = _node(node.yes, sc), _node(node.no, sc)
        if node.kind == "group":
            return f"exists({node.arg}, {yes}, {no})"
        if node.kind == "recursion":
            return f"inrecursion({node.arg}, {yes}, {no})"
        if node.kind == "assert":
            look = node.arg
            return f"condlook({_node(look.body, sc)}, {'true' if look.negative else 'false'}, {yes}, {no})"
        return "empty"  # DEFINE: never run in place
    if isinstance(node, px.Anchor):
        return f'at("{node.kind}")'
    if isinstance(node, px.Verb):
        if node.name in ("COMMIT", "PRUNE", "SKIP"):
            return f'verb("{node.name.lower()}", 0)'
        if node.name == "THEN":  # to the next alternative of the innermost alternation, else as PRUNE
            return f'verb("then", {sc.alternation})'
        return "accept" if node.name == "ACCEPT" else "chr({})"
    raise NotCompiled(f"regex construct {node!r}")


def matcher_source(tree: Any) -> str:
    """Lua defining `pattern_search(value) -> true | false | nil, err`: whether the pattern matches
    anywhere in `value` (nil and an error past the match limit or on a recursion loop)."""
    uses_then = "true" if "THEN" in repr(tree) else "false"
    limit, start_opt, scope = STEP_LIMIT, True, _Scope()
    if isinstance(tree, px.Settings):  # (*LIMIT_MATCH=n) lowers the limit; the others turn PCRE's own steps off
        limit = STEP_LIMIT if tree.match_limit is None else min(STEP_LIMIT, tree.match_limit)
        start_opt, scope.auto_possess, tree = tree.start_optimisations, tree.auto_possess, tree.body
    required = sorted(px.required_bytes(tree)) if start_opt else []
    first = sorted(px.first_bytes(tree)) if start_opt else []
    return (
        RUNTIME.replace("@THEN@", uses_then).replace(f"local LIMIT = {STEP_LIMIT}", f"local LIMIT = {limit}")
        + f"local PATTERN = {_node(tree, scope)}\n"
        + f"local REQUIRED = {{{', '.join(str(b) for b in required)}}}\n"
        + f"local FIRST = {{{', '.join(f'[{b}]=true' for b in first)}}}\n"
        + f"local LAST_START = {'1' if px.anchored(tree) else 'nil'}\n"
        + """G[0] = PATTERN
local function found() return true end
function pattern_search(value)
  S, N, RSTACK, ACCEPTK, MOST = value, #value, {}, found, 0
  local total = 0
  local needed = 0 -- as PCRE: a match from here on needs bytes that come no later than this
  for _, b in ipairs(REQUIRED) do
    local at, last = 0, nil
    repeat
      at = string.find(value, string.char(b), at + 1, true)
      if at then last = at end
    until not at
    if not last then return false end
    needed = needed == 0 and last or math.min(needed, last)
  end
  local anyfirst = next(FIRST) == nil
  local start, last = 1, LAST_START or N + 1 -- an anchored pattern: the first position only, as PCRE
  while start <= last do
    if needed > 0 and start > needed then return false end
    if anyfirst or FIRST[byte(S, start)] then
      CAPS, STEPS = {}, 0 -- PCRE counts its match() calls afresh at each start position
      BUDGET = math.min(LIMIT, TOTAL_LIMIT - total)
      local ok, hit = pcall(function() step() return PATTERN(start, found) end)
      total, MOST = total + STEPS, math.max(MOST, STEPS)
      if ok and hit then return true end
      if not ok and not isverb(hit) then return nil, hit end
      if not ok and hit.kind == "commit" then return false end
      if not ok and hit.kind == "skip" and hit.pos > start then start = hit.pos - 1 end
    end
    start = start + 1
  end
  return false
end
"""
    )
