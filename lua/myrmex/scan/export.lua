--- Writers for scan results: JSON (the normalized model), CSV (RFC 4180) and SARIF 2.1.0
--- for GitHub code scanning. Internal to myrmex.scan; see docs/scan.md.
local json = require("myrmex.json")

local M = {}

local concat, format, quote = table.concat, string.format, json.quote

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
  for _, k in ipairs({ "ignored", "expired_ignores", "violations", "scanners" }) do
    if copy[k] then copy[k] = json.array(copy[k]) end
  end
  emit(json.encode(copy, { sort_keys = true, indent = true }))
end

-- ---- CSV ----

--- The CSV columns, in order, with how each is taken from a finding.
M.CSV_COLUMNS = { "id", "aliases", "severity", "cvss_score", "cvss_vector", "package", "type",
  "installed_version", "fixed_version", "fix_state", "purl", "title", "target", "path", "layer",
  "scanner", "references" }

-- RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. Four plain
-- finds (memchr-speed) beat one character-class pattern by 10x on long fields.
local find = string.find

local function csv_field(v)
  if v == nil then return "" end
  v = tostring(v)
  if find(v, ",", 1, true) or find(v, '"', 1, true) or find(v, "\n", 1, true) or
    find(v, "\r", 1, true) then
    return '"' .. v:gsub('"', '""') .. '"'
  end
  return v
end
M.csv_field = csv_field

local function joined(list)
  return list and concat(list, " ") or ""
end

-- One row, column by column in CSV_COLUMNS order, handed to `emit` as pieces (written as
-- they are, never joined into a row string). Most rows need no quoting at all: the fields
-- are checked together, four memchr-speed finds over their concatenation, and quoted one by
-- one only when that finds something. Written out rather than looped: this runs for every
-- finding (a 100 MB report has tens of thousands).
local function csv_row(f, emit)
  local score = f.cvss_score
  local id, aliases, sev = f.id or "", joined(f.aliases), f.severity
  score = score and format("%.1f", score) or ""
  local vector, pkg, typ, inst = f.cvss_vector or "", f.package or "", f.type or "", f.installed_version or ""
  local fixed, state, purl, title = f.fixed_version or "", f.fix_state or "", f.purl or "", f.title or ""
  local target, path, layer = f.target or "", f.path or "", f.layer or ""
  local scanner = f.found_by and concat(f.found_by, " ") or f.scanner or ""
  local refs = joined(f.references)
  local all = id .. aliases .. sev .. vector .. pkg .. typ .. inst .. fixed .. state .. purl ..
    title .. target .. path .. layer .. scanner .. refs
  if find(all, ",", 1, true) or find(all, '"', 1, true) or find(all, "\n", 1, true) or
    find(all, "\r", 1, true) then
    id, aliases, vector, pkg = csv_field(id), csv_field(aliases), csv_field(vector), csv_field(pkg)
    typ, inst, fixed, state = csv_field(typ), csv_field(inst), csv_field(fixed), csv_field(state)
    purl, title, target, path = csv_field(purl), csv_field(title), csv_field(target), csv_field(path)
    layer, scanner, refs, sev = csv_field(layer), csv_field(scanner), csv_field(refs), csv_field(sev)
  end
  emit(id, ",", aliases, ",", sev, ",", score, ",", vector, ",", pkg, ",", typ, ",", inst, ",",
    fixed, ",", state, ",", purl, ",", title, ",", target, ",", path, ",", layer, ",", scanner,
    ",", refs, "\r\n")
end

--- Findings as CSV, given to `emit` row by row: a header row, then one row per finding, CRLF
--- line ends.
---@param result table
---@param _ table|nil options (none)
---@param emit fun(...:string)
function M.csv(result, _, emit)
  emit(concat(M.CSV_COLUMNS, ","), "\r\n")
  local findings = result.findings
  for i = 1, #findings do csv_row(findings[i], emit) end
end

-- ---- SARIF ----

local SARIF_LEVEL = { CRITICAL = "error", HIGH = "error", MEDIUM = "warning", LOW = "note",
  UNKNOWN = "note" }
-- What security-severity says when a finding has no CVSS score (Trivy's values, so the two
-- tools rank the same in GitHub).
local FALLBACK_SCORE = { CRITICAL = "9.5", HIGH = "8.0", MEDIUM = "5.5", LOW = "2.0", UNKNOWN = "0.0" }

-- artifactLocation.uri must be a URI reference: keep path characters, escape the rest
-- (spaces and parentheses in Trivy targets, for instance).
local function uri_escape(s)
  return (s:gsub("[^%w%-%._~/:@!%$&'%*%+,;=]", function(c) return format("%%%02X", c:byte()) end))
end

local function fix_text(f)
  return f.fixed_version or "none"
end

local function link(f)
  local url = f.primary_url or (f.references and f.references[1])
  if not url then return f.id end
  return "[" .. f.id .. "](" .. url .. ")"
end

-- Texts in Trivy's words, so SARIF from either tool reads the same in GitHub.
local HELP_TEXT = "Vulnerability %s\nSeverity: %s\nPackage: %s\nFixed Version: %s\nLink: %s\n%s"
local HELP_MARKDOWN = "**Vulnerability %s**\n| Severity | Package | Fixed Version | Link |\n"
  .. "| --- | --- | --- | --- |\n|%s|%s|%s|%s|\n\n%s"
local RESULT_TEXT = "Package: %s\nInstalled Version: %s\nVulnerability %s\nSeverity: %s\n"
  .. "Fixed Version: %s\nLink: %s"
local SARIF_SCHEMA = "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/main/sarif-2.1/schema/"
  .. "sarif-schema-2.1.0.json"

