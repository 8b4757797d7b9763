--- SARIF 2.1.0 vulnerability reports (Docker Scout `--format sarif`, Trivy `--format sarif`)
--- -> the myrmex.scan model. Internal to myrmex.scan.
---
--- SARIF has no package fields, so the package, versions and severity come from what both
--- scanners write into each result's message ("Package : pkg:maven/...", "Fixed Version:
--- 1.2"), with the rule's properties as the fallback.
local model = require("myrmex.scan.model")

local val, severity_of = model.val, model.severity

local M = {}

--- True when a decoded document looks like SARIF.
---@param doc table
---@return boolean
function M.detect(doc)
  return type(doc) == "table" and type(val(doc.runs)) == "table" and
    (doc.version == "2.1.0" or doc["$schema"] ~= nil)
end

-- "  Fixed version  : 2.0   " and "Fixed Version: 2.0" -> fields["fixed version"] = "2.0"
local function message_fields(text)
  local fields = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local k, v = line:match("^%s*([%a][%w ]-)%s*:%s*(.-)%s*$")
    if k then fields[k:lower()] = v end
  end
  return fields
end

local function scanner_name(driver)
  local name = (val(driver.name) or "sarif"):lower()
  if name:find("scout", 1, true) then return "scout" end
  if name:find("trivy", 1, true) then return "trivy" end
  return name
end

local function number(v)
  v = val(v)
  return v and tonumber(v) or nil
end

local function rule_cvss(props, scanner)
  local c = {
    v3_score = number(props.cvssV3) or number(props.cvssv3_baseScore),
    v3_vector = val(props.cvssV3_vector) or val(props.cvssv3_vector),
    v2_score = number(props.cvssv2_score),
    v2_vector = val(props.cvssv2_vector),
  }
  if not c.v3_score and not c.v2_score then
    -- security-severity is a CVSS-like number even when the scanner gives nothing else
    c.v3_score = number(props["security-severity"])
  end
  if not c.v3_score and not c.v2_score then return {} end
  return { [scanner] = c }
end

local function strip_id_prefix(text, id)
  text = val(text)
  if not text then return nil end
  if text == id then return nil end
  local rest = text:sub(#id + 1):match("^:%s*(.+)$")
  return text:sub(1, #id) == id and rest or text
end

local function finding(r, rule, scanner)
  local id = r.ruleId or (rule and rule.id)
  local props = rule and val(rule.properties) or {}
  local f = message_fields(r.message and r.message.text)
  local pkg_text = f.package
  local purl = (pkg_text and pkg_text:match("^pkg:") and pkg_text) or val(props.purl)
  local p = model.parse_purl(purl)
  local fixed = f["fixed version"] or val(props.fixed_version)
  if fixed == "not fixed" or fixed == "" then fixed = nil end
  local cvss = rule_cvss(props, scanner)
  local score, vector, source = model.best_cvss(cvss)
  local sev = f.severity or val(props.cvssV3_severity)
  if not sev and type(val(props.tags)) == "table" then sev = props.tags[#props.tags] end
  local locations = {}
  for _, l in ipairs(val(r.locations) or {}) do
    local pl = l.physicalLocation
    local uri = pl and pl.artifactLocation and val(pl.artifactLocation.uri)
    if uri then locations[#locations + 1] = uri end
  end
  local help_uri = rule and val(rule.helpUri)
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
    affected_range = f["affected range"] or val(props.affected_version),
    severity = severity_of(sev),
    scanner_severity = sev,
    cvss_score = number(f["cvss score"]) or score,
    cvss_vector = val(f["cvss vector"]) or vector,
    cvss_source = source,
    cvss = cvss,
    title = rule and rule.shortDescription and strip_id_prefix(rule.shortDescription.text, id),
    description = rule and ((rule.fullDescription and val(rule.fullDescription.text)) or
      (rule.help and val(rule.help.text))),
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
  local run = doc.runs[1] or {}
  for _, r in ipairs(doc.runs) do
    if val(r.results) and #r.results > 0 then run = r; break end
  end
  local driver = (run.tool and run.tool.driver) or {}
  local scanner = scanner_name(driver)
  local rules, by_id = val(driver.rules) or {}, {}
  for _, rule in ipairs(rules) do by_id[rule.id] = rule end
  local findings = {}
  for _, r in ipairs(val(run.results) or {}) do
    local rule = (r.ruleIndex and rules[r.ruleIndex + 1]) or by_id[r.ruleId]
    if rule and r.ruleId and rule.id ~= r.ruleId then rule = by_id[r.ruleId] end
    findings[#findings + 1] = finding(r, rule, scanner)
  end
  local props = val(run.properties) or {}
  local digests = val(props.repoDigests)
  return model.result {
    image = val(props.imageName),
    digest = digests and digests[1] and digests[1]:match("@(sha256:%x+)$") or nil,
    image_id = val(props.imageID),
    repo_tags = val(props.repoTags),
    scanner = scanner,
    scanner_version = val(driver.version),
    findings = findings,
  }
end

return M
