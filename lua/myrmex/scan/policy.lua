--- Policies: which findings count, whether a result passes, its compliance level, and the
--- compliance report with recommendations. Internal to myrmex.scan; see docs/scan.md.
local model = require("myrmex.scan.model")
local glob = require("myrmex.scan.glob")

local rank = model.rank

local M = {}

-- The checked policy each result was last judged with, so merge can judge the merged
-- result the same way. Weak keys: results come and go.
local used_policy = setmetatable({}, { __mode = "k" })

--- The policy a result was last judged with (checked form), or nil.
---@param result table
---@return table|nil
function M.used(result)
  return used_policy[result]
end

--- Levels from best to worst.
M.LEVELS = { "compliant", "warning", "non_compliant", "critical" }

M.DEFAULTS = {
  fail_on = "HIGH",
  levels = { critical = "CRITICAL", non_compliant = "HIGH", warning = "MEDIUM" },
}

local POLICY_KEYS = { fail_on = true, max = true, ignore = true, only_fixed = true, levels = true,
  ignore_files = true }
local RULE_KEYS = { id = true, package = true, purl = true, severity = true, reason = true,
  expires = true, path = true, path_glob = true, product = true, justification = true,
  source = true, exact = true }
local LEVEL_KEYS = { critical = true, non_compliant = true, warning = true }

local function check_severity(s, where)
  if type(s) ~= "string" or not rank[s:upper()] then
    error("scan.policy: " .. where .. ": unknown severity " .. tostring(s), 4)
  end
  return s:upper()
end

local DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- A calendar date that exists ("2026-02-29" does not, "2028-02-29" does).
local function real_date(y, m, d)
  if m < 1 or m > 12 or d < 1 then return false end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  return d <= (m == 2 and leap and 29 or DAYS[m])
end

--- "2025-01-31" means until the end of that day; a full RFC 3339 UTC time is exact. Returns
--- the time as "YYYY-MM-DDTHH:MM:SSZ", or nil and why not.
---@param s string
---@return string|nil, string|nil
function M.parse_expiry(s)
  local y, m, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  local hh, mm, ss = "23", "59", "59"
  if not y then
    y, m, d, hh, mm, ss = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  end
  if not y then return nil, "expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ" end
  if not real_date(tonumber(y), tonumber(m), tonumber(d)) then return nil, "no such date" end
  if tonumber(hh) > 23 or tonumber(mm) > 59 or tonumber(ss) > 59 then return nil, "no such time" end
  return string.format("%s-%s-%sT%s:%s:%sZ", y, m, d, hh, mm, ss)
end

local function expiry(s, i)
  if type(s) ~= "string" then
    error("scan.policy: ignore[" .. i .. "].expires must be a date string", 4)
  end
  local t, why = M.parse_expiry(s)
  if not t then error("scan.policy: ignore[" .. i .. "].expires: " .. why .. ", got " .. s, 4) end
  return t
end

