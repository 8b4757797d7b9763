--- Ignore rules users already keep for their scanners: Trivy's `.trivyignore` (plain and
--- YAML forms) and OpenVEX documents, turned into policy ignore rules. Internal to
--- myrmex.scan; see docs/scan.md ("Ignore files and VEX").
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local M = {}

local function fail(msg, path)
  errors.raise({ code = "Invalid", engine = "scan", message = msg, details = { path = path } }, 3)
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then fail("cannot read ignore file: " .. tostring(err), path) end
  local text = f:read("a") or ""
  f:close()
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  return text
end

-- Trivy's exp:YYYY-MM-DD stops applying at the start of that day (its check is now > date).
local function trivy_expiry(date, where)
  if not date:match("^%d%d%d%d%-%d%d%-%d%d$") then
    fail(where .. ": expiry must be YYYY-MM-DD, got " .. date, where)
  end
  return date .. "T00:00:00Z"
end

-- The plain form: one id a line, optionally `exp:YYYY-MM-DD`; `#` starts a comment line.
local function trivyignore_plain(text, path)
  local rules, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local fields = {}
      for w in line:gmatch("%S+") do fields[#fields + 1] = w end
      local where = path .. ":" .. n
      local rule = { id = fields[1], reason = "listed in " .. path, source = where, exact = true }
      for k = 2, #fields do
        local exp = fields[k]:match("^exp:(.*)$")
        if exp then rule.expires = trivy_expiry(exp, where) end
      end
      rules[#rules + 1] = rule
    end
  end
  return rules
end

local function list_of(v, where, key)
  if v == nil or v == yaml.null then return {} end
  if type(v) ~= "table" then fail(where .. ": " .. key .. " must be a list", where) end
  return v
end

-- The YAML form (.trivyignore.yaml): vulnerabilities[] with id, paths, purls, statement and
-- expired_at. Misconfiguration, secret and license entries are not findings this policy
-- judges; they are skipped (logged at debug level).
local glob = require("myrmex.scan.glob")

local function trivyignore_yaml(text, path)
  local ok, doc = pcall(yaml.load, text)
  if not ok then fail(path .. ": not valid YAML: " .. tostring(doc):gsub("^.-yaml[%.%w_]*: ", ""), path) end
  if type(doc) ~= "table" then fail(path .. ": expected a mapping with 'vulnerabilities'", path) end
  local rules = {}
  for _, key in ipairs({ "misconfigurations", "secrets", "licenses" }) do
    if doc[key] ~= nil then log.debug("scan: " .. path .. ": " .. key .. " entries are not applied",
      { engine = "scan" }) end
  end
  for i, e in ipairs(list_of(doc.vulnerabilities, path, "vulnerabilities")) do
    local where = string.format("%s: vulnerabilities[%d]", path, i)
    if type(e) ~= "table" or type(e.id) ~= "string" or e.id == "" then
      fail(where .. ": needs an id", path)
    end
    local expires
    if e.expired_at ~= nil then expires = trivy_expiry(tostring(e.expired_at), where) end
    local reason = type(e.statement) == "string" and e.statement ~= "" and e.statement
      or ("listed in " .. path)
    local base = { id = e.id, reason = reason, justification = type(e.statement) == "string"
      and e.statement or nil, expires = expires, source = where, exact = true }
    local paths, purls = list_of(e.paths, where, "paths"), list_of(e.purls, where, "purls")
    local function add(extra)
      local r = {}
      for k, v in pairs(base) do r[k] = v end
      for k, v in pairs(extra) do r[k] = v end
      rules[#rules + 1] = r
    end
    -- Trivy ignores a finding when one of the paths (doublestar globs on the target and the
    -- package path) and one of the purls match, either list being absent meaning any: a
    -- rule per path and purl.
    for j, p in ipairs(paths) do
      p = tostring(p)
      if not glob.valid(p) then
        fail(string.format("%s: paths[%d]: invalid path pattern '%s'", where, j, p), path)
      end
      paths[j] = p
    end
    if #paths == 0 then paths = { false } end
    if #purls == 0 then purls = { false } end
    for _, p in ipairs(paths) do
      for _, u in ipairs(purls) do add({ path_glob = p or nil, purl = u and tostring(u) or nil }) end
    end
  end
  return rules
end

local IGNORING = { not_affected = true, fixed = true }

-- The ids of a statement's vulnerability: its name and aliases (OpenVEX 0.2), or the string
-- itself (0.0.x).
local function vuln_ids(v)
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then return {} end
  local ids = {}
  if type(v.name) == "string" then ids[#ids + 1] = v.name end
  if type(v["@id"]) == "string" and not v["@id"]:find("^https?://") then ids[#ids + 1] = v["@id"] end
  for _, a in ipairs(type(v.aliases) == "table" and v.aliases or {}) do
    if type(a) == "string" then ids[#ids + 1] = a end
  end
  return ids
end

local function product_id(p)
  if type(p) == "string" then return p end
  if type(p) == "table" then
    if type(p["@id"]) == "string" then return p["@id"] end
    local ids = type(p.identifiers) == "table" and p.identifiers or {}
    if type(ids.purl) == "string" then return ids.purl end
  end
  return nil
end

-- An image product (pkg:oci/, pkg:docker/, or a plain reference) scopes the statement to the
-- image scanned; a package purl names the affected package itself.
local function is_image(id)
  return id:find("^pkg:oci/") or id:find("^pkg:docker/") or not id:find("^pkg:")
end

--- Ignore rules from an OpenVEX document: one per vulnerability id (and alias), product and
--- subcomponent whose latest statement is `not_affected` or `fixed`.
---@param doc table decoded OpenVEX JSON
---@param path string where it came from (for messages)
---@return table[]
function M.openvex(doc, path)
  local statements = doc.statements
  if type(statements) ~= "table" then fail(path .. ": an OpenVEX document needs statements", path) end
  -- The latest statement about a (vulnerability, product, subcomponent) decides (OpenVEX):
  -- statements in document order, a later timestamp overriding an earlier one.
  local latest, order = {}, {}
  for i, st in ipairs(statements) do
    local where = string.format("%s: statements[%d]", path, i)
    if type(st) ~= "table" then fail(where .. ": must be an object", path) end
    local status = st.status
    if type(status) ~= "string" then fail(where .. ": needs a status", path) end
    local ids = vuln_ids(st.vulnerability)
    if #ids == 0 then fail(where .. ": needs a vulnerability name", path) end
    local products = type(st.products) == "table" and st.products or {}
    if #products == 0 then fail(where .. ": needs products", path) end
    local stamp = type(st.timestamp) == "string" and st.timestamp or doc.timestamp or ""
    for _, p in ipairs(products) do
      local pid = product_id(p)
      if not pid then fail(where .. ": a product without an @id", path) end
      local subs = type(p) == "table" and type(p.subcomponents) == "table" and p.subcomponents or {}
      local targets = {}
      if #subs == 0 then targets[1] = "" end
      for _, s in ipairs(subs) do
        local sid = product_id(s)
        if not sid then fail(where .. ": a subcomponent without an @id", path) end
        targets[#targets + 1] = sid
      end
      for _, sub in ipairs(targets) do
        -- keyed by the vulnerability's name: a later statement without the aliases still
        -- overrides what an earlier one said under them
        local key = ids[1] .. "\0" .. pid .. "\0" .. sub
        local prev = latest[key]
        if not prev then order[#order + 1] = key end
        if not prev or stamp >= prev.stamp then
          latest[key] = { ids = ids, product = pid, sub = sub, status = status, stamp = stamp,
            st = st, where = where }
        end
      end
    end
  end
  local rules = {}
  for _, key in ipairs(order) do
    local e = latest[key]
    if IGNORING[e.status] then
      local st = e.st
      local just = type(st.justification) == "string" and st.justification or nil
      local note = (type(st.impact_statement) == "string" and st.impact_statement)
        or (type(st.status_notes) == "string" and st.status_notes) or nil
      local reason = "VEX " .. e.status .. (just and (": " .. just) or "") ..
        (note and (" — " .. note) or "")
      for _, id in ipairs(e.ids) do
        local r = { id = id, reason = reason, justification = just or e.status, source = e.where }
        if e.sub ~= "" then
          r.purl = e.sub
          if is_image(e.product) then r.product = e.product end
        elseif is_image(e.product) then
          r.product = e.product
        else
          r.purl = e.product
        end
        rules[#rules + 1] = r
      end
    end
  end
  return rules
end

--- Read an ignore file: OpenVEX JSON, `.trivyignore.yaml` or plain `.trivyignore`, told
--- apart by content (JSON with an OpenVEX @context; a YAML mapping with `vulnerabilities`;
--- else the plain form). Returns policy ignore rules with `source` (file and line or entry).
---@param path string
---@return table[]
function M.read(path)
  local text = read(path)
  if text:find("^%s*{") then
    local ok, doc = pcall(json.decode, text)
    if not ok then fail(path .. ": not valid JSON: " .. tostring(doc):gsub("^.-json%.decode: ", ""), path) end
    local ctx = type(doc) == "table" and doc["@context"]
    if type(ctx) ~= "string" or not ctx:find("openvex", 1, true) then
      fail(path .. ": JSON that is no OpenVEX document (its @context must name openvex)", path)
    end
    return M.openvex(doc, path)
  end
  if path:find("%.ya?ml$") or text:find("^%s*vulnerabilities%s*:") or text:find("\nvulnerabilities%s*:") then
    return trivyignore_yaml(text, path)
  end
  return trivyignore_plain(text, path)
end

return M
