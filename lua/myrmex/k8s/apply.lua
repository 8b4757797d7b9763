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

-- Tiers, applied one after the other: namespaces; CRDs (their custom resources need them);
-- what other objects' admission or start-up reads (quotas, limits, accounts, secrets,
-- config, storage, RBAC, priority); everything else; and last the admission hooks and
-- aggregated APIs, so that their own Deployments and Services exist first and they do not
-- intercept the rest of the same apply.
local TIER = {
  Namespace = 1,
  CustomResourceDefinition = 2,
  PriorityClass = 3, StorageClass = 3, RuntimeClass = 3, IngressClass = 3, ResourceQuota = 3, LimitRange = 3,
  NetworkPolicy = 3, PodDisruptionBudget = 3, ServiceAccount = 3, Secret = 3, ConfigMap = 3,
  PersistentVolume = 3, PersistentVolumeClaim = 3, ClusterRole = 3, ClusterRoleBinding = 3, Role = 3,
  RoleBinding = 3,
  MutatingWebhookConfiguration = 5, ValidatingWebhookConfiguration = 5, ValidatingAdmissionPolicy = 5,
  ValidatingAdmissionPolicyBinding = 5, MutatingAdmissionPolicy = 5, MutatingAdmissionPolicyBinding = 5,
  APIService = 5,
}
local OTHER = 4
local function tier_of(o) return TIER[o.kind] or OTHER end