local function rule_for(f)
  local sev = f.severity
  local score = f.cvss_score and format("%.1f", f.cvss_score) or FALLBACK_SCORE[sev]
  local desc = f.description or f.title or f.id
  local url = f.primary_url or (f.references and f.references[1])
  local pkg = f.package or "?"
  local props = { ["security-severity"] = score, precision = "very-high",
    tags = json.array { "vulnerability", "security", sev } }
  local nvd = f.cvss and f.cvss.nvd
  if nvd then
    props.cvssv2_score, props.cvssv2_vector = nvd.v2_score, nvd.v2_vector
    props.cvssv3_baseScore, props.cvssv3_vector = nvd.v3_score, nvd.v3_vector
  end
  return {
    id = f.id,
    name = f.type == "os" and "OsPackageVulnerability" or "LanguageSpecificPackageVulnerability",
    shortDescription = { text = f.title or f.id },
    fullDescription = { text = desc },
    defaultConfiguration = { level = SARIF_LEVEL[sev] },
    helpUri = url,
    help = {
      text = format(HELP_TEXT,
        f.id, sev, pkg, fix_text(f), link(f), desc),
      markdown = format(HELP_MARKDOWN,
        f.id, sev, pkg, fix_text(f), link(f), desc),
    },
    properties = props,
  }
end

-- Where a finding points: the Dockerfile when given (so GitHub can show it on a file of the
-- repository), else the package path inside the image, else the image.
local function location_uri(f, result, opts)
  if opts.dockerfile then return opts.dockerfile end
  return f.path or result.image or f.target or "image"
end

-- One result as JSON, handed to `emit` in pieces (written as they are): a report has tens of
-- thousands of results, and building a table (and a cJSON tree) or even one string for each
-- costs more than the text. `uris` caches the quoted location of each distinct path.
local function result_json(f, rule_index, result, opts, uris, emit)
  local uri = location_uri(f, result, opts)
  local quoted_uri = uris[uri]
  if not quoted_uri then
    quoted_uri = quote(uri_escape(uri))
    uris[uri] = quoted_uri
  end
  local id, sev, pkg = f.id, f.severity, f.package or "?"
  local installed = f.installed_version or ""
  local line = opts.dockerfile_line or 1
  -- Stable across runs and scanners: the same vulnerability in the same package version
  -- at the same place is the same alert, so GitHub tracks it instead of reopening it.
  local fingerprint = id .. "|" .. pkg .. "|" .. installed .. "|" .. (f.path or f.target or "")
  emit('{"ruleId":', quote(id), ',"ruleIndex":', rule_index, ',"level":"', SARIF_LEVEL[sev],
    '","message":{"text":', quote(format(RESULT_TEXT, pkg, installed, id, sev, fix_text(f), link(f))),
    '},"locations":[{"physicalLocation":{"artifactLocation":{"uri":', quoted_uri,
    ',"uriBaseId":"ROOTPATH"},"region":{"startLine":', line, ',"startColumn":1,"endLine":', line,
    ',"endColumn":1}},"message":{"text":',
    quote((result.image or f.target or uri) .. ": " .. pkg .. "@" .. installed),
    '}}],"partialFingerprints":{"myrmexVulnerability/v1":', quote(fingerprint), "}}")
end

--- A SARIF 2.1.0 log, given to `emit` piece by piece: one rule per vulnerability id (in order
--- of first appearance), one result per finding.
---@param result table
---@param opts? {dockerfile?:string, dockerfile_line?:integer}
---@param emit fun(...:string|integer)
function M.sarif(result, opts, emit)
  opts = opts or {}
  if opts.dockerfile_line ~= nil and not math.tointeger(opts.dockerfile_line) then
    error("scan.export: dockerfile_line must be an integer", 3)
  end
  opts = { dockerfile = opts.dockerfile, dockerfile_line = math.tointeger(opts.dockerfile_line) }
  local findings = result.findings
  local order, index, last = {}, {}, {}
  for i = 1, #findings do
    local f = findings[i]
    local id = f.id
    if not index[id] then
      order[#order + 1] = id
      index[id] = #order - 1
    end
    last[id] = f
  end
  local scanners = {}
  for _, s in ipairs(result.scanners or {}) do
    scanners[#scanners + 1] = s.name .. (s.version and (" " .. s.version) or "")
  end
  local driver = json.encode {
    name = "myrmex",
    fullName = "myrmex image scan (" .. concat(scanners, ", ") .. ")",
    informationUri = "https://github.com/myrmex/myrmex",
    version = rawget(_G, "_MYRMEX_VERSION") or "dev",
  }
  emit('{"version":"2.1.0","$schema":' .. quote(SARIF_SCHEMA) .. ',"runs":[{"tool":{"driver":' ..
    driver:sub(1, -2) .. ',"rules":[')
  -- A rule describes its id with the last finding of that id, as Trivy's own SARIF does.
  for i, id in ipairs(order) do
    emit(i > 1 and ",\n" or "\n", json.encode(rule_for(last[id])))
  end
  emit(']}},"results":[')
  local uris = {}
  for i = 1, #findings do
    local f = findings[i]
    emit(i > 1 and ",\n" or "\n")
    result_json(f, index[f.id], result, opts, uris, emit)
  end
  emit('],"columnKind":"utf16CodeUnits","properties":' .. json.encode {
    imageName = result.image, imageID = result.image_id,
    repoDigests = result.digest and json.array { (result.image or "") .. "@" .. result.digest } or nil,
    repoTags = result.repo_tags and json.array(result.repo_tags) or nil,
    scanners = json.array(scanners),
    compliance = result.compliance,
  } .. "}]}\n")
end

return M
