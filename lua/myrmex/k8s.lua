--- Kubernetes through its REST API: kubeconfig, generic CRUD/patch/watch for any resource found
--- by discovery, deployments, services, scale, server-side apply, rollouts, Jobs.
--- See docs/k8s.md.
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local json = require("myrmex.json")
local kubeconfig = require("myrmex.k8s.kubeconfig")
local log = require("myrmex.log")
local plan = require("myrmex.plan")

local M = {}
M.kubeconfig = kubeconfig

local Client = {}
Client.__index = Client
Client.__name = "myrmex.k8s.client"

local function check_opts(fname, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fname .. ": options table expected, got " .. type(opts), 3) end
  for k in pairs(opts) do
    if not known[k] then error(fname .. ": unknown option '" .. tostring(k) .. "'", 3) end
  end
  return opts
end

local function set(list)
  local t = {}
  for _, k in ipairs(list) do t[k] = true end
  return t
end

--- Connect to a cluster. Reads KUBECONFIG (merged as kubectl merges it), ~/.kube/config, or
--- the pod's service account. Nothing is sent until the first request.
---@class myrmex.k8s.ConnectOptions
---@field kubeconfig? string|string[] files to merge instead of $KUBECONFIG / ~/.kube/config
---@field context? string
---@field namespace? string
---@field timeout? number seconds per request (default 30)
---@field field_manager? string default "myrmex"
---@field serviceaccount_dir? string
---@field exec_timeout? number seconds an exec credential plugin may take (default 30)
---@field retries? integer retry budget of one call: 429, 5xx, lost connections (default 5)

---@param opts? myrmex.k8s.ConnectOptions
---@return table client
function M.connect(opts)
  opts = check_opts("k8s.connect", opts, set { "kubeconfig", "context", "namespace", "timeout",
    "field_manager", "serviceaccount_dir", "exec_timeout", "retries" })
  if opts.retries ~= nil and (math.type(opts.retries) ~= "integer" or opts.retries < 0) then
    error("k8s.connect: retries must be a non-negative integer", 2)
  end
  local settings
  local files = kubeconfig.files(opts.kubeconfig)
  local any = false
  for _, f in ipairs(files) do
    local h = f and io.open(f)
    if h then h:close(); any = true end
  end
  if not any and not opts.kubeconfig then settings = kubeconfig.in_cluster(opts.serviceaccount_dir) end
  if not settings then
    settings = kubeconfig.resolve(kubeconfig.load(opts.kubeconfig), { context = opts.context,
      namespace = opts.namespace })
  elseif opts.namespace then
    settings.namespace = opts.namespace
  end
  return setmetatable({
    server = settings.server, namespace = settings.namespace, context = settings.context,
    settings = settings, timeout = opts.timeout or 30, exec_timeout = opts.exec_timeout,
      field_manager = opts.field_manager or "myrmex", retries = opts.retries or 5,
    _resources = nil,
  }, Client)
end

-- ---- requests -------------------------------------------------------------------------------

function Client:_auth(refresh)
  local a = self.settings.auth
  local headers, tls = {}, self.settings.tls
  if a.kind == "token" then
    headers.Authorization = "Bearer " .. a.token
  elseif a.kind == "token_file" then
    local f = io.open(a.path)
    local tok = a.token
    if f then
      tok = f:read("a"):gsub("%s+$", "")
      f:close()
      log.secret(tok)
    elseif not tok then
      errors.raise({ code = "Unauthorized", engine = "k8s", message = "token file " .. a.path .. " cannot be read" }, 0)
    end
    headers.Authorization = "Bearer " .. tok
  elseif a.kind == "exec" then
    local cred = kubeconfig.exec_credential(a.exec, self.settings.cluster_info, { refresh = refresh,
      timeout = self.exec_timeout })
    if cred.token then headers.Authorization = "Bearer " .. cred.token end
    if cred.cert_data then
      tls = { ca = self.settings.tls.ca, ca_data = self.settings.tls.ca_data, insecure = self.settings.tls.insecure,
        server_name = self.settings.tls.server_name, cert_data = cred.cert_data, key_data = cred.key_data }
    end
  end
  return headers, tls
end

