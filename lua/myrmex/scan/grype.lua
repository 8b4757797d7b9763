--- Grype JSON (`grype -o json`) -> the myrmex.scan model. Internal to myrmex.scan.
local model = require("myrmex.scan.model")

local str, num, tab, strings = model.str, model.num, model.tab, model.strings
local severity_of = model.severity

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
  s = str(s)
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
  for _, c in ipairs(tab(list) or {}) do
    local metrics = type(c) == "table" and tab(c.metrics)
    local score = metrics and model.score(metrics.baseScore)
    if score then
      local src = source_name(c.source)
      local entry = out[src] or {}
      out[src] = entry
      local ver = tostring(str(c.version) or num(c.version) or "")
      local field = ver:sub(1, 1) == "2" and "v2" or ver:sub(1, 1) == "4" and "v4" or "v3"
      if entry[field .. "_score"] == nil then
        entry[field .. "_score"] = score
        entry[field .. "_vector"] = str(c.vector)
      end
    end
  end
end

local function add_urls(refs, seen, urls)
  for _, u in ipairs(strings(urls)) do
    if not seen[u] then
      seen[u] = true
      refs[#refs + 1] = u
    end
  end
end

local function finding(v, a, related, target)
  local cvss, aliases, refs, seen = {}, {}, {}, {}
  add_cvss(cvss, v.cvss)
  add_urls(refs, seen, v.urls)
  local description = str(v.description)
  for _, r in ipairs(tab(related) or {}) do
    if type(r) == "table" then
      local rid = str(r.id)
      if rid and rid ~= v.id then aliases[#aliases + 1] = rid end
      add_cvss(cvss, r.cvss)
      add_urls(refs, seen, r.urls)
      description = description or str(r.description)
    end
  end
  local score, vector, source = model.best_cvss(cvss)
  local fix = tab(v.fix) or {}
  local versions = strings(fix.versions)
  local fixed = #versions > 0 and table.concat(versions, ", ") or nil
  local loc = (tab(a.locations) or {})[1]
  loc = type(loc) == "table" and loc or nil
  local eco = model.ecosystem(str(a.type))
  -- Grype names a Maven package by artifact only; the purl gives the group too, and with
  -- it the name Trivy and Scout use, so merged results line up.
  local purl = str(a.purl)
  local p = eco ~= "os" and model.parse_purl(purl)
  return {
    id = v.id,
    aliases = aliases,
    package = p and model.purl_package_name(p) or str(a.name),
    type = eco,
    pkg_type = str(a.type),
    purl = purl,
    installed_version = str(a.version),
    fixed_version = fixed,
    fix_state = fixed and "fixed" or FIX_STATE[str(fix.state) or "unknown"] or "unknown",
    severity = severity_of(v.severity),
    scanner_severity = str(v.severity),
    severity_source = str(v.namespace),
    cvss_score = score, cvss_vector = vector, cvss_source = source, cvss = cvss,
    description = description,
    references = refs,
    primary_url = str(v.dataSource),
    target = target,
    path = loc and str(loc.path) or nil,
    layer = loc and str(loc.layerID) or nil,
    scanner = "grype",
  }
end

--- Normalize a decoded Grype report.
---@param doc table
---@return table
function M.normalize(doc)
  local source = tab(doc.source) or {}
  local target = source.target
  local image, digest, image_id, tags
  if type(target) == "table" then
    image = str(target.userInput)
    image_id = str(target.imageID)
    tags = tab(target.tags) and strings(target.tags) or nil
    local rd = str((tab(target.repoDigests) or {})[1])
    digest = rd and rd:match("@(sha256:%x+)$") or str(target.manifestDigest)
  else
    image = str(target)
  end
  local findings, dropped = {}, {}
  local matches = tab(doc.matches) or {}
  for i = 1, #matches do
    local m = matches[i]
    local v = type(m) == "table" and tab(m.vulnerability)
    if v and str(v.id) then
      findings[#findings + 1] = finding(v, tab(m.artifact) or {}, m.relatedVulnerabilities, image)
    else
      dropped[#dropped + 1] = string.format("matches[%d]: %s", i, type(m) ~= "table" and
        ("a JSON " .. type(m) .. ", not an object") or "no vulnerability with an id string")
    end
  end
  local d = tab(doc.descriptor) or {}
  local distro = tab(doc.distro)
  return model.result {
    image = image,
    artifact_type = str(source.type),
    digest = digest,
    image_id = image_id,
    repo_tags = tags,
    os = distro and { family = str(distro.name), name = str(distro.version) } or nil,
    scanner = "grype",
    scanner_version = str(d.version),
    time = str(d.timestamp),
    findings = findings,
    dropped = dropped,
  }
end

return M
