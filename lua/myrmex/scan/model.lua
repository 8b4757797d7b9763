--- The one finding/result model every scanner is normalized into (internal to myrmex.scan).
--- See docs/scan.md for the field list.

local M = {}

--- Whether myrmex.scan takes the C fast path (bindings/scan.c) for Trivy reports and CSV;
--- set through scan.fast_path().
M.fast = true

-- Locals: these run for every field of every finding.
local type, pairs = type, pairs

--- Severities from worst to best; `rank` gives 5 for CRITICAL down to 1 for UNKNOWN.
M.SEVERITIES = { "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN" }
M.rank = { CRITICAL = 5, HIGH = 4, MEDIUM = 3, LOW = 2, UNKNOWN = 1 }

-- Scanner words for severity that are not ours: Grype's Negligible is below Low, Scout's
-- UNSPECIFIED means no score was assigned.
local SEVERITY_ALIASES = {
  CRITICAL = "CRITICAL", HIGH = "HIGH", MEDIUM = "MEDIUM", MODERATE = "MEDIUM", LOW = "LOW",
  NEGLIGIBLE = "LOW", UNKNOWN = "UNKNOWN", UNSPECIFIED = "UNKNOWN", NONE = "UNKNOWN",
  INFO = "UNKNOWN", [""] = "UNKNOWN",
}

--- Our severity for a scanner's word (case-insensitive); anything unrecognized is UNKNOWN.
---@param s any
---@return string
function M.severity(s)
  if type(s) ~= "string" then return "UNKNOWN" end
  return SEVERITY_ALIASES[s:upper()] or "UNKNOWN"
end

-- Reports are input: a field can hold any JSON type. These take a value only when it has
-- the expected type, so a malformed report gives missing fields, never a Lua error.

--- A non-empty string, or nil.
---@param v any
---@return string|nil
function M.str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

--- A number, or nil.
---@param v any
---@return number|nil
function M.num(v)
  if type(v) == "number" then return v end
  return nil
end

local huge = math.huge

--- A CVSS score: a number from 0 to 10, else nil. JSON such as `1e999` decodes to infinity,
--- which no score is (and which no JSON writer can write back).
---@param v any
---@return number|nil
function M.score(v)
  if type(v) == "number" and v >= 0 and v <= 10 then return v end
  return nil
end

--- A finite number, or nil (NaN and infinities are no data).
---@param v any
---@return number|nil
function M.finite(v)
  if type(v) == "number" and v == v and v ~= huge and v ~= -huge then return v end
  return nil
end

--- A table (JSON array or object), or nil.
---@param v any
---@return table|nil
function M.tab(v)
  if type(v) == "table" then return v end
  return nil
end

