--- SARIF 2.1.0 vulnerability reports (Docker Scout `--format sarif`, Trivy `--format sarif`)
--- -> the myrmex.scan model. Internal to myrmex.scan.
---
--- SARIF has no package fields, so the package, versions and severity come from what both
--- scanners write into each result's message ("Package : pkg:maven/...", "Fixed Version:
--- 1.2"), with the rule's properties as the fallback.
local model = require("myrmex.scan.model")

local str, tab, strings = model.str, model.tab, model.strings
local severity_of = model.severity

local M = {}

--- True when a decoded document looks like SARIF.
---@param doc table
---@return boolean
function M.detect(doc)
  return type(doc) == "table" and type(doc.runs) == "table" and
    (doc.version == "2.1.0" or doc["$schema"] ~= nil)
end

-- "  Fixed version  : 2.0   " and "Fixed Version: 2.0" -> fields["fixed version"] = "2.0"
local function message_fields(text)
  local fields = {}
  for line in (str(text) or ""):gmatch("[^\n]+") do
    local k, v = line:match("^%s*([%a][%w ]-)%s*:%s*(.-)%s*$")
    if k then fields[k:lower()] = v end
  end
  return fields
end

local function scanner_name(driver)
  local name = (str(driver.name) or "sarif"):lower()
  if name:find("scout", 1, true) then return "scout" end
  if name:find("trivy", 1, true) then return "trivy" end
  return name
end

-- Scout writes scores as numbers, security-severity as a string: take either.
local function number(v)
  if type(v) == "string" then v = tonumber(v) end
  return model.score(v)
end

local function rule_cvss(props, scanner)
  local c = {
    v3_score = number(props.cvssV3) or number(props.cvssv3_baseScore),
    v3_vector = str(props.cvssV3_vector) or str(props.cvssv3_vector),
    v2_score = number(props.cvssv2_score),
    v2_vector = str(props.cvssv2_vector),
  }
  if not c.v3_score and not c.v2_score then
    -- security-severity is a CVSS-like number even when the scanner gives nothing else
    c.v3_score = number(props["security-severity"])
  end
  if not c.v3_score and not c.v2_score then return {} end
  return { [scanner] = c }
end

local function strip_id_prefix(text, id)
  text = str(text)
  if not text or not id then return text end
  if text == id then return nil end
  local rest = text:sub(#id + 1):match("^:%s*(.+)$")
  return text:sub(1, #id) == id and rest or text
end

local function text_of(t)
  t = tab(t)
  return t and str(t.text) or nil
end

local function finding(r, rule, scanner)
  local id = str(r.ruleId) or (rule and str(rule.id))
  local props = rule and tab(rule.properties) or {}
  local f = message_fields(text_of(r.message))
  local pkg_text = f.package
  local purl = (pkg_text and pkg_text:match("^pkg:") and pkg_text) or str(props.purl)
  local p = model.parse_purl(purl)
  local fixed = f["fixed version"] or str(props.fixed_version)
  if fixed == "not fixed" or fixed == "" then fixed = nil end
  local cvss = rule_cvss(props, scanner)
  local score, vector, source = model.best_cvss(cvss)
  local sev = f.severity or str(props.cvssV3_severity)
  local tags = strings(props.tags)
  if not sev and #tags > 0 then sev = tags[#tags] end
  local locations = {}
  for _, l in ipairs(tab(r.locations) or {}) do
    local pl = type(l) == "table" and tab(l.physicalLocation)
    local al = pl and tab(pl.artifactLocation)
    local uri = al and str(al.uri)
    if uri then locations[#locations + 1] = uri end
  end
  local help_uri = rule and str(rule.helpUri)
  return {
    id = id,
    aliases = {},
    package = p and model.purl_package_name(p) or pkg_text,
    type = p and model.ecosystem(p.type) or "unknown",
    pkg_type = p and p.type or nil,
    purl = purl,
    installed_version = f["installed version"] or (p and p.version) or nil,
    fixed_version = fixed,
    fix_state = fixed and "fixed" or "not_fixed",
    affected_range = f["affected range"] or str(props.affected_version),
    severity = severity_of(sev),
    scanner_severity = sev,
    cvss_score = number(f["cvss score"]) or score,
    cvss_vector = str(f["cvss vector"]) or vector,
    cvss_source = source,
    cvss = cvss,
    title = rule and strip_id_prefix(text_of(rule.shortDescription), id),
    description = rule and (text_of(rule.fullDescription) or text_of(rule.help)),
    references = help_uri and { help_uri } or {},
    primary_url = help_uri,
    target = locations[1],
    path = locations[1],
    locations = locations,
    scanner = scanner,
  }
end

--- Normalize a decoded SARIF log (the first run that has results, or the first run).
---@param doc table
---@return table
function M.normalize(doc)
  local run = {}
  for _, r in ipairs(doc.runs) do
    if type(r) == "table" then
      if run.tool == nil then run = r end
      local results = tab(r.results)
      if results and #results > 0 then run = r; break end
    end
  end
  local tool = tab(run.tool) or {}
  local driver = tab(tool.driver) or {}
  local scanner = scanner_name(driver)
  local rules, by_id = tab(driver.rules) or {}, {}
  for _, rule in ipairs(rules) do
    if type(rule) == "table" and str(rule.id) then by_id[rule.id] = rule end
  end
  local findings, dropped = {}, {}
  local list = tab(run.results) or {}
  for i = 1, #list do
    local r = list[i]
    local f
    if type(r) == "table" then
      local index = math.type(r.ruleIndex) == "integer" and r.ruleIndex or nil
      local rule = index and tab(rules[index + 1])
      if not rule or (str(r.ruleId) and rule.id ~= r.ruleId) then rule = by_id[r.ruleId] end
      f = finding(r, rule, scanner)
      if f.id then findings[#findings + 1] = f end
    end
    if not (f and f.id) then
      dropped[#dropped + 1] = string.format("results[%d]: %s", i, type(r) ~= "table" and
        ("a JSON " .. type(r) .. ", not an object") or "no ruleId and no rule")
    end
  end
  local props = tab(run.properties) or {}
  local digests = tab(props.repoDigests)
  local first = digests and str(digests[1])
  return model.result {
    image = str(props.imageName),
    digest = first and first:match("@(sha256:%x+)$") or nil,
    image_id = str(props.imageID),
    repo_tags = tab(props.repoTags) and strings(props.repoTags) or nil,
    scanner = scanner,
    scanner_version = str(driver.version),
    findings = findings,
    dropped = dropped,
  }
end

return M
