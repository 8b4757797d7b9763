--- Grype JSON (`grype -o json`) -> the myrmex.scan model. Internal to myrmex.scan.
local model = require("myrmex.scan.model")

local val, severity_of = model.val, model.severity

local M = {}

local FIX_STATE = {
  fixed = "fixed", ["not-fixed"] = "not_fixed", ["wont-fix"] = "wont_fix", unknown = "unknown",
}

--- True when a decoded document looks like a Grype report.
---@param doc table
---@return boolean
function M.detect(doc)
  return type(doc) == "table" and doc.matches ~= nil and
    (doc.descriptor ~= nil or doc.source ~= nil)
end

-- Grype names sources by e-mail-like ids ("nvd@nist.gov", "secalert@redhat.com").
local function source_name(s)
  s = val(s)
  if not s then return "unknown" end
  s = s:lower()
  if s:find("nvd", 1, true) then return "nvd" end
  if s:find("redhat", 1, true) then return "redhat" end
  if s:find("github", 1, true) or s:find("ghsa", 1, true) then return "ghsa" end
  return s
end

-- Adds a record's CVSS entries to `out` without replacing what an earlier (more direct)
-- record already gave for that source and version.
local function add_cvss(out, list)
  for _, c in ipairs(val(list) or {}) do
    local src = source_name(c.source)
    local entry = out[src] or {}
    out[src] = entry
    local ver = tostring(val(c.version) or "")
    local field = ver:sub(1, 1) == "2" and "v2" or ver:sub(1, 1) == "4" and "v4" or "v3"
    local metrics = val(c.metrics)
    if entry[field .. "_score"] == nil and metrics and val(metrics.baseScore) then
      entry[field .. "_score"] = metrics.baseScore
      entry[field .. "_vector"] = val(c.vector)
    end
  end
end

local function add_urls(refs, seen, urls)
  for _, u in ipairs(val(urls) or {}) do
    if not seen[u] then
      seen[u] = true
      refs[#refs + 1] = u
    end
  end
end

local function finding(m, target)
  local v, a = m.vulnerability, m.artifact
  local cvss, aliases, refs, seen = {}, {}, {}, {}
  add_cvss(cvss, v.cvss)
  add_urls(refs, seen, v.urls)
  local description = val(v.description)
  for _, r in ipairs(val(m.relatedVulnerabilities) or {}) do
    if r.id ~= v.id then aliases[#aliases + 1] = r.id end
    add_cvss(cvss, r.cvss)
    add_urls(refs, seen, r.urls)
    description = description or val(r.description)
  end
  local score, vector, source = model.best_cvss(cvss)
  local fix = val(v.fix) or {}
  local versions = val(fix.versions) or {}
  local fixed = #versions > 0 and table.concat(versions, ", ") or nil
  local loc = (val(a.locations) or {})[1]
  local eco = model.ecosystem(val(a.type))
  -- Grype names a Maven package by artifact only; the purl gives the group too, and with
  -- it the name Trivy and Scout use, so merged results line up.
  local p = eco ~= "os" and model.parse_purl(val(a.purl))
  return {
    id = v.id,
    aliases = aliases,
    package = p and model.purl_package_name(p) or a.name,
    type = eco,
    pkg_type = val(a.type),
    purl = val(a.purl),
    installed_version = val(a.version),
    fixed_version = fixed,
    fix_state = fixed and "fixed" or FIX_STATE[val(fix.state) or "unknown"] or "unknown",
    severity = severity_of(v.severity),
    scanner_severity = val(v.severity),
    severity_source = val(v.namespace),
    cvss_score = score, cvss_vector = vector, cvss_source = source, cvss = cvss,
    description = description,
    references = refs,
    primary_url = val(v.dataSource),
    target = target,
    path = loc and val(loc.path) or nil,
    layer = loc and val(loc.layerID) or nil,
    scanner = "grype",
  }
end

--- Normalize a decoded Grype report.
---@param doc table
---@return table
function M.normalize(doc)
  local source = val(doc.source) or {}
  local target = val(source.target)
  local image, digest, image_id, tags
  if type(target) == "table" then
    image = val(target.userInput)
    image_id = val(target.imageID)
    tags = val(target.tags)
    local rd = (val(target.repoDigests) or {})[1]
    digest = rd and rd:match("@(sha256:%x+)$") or val(target.manifestDigest)
  elseif type(target) == "string" then
    image = target
  end
  local findings = {}
  for _, m in ipairs(val(doc.matches) or {}) do
    findings[#findings + 1] = finding(m, image)
  end
  local d = val(doc.descriptor) or {}
  local distro = val(doc.distro)
  return model.result {
    image = image,
    artifact_type = val(source.type),
    digest = digest,
    image_id = image_id,
    repo_tags = tags,
    os = distro and { family = val(distro.name), name = val(distro.version) } or nil,
    scanner = "grype",
    scanner_version = val(d.version),
    time = val(d.timestamp),
    findings = findings,
  }
end

return M