--- A list of strings: `v` itself when it is one (no copy), the strings in it when it holds
--- other things too, {} when it is no list.
---@param v any
---@return string[]
function M.strings(v)
  if type(v) ~= "table" then return {} end
  for i = 1, #v do
    if type(v[i]) ~= "string" then
      local out = {}
      for j = 1, #v do
        if type(v[j]) == "string" then out[#out + 1] = v[j] end
      end
      return out
    end
  end
  return v
end

-- Ecosystem names, from the words Trivy (Result.Type), Grype (artifact.type) and purl use.
local ECOSYSTEM = {
  jar = "maven", pom = "maven", gradle = "maven", ["java-archive"] = "maven", maven = "maven",
  ["jenkins-plugin"] = "maven", sbt = "maven",
  gomod = "golang", gobinary = "golang", ["go-module"] = "golang", golang = "golang",
  npm = "npm", yarn = "npm", pnpm = "npm", ["node-pkg"] = "npm", bun = "npm",
  pip = "pypi", pipenv = "pypi", poetry = "pypi", ["python-pkg"] = "pypi", python = "pypi",
  uv = "pypi", pypi = "pypi",
  bundler = "gem", gemspec = "gem", gem = "gem",
  cargo = "cargo", ["rust-binary"] = "cargo", ["rust-crate"] = "cargo",
  nuget = "nuget", ["dotnet-core"] = "nuget", ["packages-props"] = "nuget", dotnet = "nuget",
  composer = "composer", ["php-composer"] = "composer", ["composer-vendor"] = "composer",
  conan = "conan", cocoapods = "cocoapods", swift = "swift", pub = "pub", hex = "hex",
  conda = "conda", ["conda-pkg"] = "conda", mix = "hex", ["hackage"] = "hackage",
  binary = "binary",
}
local OS_TYPES = {
  deb = true, rpm = true, apk = true, alpine = true, debian = true, ubuntu = true,
  redhat = true, centos = true, rocky = true, alma = true, amazon = true, oracle = true,
  photon = true, suse = true, ["suse linux enterprise micro"] = true, opensuse = true,
  ["opensuse.leap"] = true, ["opensuse.tumbleweed"] = true, wolfi = true, chainguard = true,
  mariner = true, ["cbl-mariner"] = true, azurelinux = true, bottlerocket = true,
  ["slem"] = true, ["sles"] = true, ["alpm"] = true, ["portage"] = true, ["os-pkgs"] = true,
}

--- "os" for operating-system packages, else the language ecosystem ("maven", "npm", ...),
--- else the word itself.
---@param word string|nil
---@return string
function M.ecosystem(word)
  if word == nil then return "unknown" end
  local w = word:lower()
  if OS_TYPES[w] then return "os" end
  return ECOSYSTEM[w] or w
end

--- Split a package URL into {type=, namespace=, name=, version=}; nil when it is not one.
---@param purl string|nil
---@return table|nil
function M.parse_purl(purl)
  if type(purl) ~= "string" then return nil end
  local typ, rest = purl:match("^pkg:([%w%.%+%-]+)/(.+)$")
  if not typ then return nil end
  rest = rest:gsub("#.*$", ""):gsub("%?.*$", "")
  local path, version = rest:match("^(.-)@([^@/]*)$")
  path = path or rest
  local namespace, name = path:match("^(.*)/([^/]+)$")
  if not namespace then name = path end
  local function unescape(s)
    return s and (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  return { type = typ:lower(), namespace = unescape(namespace), name = unescape(name),
    version = unescape(version) }
end

--- The package name scanners print for a purl: Maven "group:artifact", Go and npm
--- "namespace/name", OS packages just the name.
---@param p table parsed purl
---@return string
function M.purl_package_name(p)
  if p.namespace and p.type == "maven" then return p.namespace .. ":" .. p.name end
  if p.namespace and (p.type == "golang" or p.type == "npm" or p.type == "composer") then
    return p.namespace .. "/" .. p.name
  end
  return p.name
end

-- Order in which sources give "the" CVSS score: NVD is what SARIF security-severity and
-- most dashboards use; a vendor only when NVD has none.
local SOURCE_PREFERENCE = { nvd = 1, ghsa = 2, redhat = 3 }

--- Choose the best score from a per-source table {source={v3_score=, v3_vector=,
--- v2_score=, v2_vector=, v4_score=, v4_vector=}}: the preferred source that has one,
--- CVSS v4/v3 before v2. Returns score, vector, source (all nil when there is none).
---@param by_source table<string, table>
---@param prefer? string a source to try first (the scanner's severity source)
---@return number|nil, string|nil, string|nil
function M.best_cvss(by_source, prefer)
  -- Lexicographic on (modern first, preference, higher score, name), without building
  -- key tables: this runs for every finding.
  local best, b_old, b_pref, b_score
  for source, c in pairs(by_source) do
    local score = c.v3_score or c.v4_score
    local old = score == nil
    score = score or c.v2_score
    if score then
      local pref = (source == prefer and 0) or SOURCE_PREFERENCE[source] or 9
      local better = best == nil
      if not better then
        if old ~= b_old then better = b_old
        elseif pref ~= b_pref then better = pref < b_pref
        elseif score ~= b_score then better = score > b_score
        else better = source < best end
      end
      if better then
        best, b_old, b_pref, b_score = source, old, pref, score
      end
    end
  end
  if not best then return nil, nil, nil end
  local c = by_source[best]
  if c.v3_score then return c.v3_score, c.v3_vector, best end
  if c.v4_score then return c.v4_score, c.v4_vector, best end
  return c.v2_score, c.v2_vector, best
end

--- Severity counts of a findings list, every severity present (0 when none).
---@param findings table[]
---@return table<string, integer>
function M.count(findings)
  local counts = { CRITICAL = 0, HIGH = 0, MEDIUM = 0, LOW = 0, UNKNOWN = 0 }
  for i = 1, #findings do
    local s = findings[i].severity
    counts[s] = counts[s] + 1
  end
  return counts
end

--- Identity of a finding for merge: vulnerability id (or `id` when given, for an alias),
--- package name and installed version (one image can hold two versions of a package).
---@param f table
---@param id? string
---@return string
function M.key(f, id)
  return (id or f.id) .. "\0" .. (f.package or "") .. "\0" .. (f.installed_version or "")
end

--- Identity for diff: id and package, not the version, so a package upgraded to a version
--- that is still affected counts as unchanged rather than fixed plus introduced.
---@param f table
---@param id? string
---@return string
function M.loose_key(f, id)
  return (id or f.id) .. "\0" .. (f.package or "")
end

--- Today's or a given date as "YYYY-MM-DDTHH:MM:SSZ" (UTC).
---@param t? integer
---@return string
function M.timestamp(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

--- A new result table (findings filled by the caller).
---@param t table
---@return table
function M.result(t)
  t.findings = t.findings or {}
  t.scanners = t.scanners or { { name = t.scanner, version = t.scanner_version } }
  t.time = t.time or M.timestamp()
  t.misconfigurations = t.misconfigurations or {}
  t.secrets = t.secrets or {}
  t.licenses = t.licenses or {}
  t.counts = M.count(t.findings)
  return t
end

--- Apply scan options that every back end honours the same way: a severity list and
--- ignore_unfixed. Scanners filter themselves too; this makes reports loaded from files and
--- back ends without such flags (Grype, Scout) agree.
---@param result table
---@param opts table {severity=string|string[]?, ignore_unfixed=boolean?}
function M.filter(result, opts)
  local allowed
  if opts.severity then
    allowed = {}
    local list = opts.severity
    if type(list) == "string" then
      local t = {}
      for s in list:gmatch("[^,%s]+") do t[#t + 1] = s end
      list = t
    end
    for _, s in ipairs(list) do allowed[M.severity(s)] = true end
  end
  if not allowed and not opts.ignore_unfixed then return result end
  local kept = {}
  for _, f in ipairs(result.findings) do
    if (not allowed or allowed[f.severity]) and not (opts.ignore_unfixed and not f.fixed_version) then
      kept[#kept + 1] = f
    end
  end
  result.findings = kept
  result.counts = M.count(kept)
  return result
end

return M