--- Validate a policy table and fill in defaults. Misuse (unknown keys, bad severities,
--- ignore rules without a reason or a matcher) raises a string naming the field.
---@param p table|nil
---@return table
function M.check(p)
  p = p or {}
  if type(p) ~= "table" then error("scan.policy: table expected, got " .. type(p), 3) end
  if p._checked then return p end
  for k in pairs(p) do
    if not POLICY_KEYS[k] then error("scan.policy: unknown key '" .. tostring(k) .. "'", 3) end
  end
  local out = { _checked = true, only_fixed = p.only_fixed == true, max = {}, ignore = {},
    levels = {} }
  out.fail_on = check_severity(p.fail_on or M.DEFAULTS.fail_on, "fail_on")
  for k, v in pairs(p.levels or {}) do
    if not LEVEL_KEYS[k] then error("scan.policy: levels: unknown level '" .. tostring(k) .. "'", 3) end
    out.levels[k] = v and check_severity(v, "levels." .. k) or false
  end
  for k, v in pairs(M.DEFAULTS.levels) do
    if out.levels[k] == nil then out.levels[k] = v end
  end
  for sev, n in pairs(p.max or {}) do
    local s = check_severity(sev, "max")
    if math.type(n) ~= "integer" or n < 0 then
      error("scan.policy: max." .. s .. " must be a non-negative integer", 3)
    end
    out.max[s] = n
  end
  if p.ignore ~= nil and type(p.ignore) ~= "table" then error("scan.policy: ignore must be a list", 3) end
  local rules = {}
  for i, r in ipairs(p.ignore or {}) do rules[i] = r end
  local files = p.ignore_files
  if type(files) == "string" then files = { files } end
  if files ~= nil and type(files) ~= "table" then
    error("scan.policy: ignore_files must be a path or a list of paths", 3)
  end
  for i, path in ipairs(files or {}) do
    if type(path) ~= "string" then error("scan.policy: ignore_files[" .. i .. "] must be a path", 3) end
    -- .trivyignore, .trivyignore.yaml and OpenVEX documents, read as the policy is checked.
    for _, r in ipairs(require("myrmex.scan.ignores").read(path)) do rules[#rules + 1] = r end
  end
  for i, r in ipairs(rules) do
    if type(r) ~= "table" then error("scan.policy: ignore[" .. i .. "] must be a table", 3) end
    for k in pairs(r) do
      if not RULE_KEYS[k] then
        error("scan.policy: ignore[" .. i .. "]: unknown key '" .. tostring(k) .. "'", 3)
      end
    end
    if not (r.id or r.package or r.purl or r.severity or r.path or r.path_glob) then
      error("scan.policy: ignore[" .. i .. "] needs id, package, purl, path, path_glob or severity", 3)
    end
    for _, k in ipairs({ "id", "package", "purl", "path", "path_glob", "product", "justification",
      "source" }) do
      if r[k] ~= nil and type(r[k]) ~= "string" then
        error("scan.policy: ignore[" .. i .. "]." .. k .. " must be a string", 3)
      end
    end
    if r.path_glob and not glob.valid(r.path_glob) then
      error("scan.policy: ignore[" .. i .. "].path_glob: invalid pattern '" .. r.path_glob .. "'", 3)
    end
    if r.exact ~= nil and type(r.exact) ~= "boolean" then
      error("scan.policy: ignore[" .. i .. "].exact must be a boolean", 3)
    end
    if type(r.reason) ~= "string" or r.reason == "" then
      error("scan.policy: ignore[" .. i .. "] needs a reason", 3)
    end
    out.ignore[i] = {
      id = r.id, package = r.package, purl = r.purl, path = r.path, path_glob = r.path_glob,
      product = r.product, severity = r.severity and check_severity(r.severity, "ignore[" .. i .. "].severity"),
      reason = r.reason, expires = r.expires, until_time = r.expires and expiry(r.expires, i),
      justification = r.justification, source = r.source, exact = r.exact or nil, index = i,
    }
  end
  return out
end

-- "CVE-2023-*" matches by prefix; anything else exactly.
local function like(pattern, value)
  if value == nil then return false end
  if pattern:sub(-1) == "*" then return value:sub(1, #pattern - 1) == pattern:sub(1, -2) end
  return pattern == value
end

-- A purl without qualifiers and subpath; without its version too when `loose`.
local function purl_core(p, loose)
  p = p:gsub("#.*$", ""):gsub("%?.*$", "")
  if loose then p = p:gsub("@[^@/]*$", "") end
  return p
end

-- "pkg:maven/g/a@1.0" matches a finding's "pkg:maven/g/a@1.0?type=jar" (qualifiers are the
-- scanner's detail), "pkg:maven/g/a" any version of it, "pkg:maven/g/*" by prefix.
local function purl_like(pattern, purl)
  if purl == nil then return false end
  if pattern:sub(-1) == "*" then return like(pattern, purl) end
  if pattern == purl then return true end
  local loose = not purl_core(pattern):find("@[^@/]*$")
  return purl_core(pattern, loose) == purl_core(purl, loose)
end

-- A finding without a purl (Trivy gives none for some jars) is matched by the name and
-- version scanners print for the purl: "pkg:maven/g/a@1.0" is package "g:a" at 1.0.
local function purl_names(pattern, f)
  if pattern:find("*", 1, true) then return false end
  local p = model.parse_purl(pattern)
  if not p or model.purl_package_name(p) ~= f.package then return false end
  return p.version == nil or p.version == f.installed_version
end

-- A VEX product names the image: a plain reference (with or without its tag), or a
-- pkg:oci/ or pkg:docker/ purl whose name is the repository's last part and whose version,
-- when given, is the image's digest (or tag).
local function product_matches(product, result)
  local image = result.image or ""
  local repo = image:gsub("@.*$", "")
  local tag = repo:match(":([%w_.-]+)$")
  if tag then repo = repo:sub(1, -#tag - 2) end
  if not product:find("^pkg:") then
    return product == image or product == repo or
      (result.digest ~= nil and product == repo .. "@" .. result.digest)
  end
  local typ, rest = product:match("^pkg:(%a+)/(.*)$")
  if typ ~= "oci" and typ ~= "docker" then return false end
  rest = rest:gsub("#.*$", ""):gsub("%?.*$", "")
  local name, version = rest:match("^(.-)@(.*)$")
  name = (name or rest):gsub("%%40", "@"):gsub("%%3[Aa]", ":")
  if version then version = version:gsub("%%3[Aa]", ":") end
  local last = repo:match("([^/]+)$") or repo
  local name_last = name:match("([^/]+)$") or name
  if name_last ~= last then return false end
  if not version then return true end
  return version == result.digest or version == tag
end

local function rule_matches(r, f, result)
  if r.exact then
    if r.id and r.id ~= f.id then return false end -- as Trivy reads its ignore files
  elseif r.id and not like(r.id, f.id) then
    local alias = false
    for _, a in ipairs(f.aliases or {}) do
      if like(r.id, a) then alias = true; break end
    end
    if not alias then return false end
  end
  if r.package and not like(r.package, f.package) then return false end
  if r.purl and not purl_like(r.purl, f.purl) and not (f.purl == nil and purl_names(r.purl, f)) then
    return false
  end
  if r.path and not (like(r.path, f.path) or like(r.path, f.target)) then return false end
  -- as Trivy: the target, then the package path, an absent one being ""
  if r.path_glob and not (glob.match(r.path_glob, f.target or "") or
    glob.match(r.path_glob, f.path or "")) then
    return false
  end
  if r.severity and r.severity ~= f.severity then return false end
  if r.product and not product_matches(r.product, result) then return false end
  return true
end

local function public_rule(r)
  return { id = r.id, package = r.package, purl = r.purl, path = r.path, path_glob = r.path_glob,
    product = r.product, severity = r.severity, reason = r.reason, expires = r.expires,
    source = r.source, exact = r.exact }
end

--- Judge a result: sets result.compliance, result.passed, result.ignored,
--- result.expired_ignores, result.violations, result.effective_counts. Returns the result
--- and the list of findings that count.
---@param result table
---@param policy table|nil
---@param now? string RFC 3339 UTC time to judge expiry against (default: now)
---@return table result, table[] counted
function M.evaluate(result, policy, now)
  local p = M.check(policy)
  now = now or model.timestamp()
  local active, expired = {}, {}
  for _, r in ipairs(p.ignore) do
    if r.until_time and r.until_time < now then
      expired[#expired + 1] = public_rule(r)
    else
      active[#active + 1] = r
    end
  end
  local counted, ignored = {}, {}
  local findings, nactive, only_fixed = result.findings, #active, p.only_fixed
  for i = 1, #findings do
    local f = findings[i]
    local rule
    for k = 1, nactive do
      if rule_matches(active[k], f, result) then rule = active[k]; break end
    end
    if rule then
      ignored[#ignored + 1] = { id = f.id, package = f.package, severity = f.severity,
        reason = rule.reason, rule = rule.index, justification = rule.justification,
        source = rule.source }
    elseif not (only_fixed and not f.fixed_version) then
      counted[#counted + 1] = f
    end
  end
  local counts = model.count(counted)
  local violations = {}
  local fail_rank = rank[p.fail_on]
  for _, s in ipairs(model.SEVERITIES) do
    if rank[s] >= fail_rank and counts[s] > 0 then
      violations[#violations + 1] = string.format("%d %s finding%s (fail_on %s)", counts[s], s,
        counts[s] == 1 and "" or "s", p.fail_on)
    end
  end
  local over_max = false
  for _, s in ipairs(model.SEVERITIES) do
    local max = p.max[s]
    if max and counts[s] > max then
      over_max = true
      violations[#violations + 1] = string.format("%d %s findings, at most %d allowed", counts[s], s, max)
    end
  end
  local level = "compliant"
  local lv = p.levels
  local function any_at(sev) return sev and M.any_at_or_above(counts, sev) end
  if any_at(lv.critical) then level = "critical"
  elseif any_at(lv.non_compliant) then level = "non_compliant"
  elseif any_at(lv.warning) then level = "warning" end
  if over_max and (level == "compliant" or level == "warning") then level = "non_compliant" end
  result.compliance = level
  result.passed = #violations == 0
  result.violations = violations
  result.ignored = ignored
  result.expired_ignores = expired
  result.effective_counts = counts
  used_policy[result] = p
  result.policy = { fail_on = p.fail_on, only_fixed = p.only_fixed, levels = lv, max = p.max }
  return result, counted
end

--- True when counts has any finding at or above severity `sev`.
---@param counts table<string, integer>
---@param sev string
---@return boolean
function M.any_at_or_above(counts, sev)
  local r = rank[sev]
  for s, n in pairs(counts) do
    if n > 0 and rank[s] >= r then return true end
  end
  return false
end

-- Numeric-aware version comparison, good enough to order fix candidates of one package
-- ("1.1.1d-r2" > "1.1.1d-r0", "2.13.4.1" > "2.12.7.1"). Returns -1, 0, 1. Walks both
-- strings in place: recommendations call it for every finding.
local find, sub = string.find, string.sub
local function vercmp(a, b)
  if a == b then return 0 end
  local i, j = 1, 1
  while true do
    local s1, e1 = find(a, "%d+", i)
    local s2, e2 = find(b, "%d+", j)
    if not s1 and not s2 then break end
    local x = s1 and tonumber(sub(a, s1, e1)) or 0
    local y = s2 and tonumber(sub(b, s2, e2)) or 0
    if x ~= y then return x < y and -1 or 1 end
    i, j = (e1 or #a) + 1, (e2 or #b) + 1
  end
  return a < b and -1 or 1
end
M.vercmp = vercmp

-- Of "2.12.7.1, 2.13.4.1", the smallest fix at or above the installed version (the one on
-- the installed release line), else the highest.
local function pick_fix(fixed, installed)
  if not find(fixed, ",", 1, true) then return fixed end
  local best, highest
  for v in fixed:gmatch("[^,%s]+") do
    if not highest or vercmp(v, highest) > 0 then highest = v end
    if installed and vercmp(v, installed) >= 0 and (not best or vercmp(v, best) < 0) then best = v end
  end
  return best or highest
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function recommendations(result, counted)
  local upgrades, nofix, os_fixable, os_pkgs = {}, {}, 0, {}
  for _, f in ipairs(counted) do
    local key = (f.package or "?") .. "\0" .. (f.installed_version or "")
    if f.fixed_version then
      local u = upgrades[key]
      if not u then
        u = { action = "upgrade", package = f.package, type = f.type,
          from = f.installed_version, ids = {}, severity = f.severity }
        upgrades[key] = u
      end
      u.ids[#u.ids + 1] = f.id
      local to = pick_fix(f.fixed_version, f.installed_version)
      if to and (not u.to or vercmp(to, u.to) > 0) then u.to = to end
      if rank[f.severity] > rank[u.severity] then u.severity = f.severity end
      if f.type == "os" then
        os_fixable = os_fixable + 1
        os_pkgs[f.package or "?"] = true
      end
    else
      local n = nofix[f.package or "?"]
      if not n then
        n = { action = "no_fix", package = f.package, ids = {}, severity = f.severity }
        nofix[f.package or "?"] = n
      end
      n.ids[#n.ids + 1] = f.id
      if rank[f.severity] > rank[n.severity] then n.severity = f.severity end
    end
  end
  local out = {}
  local ups = {}
  for _, k in ipairs(sorted_keys(upgrades)) do ups[#ups + 1] = upgrades[k] end
  table.sort(ups, function(a, b)
    if a.severity ~= b.severity then return rank[a.severity] > rank[b.severity] end
    return (a.package or "") < (b.package or "")
  end)
  for _, u in ipairs(ups) do
    table.sort(u.ids)
    u.text = string.format("upgrade %s from %s to %s (%s: %s)", u.package or "?",
      u.from or "?", u.to or "?", u.severity, table.concat(u.ids, ", "))
    out[#out + 1] = u
  end
  local os_info = result.os
  if os_info and os_info.eosl then
    out[#out + 1] = { action = "rebuild", reason = "eosl", text = string.format(
      "rebuild on a supported base image: %s %s is end-of-life and gets no more fixes",
      os_info.family or "the OS", os_info.name or "") }
  elseif os_fixable > 0 then
    local n = #sorted_keys(os_pkgs)
    out[#out + 1] = { action = "rebuild", reason = "os_fixes", text = string.format(
      "rebuild on a newer base image (or update OS packages): %d finding%s in %d OS package%s have fixes",
      os_fixable, os_fixable == 1 and "" or "s", n, n == 1 and "" or "s") }
  end
  for _, k in ipairs(sorted_keys(nofix)) do
    local n = nofix[k]
    table.sort(n.ids)
    n.text = string.format("no fix yet for %s (%s: %s): mitigate, accept with an ignore rule, or replace the package",
      n.package or "?", n.severity, table.concat(n.ids, ", "))
    out[#out + 1] = n
  end
  return out
end

-- The findings that decided the level: those at the worst counted severity, when that is
-- MEDIUM or worse (below, the level is compliant whatever they are).
local function deciding(counted)
  local worst = 0
  for _, f in ipairs(counted) do
    if rank[f.severity] > worst then worst = rank[f.severity] end
  end
  local out = {}
  for _, f in ipairs(counted) do
    if rank[f.severity] == worst and worst >= rank.MEDIUM then out[#out + 1] = f end
  end
  return out
end

--- Build the compliance report of a result under a policy.
---@param result table
---@param policy table|nil
---@param now? string
---@return table
function M.report(result, policy, now)
  local _, counted = M.evaluate(result, policy, now)
  local c = result.effective_counts
  local parts = {}
  for _, s in ipairs(model.SEVERITIES) do
    if c[s] > 0 then parts[#parts + 1] = c[s] .. " " .. s end
  end
  local summary = string.format("%s: %s (%s) by %s; %s", result.image or "(unnamed)",
    result.compliance, #parts > 0 and table.concat(parts, ", ") or "no findings",
    result.scanner or "?", result.passed and "passes the policy" or
    ("fails the policy: " .. table.concat(result.violations, "; ")))
  if #result.ignored > 0 then summary = summary .. string.format("; %d ignored", #result.ignored) end
  if #result.expired_ignores > 0 then
    summary = summary .. string.format("; %d expired ignore rule%s no longer applied",
      #result.expired_ignores, #result.expired_ignores == 1 and "" or "s")
  end
  -- Each ignored finding with why, in the words of whoever decided it (a VEX justification,
  -- a .trivyignore statement, a policy's reason) and where that was written.
  local ignored = {}
  for i, g in ipairs(result.ignored) do
    local e = {}
    for k, v in pairs(g) do e[k] = v end
    e.text = string.format("%s in %s (%s) ignored: %s%s", g.id, g.package or "?", g.severity,
      g.reason, g.source and (" [" .. g.source .. "]") or "")
    ignored[i] = e
  end
  return {
    image = result.image, digest = result.digest, scanner = result.scanner,
    level = result.compliance, passed = result.passed, summary = summary,
    counts = c, total = #counted, violations = result.violations,
    deciding = deciding(counted),
    recommendations = recommendations(result, counted),
    ignored = ignored, expired_ignores = result.expired_ignores,
  }
end

return M
