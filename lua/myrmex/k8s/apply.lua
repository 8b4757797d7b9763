--- Server-side apply of manifests for myrmex.k8s (PATCH application/apply-patch+yaml).
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")

local M = {}

local function read_source(source)
  if type(source) ~= "string" then error("k8s.apply_manifest: text or path expected, got " .. type(source), 4) end
  if not source:find("\n", 1, true) and #source < 4096 then
    local f = io.open(source, "rb")
    if f then
      local text = f:read("a")
      f:close()
      return text, source
    end
  end
  return source, "manifest"
end

--- The objects of a manifest text: YAML documents (JSON is YAML too), `List` kinds flattened,
--- empty documents skipped.
---@param text string
---@param origin? string used in error messages
---@return table[]
function M.parse(text, origin)
  local ok, docs = pcall(yaml.load_all, text)
  if not ok then
    errors.raise({ code = "Invalid", engine = "k8s", message = (origin or "manifest") .. ": " .. tostring(docs) }, 0)
  end
  local out = {}
  local function add(doc, where)
    if doc == nil or json.isnull(doc) then return end
    if type(doc) ~= "table" or type(doc.kind) ~= "string" or type(doc.apiVersion) ~= "string" then
      errors.raise({ code = "Invalid", engine = "k8s", message = where
        .. ": not a Kubernetes object (apiVersion and kind required)" }, 0)
    end
    if doc.kind:match("List$") and type(doc.items) == "table" then
      for i, it in ipairs(doc.items) do add(it, where .. ".items[" .. i .. "]") end
    else
      if type(doc.metadata) ~= "table" or type(doc.metadata.name) ~= "string" then
        errors.raise({ code = "Invalid", engine = "k8s", message = where
          .. ": metadata.name is required for apply" }, 0)
      end
      out[#out + 1] = doc
    end
  end
  for i, doc in ipairs(docs) do add(doc, (origin or "manifest") .. " document " .. i) end
  return out
end

local FIRST = { Namespace = 1, CustomResourceDefinition = 2 }

--- Namespaces first, then CRDs, then the rest in their manifest order (a stable sort).
function M.order(objs)
  local idx = {}
  for i, o in ipairs(objs) do idx[o] = i end
  local sorted = { table.unpack(objs) }
  table.sort(sorted, function(a, b)
    local ra, rb = FIRST[a.kind] or 3, FIRST[b.kind] or 3
    if ra ~= rb then return ra < rb end
    return idx[a] < idx[b]
  end)
  return sorted
end

--- Apply one object.
function M.apply_object(client, obj, opts)
  if type(obj) ~= "table" or type(obj.kind) ~= "string" or type(obj.apiVersion) ~= "string"
    or type(obj.metadata) ~= "table" or type(obj.metadata.name) ~= "string" then
    error("k8s.apply: object with apiVersion, kind and metadata.name expected", 3)
  end
  local ok, r = pcall(client.resource, client, obj.kind, obj.apiVersion)
  if not ok then
    client._resources = nil -- a CRD applied a moment ago shows up on the next discovery
    r = client:resource(obj.kind, obj.apiVersion)
  end
  local ns = r.namespaced and (obj.metadata.namespace or opts.namespace or client.namespace) or nil
  if r.namespaced and obj.metadata.namespace == nil then
    local meta = { namespace = ns }
    for k, v in pairs(obj.metadata) do meta[k] = v end
    local copy = { metadata = meta }
    for k, v in pairs(obj) do if k ~= "metadata" then copy[k] = v end end
    obj = copy
  end
  return client:patch(r.name .. (r.group ~= "" and ("." .. r.group) or ""), obj.metadata.name, obj, {
    type = "apply", namespace = ns, force = opts.force, dry_run = opts.dry_run,
    field_manager = opts.field_manager or client.field_manager, api_version = obj.apiVersion })
end

--- Apply every object of a manifest; with `parallel = N` objects after the namespaces and
--- CRDs go N at a time.
function M.apply_manifest(client, source, opts)
  local text, origin = read_source(source)
  local objs = M.order(M.parse(text, origin))
  local results = {}
  local rest = {}
  for i, o in ipairs(objs) do
    if FIRST[o.kind] or not opts.parallel then
      results[i] = M.apply_object(client, o, opts)
    else
      rest[#rest + 1] = i
    end
  end
  if #rest > 0 then
    local parallel = require("myrmex.parallel")
    local out = parallel.map(rest, function(i) return M.apply_object(client, objs[i], opts) end,
      { max = opts.parallel })
    for n, i in ipairs(rest) do results[i] = out[n] end
  end
  return results
end

return M
