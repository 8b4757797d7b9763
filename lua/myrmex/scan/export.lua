--- Writers for scan results: JSON (the normalized model), CSV (RFC 4180) and SARIF 2.1.0
--- for GitHub code scanning. Internal to myrmex.scan; see docs/scan.md.
local json = require("myrmex.json")
local model = require("myrmex.scan.model")
local core = require("myrmex.core.scan")

local M = {}

local concat, format, quote = table.concat, string.format, json.quote
local type, getmetatable = type, getmetatable

-- ---- JSON ----

local LIST_FIELDS = { "aliases", "references", "cwe", "locations" }

local function finding_for_json(f)
  local out = {}
  for k, v in pairs(f) do out[k] = v end
  for _, k in ipairs(LIST_FIELDS) do
    if out[k] then out[k] = json.array(out[k]) end
  end
  out.cvss = json.object(out.cvss or {})
  return out
end

--- The normalized result as JSON text (sorted keys, indented), given to `emit`.
---@param result table
---@param _ table|nil options (none)
---@param emit fun(...:string)
function M.json(result, _, emit)
  local copy = {}
  for k, v in pairs(result) do copy[k] = v end
  local findings = {}
  for i, f in ipairs(result.findings) do findings[i] = finding_for_json(f) end
  copy.findings = json.array(findings)
  copy.misconfigurations = json.array(result.misconfigurations or {})
  copy.secrets = json.array(result.secrets or {})
  copy.licenses = json.array(result.licenses or {})
  for _, k in ipairs({ "ignored", "expired_ignores", "violations", "scanners" }) do
    if copy[k] then copy[k] = json.array(copy[k]) end
  end
  emit(json.encode(copy, { sort_keys = true, indent = true }))
end

-- ---- CSV ----

--- The default CSV columns, in order.
M.CSV_COLUMNS = { "id", "aliases", "severity", "cvss_score", "cvss_vector", "package", "type",
  "installed_version", "fixed_version", "fix_state", "purl", "title", "target", "path", "layer",
  "scanner", "references", "description", "primary_url" }

local function joined(list)
  return list and concat(list, " ") or ""
end

-- How each column is taken from a finding (lists joined by spaces, the score with one decimal).
local CSV_VALUE = {
  aliases = function(f) return joined(f.aliases) end,
  cvss_score = function(f) return f.cvss_score and format("%.1f", f.cvss_score) or "" end,
  scanner = function(f) return f.found_by and concat(f.found_by, " ") or f.scanner or "" end,
  references = function(f) return joined(f.references) end,
  cwe = function(f) return joined(f.cwe) end,
  locations = function(f) return joined(f.locations) end,
}
for _, k in ipairs({ "id", "severity", "cvss_vector", "cvss_source", "package", "type", "pkg_type",
  "installed_version", "fixed_version", "fix_state", "purl", "title", "target", "path", "layer",
  "description", "primary_url", "scanner_severity", "published", "modified" }) do
  CSV_VALUE[k] = function(f)
    local v = f[k]
    return v ~= nil and tostring(v) or ""
  end
end
M.CSV_VALUE = CSV_VALUE
-- The getters as shipped: a column whose getter is still one of these is written by the C
-- fast path (bindings/scan.c), which implements exactly them.
local BUILTIN_VALUE = {}
for k, v in pairs(CSV_VALUE) do BUILTIN_VALUE[k] = v end

local find, byte = string.find, string.byte

-- RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. Four plain
-- finds (memchr-speed) beat one character-class pattern by 10x on long fields.
local function csv_field(v)
  if v == nil then return "" end
  v = tostring(v)
  -- gsub walks a string byte by byte; a plain find first spares it most long fields
  if find(v, '"', 1, true) then return '"' .. v:gsub('"', '""') .. '"' end
  if find(v, ",", 1, true) or find(v, "\n", 1, true) or find(v, "\r", 1, true) then
    return '"' .. v .. '"'
  end
  return v
end
M.csv_field = csv_field

-- A cell a spreadsheet would run as a formula: it starts with = + - @, a tab or a CR
-- (OWASP, "CSV Injection"). Titles and descriptions come from vulnerability databases,
-- which anyone can write to.
local FORMULA = { [61] = true, [43] = true, [45] = true, [64] = true, [9] = true, [13] = true }

-- OWASP's advice: prefix such a cell with a single quote (the spreadsheet then shows it as
-- text) and quote the cell, so that a separator in it cannot start another one.
local function neutral_field(v)
  if FORMULA[byte(v, 1)] then
    return '"\'' .. (find(v, '"', 1, true) and v:gsub('"', '""') or v) .. '"'
  end
  return csv_field(v)
end
M.csv_neutral_field = neutral_field

-- Findings per C call of the CSV fast path.
local CSV_CHUNK = 1024

