--- Trivy JSON (SchemaVersion 2) -> the myrmex.scan model. Internal to myrmex.scan.
local model = require("myrmex.scan.model")

local val, severity_of, ecosystem = model.val, model.severity, model.ecosystem

local M = {}

local FIX_STATE = {
  fixed = "fixed", affected = "not_fixed", will_not_fix = "wont_fix",
  fix_deferred = "deferred", end_of_life = "end_of_life", under_investigation = "unknown",
  unknown = "unknown",
}

--- True when a decoded document looks like a Trivy report.
---@param doc table
---@return boolean
function M.detect(doc)
  return type(doc) == "table" and doc.SchemaVersion ~= nil and
    (doc.Results ~= nil or doc.ArtifactName ~= nil)
end

local function cvss_table(raw)
  local out = {}
  if type(raw) ~= "table" then return out end
  for source, c in pairs(raw) do
    out[source] = {
      v2_score = val(c.V2Score), v2_vector = val(c.V2Vector),
      v3_score = val(c.V3Score), v3_vector = val(c.V3Vector),
      v4_score = val(c.V40Score), v4_vector = val(c.V40Vector),
    }
  end
  return out
end

local function finding(v, res, eco, pkg_type)
  local cvss = cvss_table(v.CVSS)
  local sev_source = val(v.SeveritySource)
  local score, vector, source = model.best_cvss(cvss, sev_source)
  local fixed = val(v.FixedVersion)
  local layer = v.Layer
  local ident = v.PkgIdentifier
  return {
    id = v.VulnerabilityID,
    aliases = val(v.VendorIDs) or {},
    package = v.PkgName,
    pkg_id = val(v.PkgID),
    type = eco,
    pkg_type = pkg_type,
    purl = ident and val(ident.PURL) or nil,
    installed_version = val(v.InstalledVersion),
    fixed_version = fixed,
    fix_state = fixed and "fixed" or FIX_STATE[v.Status or "unknown"] or "unknown",
    severity = severity_of(v.Severity),
    scanner_severity = val(v.Severity),
    severity_source = sev_source,
    cvss_score = score, cvss_vector = vector, cvss_source = source, cvss = cvss,
    title = val(v.Title),
    description = val(v.Description),
    references = val(v.References) or {},
    primary_url = val(v.PrimaryURL),
    cwe = val(v.CweIDs),
    target = res.Target,
    path = val(v.PkgPath),
    layer = layer and (val(layer.DiffID) or val(layer.Digest)) or nil,
    fingerprint = val(v.Fingerprint),
    published = val(v.PublishedDate),
    modified = val(v.LastModifiedDate),
    scanner = "trivy",
  }
end

local function misconfiguration(m, res)
  return {
    id = m.ID or m.AVDID, title = val(m.Title), description = val(m.Description),
    message = val(m.Message), resolution = val(m.Resolution),
    severity = severity_of(m.Severity), status = val(m.Status),
    target = res.Target, type = val(res.Type), references = val(m.References) or {},
    primary_url = val(m.PrimaryURL), scanner = "trivy",
  }
end

local function digest_of(meta)
  local digests = meta and val(meta.RepoDigests)
  local first = digests and digests[1]
  return first and first:match("@(sha256:%x+)$") or nil
end

--- Normalize a decoded Trivy report.
---@param doc table
---@return table result (counts and compliance filled by the caller)
function M.normalize(doc)
  local findings, misconfs = {}, {}
  for _, res in ipairs(val(doc.Results) or {}) do
    local class = res.Class
    local eco = class == "os-pkgs" and "os" or ecosystem(val(res.Type))
    local pkg_type = val(res.Type)
    for _, v in ipairs(val(res.Vulnerabilities) or {}) do
      findings[#findings + 1] = finding(v, res, eco, pkg_type)
    end
    for _, m in ipairs(val(res.Misconfigurations) or {}) do
      misconfs[#misconfs + 1] = misconfiguration(m, res)
    end
  end
  local meta = val(doc.Metadata) or {}
  local os_info = val(meta.OS)
  local trivy = val(doc.Trivy)
  return model.result {
    image = val(doc.ArtifactName),
    artifact_type = val(doc.ArtifactType),
    digest = digest_of(meta),
    image_id = val(meta.ImageID),
    repo_tags = val(meta.RepoTags),
    os = os_info and { family = val(os_info.Family), name = val(os_info.Name),
      eosl = os_info.EOSL == true } or nil,
    scanner = "trivy",
    scanner_version = trivy and val(trivy.Version) or nil,
    time = val(doc.CreatedAt),
    findings = findings,
    misconfigurations = misconfs,
  }
end

return M
