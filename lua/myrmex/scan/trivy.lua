--- Trivy JSON (SchemaVersion 2) -> the myrmex.scan model. Internal to myrmex.scan.
local model = require("myrmex.scan.model")

local str, tab, strings, score_of = model.str, model.tab, model.strings, model.score
local severity_of, ecosystem = model.severity, model.ecosystem

local M = {}

-- Locals: these run for every field of every finding.
local type, next = type, next

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

-- Runs for every source of every finding: `next` instead of pairs (decoded tables have a
-- metatable, so pairs would look for __pairs each time) and the type checks inline.
local function cvss_table(raw)
  local out = {}
  if type(raw) ~= "table" then return out end
  for source, c in next, raw do
    if type(source) == "string" and type(c) == "table" then
      local v2, v3, v4 = c.V2Score, c.V3Score, c.V40Score
      local v2v, v3v, v4v = c.V2Vector, c.V3Vector, c.V40Vector
      out[source] = {
        v2_score = score_of(v2), v2_vector = str(v2v),
        v3_score = score_of(v3), v3_vector = str(v3v),
        v4_score = score_of(v4), v4_vector = str(v4v),
      }
    end
  end
  return out
end

local function finding(v, target, eco, pkg_type)
  local cvss = cvss_table(v.CVSS)
  local sev_source = str(v.SeveritySource)
  local score, vector, source = model.best_cvss(cvss, sev_source)
  local fixed = str(v.FixedVersion)
  local layer = tab(v.Layer)
  local ident = tab(v.PkgIdentifier)
  local cwe = tab(v.CweIDs)
  return {
    id = str(v.VulnerabilityID),
    aliases = strings(v.VendorIDs),
    package = str(v.PkgName),
    pkg_id = str(v.PkgID),
    type = eco,
    pkg_type = pkg_type,
    purl = ident and str(ident.PURL) or nil,
    installed_version = str(v.InstalledVersion),
    fixed_version = fixed,
    fix_state = fixed and "fixed" or FIX_STATE[str(v.Status) or "unknown"] or "unknown",
    severity = severity_of(v.Severity),
    scanner_severity = str(v.Severity),
    severity_source = sev_source,
    cvss_score = score, cvss_vector = vector, cvss_source = source, cvss = cvss,
    title = str(v.Title),
    description = str(v.Description),
    references = strings(v.References),
    primary_url = str(v.PrimaryURL),
    cwe = cwe and strings(cwe) or nil,
    target = target,
    path = str(v.PkgPath),
    layer = layer and (str(layer.DiffID) or str(layer.Digest)) or nil,
    fingerprint = str(v.Fingerprint),
    published = str(v.PublishedDate),
    modified = str(v.LastModifiedDate),
    scanner = "trivy",
  }
end

-- The lines a package is declared on in its lock or manifest file (Result.Packages[].
-- Locations), as Trivy's SARIF places the package's findings there.
local function package_lines(packages, name, version)
  for _, p in ipairs(packages) do
    if type(p) == "table" and str(p.Name) == name and str(p.Version) == version then
      local lines = {}
      for _, l in ipairs(tab(p.Locations) or {}) do
        if type(l) == "table" and math.type(l.StartLine) == "integer" then
          lines[#lines + 1] = { start_line = l.StartLine,
            end_line = math.type(l.EndLine) == "integer" and l.EndLine or l.StartLine }
        end
      end
      return #lines > 0 and lines or nil
    end
  end
  return nil
end

local function line_of(v)
  return math.type(v) == "integer" and v or nil
end

local function misconfiguration(m, res, i)
  local cause = tab(m.CauseMetadata) or {}
  return {
    result_index = i,
    start_line = math.type(cause.StartLine) == "integer" and cause.StartLine or nil,
    end_line = math.type(cause.EndLine) == "integer" and cause.EndLine or nil,
    class = str(res.Class),
    id = str(m.ID) or str(m.AVDID), title = str(m.Title), description = str(m.Description),
    message = str(m.Message), resolution = str(m.Resolution), check_type = str(m.Type),
    severity = severity_of(m.Severity), status = str(m.Status),
    target = str(res.Target), type = str(res.Type), references = strings(m.References),
    primary_url = str(m.PrimaryURL), scanner = "trivy",
  }