local function status_error(res, what)
  local ok, body = pcall(json.decode, res.body or "")
  local msg, details = nil, nil
  if ok and type(body) == "table" and body.kind == "Status" then
    msg = body.message
    details = { reason = body.reason, causes = body.details and body.details.causes, status = body }
    if body.reason == "Expired" or body.reason == "Gone" then details.gone = true end
    -- Who denied it, when admission did: the server names the webhook or the policy only in
    -- the message, in these words.
    local m = type(msg) == "string" and msg or ""
    details.webhook = m:match('admission webhook "([^"]+)" denied the request')
    local policy, binding = m:match("ValidatingAdmissionPolicy '([^']+)' with binding '([^']+)' denied request")
    details.policy, details.binding = policy, binding
  end
  msg = msg or ((res.body or ""):sub(1, 300))
  if details and details.causes and #details.causes > 0 then
    local parts = {}
    for _, c in ipairs(details.causes) do parts[#parts + 1] = (c.field or "") .. ": "
      .. (c.message or c.reason or "") end
    if not msg:find(parts[1], 1, true) then msg = msg .. " (" .. table.concat(parts, "; ") .. ")" end
  end
  return errors.new({ code = errors.from_status(res.status) or "Engine", engine = "k8s", status = res.status,
    message = (what and (what .. ": ") or "") .. msg, details = details })
end
M._status_error = status_error

-- Fields of a pod that reach past its containers onto the node: boolean ones refused when
-- true, the others when present (procMount only when "Unmasked").
local NODE_FLAGS = { hostNetwork = true, hostPID = true, hostIPC = true, privileged = true }

local function node_access(v, at, depth)
  if type(v) ~= "table" or depth > 100 then return nil end
  for k, x in pairs(v) do
    local here = math.type(k) == "integer" and ("%s[%d]"):format(at, k) or at .. "." .. tostring(k)
    if (NODE_FLAGS[k] and x == true) or (k == "hostPath" and type(x) == "table")
      or (k == "procMount" and x == "Unmasked")
      or (k == "add" and at:match("%.capabilities$") and type(x) == "table" and next(x) ~= nil) then
      return here
    end
    local deeper = node_access(x, here, depth + 1)
    if deeper then return deeper end
  end
end

--- Under --sandbox, refuse a request body (an object, a merge or strategic patch, a JSON patch's
--- values) that asks for a host path, the node's namespaces, privileges or added capabilities:
--- a pod with them is root on its node, past anything the sandbox holds. Raises
--- "<fname>: <field> reaches the node, which is not allowed under --sandbox". A no-op outside.
---@param fname string
---@param body any
function M.sandbox_policy(fname, body)
  if not require("myrmex.sandbox").active() then return end
  if type(body) == "string" then
    local ok, decoded = pcall(json.decode, body)
    if not ok then error(fname .. ": a body that is not JSON cannot be checked under --sandbox", 3) end
    body = decoded
  end
  local at = node_access(body, "body", 0)
  if at then error(("%s: %s reaches the node, which is not allowed under --sandbox"):format(fname, at), 3) end
end

-- Retries as client-go makes them. 429 means the server did not process the request (max
-- in-flight, API priority and fairness), and a 5xx that carries Retry-After comes from the
-- server's own filters before any handler ran: both are retried whatever the method. Any
-- other 5xx, or a connection lost mid-request, is retried only for a request that can be
-- sent twice with the same effect (a POST could create twice; a JSON patch could add twice).
-- A connection that could not be made is not retried (client-go does not either): an
-- unreachable server is reported at once, not after the whole budget of waits.
local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true }
local RETRY_5XX = { [500] = true, [502] = true, [503] = true, [504] = true }
M.RETRY_BASE, M.RETRY_CAP, M.RETRY_AFTER_CAP = 0.25, 8, 30

local function idempotent(method, opts)
  if method == "PATCH" then return opts.content_type ~= "application/json-patch+json" end
  return IDEMPOTENT[method] == true
end

-- Seconds the server asked to wait (the apiserver sends whole seconds), or nil.
local function retry_after(res)
  local v = res.headers and res.headers["retry-after"]
  local n = v and tonumber(v)
  if n and n >= 0 then return math.min(n, M.RETRY_AFTER_CAP) end
  return nil
end
M._retry_after = retry_after

-- The wait before retry `attempt` (1-based): what the server asked for, else exponential from
-- RETRY_BASE capped at RETRY_CAP, with "equal jitter" (half fixed, half random) so that many
-- clients throttled together do not come back together.
local function backoff(attempt, asked)
  if asked then return asked end
  local d = math.min(M.RETRY_CAP, M.RETRY_BASE * 2 ^ (attempt - 1))
  return d / 2 + math.random() * d / 2
end
M._backoff = backoff

-- Why `res` (or the transport error `err`) may be retried, or nil when it may not.
local function retry_reason(method, opts, res, err)
  if err then
    if not errors.is(err, "Unreachable") then return nil end
    -- A connection reset or cut mid-answer, as client-go retries it; a proxy that refused the
    -- tunnel answered for good.
    local msg = errors.message(err)
    if msg:find("lost", 1, true) and not msg:find("tunnel", 1, true) and idempotent(method, opts) then
      return "connection"
    end
    return nil
  end
  if res.status == 429 then return 429 end
  if RETRY_5XX[res.status] and (retry_after(res) or idempotent(method, opts)) then return res.status end
  return nil
end

-- Send with `once(refresh)`, retrying within the call's budget (`opts.retries`, else the
-- client's). A 401 with an exec plugin runs the plugin again once.
function Client:_with_retries(method, path, opts, once)
  local budget = opts.retries or self.retries
  local attempt, refreshed = 0, false
  while true do
    local ok, res = pcall(once, false)
    if ok and res.status == 401 and self.settings.auth.kind == "exec" and not refreshed then
      refreshed = true
      ok, res = pcall(once, true)
    end
    local reason = retry_reason(method, opts, ok and res or nil, not ok and res or nil)
    if not reason or attempt >= budget then
      if not ok then error(res, 0) end
      return res
    end
    attempt = attempt + 1
    local delay = backoff(attempt, ok and retry_after(res) or nil)
    log.debug("k8s: retrying request", { method = method, path = path, reason = reason, attempt = attempt,
      budget = budget, delay = delay })
    http.sleep(delay)
  end
end