--- Objects in tier order, manifest order within a tier.
function M.order(objs)
  local sorted = {}
  for tier = 1, 5 do
    for _, o in ipairs(objs) do
      if tier_of(o) == tier then sorted[#sorted + 1] = o end
    end
  end
  return sorted
end

-- The resource of obj's kind. A kind the cached discovery lacks is looked up once more after
-- a fresh discovery: a CRD applied a moment ago shows up there.
local function resource_of(client, obj)
  local ok, r = pcall(client.resource, client, obj.kind, obj.apiVersion)
  if ok then return r end
  if errors.is(r, "Interrupted") then error(r, 0) end
  client._resources = nil
  return client:resource(obj.kind, obj.apiVersion)
end

--- Apply one object.
function M.apply_object(client, obj, opts)
  if type(obj) ~= "table" or type(obj.kind) ~= "string" or type(obj.apiVersion) ~= "string"
    or type(obj.metadata) ~= "table" or type(obj.metadata.name) ~= "string" then
    error("k8s.apply: object with apiVersion, kind and metadata.name expected", 3)
  end
  local r = resource_of(client, obj)
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

local function describe(o)
  local ns = o.metadata.namespace
  return o.kind .. " " .. (ns and (ns .. "/") or "") .. o.metadata.name
end

-- Resolve the kinds of objs[i..j] before going concurrent, each kind once: kinds not known yet
-- (CRDs applied in the tier before) cost one discovery, not one per branch, and a kind the
-- server does not have fails its objects without one discovery each. Returns, by index, the
-- error of each object whose kind did not resolve.
local function resolve_kinds(client, objs, i, j)
  local by_kind, unresolved = {}, {}
  for k = i, j do
    local o = objs[k]
    local key = o.kind .. "\0" .. o.apiVersion
    if by_kind[key] == nil then
      local ok, err = pcall(resource_of, client, o)
      if not ok and errors.is(err, "Interrupted") then error(err, 0) end
      by_kind[key] = ok or err
    end
    if by_kind[key] ~= true then unresolved[k] = by_kind[key] end
  end
  return unresolved
end

-- Apply objs[i..j], `width` at a time; every object is tried. Failures are added to `failed`
-- as {index, object, error}; an interruption is raised at once.
local function apply_tier(client, objs, i, j, opts, width, results, failed)
  local unresolved = resolve_kinds(client, objs, i, j)
  local function one(k)
    local ok, r = false, unresolved[k]
    if r == nil then ok, r = pcall(M.apply_object, client, objs[k], opts) end
    if ok then
      results[k] = r
    elseif errors.is(r, "Interrupted") then
      error(r, 0)
    else
      failed[#failed + 1] = { index = k, object = describe(objs[k]), error = r }
    end
  end
  if width <= 1 or i == j then
    for k = i, j do one(k) end
    return
  end
  local ks = {}
  for k = i, j do ks[#ks + 1] = k end
  require("myrmex.parallel").map(ks, one, { max = width })
end

-- The first failure in apply order, its message naming the object, and every failure listed
-- in `failed` (object, error) on it.
local function raise_failures(failed)
  table.sort(failed, function(a, b) return a.index < b.index end)
  local first = failed[1]
  local e = first.error
  local more = #failed > 1 and (" (and " .. (#failed - 1) .. " more failed)") or ""
  if not errors.is(e) then error(first.object .. ": " .. errors.message(e) .. more, 0) end
  -- A copy: objects of one unknown kind share their error, and `failed` keeps each as it was.
  local raised = setmetatable({}, getmetatable(e))
  for k, v in pairs(e) do raised[k] = v end
  e = raised
  e.message = first.object .. ": " .. e.message .. more
  e.failed = {}
  for n, f in ipairs(failed) do e.failed[n] = { object = f.object, error = f.error } end
  error(e, 0)
end

local DEFAULT_PARALLEL = 8
M.CRD_TIMEOUT = 60

-- The conditions of a CRD as a list (JSON null, as a fresh CRD has them, is none).
local function conditions(crd)
  local st = type(crd.status) == "table" and crd.status or {}
  return type(st.conditions) == "table" and st.conditions or {}
end

-- The condition of `crd` of that type, or nil.
local function condition(crd, ctype)
  for _, c in ipairs(conditions(crd)) do
    if c.type == ctype then return c end
  end
  return nil
end

-- Wait until each CRD applied in objs[i..j] is Established and discovery serves its kind, so
-- that the next tier's custom resources find it (the API server answers 404 for a kind it
-- accepted a moment ago but does not serve yet). Bounded: Timeout names the CRD and the last
-- conditions seen.
local function wait_crds(client, objs, i, j, results, timeout)
  local rt = require("myrmex.core.runtime")
  local http = require("myrmex.http")
  for k = i, j do
    local o = objs[k]
    if o.kind == "CustomResourceDefinition" and results[k] then
      local name = o.metadata.name
      local deadline = rt.monotonic() + timeout
      local crd = results[k]
      local served = false
      while true do
        local est = condition(crd, "Established")
        if est and est.status == "True" then
          local spec = crd.spec or {}
          local version
          for _, v in ipairs(spec.versions or {}) do
            if v.served and (v.storage or not version) then version = v.name end
          end
          local ok, doc = pcall(client.request, client, "GET", "/apis/" .. spec.group .. "/" .. tostring(version))
          for _, r in ipairs(ok and type(doc) == "table" and doc.resources or {}) do
            if r.name == spec.names.plural then served = true end
          end
          if served then break end
        end
        if rt.monotonic() > deadline then
          local seen = {}
          for _, c in ipairs(conditions(crd)) do
            seen[#seen + 1] = c.type .. "=" .. tostring(c.status) .. (c.reason and (" (" .. c.reason .. ")") or "")
          end
          errors.raise({ code = "Timeout", engine = "k8s", message = "CustomResourceDefinition " .. name
            .. (est and est.status == "True" and " is Established but discovery does not list it" or
              " is not Established") .. " after " .. timeout .. "s (conditions: "
            .. (#seen > 0 and table.concat(seen, ", ") or "none") .. ")" }, 0)
        end
        http.sleep(0.1)
        crd = client:get("customresourcedefinitions.apiextensions.k8s.io", name)
      end
      client._resources = nil
    end
  end
end

--- Apply every object of a manifest, tier by tier (see TIER); the objects of one tier go
--- `parallel` at a time (default 8; 1 applies them one by one). Every object of a tier is
--- tried; if any failed, the next tiers are not applied and the first failure is raised.
function M.apply_manifest(client, source, opts)
  local width = opts.parallel or DEFAULT_PARALLEL
  if math.type(width) ~= "integer" or width < 1 then
    error("k8s.apply_manifest: parallel must be a positive integer", 3)
  end
  local crd_timeout = opts.crd_timeout or M.CRD_TIMEOUT
  if type(crd_timeout) ~= "number" or crd_timeout <= 0 then
    error("k8s.apply_manifest: crd_timeout must be a positive number of seconds", 3)
  end
  if opts.prune and not opts.applyset then
    error("k8s.apply_manifest: prune needs an applyset (the set says what may be deleted)", 3)
  end
  local text, origin = read_source(source)
  local objs = M.order(M.parse(text, origin))
  local set
  if opts.applyset then
    local applyset = require("myrmex.k8s.applyset")
    set = applyset.open(client, opts.applyset, opts)
    for k, o in ipairs(objs) do objs[k] = applyset.label(set, o) end
    applyset.before(set, client, objs, opts)
  end
  local waits = not opts.dry_run and not require("myrmex.plan").active()
  local results, failed = {}, {}
  local i = 1
  while i <= #objs do
    local j = i
    while j < #objs and tier_of(objs[j + 1]) == tier_of(objs[i]) do j = j + 1 end
    apply_tier(client, objs, i, j, opts, width, results, failed)
    if #failed > 0 then raise_failures(failed) end
    if waits and tier_of(objs[i]) == TIER.CustomResourceDefinition then
      wait_crds(client, objs, i, j, results, crd_timeout)
    end
    i = j + 1
  end
  local pruned
  if set then
    local applyset = require("myrmex.k8s.applyset")
    if opts.prune then pruned = applyset.prune(set, client, objs, opts) end
    applyset.after(set, client, opts)
  end
  return results, pruned
end

return M
