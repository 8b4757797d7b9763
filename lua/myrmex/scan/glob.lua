--- Path globs as Trivy matches `.trivyignore.yaml` paths: doublestar v4's Match (`/` the
--- separator, case-sensitive, the whole path). `*` is any run of characters but `/`, `**` as a
--- whole segment any number of segments, `?` one character but `/`, `[abc]`, `[a-z]`, `[!a]`
--- (or `[^a]`) one character of (or not of) a class, `{a,b}` either alternative, `\x` the
--- character x. Internal to myrmex.scan; tests/spec/scan_ignores_spec.lua checks it against
--- doublestar's own answers (tests/fixtures/ignores/doublestar-cases.json).
local M = {}

local sub, byte, find = string.sub, string.byte, string.find

--- Whether `p` is a pattern doublestar accepts (ValidatePattern): every `[` closed by a `]`
--- after at least one character, braces balanced, no `\` at the end.
---@param p string
---@return boolean
function M.valid(p)
  local depth, i, n = 0, 1, #p
  while i <= n do
    local c = sub(p, i, i)
    if c == "\\" then
      i = i + 1
      if i > n then return false end
    elseif c == "[" then
      i = i + 1
      if i > n then return false end
      local x = sub(p, i, i)
      if x == "^" or x == "!" then i = i + 1 end
      if i > n or sub(p, i, i) == "]" then return false end
      while true do
        if i > n then return false end
        local y = sub(p, i, i)
        if y == "\\" then i = i + 1 elseif y == "]" then break end
        i = i + 1
      end
    elseif c == "{" then
      depth = depth + 1
    elseif c == "}" then
      if depth == 0 then return false end
      depth = depth - 1
    end
    i = i + 1
  end
  return depth == 0
end

-- The bytes of the UTF-8 character at s[i] (1 for anything that is not a lead byte).
local function char_len(s, i)
  local b = byte(s, i)
  if not b or b < 0xC0 then return 1 end
  return b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2
end

-- `p` with its first brace group expanded: a list of patterns, or nil when it has none.
-- Classes and escapes are skipped, as doublestar reads them.
local function expand_first(p)
  local i, n = 1, #p
  while i <= n do
    local c = sub(p, i, i)
    if c == "\\" then
      i = i + 2
    elseif c == "[" then
      local close = i + 1
      if sub(p, close, close) == "!" or sub(p, close, close) == "^" then close = close + 1 end
      close = close + 1
      while close <= n and sub(p, close, close) ~= "]" do
        if sub(p, close, close) == "\\" then close = close + 1 end
        close = close + 1
      end
      i = close + 1
    elseif c == "{" then
      local depth, k, start, alts = 1, i + 1, i + 1, {}
      while k <= n do
        local x = sub(p, k, k)
        if x == "\\" then
          k = k + 1
        elseif x == "{" then
          depth = depth + 1
        elseif x == "}" then
          depth = depth - 1
          if depth == 0 then break end
        elseif x == "," and depth == 1 then
          alts[#alts + 1] = sub(p, start, k - 1)
          start = k + 1
        end
        k = k + 1
      end
      alts[#alts + 1] = sub(p, start, k - 1)
      local before, after, out = sub(p, 1, i - 1), sub(p, k + 1), {}
      for j, a in ipairs(alts) do out[j] = before .. a .. after end
      return out
    else
      i = i + 1
    end
  end
  return nil
end

-- What is left of a pattern matches the empty rest of a name (doublestar's
-- isZeroLengthPattern, braces already expanded).
local ZERO = { [""] = true, ["*"] = true, ["**"] = true, ["/**"] = true, ["**/"] = true,
  ["/**/"] = true }

-- A character's code point (a byte's value for one that is not UTF-8).
local function codepoint(ch)
  local ok, v = pcall(utf8.codepoint, ch)
  return ok and v or byte(ch)
end

-- One class at p[i] ("[" ...) against the character ch: matched, index after the "]".
local function class(p, i, ch)
  i = i + 1
  local negate = false
  local c = sub(p, i, i)
  if c == "!" or c == "^" then negate, i = true, i + 1 end
  local matched, last = false, nil
  while sub(p, i, i) ~= "]" do
    local len = char_len(p, i)
    local pc = sub(p, i, i + len - 1)
    i = i + len
    if last and pc == "-" and sub(p, i, i) ~= "]" then
      if sub(p, i, i) == "\\" then i = i + 1 end
      len = char_len(p, i)
      local hi = sub(p, i, i + len - 1)
      i = i + len
      if codepoint(last) <= codepoint(ch) and codepoint(ch) <= codepoint(hi) then
        matched = true
      end
      last = nil
    else
      if pc == "\\" then
        len = char_len(p, i)
        pc = sub(p, i, i + len - 1)
        i = i + len
      end
      if pc == ch then matched = true end
      last = pc
    end
  end
  return matched ~= negate, i + 1
end

-- p[pi..] against s[si..], `seg` true at the start of a pattern segment.
local function match(p, pi, s, si, seg)
  local np, ns = #p, #s
  while true do
    if si > ns then return ZERO[sub(p, pi)] == true end
    if pi > np then return false end
    local c = sub(p, pi, pi)
    if c == "*" then
      if sub(p, pi + 1, pi + 1) == "*" and seg and (pi + 2 > np or sub(p, pi + 2, pi + 2) == "/") then
        if pi + 2 > np then return true end
        -- "**/": zero or more whole segments of the name
        local k = si
        while true do
          if match(p, pi + 3, s, k, true) then return true end
          local slash = find(s, "/", k, true)
          if not slash then return false end
          k = slash + 1
        end
      end
      local rest = pi + 1
      while sub(p, rest, rest) == "*" do rest = rest + 1 end
      -- a run of stars not a whole segment is one star: any run of characters but "/"
      local k = si
      while true do
        if match(p, rest, s, k, false) then return true end
        if k > ns or sub(s, k, k) == "/" then return false end
        k = k + char_len(s, k)
      end
    elseif c == "?" then
      if sub(s, si, si) == "/" then return false end
      pi, si, seg = pi + 1, si + char_len(s, si), false
    elseif c == "[" then
      local len = char_len(s, si)
      local ok, after = class(p, pi, sub(s, si, si + len - 1))
      if not ok then return false end
      pi, si, seg = after, si + len, false
    else
      if c == "\\" then pi = pi + 1 end
      local len = char_len(p, pi)
      local pc = sub(p, pi, pi + len - 1)
      if sub(s, si, si + len - 1) ~= pc then return false end
      pi, si, seg = pi + len, si + len, pc == "/"
    end
  end
end

--- Whether the path `s` matches the (valid) pattern `p`.
---@param p string
---@param s string
---@return boolean
function M.match(p, s)
  local alts = expand_first(p)
  if alts then
    for _, a in ipairs(alts) do
      if M.match(a, s) then return true end
    end
    return false
  end
  return match(p, 1, s, 1, true)
end

return M