--- Send one request to the API server. Returns the decoded body (or the raw text when it is
--- not JSON) and the response; raises a myrmex error for a non-2xx status, with the server's
--- Status reason and causes in `details`. Throttling (429) and 5xx answers are retried as
--- client-go retries them (see docs/k8s.md, "Retries"), up to `opts.retries` times (default:
--- the client's `retries`).
---@param method string
---@param path string absolute API path, e.g. "/api/v1/namespaces"
---@param opts? {query?:table, body?:any, content_type?:string, timeout?:number, raw?:boolean,
---  on_json?:function, retries?:integer}
---@return any body, table response
function Client:request(method, path, opts)
  opts = opts or {}
  local body = opts.body
  if body ~= nil then M.sandbox_policy("k8s.request", body) end
  if type(body) == "table" then body = json.encode(body) end
  local function once(refresh)
    local headers, tls = self:_auth(refresh)
    headers.Accept = "application/json"
    if body then headers["Content-Type"] = opts.content_type or "application/json" end
    headers["User-Agent"] = "myrmex"
    local a = self.settings.auth
    return http.request({ method = method, url = self.server .. path, query = opts.query, headers = headers,
      body = body, timeout = opts.timeout or self.timeout, tls = tls, engine = "k8s",
      proxy = self.settings.proxy, on_json = opts.on_json,
      basic_auth = a.kind == "basic" and { a.username, a.password } or nil })
  end
  local res = self:_with_retries(method, path, opts, once)
  if res.status >= 400 then error(status_error(res, opts.what), 0) end
  if opts.on_json or opts.raw then return res.body, res end
  local ok, decoded = pcall(json.decode, res.body or "")
  if not ok then return res.body, res end
  return decoded, res
end

-- Open a streamed GET (watch, followed logs) with the auth and retries of Client:request. The
-- status is known before the body is read, so an error answer is raised as the server's
-- Status instead of being read as events or log lines.
function Client:_open(path, opts)
  local function once(refresh)
    local headers, tls = self:_auth(refresh)
    headers.Accept = opts.accept or "application/json"
    headers["User-Agent"] = "myrmex"
    local a = self.settings.auth
    local s = http.open({ method = "GET", url = self.server .. path, query = opts.query, headers = headers,
      timeout = opts.timeout, tls = tls, engine = "k8s", proxy = self.settings.proxy,
      basic_auth = a.kind == "basic" and { a.username, a.password } or nil })
    if s.status >= 400 then
      local ok, body = pcall(s.read_all, s, 1 << 20)
      s:close()
      return { status = s.status, headers = s.headers, body = ok and body or "" }
    end
    return { status = s.status, headers = s.headers, stream = s }
  end
  local res = self:_with_retries("GET", path, opts, once)
  if res.status >= 400 then error(status_error(res, opts.what), 0) end
  return res.stream
end

-- ---- discovery ------------------------------------------------------------------------------

function Client:_discover()
  if self._resources then return self._resources end
  local list = {}
  local function add(gv, doc)
    local group, version = gv:match("^(.-)/?([^/]+)$")
    if not gv:find("/", 1, true) then group, version = "", gv end
    for _, r in ipairs(doc.resources or {}) do
      if not r.name:find("/", 1, true) then
        list[#list + 1] = { group = group, version = version, api_version = gv, name = r.name, kind = r.kind,
          namespaced = r.namespaced, short = r.shortNames or {}, singular = r.singularName,
          base = (group == "" and "/api/" or "/apis/") .. gv, verbs = r.verbs or {} }
      end
    end
  end
  local api = self:request("GET", "/api")
  for _, v in ipairs(api.versions or {}) do add(v, self:request("GET", "/api/" .. v)) end
  local groups = self:request("GET", "/apis")
  for _, g in ipairs(groups.groups or {}) do
    for _, v in ipairs(g.versions or {}) do
      local ok, doc = pcall(self.request, self, "GET", "/apis/" .. v.groupVersion)
      if ok then
        add(v.groupVersion, doc)
        list[#list].preferred = (g.preferredVersion or {}).groupVersion == v.groupVersion
      end
    end
  end
  self._resources = list
  return list
end

local function find_resource(list, kind, api_version)
  local lower = kind:lower()
  local plural, group = lower:match("^([^.]+)%.(.+)$")
  local best
  for _, r in ipairs(list) do
    local hit = (r.kind == kind or r.name == lower or r.singular == lower or r.kind:lower() == lower)
    for _, s in ipairs(r.short) do if s == lower then hit = true end end
    if plural then hit = r.name == plural and r.group == group end
    if hit and (not api_version or r.api_version == api_version) then
      if not best or (r.group == "" and best.group ~= "") then best = r end
    end
  end
  if not best then
    errors.raise({ code = "NotFound", engine = "k8s", message = 'the server doesn\'t have a resource type "'
      .. kind .. '"' .. (api_version and (" in " .. api_version) or "") }, 3)
  end
  return best
end

--- Find the resource for a kind ("Deployment"), plural ("deployments"), short name ("deploy")
--- or "plural.group", optionally pinned to an apiVersion. Uses discovery, so custom resources
--- work as well as built-in ones.
---@param kind string
---@param api_version? string
---@return {group:string, version:string, api_version:string, name:string, kind:string, namespaced:boolean, base:string}
function Client:resource(kind, api_version)
  if type(kind) ~= "string" then error("k8s.resource: kind must be a string, got " .. type(kind), 2) end
  -- Answers are kept per discovery result: applying N manifests of one kind scans it once.
  local list = self:_discover()
  local memo = self._resolved
  if not memo or memo.list ~= list then
    memo = { list = list, by = {} }
    self._resolved = memo
  end
  local key = kind .. "\0" .. (api_version or "")
  local hit = memo.by[key]
  if hit then return hit end
  hit = find_resource(list, kind, api_version)
  memo.by[key] = hit
  return hit
end


function Client:_path(r, name, namespace, sub)
  local p = r.base
  if r.namespaced then p = p .. "/namespaces/" .. http.escape(namespace or self.namespace) end
  p = p .. "/" .. r.name
  if name then p = p .. "/" .. http.escape(name) end
  if sub then p = p .. "/" .. sub end
  return p
end

local function target(r, name, ns)
  return r.name .. "/" .. tostring(name) .. (r.namespaced and (" in " .. ns) or "")
end

-- ---- generic operations ---------------------------------------------------------------------

local GET_OPTS = set { "namespace", "api_version" }

--- Read one object.
---@param kind string
---@param name string
---@param opts? {namespace?:string, api_version?:string}
---@return table object
function Client:get(kind, name, opts)
  opts = check_opts("k8s.get", opts, GET_OPTS)
  if type(name) ~= "string" then error("k8s.get: name must be a string", 2) end
  local r = self:resource(kind, opts.api_version)
  return (self:request("GET", self:_path(r, name, opts.namespace)))
end

--- List objects, following `continue` tokens until every page is read.
---@param kind string
---@class myrmex.k8s.ListOptions
---@field namespace? string
---@field all_namespaces? boolean
---@field label_selector? string
---@field field_selector? string
---@field limit? integer page size (default 500)
---@field api_version? string

---@param opts? myrmex.k8s.ListOptions
---@return table[] items, string resource_version
function Client:list(kind, opts)
  opts = check_opts("k8s.list", opts, set { "namespace", "all_namespaces", "label_selector", "field_selector",
    "limit", "api_version" })
  local r = self:resource(kind, opts.api_version)
  local path = opts.all_namespaces and (r.base .. "/" .. r.name) or self:_path(r, nil, opts.namespace)
  local items, token = {}, nil
  local rv
  repeat
    local page = self:request("GET", path, { query = { labelSelector = opts.label_selector,
      fieldSelector = opts.field_selector, limit = opts.limit or 500, continue = token } })
    for _, it in ipairs(page.items or {}) do
      it.kind = it.kind or r.kind
      it.apiVersion = it.apiVersion or r.api_version
      items[#items + 1] = it
    end
    rv = page.metadata and page.metadata.resourceVersion
    token = page.metadata and page.metadata.continue
    if token == "" then token = nil end
  until not token
  return items, rv
end

local function object_parts(fname, obj)
  if type(obj) ~= "table" then error(fname .. ": object table expected, got " .. type(obj), 3) end
  if type(obj.kind) ~= "string" or type(obj.apiVersion) ~= "string" then
    error(fname .. ": object needs apiVersion and kind", 3)
  end
  local meta = obj.metadata
  if type(meta) ~= "table" or (type(meta.name) ~= "string" and type(meta.generateName) ~= "string") then
    error(fname .. ": object needs metadata.name", 3)
  end
end

local function write_query(self, opts, extra)
  local q = { fieldManager = opts.field_manager or self.field_manager, dryRun = opts.dry_run and "All" or nil,
    fieldValidation = opts.field_validation or "Strict" }
  for k, v in pairs(extra or {}) do q[k] = v end
  return q
end

local WRITE_OPTS = set { "namespace", "dry_run", "field_manager", "field_validation" }

--- Create an object (POST). `AlreadyExists` surfaces as a Conflict error.
---@param obj table
---@param opts? {namespace?:string, dry_run?:boolean, field_manager?:string, field_validation?:string}
---@return table created
function Client:create(obj, opts)
  object_parts("k8s.create", obj)
  opts = check_opts("k8s.create", opts, WRITE_OPTS)
  M.sandbox_policy("k8s.create", obj)
  local r = self:resource(obj.kind, obj.apiVersion)
  local ns = opts.namespace or obj.metadata.namespace or self.namespace
  local name = obj.metadata.name or obj.metadata.generateName
  if plan.active() and not opts.dry_run then
    return plan.record({ engine = "k8s", op = "create", target = target(r, name, ns), args = { object = obj } })
  end
  return log.span("k8s", "create", target(r, name, ns), function()
    return (self:request("POST", self:_path(r, nil, ns), { body = obj, query = write_query(self, opts) }))
  end)
end

--- Replace an object (PUT). With metadata.resourceVersion set, a stale version raises Conflict.
---@param obj table
---@param opts? {namespace?:string, dry_run?:boolean, field_manager?:string, subresource?:string}
---@return table replaced
function Client:replace(obj, opts)
  object_parts("k8s.replace", obj)
  opts = check_opts("k8s.replace", opts, set { "namespace", "dry_run", "field_manager", "field_validation",
    "subresource" })
  M.sandbox_policy("k8s.replace", obj)
  local r = self:resource(obj.kind, obj.apiVersion)
  local ns = opts.namespace or obj.metadata.namespace or self.namespace
  if plan.active() and not opts.dry_run then
    return plan.record({ engine = "k8s", op = "replace", target = target(r, obj.metadata.name, ns),
      args = { object = obj } })
  end
  return log.span("k8s", "replace", target(r, obj.metadata.name, ns), function()
    return (self:request("PUT", self:_path(r, obj.metadata.name, ns, opts.subresource),
      { body = obj, query = write_query(self, opts) }))
  end)
end

local PATCH_TYPES = {
  merge = "application/merge-patch+json",
  strategic = "application/strategic-merge-patch+json",
  json = "application/json-patch+json",
  apply = "application/apply-patch+yaml",
}

---@class myrmex.k8s.PatchOptions
---@field type? string
---@field namespace? string
---@field dry_run? boolean
---@field field_manager? string
---@field force? boolean
---@field subresource? string
---@field api_version? string

--- Patch an object. `type` is "strategic" (default), "merge", "json" (RFC 6902 list) or
--- "apply" (server-side apply; `force` takes fields owned by other managers).
---@param kind string
---@param name string
---@param patch table|string
---@param opts? myrmex.k8s.PatchOptions
---@return table patched
function Client:patch(kind, name, patch, opts)
  opts = check_opts("k8s.patch", opts, set { "type", "namespace", "dry_run", "field_manager", "force",
    "subresource", "api_version", "field_validation" })
  local ctype = PATCH_TYPES[opts.type or "strategic"]
  if not ctype then error("k8s.patch: type must be strategic, merge, json or apply, got " .. tostring(opts.type), 2) end
  if type(patch) ~= "table" and type(patch) ~= "string" then error("k8s.patch: patch must be a table or a string",
    2) end
  M.sandbox_policy("k8s.patch", patch)
  local r = self:resource(kind, opts.api_version)
  local ns = opts.namespace or self.namespace
  if plan.active() and not opts.dry_run then
    return plan.record({ engine = "k8s", op = "patch", target = target(r, name, ns), args = { patch = patch,
      type = opts.type } })
  end
  local q = write_query(self, opts, { force = opts.type == "apply" and (opts.force and "true" or "false") or nil })
  if opts.type ~= "apply" and not opts.field_manager then q.fieldManager = self.field_manager end
  return log.span("k8s", "patch", target(r, name, ns), function()
    return (self:request("PATCH", self:_path(r, name, ns, opts.subresource), { body = patch, content_type = ctype,
      query = q }))
  end)
end

---@class myrmex.k8s.DeleteOptions
---@field namespace? string
---@field propagation? string
---@field wait? boolean
---@field timeout? number
---@field dry_run? boolean
---@field api_version? string
---@field grace_period? integer

--- Delete an object. `propagation` is "Background" (default), "Foreground" or "Orphan";
--- `wait` blocks until the object is gone (watching it), up to `timeout` seconds.
---@param kind string
---@param name string
---@param opts? myrmex.k8s.DeleteOptions
---@return table response the Status or the object being deleted
function Client:delete(kind, name, opts)
  opts = check_opts("k8s.delete", opts, set { "namespace", "propagation", "wait", "timeout", "dry_run",
    "api_version", "grace_period" })
  local r = self:resource(kind, opts.api_version)
  local ns = opts.namespace or self.namespace
  if plan.active() and not opts.dry_run then
    return plan.record({ engine = "k8s", op = "delete", target = target(r, name, ns),
      args = { propagation = opts.propagation } })
  end
  local body = { kind = "DeleteOptions", apiVersion = "v1", propagationPolicy = opts.propagation or "Background",
    dryRun = opts.dry_run and json.array({ "All" }) or nil, gracePeriodSeconds = opts.grace_period }
  local res = log.span("k8s", "delete", target(r, name, ns), function()
    return (self:request("DELETE", self:_path(r, name, ns), { body = body }))
  end)
  if opts.wait and not opts.dry_run then self:_wait_gone(r, name, ns, opts.timeout or 60) end
  return res
end

function Client:_wait_gone(r, name, ns, timeout)
  local rt = require("myrmex.core.runtime")
  local deadline = rt.monotonic() + timeout
  while true do
    local ok, err = pcall(self.request, self, "GET", self:_path(r, name, ns))
    if not ok then
      if errors.is(err, "NotFound") then return end
      error(err, 0)
    end
    if rt.monotonic() > deadline then
      errors.raise({ code = "Timeout", engine = "k8s", message = target(r, name, ns) .. " still exists after "
        .. timeout .. "s" }, 0)
    end
    http.sleep(0.1)
  end
end

-- ---- watch ----------------------------------------------------------------------------------

---@class myrmex.k8s.WatchOptions
---@field namespace? string
---@field all_namespaces? boolean
---@field resource_version? string
---@field name? string
---@field label_selector? string
---@field field_selector? string
---@field timeout? number
---@field api_version? string

--- Watch a collection. `fn(event)` gets `{type=ADDED|MODIFIED|DELETED|BOOKMARK, object=}` and
--- returns false to stop. Without `resource_version` the current objects come first as ADDED.
--- A dropped stream is resumed from the last resourceVersion seen (bookmarks keep it fresh),
--- backing off while the server is unreachable. After a 410 Gone (version too old) the
--- collection is listed again and compared with what was delivered, as client-go's informers
--- do: DELETED (with the last object seen) for what vanished, MODIFIED for what changed,
--- ADDED for what is new, nothing for the rest. Stops at `timeout` seconds (raising Timeout)
--- when given.
---@param kind string
---@param opts? myrmex.k8s.WatchOptions
---@param fn fun(event:table):boolean|nil
---@return string resource_version the last resourceVersion seen
function Client:watch(kind, opts, fn)
  opts = check_opts("k8s.watch", opts, set { "namespace", "all_namespaces", "resource_version", "label_selector",
    "field_selector", "timeout", "api_version", "name" })
  if type(fn) ~= "function" then error("k8s.watch: callback function expected", 2) end
  local r = self:resource(kind, opts.api_version)
  local path = opts.all_namespaces and (r.base .. "/" .. r.name) or self:_path(r, nil, opts.namespace)
  local rt = require("myrmex.core.runtime")
  local deadline = opts.timeout and (rt.monotonic() + opts.timeout)
  local fsel = opts.field_selector
  if opts.name then fsel = "metadata.name=" .. opts.name .. (fsel and ("," .. fsel) or "") end
  local rv = opts.resource_version
  local stopped = false
  -- What the caller has been told, by namespace/name: after a 410 the re-list is compared with
  -- it, as client-go's reflector and informer do, so the caller sees DELETED for what went
  -- away in the gap and MODIFIED for what changed, not everything again as ADDED.
  local known = {}
  local function key_of(o)
    local m = o.metadata or {}
    return (m.namespace or "") .. "/" .. tostring(m.name)
  end
  local function deliver(ev)
    local obj = ev.object
    if type(obj) == "table" and obj.metadata then
      if ev.type == "DELETED" then known[key_of(obj)] = nil else known[key_of(obj)] = obj end
    end
    if fn(ev) == false then stopped = true end
    return not stopped
  end
  local function relist(diff)
    local items, lrv = self:list(kind, { namespace = opts.namespace, all_namespaces = opts.all_namespaces,
      label_selector = opts.label_selector, field_selector = fsel, api_version = opts.api_version })
    local now = {}
    for _, it in ipairs(items) do
      local k = key_of(it)
      now[k] = true
      local before = known[k]
      local etype = "ADDED"
      if diff and before then
        local brv = before.metadata and before.metadata.resourceVersion
        etype = (brv ~= it.metadata.resourceVersion) and "MODIFIED" or nil
      end
      if etype and not deliver({ type = etype, object = it }) then return lrv end
    end
    if diff then
      local gone_keys = {}
      for k in pairs(known) do if not now[k] then gone_keys[#gone_keys + 1] = k end end
      table.sort(gone_keys)
      for _, k in ipairs(gone_keys) do
        if not deliver({ type = "DELETED", object = known[k] }) then break end
      end
    end
    return lrv
  end
  if rv == nil then rv = relist(false) end
  local failures = 0
  while not stopped do
    local left = deadline and (deadline - rt.monotonic())
    if left and left <= 0 then
      errors.raise({ code = "Timeout", engine = "k8s", message = "watch on " .. r.name .. " ended after "
        .. opts.timeout .. "s" }, 2)
    end
    local gone = false
    local ok, err = pcall(function()
      local s <close> = self:_open(path, {
        query = { watch = "true", resourceVersion = rv, allowWatchBookmarks = "true",
          labelSelector = opts.label_selector, fieldSelector = fsel,
          timeoutSeconds = left and math.max(1, math.ceil(left)) or 300 },
        timeout = left and (left + 5) or 330, what = "watch " .. r.name })
      for line in s:lines() do
        if line ~= "" then
          local ev = json.decode(line)
          local obj = ev.object or {}
          if ev.type == "ERROR" then
            if obj.code == 410 then gone = true return end
            error(status_error({ status = obj.code or 500, body = json.encode(obj) }, "watch " .. r.name), 0)
          end
          failures = 0
          if obj.metadata and obj.metadata.resourceVersion then rv = obj.metadata.resourceVersion end
          if ev.type ~= "BOOKMARK" and not deliver(ev) then return end
        end
      end
    end)
    if not ok then
      if errors.is(err, "Timeout") or errors.is(err, "Unreachable") then
        -- Reconnect from the last version seen, backing off while the server stays away.
        failures = failures + 1
        local delay = backoff(failures)
        log.debug("k8s watch interrupted, resuming", { resource = r.name, resource_version = rv,
          error = errors.message(err), attempt = failures, delay = delay })
        http.sleep(delay)
      elseif errors.is(err) and err.details and err.details.gone then
        gone = true
      else
        error(err, 0)
      end
    end
    if gone and not stopped then
      log.debug("k8s watch: resource version too old, listing again", { resource = r.name, resource_version = rv })
      rv = relist(true)
    end
  end
  return rv
end

-- ---- deployments, services, scale -----------------------------------------------------------

local builders = require("myrmex.k8s.builders")
M.deployment = builders.deployment
M.service = builders.service
M.job = builders.job
M.recipe_job_manifest = builders.recipe_job_manifest

--- Build a Deployment (see k8s.deployment) and create it.
---@param spec table {name, image, replicas?, labels?, ports?, env?, resources?, namespace?, command?, args?}
---@param opts? {dry_run?:boolean}
---@return table created
function Client:create_deployment(spec, opts)
  local obj = builders.deployment(spec)
  return self:create(obj, { namespace = spec.namespace, dry_run = opts and opts.dry_run })
end

--- Build a Service (see k8s.service) and create it.
---@param spec table {name, selector, ports, type?, namespace?}
---@param opts? {dry_run?:boolean}
---@return table created
function Client:create_service(spec, opts)
  local obj = builders.service(spec)
  return self:create(obj, { namespace = spec.namespace, dry_run = opts and opts.dry_run })
end

--- Set a Deployment's replicas through its `scale` subresource.
---@param name string
---@param replicas integer
---@param opts? {namespace?:string, dry_run?:boolean}
---@return table scale the autoscaling/v1 Scale
function Client:scale_deployment(name, replicas, opts)
  opts = check_opts("k8s.scale_deployment", opts, set { "namespace", "dry_run" })
  if math.type(replicas) ~= "integer" or replicas < 0 then
    error("k8s.scale_deployment: replicas must be a non-negative integer", 2)
  end
  return self:patch("deployments", name, { spec = { replicas = replicas } },
    { type = "merge", subresource = "scale", namespace = opts.namespace, dry_run = opts.dry_run })
end

-- ---- apply ----------------------------------------------------------------------------------

local apply = require("myrmex.k8s.apply")

--- Server-side apply of a manifest: multi-document YAML or JSON text, or a path to one.
--- Applied in tiers (namespaces, CRDs, config and policy, the rest, admission hooks), the
--- objects of a tier `parallel` at a time (default 8). Every object of a tier is tried; a
--- failure stops before the next tier and raises the first one, naming its object, with
--- `failed` listing them all. CRDs are waited for (Established, and served by discovery, at
--- most `crd_timeout` seconds, default 60) before the objects of their kinds are applied.
--- With `applyset` the objects are recorded as an ApplySet (KEP-3659, as `kubectl apply
--- --applyset`); with `prune` too, the set's members the manifest no longer has are deleted.
--- Returns the applied objects in the order applied, and with `prune` what was deleted.
---@class myrmex.k8s.ApplyManifestOptions
---@field field_manager? string
---@field force? boolean
---@field dry_run? boolean
---@field namespace? string
---@field parallel? integer
---@field crd_timeout? number
---@field applyset? string the parent: "NAME" (a Secret), "configmaps/NAME", "RESOURCE.GROUP/NAME"
---@field prune? boolean
---@field tooling? string "name/version" on the parent (default "myrmex/v1"); "kubectl/..." shares it with kubectl

---@param source string text or path
---@param opts? myrmex.k8s.ApplyManifestOptions
---@return table[] objects, string[]|nil pruned "Kind namespace/name" of each deleted member
function Client:apply_manifest(source, opts)
  opts = check_opts("k8s.apply_manifest", opts, set { "field_manager", "force", "dry_run", "namespace", "parallel",
    "crd_timeout", "applyset", "prune", "tooling" })
  return apply.apply_manifest(self, source, opts)
end

--- Apply one object (server-side apply).
---@param obj table
---@param opts? {field_manager?:string, force?:boolean, dry_run?:boolean, namespace?:string}
---@return table applied
function Client:apply(obj, opts)
  opts = check_opts("k8s.apply", opts, set { "field_manager", "force", "dry_run", "namespace" })
  return apply.apply_object(self, obj, opts)
end

-- ---- rollouts, jobs, logs -------------------------------------------------------------------

local rollout = require("myrmex.k8s.rollout")

--- Wait until a Deployment has rolled out or a Job has finished, watching it (kubectl's rules).
--- Raises Timeout naming the last condition seen, or Engine for ProgressDeadlineExceeded / a
--- Failed Job.
---@param kind string "deployment" or "job"
---@param name string
---@param opts? {namespace?:string, timeout?:number}
---@return table object the final object
function Client:rollout_wait(kind, name, opts)
  opts = check_opts("k8s.rollout_wait", opts, set { "namespace", "timeout" })
  return rollout.wait(self, kind, name, opts)
end

---@class myrmex.k8s.UndoResult
---@field deployment table the patched Deployment (the current one when skipped)
---@field revision integer the revision rolled back to
---@field skipped boolean true when the template already matched that revision

--- Roll a Deployment back to an earlier revision's pod template, as `kubectl rollout undo`
--- does (the previous revision unless `to_revision`). Raises NotFound when there is no such
--- revision (or no history), Invalid for a paused Deployment. Wait with rollout_wait after it.
---@param name string
---@param opts? {namespace?:string, to_revision?:integer}
---@return myrmex.k8s.UndoResult
function Client:rollout_undo(name, opts)
  opts = check_opts("k8s.rollout_undo", opts, set { "namespace", "to_revision" })
  if type(name) ~= "string" then error("k8s.rollout_undo: name must be a string", 2) end
  if opts.to_revision ~= nil and math.type(opts.to_revision) ~= "integer" then
    error("k8s.rollout_undo: to_revision must be an integer", 2)
  end
  return rollout.undo(self, name, opts)
end

--- A pod's log text. With `on_line` the log is streamed: each line is passed as it arrives
--- (with `follow`, until the container ends or `on_line` returns false), and the lines seen are
--- returned too.
---@param pod string
---@param opts? {namespace?:string, container?:string, since?:integer, follow?:boolean,
---  on_line?:fun(line:string):boolean|nil}
---@return string text
function Client:logs(pod, opts)
  opts = check_opts("k8s.logs", opts, set { "namespace", "container", "since", "follow", "on_line" })
  local path = "/api/v1/namespaces/" .. http.escape(opts.namespace or self.namespace) .. "/pods/"
    .. http.escape(pod) .. "/log"
  local query = { container = opts.container, sinceSeconds = opts.since, follow = opts.follow and "true" or nil }
  if not opts.on_line then
    return (self:request("GET", path, { query = query, raw = true, timeout = opts.follow and 0 or nil }))
  end
  if type(opts.on_line) ~= "function" then error("k8s.logs: on_line must be a function", 2) end
  -- Streamed: each line reaches on_line as it arrives (a followed log may never end).
  local s <close> = self:_open(path, { query = query, accept = "*/*", what = "logs of pod " .. pod,
    timeout = not opts.follow and self.timeout or nil })
  local lines = {}
  for line in s:lines() do
    lines[#lines + 1] = line
    if opts.on_line(line) == false then break end
  end
  return #lines > 0 and (table.concat(lines, "\n") .. "\n") or ""
end

---@class myrmex.k8s.ExecResult
---@field exit_code integer the process's exit status, from the status channel
---@field stdout string
---@field stderr string
---@field protocol string the channel protocol the server chose (v5.channel.k8s.io or v4.channel.k8s.io)
---@field detached? boolean true when on_output returned false (exit_code is then nil)

---@class myrmex.k8s.ExecOpts
---@field cmd? string[] the command (exec only, required there)
---@field stdin? string sent, then closed (v5)
---@field container? string
---@field namespace? string
---@field timeout? number seconds; running out raises Timeout
---@field tty? boolean
---@field on_output? fun(stream:string, data:string):boolean? each piece of output as it arrives; false leaves

--- Run a command in a pod's container over WebSocket (`v5.channel.k8s.io`, else
--- `v4.channel.k8s.io`), as `kubectl exec` does, and wait for it to end. `stdin` is sent and
--- then closed (v5). A command that cannot start raises Engine with the server's message.
--- `on_output(stream, data)` ("stdout" or "stderr") sees output as it arrives; returning false
--- leaves the stream (the result then has `detached = true` and no exit code).
---@param pod string
---@param opts myrmex.k8s.ExecOpts
---@return myrmex.k8s.ExecResult
function Client:exec(pod, opts)
  if type(pod) ~= "string" then error("k8s.exec: pod name must be a string", 2) end
  opts = check_opts("k8s.exec", opts, set { "cmd", "stdin", "container", "namespace", "timeout", "tty",
    "on_output" })
  return require("myrmex.k8s.stream").run(self, pod, opts, false)
end

--- Attach to the main process of a pod's container (as `kubectl attach`): what it prints from
--- now on until it ends, and its exit code; `stdin` is sent to it. `on_output` as for exec:
--- returning false detaches (as Ctrl-C does in `kubectl attach`), leaving the process running.
---@param pod string
---@param opts? myrmex.k8s.ExecOpts without cmd
---@return myrmex.k8s.ExecResult
function Client:attach(pod, opts)
  if type(pod) ~= "string" then error("k8s.attach: pod name must be a string", 2) end
  opts = check_opts("k8s.attach", opts, set { "stdin", "container", "namespace", "timeout", "tty", "on_output" })
  return require("myrmex.k8s.stream").run(self, pod, opts, true)
end

---@class myrmex.k8s.PortForward
---@field port fun(self):integer the local loopback port
---@field info fun(self):{accepted:integer, failed:integer, error:string|nil}
---@field close fun(self)

--- Forward a local loopback port to a port of a Running pod, as `kubectl port-forward` does,
--- until the handle is closed (`<close>`, or :close()). Each connection to `h:port()` on
--- 127.0.0.1 is carried over its own WebSocket (v4.channel.k8s.io) by a background thread.
---@param pod string
---@param port integer the pod's port
---@param opts? {namespace?:string}
---@return myrmex.k8s.PortForward
function Client:port_forward(pod, port, opts)
  if type(pod) ~= "string" then error("k8s.port_forward: pod name must be a string", 2) end
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then
    error("k8s.port_forward: port must be an integer from 1 to 65535", 2)
  end
  opts = check_opts("k8s.port_forward", opts, set { "namespace" })
  return require("myrmex.k8s.stream").port_forward(self, pod, port, opts)
end

---@class myrmex.k8s.RunJobSpec
---@field image any
---@field command? any
---@field args? any
---@field env? any
---@field parallelism? any
---@field completions? any
---@field namespace? any
---@field name? any
---@field timeout? any
---@field backoff_limit? any

--- Run a batch/v1 Job, wait for it and collect each pod's exit code and log.
---@param spec myrmex.k8s.RunJobSpec
---@return {name:string, succeeded:boolean, job:table, pods:{name:string, exit_code:integer|nil, log:string}[]}
function Client:run_job(spec)
  return rollout.run_job(self, spec)
end

---@class myrmex.k8s.FanOutSpec
---@field recipe string a path or a recipe name
---@field items table[] one params table per item
---@field parallelism? integer pods at once (default min(#items, 8))
---@field image? string an image holding myrmex and the recipe (default: myrmex packs itself)
---@field push_to? string where the packed image is pushed (default: loaded into the Docker engine)
---@field timeout? number seconds; the Job and its pods are deleted when it passes
---@field namespace? string
---@field resources? table the container's {requests=, limits=}
---@field retries? integer retries per item (backoffLimitPerIndex, default 0)

--- Run a recipe once per item as one Indexed Job (see docs/k8s.md, "Fan-out"): the results in
--- item order, `{ok, result, error, pod, index, duration, attempts}` each.
---@param spec myrmex.k8s.FanOutSpec
---@return table[] results
function Client:fan_out(spec)
  return require("myrmex.k8s.fanout").run(self, spec)
end

--- Start a fan-out and return its handle (`h:wait()`, `h:close()`; `<close>` deletes an
--- unfinished Job and its pods).
---@param spec myrmex.k8s.FanOutSpec
---@return userdata handle
function Client:fan_out_start(spec)
  return require("myrmex.k8s.fanout").start(self, spec)
end

M.Client = Client
return M