end

-- A secret Trivy found (Result.Secrets[]): where and which rule; Match is already masked.
local function secret(s, res, i)
  return {
    id = str(s.RuleID), category = str(s.Category), severity = severity_of(s.Severity),
    title = str(s.Title), start_line = line_of(s.StartLine), end_line = line_of(s.EndLine),
    match = str(s.Match), target = str(res.Target), class = str(res.Class), type = str(res.Type),
    result_index = i, scanner = "trivy",
  }
end

-- A license Trivy classified (Result.Licenses[]): of a package, or of a loose file.
local function license(l, res, i)
  return {
    name = str(l.Name), package = str(l.PkgName), file_path = str(l.FilePath),
    category = str(l.Category), severity = severity_of(l.Severity), link = str(l.Link),
    target = str(res.Target), class = str(res.Class), result_index = i, scanner = "trivy",
  }
end

local function digest_of(meta)
  local digests = tab(meta.RepoDigests)
  local first = digests and str(digests[1])
  return first and first:match("@(sha256:%x+)$") or nil
end

--- Normalize a decoded Trivy report.
---@param doc table
---@return table result (counts and compliance filled by the caller)
function M.normalize(doc)
  local findings, misconfs, secrets, licenses, dropped = {}, {}, {}, {}, {}
  local results = tab(doc.Results) or {}
  for i = 1, #results do
    local res = results[i]
    -- Each Result is let go once read: the raw report is collected while the findings grow
    -- (the findings keep only its strings and string lists).
    results[i] = false
    if type(res) ~= "table" then
      dropped[#dropped + 1] = "Results[" .. i .. "]: a JSON " .. type(res) .. ", not an object"
    else
      local pkg_type = str(res.Type)
      local eco = res.Class == "os-pkgs" and "os" or ecosystem(pkg_type)
      local target = str(res.Target)
      local vulns = tab(res.Vulnerabilities) or {}
      local packages = tab(res.Packages)
      for j = 1, #vulns do
        local v = vulns[j]
        -- an entry without an id is not a finding anyone can act on
        if type(v) == "table" and str(v.VulnerabilityID) then
          local f = finding(v, target, eco, pkg_type)
          f.class = str(res.Class)
          f.result_index = i
          if packages then f.lines = package_lines(packages, f.package, f.installed_version) end
          findings[#findings + 1] = f
        else
          dropped[#dropped + 1] = string.format("Results[%d].Vulnerabilities[%d]: %s", i, j,
            type(v) ~= "table" and ("a JSON " .. type(v) .. ", not an object")
            or "no VulnerabilityID string")
        end
      end
      for _, m in ipairs(tab(res.Misconfigurations) or {}) do
        if type(m) == "table" then misconfs[#misconfs + 1] = misconfiguration(m, res, i) end
      end
      for _, x in ipairs(tab(res.Secrets) or {}) do
        if type(x) == "table" then secrets[#secrets + 1] = secret(x, res, i) end
      end
      for _, x in ipairs(tab(res.Licenses) or {}) do
        if type(x) == "table" then licenses[#licenses + 1] = license(x, res, i) end
      end
    end
  end
  local meta = tab(doc.Metadata) or {}
  local os_info = tab(meta.OS)
  local trivy = tab(doc.Trivy)
  return model.result {
    image = str(doc.ArtifactName),
    artifact_type = str(doc.ArtifactType),
    digest = digest_of(meta),
    image_id = str(meta.ImageID),
    repo_tags = tab(meta.RepoTags) and strings(meta.RepoTags) or nil,
    repo_digests = tab(meta.RepoDigests) and strings(meta.RepoDigests) or nil,
    os = os_info and { family = str(os_info.Family), name = str(os_info.Name),
      eosl = os_info.EOSL == true } or nil,
    scanner = "trivy",
    scanner_version = trivy and str(trivy.Version) or nil,
    time = str(doc.CreatedAt),
    findings = findings,
    misconfigurations = misconfs,
    secrets = secrets,
    licenses = licenses,
    dropped = dropped,
  }
end

return M