--- Findings as CSV, given to `emit` row by row: a header row, then one row per finding, CRLF
--- line ends. Options: `columns` (names from M.CSV_VALUE), `csv_raw` (no formula
--- neutralising), `bom` (a UTF-8 byte-order mark first, for spreadsheets).
---@param result table
---@param opts table|nil
---@param emit fun(...:string)
function M.csv(result, opts, emit)
  opts = opts or {}
  local columns = opts.columns or M.CSV_COLUMNS
  if type(columns) ~= "table" or #columns == 0 then
    error("scan.export: columns must be a non-empty list of column names", 3)
  end
  local getters = {}
  for i, c in ipairs(columns) do
    getters[i] = CSV_VALUE[c]
    if not getters[i] then
      local names = {}
      for k in pairs(CSV_VALUE) do names[#names + 1] = k end
      table.sort(names)
      error("scan.export: columns[" .. i .. "]: unknown column '" .. tostring(c) .. "' (" ..
        concat(names, ", ") .. ")", 3)
    end
  end
  local raw = opts.csv_raw
  local field = raw and csv_field or neutral_field
  if opts.bom then emit("\239\187\191") end
  local header = {}
  for i, c in ipairs(columns) do header[i] = field(c) end
  emit(concat(header, ","), "\r\n")
  local findings, n = result.findings, #getters
  local row = {}
  -- One finding's row, in Lua.
  local function lua_row(f)
    for k = 1, n do row[k] = getters[k](f) end
    -- Most rows need no quoting at all: the cells are checked together, four memchr-speed
    -- finds over their concatenation, and quoted one by one only when that finds something;
    -- a formula is told by its first byte.
    local all = concat(row, "", 1, n)
    if find(all, ",", 1, true) or find(all, '"', 1, true) or find(all, "\n", 1, true) or
      find(all, "\r", 1, true) then
      for k = 1, n do row[k] = field(row[k]) end
    elseif not raw then
      for k = 1, n do
        local v = row[k]
        if FORMULA[byte(v, 1)] then row[k] = neutral_field(v) end
      end
    end
    emit(concat(row, ",", 1, n), "\r\n")
  end
  local fast, names = model.fast, {}
  for i = 1, n do
    names[i] = columns[i]
    fast = fast and BUILTIN_VALUE[names[i]] == getters[i] and core.csv_known(names[i])
  end
  local total = #findings
  if not fast then
    for i = 1, total do lua_row(findings[i]) end
    return
  end
  -- C writes the rows CSV_CHUNK findings at a time (the text of a 100 MB report is never one
  -- string); a chunk it cannot write (a value the Lua getters raise on) is written in Lua.
  for from = 1, total, CSV_CHUNK do
    local to = math.min(from + CSV_CHUNK - 1, total)
    local rows = core.csv_rows(findings, names, raw, from, to)
    if rows then
      emit(rows)
    else
      for i = from, to do lua_row(findings[i]) end
    end
  end
end

-- ---- SARIF ----
--
-- Written as Trivy's own SARIF writer (pkg/report/sarif.go, v0.74) writes it, field by field,
-- so an upload from either tool reads and ranks the same in GitHub; the spec compares the two
-- on every Trivy fixture. What we add: our driver, partialFingerprints, run properties
-- `scanners` and `compliance` (and `myrmexOmittedResults` when GitHub's limit cut the run).

local log = require("myrmex.log")

local SARIF_LEVEL = { CRITICAL = "error", HIGH = "error", MEDIUM = "warning", LOW = "note",
  UNKNOWN = "note" }
-- security-severity when there is no CVSS v3 score of the severity's source (Trivy's values).
local FALLBACK_SCORE = { CRITICAL = "9.5", HIGH = "8.0", MEDIUM = "5.5", LOW = "2.0", UNKNOWN = "0.0" }
local RULE_NAME = { ["os-pkgs"] = "OsPackageVulnerability",
  ["lang-pkgs"] = "LanguageSpecificPackageVulnerability", config = "Misconfiguration",
  secret = "Secret", license = "License", ["license-file"] = "License" }

--- GitHub code scanning rejects a run with more results than this (docs: "SARIF results
--- file limits"); a longer run is cut to its worst results, with a warning.
M.GITHUB_MAX_RESULTS = 25000
--- ... and a result with more locations than this (one constant with the C writer's).
M.GITHUB_MAX_LOCATIONS = core.SARIF_MAX_LOCATIONS

-- A container image reference's repository, as go-containerregistry's
-- name.ParseReference(...).Context().RepositoryStr() gives it (Trivy's ToPathUri): the
-- registry and the tag or digest dropped, "library/" added for a Docker Hub name without a
-- namespace. nil when `s` is no reference.
local function repository_str(s)
  local base = s
  local at = s:find("@", 1, true)
  if at then
    local dig = s:sub(at + 1)
    if s:find("@", at + 1, true) or not dig:match("^sha256:" .. string.rep("[0-9a-f]", 64) .. "$") then
      return nil
    end
    base = s:sub(1, at - 1)
  end
  -- a tag: after the last ":" when no "/" follows it
  local colon = base:match("^.*():")
  if colon and not base:find("/", colon + 1, true) then
    local tag = base:sub(colon + 1)
    if tag ~= "" and (#tag > 128 or not tag:match("^[%w_.%-]+$")) then return nil end
    base = base:sub(1, colon - 1)
  end
  if base == "" then return nil end
  local registry, repo = base:match("^([^/]*)/(.*)$")
  if not (registry and (registry:find(".", 1, true) or registry:find(":", 1, true))) then
    registry, repo = "", base
  end
  if #repo < 2 or #repo > 255 or not repo:match("^[a-z0-9_.%-/]+$") then return nil end
  if registry ~= "" and not registry:match("^[%w%-%.]+:?%d*$") then return nil end
  if (registry == "" or registry == "docker.io" or registry == "index.docker.io") and
    not repo:find("/", 1, true) then
    return "library/" .. repo
  end
  return repo
end

-- Trivy's clearURI: backslashes to slashes, module source prefixes of Terraform rewritten.
local function clear_uri(s)
  s = s:gsub("\\", "/")
  if s:find("^git@github%.com:") then
    s = s:gsub("^git@github%.com:", "github.com/"):gsub("%.git", ""):gsub("%?ref=", "/tree/")
  elseif s:find("^git::https:/") and not s:find("^git::https://") then
    s = s:gsub("^git::https:/", ""):gsub("%.git", "")
  elseif s:find("^git::ssh://") then
    s = (s:match("@(.*)$") or s):gsub("%.git", "")
  elseif s:find("^git::") then
    s = s:sub(6):gsub("%.git", "")
  elseif s:find("^hg::") then
    s = s:sub(5):gsub("%.hg", "")
  elseif s:find("^s3::") then
    s = s:sub(5)
  elseif s:find("^gcs::") then
    s = s:sub(6)
  end
  return s
end

-- Trivy's ToPathUri: for OS package results the target ("alpine:3.10 (alpine 3.10.2)") is
-- an image: the "(distro)" suffix and the tag go, so the URI (and our fingerprint) stay the
-- same when the image is re-tagged. Other targets (go.mod, a jar path) are kept.
local function path_uri(input, class)
  if class ~= "os-pkgs" then return input end
  -- pathRegex `(?P<path>.+?)(?:\s*\((?:.*?)\).*?)?$`: cut before the first "(" that has a
  -- ")" after it, and the blanks before it
  local p = 2
  while true do
    local open = input:find("(", p, true)
    if not open then break end
    if input:find(")", open + 1, true) and not input:find("\n", open, true) then
      local path = input:sub(1, open - 1):gsub("%s+$", "")
      input = path ~= "" and path or input:sub(1, 1)
      break
    end
    p = open + 1
  end
  return clear_uri(repository_str(input) or input)
end
M.path_uri = path_uri

-- artifactLocation.uri must be a URI reference: keep path characters, escape the rest
-- (spaces and parentheses in targets, for instance), and a ":" in the first segment, which
-- would make it read as a URI scheme.
local function uri_escape(s, absolute)
  s = s:gsub("[^%w%-%._~/:@!%$&'%*%+,;=]", function(c) return format("%%%02X", c:byte()) end)
  if absolute then return s end
  local first = s:match("^[^/]*")
  if first:find(":", 1, true) then s = first:gsub(":", "%%3A") .. s:sub(#first + 1) end
  return s
end

-- Texts in Trivy's words (pkg/report/sarif.go), so SARIF from either tool reads the same.
local HELP_TEXT = "Vulnerability %s\nSeverity: %s\nPackage: %s\nFixed Version: %s\nLink: [%s](%s)\n%s"
local HELP_MARKDOWN = "**Vulnerability %s**\n| Severity | Package | Fixed Version | Link |\n"
  .. "| --- | --- | --- | --- |\n|%s|%s|%s|[%s](%s)|\n\n%s"
local RESULT_TEXT = "Package: %s\nInstalled Version: %s\nVulnerability %s\nSeverity: %s\n"
  .. "Fixed Version: %s\nLink: [%s](%s)"
local MISCONF_HELP_TEXT = "Misconfiguration %s\nType: %s\nSeverity: %s\nCheck: %s\nMessage: %s\n"
  .. "Link: [%s](%s)\n%s"
local MISCONF_HELP_MARKDOWN = "**Misconfiguration %s**\n| Type | Severity | Check | Message | Link |\n"
  .. "| --- | --- | --- | --- | --- |\n|%s|%s|%s|%s|[%s](%s)|\n\n%s"
local MISCONF_TEXT = "Artifact: %s\nType: %s\nVulnerability %s\nSeverity: %s\nMessage: %s\nLink: [%s](%s)"
local SECRET_HELP_TEXT = "Secret %s\nSeverity: %s\nMatch: %s"
local SECRET_HELP_MARKDOWN = "**Secret %s**\n| Severity | Match |\n| --- | --- |\n|%s|%s|"
local SECRET_TEXT = "Artifact: %s\nType: %s\nSecret %s\nSeverity: %s\nMatch: %s"
-- Trivy's markdown names the columns PkgName, Classification but fills them the other way
-- round; kept, since the point is the same text.
local LICENSE_HELP_TEXT = "License %s\nClassification: %s\nPkgName: %s\nPath: %s"
local LICENSE_HELP_MARKDOWN = "**License %s**\n| PkgName | Classification | Path |\n| --- | --- | --- |\n|%s|%s|%s|"
local LICENSE_TEXT = "Artifact: %s\nLicense %s\nPkgName: %s\n Classification: %s\n Path: %s"
-- Where Trivy points every secret rule for help.
local SECRET_RULES_URL = "https://github.com/aquasecurity/trivy/blob/main/pkg/fanal/secret/builtin-rules.go"
local SARIF_SCHEMA = "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/main/sarif-2.1/schema/"
  .. "sarif-schema-2.1.0.json"

-- The link Trivy prints is PrimaryURL only; for other scanners' findings without one, the
-- first reference.
local function url_of(f)
  if f.primary_url then return f.primary_url end
  if f.scanner ~= "trivy" and f.references then return f.references[1] or "" end
  return ""
end

-- CVSS properties and security-severity, as Trivy's toCVSSData: the CVSS of the severity's
-- source (SeveritySource), its v3 score as security-severity, else the severity's fallback.
-- Findings of other scanners name no such source: their best score stands in.
local function cvss_data(f)
  local c = f.cvss and f.severity_source and f.cvss[f.severity_source]
  if not c and f.scanner ~= "trivy" and f.cvss_source and f.cvss then c = f.cvss[f.cvss_source] end
  local props, score = {}, FALLBACK_SCORE[f.severity]
  if c then
    local function put(k, v)
      if v ~= nil and v ~= "" and v ~= 0 then props[k] = v end
    end
    put("cvssv2_vector", c.v2_vector)
    put("cvssv2_score", c.v2_score)
    put("cvssv3_vector", c.v3_vector)
    put("cvssv3_baseScore", c.v3_score)
    put("cvssv40_vector", c.v4_vector)
    put("cvssv40_baseScore", c.v4_score)
    if c.v3_score and c.v3_score ~= 0 then score = format("%.1f", c.v3_score) end
  end
  if not c and f.scanner ~= "trivy" and f.cvss_score then score = format("%.1f", f.cvss_score) end
  return props, score
end

local function class_of(f)
  return f.class or (f.type == "os" and "os-pkgs" or "lang-pkgs")
end

-- Where a finding is, as Trivy puts it: the package path inside the image (or the lock
-- file), else the target; for an OS package the image's repository. Findings of other
-- scanners: their path, else the image.
local function finding_path(f, result)
  local class = class_of(f)
  if f.scanner == "trivy" then
    if f.path then return path_uri(f.path, class) end
    return path_uri(f.target or result.image or "", class)
  end
  if f.path then return f.path end
  return path_uri(f.target or result.image or "image", "os-pkgs")
end

-- One SARIF entry per vulnerability finding: what its result needs. The rule's texts (long:
-- they hold the description) are made only for the last entry of each id (rule_data).
-- finding_path parses an image reference for OS packages: once per distinct target
local function vuln_path(f, result, paths)
  local key = (f.path or "") .. "\0" .. (f.target or "") .. "\0" .. (f.class or f.type or "") .. "\0" .. f.scanner
  local path = paths[key]
  if not path then
    path = finding_path(f, result)
    paths[key] = path
  end
  return path
end

local function vuln_entry(f, result, paths)
  local sev, id = f.severity, f.id
  local pkg, installed = f.package or "", f.installed_version or ""
  local url = url_of(f)
  local path = vuln_path(f, result, paths)
  local uris
  if f.locations and #f.locations > 1 then uris = f.locations end
  return {
    id = id, sev = sev, url = url, path = path, f = f,
    message = format(RESULT_TEXT, pkg, installed, id, sev, f.fixed_version or "", id, url),
    location_message = path .. ": " .. pkg .. "@" .. installed,
    lines = f.lines, uris = uris,
    -- Stable across runs, tags and scanners: the same vulnerability in the same package
    -- version at the same place is the same alert, so GitHub tracks it instead of reopening.
    fingerprint = id .. "|" .. (f.package or "?") .. "|" .. installed .. "|" .. path,
  }
end

-- Whether vuln_entry(f) (its url and path already made) cannot raise: the values it
-- concatenates are strings or numbers, its locations a list or a string, no metamethods.
local CONCAT = { string = true, number = true }
local function entry_safe(f, path)
  local pkg, installed, l = f.package, f.installed_version, f.locations
  return getmetatable(f) == nil and CONCAT[type(f.id)] and CONCAT[type(path)]
    and (not pkg or CONCAT[type(pkg)]) and (not installed or CONCAT[type(installed)])
    and (not l or type(l) == "string" or type(l) == "table" and getmetatable(l) == nil) or false
end

-- The rule of a vulnerability entry, from its finding.
local function vuln_rule(e)
  local f = e.f
  local sev, id, url = e.sev, e.id, e.url
  local pkg, fixed = f.package or "", f.fixed_version or ""
  local desc, title = f.description or "", f.title or ""
  local props, score = cvss_data(f)
  props["security-severity"] = score
  props.precision = "very-high"
  props.tags = json.array { "vulnerability", "security", sev }
  return {
    class = class_of(f), props = props, short = title, full = desc ~= "" and desc or title,
    help_text = format(HELP_TEXT, id, sev, pkg, fixed, id, url, desc),
    help_markdown = format(HELP_MARKDOWN, id, sev, pkg, fixed, id, url, desc),
  }
end

local function misconf_entry(m)
  local sev, id = m.severity, m.id or "?"
  local url, uri = m.primary_url or "", clear_uri(m.target or "")
  local check_type, msg, title = m.check_type or "", m.message or "", m.title or ""
  local desc = m.description or ""
  local rule = {
    class = m.class or "config",
    props = { ["security-severity"] = FALLBACK_SCORE[sev], precision = "very-high",
      tags = json.array { "misconfiguration", "security", sev } },
    short = title, full = desc,
    help_text = format(MISCONF_HELP_TEXT, id, check_type, sev, title, msg, id, url, desc),
    help_markdown = format(MISCONF_HELP_MARKDOWN, id, check_type, sev, title, msg, id, url, desc),
  }
  return {
    id = id, sev = sev, url = url, path = uri, rule = rule,
    message = format(MISCONF_TEXT, uri, m.type or "", id, sev, msg, id, url),
    location_message = uri,
    lines = { { start_line = m.start_line or 0, end_line = m.end_line or 0 } },
    fingerprint = id .. "|" .. uri .. "|" .. (m.start_line or 0),
  }
end

-- A rule of a secret, a license or a misconfiguration: Trivy's fallback score and its tags.
local function plain_rule(kind, class, sev, short, full, help_text, help_markdown)
  return {
    class = class,
    props = { ["security-severity"] = FALLBACK_SCORE[sev], precision = "very-high",
      tags = json.array { kind, "security", sev } },
    short = short, full = full, help_text = help_text, help_markdown = help_markdown,
  }
end

-- A secret as Trivy's SARIF writer puts it: on its file (the Result's target) and lines, the
-- masked match as the rule's full description.
local function secret_entry(x)
  local sev, id, title, match = x.severity, x.id or "", x.title or "", x.match or ""
  local target = x.target or ""
  local uri = path_uri(target, x.class or "secret")
  return {
    id = id, sev = sev, url = SECRET_RULES_URL, path = uri,
    rule = plain_rule("secret", x.class or "secret", sev, title, match,
      format(SECRET_HELP_TEXT, title, sev, match), format(SECRET_HELP_MARKDOWN, title, sev, match)),
    message = format(SECRET_TEXT, target, x.type or "", title, sev, match),
    location_message = uri,
    lines = { { start_line = x.start_line or 0, end_line = x.end_line or 0 } },
    fingerprint = id .. "|" .. uri .. "|" .. (x.start_line or 0),
  }
end

-- A license as Trivy writes it: rule id "package:license" (an empty package for a loose
-- file), on the Result's target, line 1, with an empty location message.
local function license_entry(x)
  local sev, name, pkg, cat = x.severity, x.name or "", x.package or "", x.category or ""
  local file, target = x.file_path or "", x.target or ""
  local id, desc = pkg .. ":" .. name, name .. " in " .. pkg
  local uri = path_uri(target, x.class or "license")
  return {
    id = id, sev = sev, url = x.link or "", path = uri,
    rule = plain_rule("license", x.class or "license", sev, desc, desc,
      format(LICENSE_HELP_TEXT, name, cat, pkg, file), format(LICENSE_HELP_MARKDOWN, name, pkg, cat, file)),
    message = format(LICENSE_TEXT, target, name, pkg, cat, file),
    location_message = "",
    fingerprint = id .. "|" .. uri .. "|" .. file,
  }
end

-- A rule's properties in the order Go's encoding/json writes a map (sorted keys), as Trivy's.
local PROPERTY_ORDER = { "cvssv2_score", "cvssv2_vector", "cvssv3_baseScore", "cvssv3_vector",
  "cvssv40_baseScore", "cvssv40_vector", "precision", "security-severity", "tags" }

local function value_json(v)
  if type(v) == "string" then return quote(v) end
  return json.encode(v)
end

-- A rule with go-sarif's fields in go-sarif's order (its struct's): the same text every run,
-- which the C writer (bindings/scan.c) reproduces byte for byte.
local function rule_json(e, help_uri)
  local r = e.rule or vuln_rule(e)
  local props = {}
  for _, k in ipairs(PROPERTY_ORDER) do
    local v = r.props[k]
    if v ~= nil then props[#props + 1] = '"' .. k .. '":' .. value_json(v) end
  end
  return concat {
    '{"id":', quote(e.id), ',"name":"', RULE_NAME[r.class] or "UnknownIssue",
    '","shortDescription":{"text":', quote(r.short), '},"fullDescription":{"text":', quote(r.full),
    '},"defaultConfiguration":{"level":"', SARIF_LEVEL[e.sev] or "none", '"}',
    help_uri and ',"helpUri":' .. quote(help_uri) or "",
    ',"help":{"text":', quote(r.help_text), ',"markdown":', quote(r.help_markdown),
    '},"properties":{', concat(props, ","), "}}",
  }
end

-- One result as JSON, handed to `emit` in pieces: a report has tens of thousands of results,
-- and building a table (and a cJSON tree) for each costs more than the text. `quoted` caches
-- the escaped, quoted form of each distinct location URI.
local function location(quoted, uri, first, last, msg)
  local q = quoted[uri]
  if not q then
    q = quote(uri_escape(uri))
    quoted[uri] = q
  end
  -- Trivy's toSarifLocations: a missing line is line 1
  if first == 0 and last == 0 then first, last = 1, 1 end
  return '{"physicalLocation":{"artifactLocation":{"uri":' .. q .. ',"uriBaseId":"ROOTPATH"},'
    .. '"region":{"startLine":' .. first .. ',"startColumn":1,"endLine":' .. last
    .. ',"endColumn":1}},"message":{"text":' .. msg .. '}}'
end

local function result_json(e, rule_index, opts, quoted, emit)
  local msg = quote(e.location_message)
  local locs
  if opts.dockerfile then
    locs = location(quoted, opts.dockerfile, opts.dockerfile_line or 1, opts.dockerfile_line or 1, msg)
  elseif e.uris or e.lines then
    local list = {}
    if e.uris then
      for i = 1, math.min(#e.uris, M.GITHUB_MAX_LOCATIONS) do list[i] = location(quoted, e.uris[i], 1, 1, msg) end
    else
      for i = 1, math.min(#e.lines, M.GITHUB_MAX_LOCATIONS) do
        list[i] = location(quoted, e.path, e.lines[i].start_line, e.lines[i].end_line, msg)
      end
    end
    locs = concat(list, ",")
  else
    locs = location(quoted, e.path, 1, 1, msg)
  end
  emit('{"ruleId":', quote(e.id), ',"ruleIndex":', rule_index, ',"level":"',
    SARIF_LEVEL[e.sev] or "none", '","message":{"text":', quote(e.message), '},"locations":[',
    locs, '],"partialFingerprints":{"myrmexVulnerability/v1":', quote(e.fingerprint), "}}")
end

-- Rules or results per C call of the SARIF fast path.
local SARIF_CHUNK = 512

local RANK = { CRITICAL = 5, HIGH = 4, MEDIUM = 3, LOW = 2, UNKNOWN = 1 }

-- Trivy sorts each Result's vulnerabilities before it writes any format (types.BySeverity:
-- package name, package id, installed version, severity worst first, id, path), so a report
-- of an older Trivy is written in that order too; findings of other scanners keep theirs.
local function trivy_order(findings)
  local sorted, any, all = {}, false, true
  for i = 1, #findings do
    sorted[i] = findings[i]
    local has = findings[i].result_index ~= nil
    any, all = any or has, all and has
  end
  if not any then return findings end
  local pos = {}
  for i, f in ipairs(findings) do pos[f] = i end
  local function before(a, b)
    local ra, rb = a.result_index, b.result_index
    if ra == nil or rb == nil or ra ~= rb then
      if ra and rb then return ra < rb end
      return pos[a] < pos[b]
    end
    local x, y = a.package or "", b.package or ""
    if x ~= y then return x < y end
    x, y = a.pkg_id or "", b.pkg_id or ""
    if x ~= y then return x < y end
    x, y = a.installed_version or "", b.installed_version or ""
    if x ~= y then return x < y end
    x, y = RANK[a.severity] or 0, RANK[b.severity] or 0
    if x ~= y then return x > y end
    if a.id ~= b.id then return a.id < b.id end
    x, y = a.path or "", b.path or ""
    if x ~= y then return x < y end
    return pos[a] < pos[b]
  end
  -- Trivy's own reports come sorted: one pass says so, sparing the n log n comparisons. When
  -- every finding has a result_index the order is total, so a sorted list is what sorting
  -- would give; with some from other scanners it is not (the position decides those pairs).
  for i = 2, #sorted do
    if not all or not before(sorted[i - 1], sorted[i]) then
      table.sort(sorted, before)
      break
    end
  end
  return sorted
end

-- Trivy's pathToFileURI for the scanned directory of a repository or filesystem scan.
local function root_uri(name)
  if name:sub(1, 1) ~= "/" then
    name = (require("myrmex.core.runtime").realpath(".") or ".") .. "/" .. name
  end
  local parts = {}
  for seg in name:gmatch("[^/]+") do
    if seg == ".." then parts[#parts] = nil elseif seg ~= "." then parts[#parts + 1] = seg end
  end
  return "file:///" .. concat(parts, "/") .. (#parts > 0 and "/" or "")
end

--- A SARIF 2.1.0 log, given to `emit` piece by piece: one rule per id (in order of first
--- appearance, described by the last finding of that id, as Trivy's writer does), one result
--- per finding, then one per misconfiguration.
---@param result table
---@param opts? {dockerfile?:string, dockerfile_line?:integer, max_results?:integer}
---@param emit fun(...:string|integer)
function M.sarif(result, opts, emit)
  opts = opts or {}
  local line = opts.dockerfile_line
  if line ~= nil and (math.type(line) ~= "integer" and not (type(line) == "number" and math.tointeger(line))
    or line < 1) then
    error("scan.export: dockerfile_line must be an integer from 1 (SARIF lines start at 1), got "
      .. tostring(line), 3)
  end
  if opts.dockerfile ~= nil and (type(opts.dockerfile) ~= "string" or opts.dockerfile == "") then
    error("scan.export: dockerfile must be a path", 3)
  end
  local max = opts.max_results or M.GITHUB_MAX_RESULTS
  if not math.tointeger(max) or max < 1 then error("scan.export: max_results must be a positive integer", 3) end
  opts = { dockerfile = opts.dockerfile, dockerfile_line = math.tointeger(line) }
  -- Trivy's order: per Result its vulnerabilities (sorted), failed misconfigurations (passed
  -- ones appear with --include-non-failures only), secrets, licenses. Each list is in Result
  -- order already, so they are merged on result_index (items without one, other scanners'
  -- findings, count as 0), a tie going to the earlier kind.
  local misconfs = {}
  for _, m in ipairs(result.misconfigurations or {}) do
    if m.status == nil or m.status == "FAIL" then misconfs[#misconfs + 1] = m end
  end
  local lists = { trivy_order(result.findings), misconfs, result.secrets or {}, result.licenses or {} }
  local makers = { vuln_entry, misconf_entry, secret_entry, license_entry }
  local objs, kinds, at = {}, {}, { 1, 1, 1, 1 }
  -- Findings alone (most reports) need no merge: theirs is the order (trivy_order has read
  -- every result_index already, so nothing here could raise either).
  local vulns, merge = lists[1], true
  if lists[2][1] == nil and lists[3][1] == nil and lists[4][1] == nil then
    local i, x = 1, vulns[1]
    while x do
      objs[i], kinds[i] = x, 1
      i = i + 1
      x = vulns[i]
    end
    merge = false
  end
  while merge do
    local kind, low
    for k = 1, 4 do
      local x = lists[k][at[k]]
      if x then
        local ri = x.result_index or 0
        if not kind or ri < low then kind, low = k, ri end
      end
    end
    if not kind then break end
    objs[#objs + 1], kinds[#kinds + 1] = lists[kind][at[kind]], kind
    at[kind] = at[kind] + 1
  end
  local n = #objs
  -- Past GitHub's limit the upload would be rejected whole: keep the worst `max` (in the
  -- order above), say so, and record how many were left out in the run's properties.
  local keep
  if n > max then
    local all = {}
    for i = 1, n do all[i] = { i, RANK[objs[i].severity] or 0 } end
    table.sort(all, function(a, b)
      if a[2] ~= b[2] then return a[2] > b[2] end
      return a[1] < b[1]
    end)
    keep = {}
    for i = 1, max do keep[all[i][1]] = true end
    log.warn(string.format("scan: SARIF for %s: %d results are more than the %d GitHub accepts "
      .. "per run; the %d least severe are left out (run.properties.myrmexOmittedResults)",
      result.image or "the result", n, max, n - max), { engine = "scan" })
  end
  -- On the fast path a vulnerability finding stays the finding itself, its path and URL
  -- beside it, and C writes its rule and result (or hands it back to Lua, see below); one
  -- vuln_entry could raise on is made into its entry here, as the Lua writer does, so that
  -- the same error comes at the same point.
  local fast = model.fast
  local entries, paths, finding, path_of, url_of_entry = {}, {}, {}, {}, {}
  for i = 1, n do
    if not keep or keep[i] then
      local k, x = #entries + 1, objs[i]
      if fast and kinds[i] == 1 then
        local url = url_of(x)
        local path = vuln_path(x, result, paths)
        if entry_safe(x, path) then
          entries[k], finding[k], path_of[k], url_of_entry[k] = x, true, path, url
        end
      end
      if not entries[k] then
        local e = makers[kinds[i]](x, result, paths)
        entries[k], finding[k], path_of[k], url_of_entry[k] = e, false, e.path, e.url
      end
    end
  end
  -- Rules as go-sarif's AddRule makes them: one per id in order of first appearance, its
  -- texts and properties from the last entry of that id, helpUri from the last that had one.
  local order, index, last, help_uri = {}, {}, {}, {}
  for k, e in ipairs(entries) do
    local id, url = e.id, url_of_entry[k]
    if not index[id] then
      order[#order + 1] = id
      index[id] = #order - 1
    end
    last[id] = k
    if url ~= "" then help_uri[id] = url end
  end
  local scanners = {}
  for _, s in ipairs(result.scanners or {}) do
    scanners[#scanners + 1] = s.name .. (s.version and (" " .. s.version) or "")
  end
  -- keys in go-sarif's order here too, and sorted in the run's properties: the same bytes on
  -- every run (a table's pairs order changes from one process to the next)
  emit('{"version":"2.1.0","$schema":', quote(SARIF_SCHEMA), ',"runs":[{"tool":{"driver":{"name":"myrmex",',
    '"fullName":', quote("myrmex image scan (" .. concat(scanners, ", ") .. ")"),
    ',"version":', value_json(rawget(_G, "_MYRMEX_VERSION") or "dev"),
    ',"informationUri":"https://github.com/myrmex/myrmex","rules":[')
  -- The Lua writer's entry for item k.
  local function entry(k)
    if finding[k] then return vuln_entry(entries[k], result, paths) end
    return entries[k]
  end
  -- Rules and results are written a chunk at a time: C writes items from `from` on until one
  -- it leaves to Lua (a NUL to mark, invalid UTF-8 to raise on, an entry of Lua's), which is
  -- written here before C goes on.
  local rule_items, rule_finding, rule_path, rule_url, rule_help = {}, {}, {}, {}, {}
  if fast then
    for i, id in ipairs(order) do
      local k = last[id]
      rule_items[i], rule_finding[i], rule_path[i], rule_url[i] = entries[k], finding[k], path_of[k],
        url_of_entry[k]
      rule_help[i] = help_uri[id] or false
    end
  end
  local function chunked(total, write_c, write_lua)
    if not fast then
      for k = 1, total do write_lua(k) end
      return
    end
    local from = 1
    while from <= total do
      local to = math.min(from + SARIF_CHUNK - 1, total)
      local text, next_k = write_c(from, to)
      if text ~= "" then emit(text) end
      if next_k <= to then
        write_lua(next_k)
        next_k = next_k + 1
      end
      from = next_k
    end
  end
  chunked(#order, function(from, to)
    return core.sarif_rules(rule_items, rule_finding, rule_path, rule_url, rule_help, from, to)
  end, function(i)
    local id = order[i]
    emit(i > 1 and ",\n" or "\n", rule_json(entry(last[id]), help_uri[id]))
  end)
  emit(']}},"results":[')
  local quoted = {}
  local rule_of = {}
  if fast then
    for k, e in ipairs(entries) do rule_of[k] = index[e.id] end
  end
  chunked(#entries, function(from, to)
    return core.sarif_results(entries, finding, path_of, url_of_entry, rule_of, opts.dockerfile or false,
      opts.dockerfile_line or 1, from, to)
  end, function(k)
    local e = entry(k)
    emit(k > 1 and ",\n" or "\n")
    result_json(e, index[e.id], opts, quoted, emit)
  end)
  -- Trivy writes the image's properties for container images only, nulls included.
  local props = { scanners = json.array(scanners), compliance = result.compliance,
    myrmexOmittedResults = keep and (n - max) or nil }
  local atype = result.artifact_type
  if atype == "container_image" or ((atype == nil or atype == "image") and result.image) then
    props.imageName = result.image or json.null
    props.imageID = result.image_id or ""
    props.repoTags = result.repo_tags and json.array(result.repo_tags) or json.null
    props.repoDigests = result.repo_digests and json.array(result.repo_digests)
      or (result.digest and json.array { (result.image or ""):gsub("[:@].*$", "") .. "@" .. result.digest })
      or json.null
  end
  local base = ""
  if (atype == "repository" or atype == "filesystem") and result.image then
    -- where ROOTPATH (every result's uriBaseId) is: the scanned directory
    base = ',"originalUriBaseIds":{"ROOTPATH":{"uri":' .. quote(uri_escape(root_uri(result.image), true)) .. "}}"
  end
  emit('],"columnKind":"utf16CodeUnits"', base, ',"properties":', json.encode(props, { sort_keys = true }), "}]}\n")
end

return M
