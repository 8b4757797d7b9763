--- ApplySets (KEP-3659), the set bookkeeping of `kubectl apply --applyset=... --prune`: a parent
--- object (a Secret by default) labelled with the set's id and annotated with the tooling, the
--- group-kinds and the extra namespaces of its members; members carry the part-of label.
--- Pruning deletes the labelled members of those group-kinds that the manifest no longer has.
--- See docs/k8s.md, "ApplySets".
local digest = require("myrmex.digest")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local M = {}

M.ID_LABEL = "applyset.kubernetes.io/id"
M.PART_OF_LABEL = "applyset.kubernetes.io/part-of"
M.TOOLING = "applyset.kubernetes.io/tooling"
M.GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
M.GROUP_RESOURCES = "applyset.kubernetes.io/contains-group-resources" -- older kubectl wrote this
M.NAMESPACES = "applyset.kubernetes.io/additional-namespaces"
M.DEFAULT_TOOLING = "myrmex/v1"

local function bytes_of_hex(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

--- The set's id, as the KEP defines it: "applyset-" .. base64url(sha256(name.namespace.kind.group))
--- .. "-v1", with no padding.
---@param name string the parent's name
---@param namespace string|nil the parent's namespace ("" or nil when cluster-scoped)
---@param kind string the parent's kind ("Secret")
---@param group string the parent's API group ("" for the core group)
---@return string
function M.id(name, namespace, kind, group)
  local d = digest.string(name .. "." .. (namespace or "") .. "." .. kind .. "." .. (group or ""))
  return "applyset-" .. digest.base64(bytes_of_hex(d:match(":(%x+)$")), "url") .. "-v1"
end

local function group_kind(kind, group)
  return (group == nil or group == "") and kind or (kind .. "." .. group)
end
M.group_kind = group_kind

local function split_list(s)
  local out = {}
  for item in (s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The resource of a group-kind ("Deployment.apps"), from discovery; the preferred version wins.
local function resource_of_gk(client, gk)
  local kind, group = gk:match("^([^.]+)%.?(.*)$")
  local best
  for _, r in ipairs(client:_discover()) do
    if r.kind == kind and r.group == group then
      if not best or (r.preferred and not best.preferred) then best = r end
    end
  end
  return best
end

--- Resolve the parent named by `spec` ("NAME" for a Secret, "configmaps/NAME",
--- "RESOURCE.GROUP/NAME") and read what the server has of it.
---@return table set {id, parent = {resource, name, namespace}, existing = object|nil, tooling}
function M.open(client, spec, opts)
  if type(spec) ~= "string" or spec == "" then
    error("k8s.apply_manifest: applyset must be a name or RESOURCE[.GROUP]/NAME, got " .. tostring(spec), 4)
  end
  local res, name = spec:match("^(.+)/([^/]+)$")
  if not res then res, name = "secrets", spec end
  local r = client:resource(res)
  local ns = r.namespaced and (opts.namespace or client.namespace) or nil
  local set = { parent = { resource = r, name = name, namespace = ns }, tooling = opts.tooling or M.DEFAULT_TOOLING,
    id = M.id(name, ns, r.kind, r.group) }
  local ok, cur = pcall(client.get, client, r.name .. (r.group ~= "" and ("." .. r.group) or ""), name,
    { namespace = ns })
  if not ok then
    if not errors.is(cur, "NotFound") then error(cur, 0) end
    cur = nil
  end
  if cur then
    local meta = cur.metadata or {}
    local labels, ann = meta.labels or {}, meta.annotations or {}
    local where = r.kind .. " " .. (ns and (ns .. "/") or "") .. name
    if labels[M.ID_LABEL] ~= set.id then
      errors.raise({ code = "Conflict", engine = "k8s", message = "applyset parent " .. where
        .. " exists but is not that set's parent (label " .. M.ID_LABEL .. " is "
        .. tostring(labels[M.ID_LABEL]) .. ", want " .. set.id .. ")" }, 0)
    end
    local tool = ann[M.TOOLING]
    local have, want = tool and tool:match("^([^/]+)"), set.tooling:match("^([^/]+)")
    if have ~= want then
      errors.raise({ code = "Conflict", engine = "k8s", message = "applyset parent " .. where
        .. " is managed by tooling " .. tostring(tool) .. ", not " .. set.tooling
        .. " (pass tooling = \"" .. tostring(tool) .. "\" to continue it)" }, 0)
    end
    set.existing = cur
    local gks = split_list(ann[M.GROUP_KINDS])
    -- A set written by an older kubectl lists group-resources ("deployments.apps") instead.
    for _, gr in ipairs(split_list(ann[M.GROUP_RESOURCES])) do
      local ok2, rr = pcall(client.resource, client, gr)
      if ok2 then gks[#gks + 1] = group_kind(rr.kind, rr.group) end
    end
    set.old_gks, set.old_namespaces = gks, split_list(ann[M.NAMESPACES])
  else
    set.old_gks, set.old_namespaces = {}, {}
  end
  return set
end

--- A copy of `obj` with the set's part-of label (the manifest's objects are not changed).
function M.label(set, obj)
  local meta = {}
  for k, v in pairs(obj.metadata) do meta[k] = v end
  local labels = {}
  for k, v in pairs(meta.labels or {}) do labels[k] = v end
  labels[M.PART_OF_LABEL] = set.id
  meta.labels = labels
  local copy = { metadata = meta }
  for k, v in pairs(obj) do if k ~= "metadata" then copy[k] = v end end
  return copy
end

-- Group-kinds and extra namespaces of the objects about to be applied.
function M.members(set, client, objs, default_ns)
  local gks, nss = {}, {}
  for _, o in ipairs(objs) do
    local group = o.apiVersion:match("^(.+)/[^/]+$") or ""
    gks[group_kind(o.kind, group)] = true
    local ok, r = pcall(client.resource, client, o.kind, o.apiVersion)
    local namespaced = not ok or r.namespaced
    if namespaced then
      local ns = o.metadata.namespace or default_ns
      if ns ~= set.parent.namespace then nss[ns] = true end
    end
  end
  return gks, nss
end

-- The field manager of the parent's bookkeeping. kubectl writes it as "kubectl-applyset",
-- unforced: a set shared with kubectl (tooling "kubectl/...") is written under that name, or
-- kubectl's next write of the annotations would conflict with ours.
local function parent_manager(set, client, opts)
  if set.tooling:match("^kubectl/") then return "kubectl-applyset" end
  return (opts.field_manager or client.field_manager) .. "-applyset"
end

-- Server-side apply of the parent with these group-kinds and namespaces (lists of strings),
-- the three annotations always present as kubectl writes them (an empty namespace list is "").
function M.write_parent(set, client, gks, namespaces, opts)
  local p = set.parent
  local r = p.resource
  local ann = { [M.TOOLING] = set.tooling, [M.GROUP_KINDS] = table.concat(gks, ","),
    [M.NAMESPACES] = table.concat(namespaces, ",") }
  local obj = { apiVersion = r.api_version, kind = r.kind,
    metadata = { name = p.name, namespace = p.namespace, labels = { [M.ID_LABEL] = set.id }, annotations = ann } }
  return client:patch(r.name .. (r.group ~= "" and ("." .. r.group) or ""), p.name, obj, { type = "apply",
    namespace = p.namespace, dry_run = opts.dry_run, api_version = r.api_version,
    field_manager = parent_manager(set, client, opts) })
end

local function union(a, b)
  local seen, out = {}, {}
  for _, list in ipairs({ a, b }) do
    for _, v in ipairs(list) do
      if not seen[v] then seen[v] = true; out[#out + 1] = v end
    end
  end
  table.sort(out)
  return out
end
M.union = union

--- Before applying: record the union of the old and the new members on the parent, so that a
--- run cut short still leaves every member findable by the next one.
function M.before(set, client, objs, opts)
  local gks, nss = M.members(set, client, objs, set.parent.namespace or opts.namespace or client.namespace)
  set.new_gks, set.new_namespaces = sorted_keys(gks), sorted_keys(nss)
  M.write_parent(set, client, union(set.old_gks, set.new_gks), union(set.old_namespaces, set.new_namespaces), opts)
end

--- Delete the set's members that `applied` does not have: every object labelled part-of the
--- set, of every group-kind the set has had, in the parent's namespace and the additional ones
--- (cluster-wide for cluster-scoped kinds). Returns what was deleted, as "Kind ns/name".
function M.prune(set, client, applied, opts)
  local keep = {}
  local default_ns = set.parent.namespace or opts.namespace or client.namespace
  for _, o in ipairs(applied) do
    local m = o.metadata or {}
    local group = (o.apiVersion or ""):match("^(.+)/[^/]+$") or ""
    local ns = m.namespace
    if not ns then
      local ok, r = pcall(client.resource, client, o.kind, o.apiVersion)
      if ok and r.namespaced then ns = default_ns end
    end
    keep[group_kind(o.kind, group) .. " " .. (ns or "") .. "/" .. m.name] = true
  end
  local pruned = {}
  local namespaces = union({ set.parent.namespace or opts.namespace or client.namespace },
    union(set.old_namespaces, set.new_namespaces))
  for _, gk in ipairs(union(set.old_gks, set.new_gks)) do
    local r = resource_of_gk(client, gk)
    if not r then
      log.warn("applyset: a kind of the set is not served any more; its members are not pruned",
        { applyset = set.id, kind = gk })
    else
      local kind = r.name .. (r.group ~= "" and ("." .. r.group) or "")
      for _, ns in ipairs(r.namespaced and namespaces or { "" }) do
        local items = client:list(kind, { namespace = r.namespaced and ns or nil, api_version = r.api_version,
          label_selector = M.PART_OF_LABEL .. "=" .. set.id })
        for _, it in ipairs(items) do
          local m = it.metadata
          local key = gk .. " " .. (m.namespace or "") .. "/" .. m.name
          if not keep[key] and not m.deletionTimestamp then
            client:delete(kind, m.name, { namespace = m.namespace, api_version = r.api_version,
              dry_run = opts.dry_run })
            pruned[#pruned + 1] = r.kind .. " " .. (m.namespace and (m.namespace .. "/") or "") .. m.name
          end
        end
      end
    end
  end
  table.sort(pruned)
  return pruned
end

--- After applying (and pruning): the parent lists exactly the new members.
function M.after(set, client, opts)
  M.write_parent(set, client, set.new_gks, set.new_namespaces, opts)
end

return M
