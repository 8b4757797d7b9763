--- Typed builders for myrmex.k8s: Deployment, Service and Job objects that are valid against
--- the official OpenAPI schemas, with an error naming the bad field before anything is sent.
local json = require("myrmex.json")

local M = {}

local function bad(fname, field, msg)
  error(fname .. ": " .. field .. " " .. msg, 4)
end

local function check_keys(fname, t, known)
  if type(t) ~= "table" then error(fname .. ": spec table expected, got " .. type(t), 4) end
  for k in pairs(t) do
    if not known[k] then error(fname .. ": unknown field '" .. tostring(k) .. "'", 4) end
  end
end

local function set(list)
  local t = {}
  for _, k in ipairs(list) do t[k] = true end
  return t
end

local function dns_name(fname, field, v, label)
  if type(v) ~= "string" then bad(fname, field, "must be a string") end
  local ok = v:match("^[a-z0-9]") and v:match("[a-z0-9]$") and #v <= (label and 63 or 253)
    and not v:find(label and "[^a-z0-9-]" or "[^a-z0-9.-]")
  if not ok then
    bad(fname, field, "must be a lowercase RFC 1123 " .. (label and "label" or "subdomain") .. ", got "
      .. string.format("%q", v))
  end
end

local function string_map(fname, field, m)
  if m == nil then return nil end
  if type(m) ~= "table" then bad(fname, field, "must be a table of strings") end
  local out = json.object()
  for k, v in pairs(m) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean") then
      bad(fname, field, "must map strings to strings")
    end
    out[k] = tostring(v)
  end
  return out
end

local function int_in(fname, field, v, lo, hi)
  if math.type(v) ~= "integer" or v < lo or (hi and v > hi) then
    bad(fname, field, "must be an integer" .. (hi and (" between " .. lo .. " and " .. hi) or (" >= " .. lo))
      .. ", got " .. tostring(v))
  end
  return v
end

local function str_list(fname, field, v)
  if v == nil then return nil end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then bad(fname, field, "must be a list of strings") end
  local out = json.array()
  for i, s in ipairs(v) do
    if type(s) ~= "string" and type(s) ~= "number" then bad(fname, field .. "[" .. i .. "]", "must be a string") end
    out[i] = tostring(s)
  end
  return out
end

local PROTOCOLS = { TCP = true, UDP = true, SCTP = true }

local function container_ports(fname, ports)
  if ports == nil then return nil end
  if type(ports) ~= "table" then bad(fname, "ports", "must be a list") end
  local out = json.array()
  for i, p in ipairs(ports) do
    local f = "ports[" .. i .. "]"
    if math.type(p) == "integer" then p = { containerPort = p } end
    if type(p) ~= "table" then bad(fname, f, "must be a port number or a table") end
    check_keys(fname, p, set { "containerPort", "port", "name", "protocol" })
    local cp = p.containerPort or p.port
    local entry = { containerPort = int_in(fname, f .. ".containerPort", cp, 1, 65535) }
    if p.name then dns_name(fname, f .. ".name", p.name, true); entry.name = p.name end
    if p.protocol then
      if not PROTOCOLS[p.protocol] then bad(fname, f .. ".protocol", "must be TCP, UDP or SCTP") end
      entry.protocol = p.protocol
    end
    out[i] = entry
  end
  return out
end

local function env_list(fname, env)
  if env == nil then return nil end
  if type(env) ~= "table" then bad(fname, "env", "must be a table") end
  local out = json.array()
  if #env > 0 then
    for i, e in ipairs(env) do
      if type(e) ~= "table" or type(e.name) ~= "string" then bad(fname, "env[" .. i .. "]", "needs a name") end
      out[i] = { name = e.name, value = e.value ~= nil and tostring(e.value) or nil, valueFrom = e.valueFrom }
    end
    return out
  end
  local names = {}
  for k in pairs(env) do
    if type(k) ~= "string" or k == "" then bad(fname, "env", "keys must be variable names") end
    names[#names + 1] = k
  end
  table.sort(names)
  for _, k in ipairs(names) do out[#out + 1] = { name = k, value = tostring(env[k]) } end
  return out
end

local function quantity(fname, field, v)
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" or not v:match("^[+-]?%d*%.?%d+[a-zA-Z]*$") then
    bad(fname, field, "must be a quantity such as 500m or 128Mi, got " .. tostring(v))
  end
  return v
end

local function resources(fname, r)
  if r == nil then return nil end
  check_keys(fname, r, set { "requests", "limits" })
  local out = {}
  for _, part in ipairs({ "requests", "limits" }) do
    if r[part] then
      out[part] = json.object()
      for k, v in pairs(r[part]) do out[part][k] = quantity(fname, "resources." .. part .. "." .. k, v) end
    end
  end
  return out
end

local function container(fname, spec, default_name)
  if type(spec.image) ~= "string" or spec.image == "" then bad(fname, "image", "is required") end
  local c = { name = spec.container_name or default_name, image = spec.image,
    command = str_list(fname, "command", spec.command), args = str_list(fname, "args", spec.args),
    ports = container_ports(fname, spec.ports), env = env_list(fname, spec.env),
    resources = resources(fname, spec.resources), imagePullPolicy = spec.image_pull_policy }
  dns_name(fname, "container_name", c.name, true)
  if c.imagePullPolicy and not ({ Always = true, IfNotPresent = true, Never = true })[c.imagePullPolicy] then
    bad(fname, "image_pull_policy", "must be Always, IfNotPresent or Never")
  end
  return c
end

local DEPLOYMENT_KEYS = set { "name", "image", "replicas", "labels", "annotations", "ports", "env", "resources",
  "namespace", "command", "args", "container_name", "image_pull_policy", "selector" }

---@class myrmex.k8s.DeploymentSpec
---@field name string
---@field image string
---@field replicas? integer
---@field labels? table
---@field annotations? table
---@field ports? table
---@field env? table
---@field resources? table
---@field namespace? string
---@field command? string[]
---@field args? string[]
---@field container_name? string
---@field image_pull_policy? string
---@field selector? table

--- A Deployment object. `labels` default to {app=name} and are the selector unless
--- `selector` is given; `ports` are numbers or {containerPort, name, protocol}; `env` is a
--- name->value table or a list of {name, value|valueFrom}; `resources` is {requests, limits}.
---@param spec myrmex.k8s.DeploymentSpec
---@return table deployment
function M.deployment(spec)
  local fname = "k8s.deployment"
  check_keys(fname, spec, DEPLOYMENT_KEYS)
  dns_name(fname, "name", spec.name)
  local labels = string_map(fname, "labels", spec.labels) or json.object({ app = spec.name })
  local selector = string_map(fname, "selector", spec.selector) or labels
  for k, v in pairs(selector) do
    if labels[k] ~= v then bad(fname, "selector", "must match labels (" .. k .. ")") end
  end
  local meta = { name = spec.name, labels = labels, annotations = string_map(fname, "annotations", spec.annotations) }
  if spec.namespace then dns_name(fname, "namespace", spec.namespace, true); meta.namespace = spec.namespace end
  return {
    apiVersion = "apps/v1", kind = "Deployment", metadata = meta,
    spec = {
      replicas = int_in(fname, "replicas", spec.replicas or 1, 0),
      selector = { matchLabels = selector },
      template = { metadata = { labels = labels },
        spec = { containers = { container(fname, spec, spec.name:gsub("%.", "-"):sub(1, 63)) } } },
    },
  }
end

local SERVICE_TYPES = { ClusterIP = true, NodePort = true, LoadBalancer = true, ExternalName = true }

local function service_ports(fname, ports)
  if type(ports) ~= "table" or #ports == 0 then bad(fname, "ports", "must be a non-empty list") end
  local out = json.array()
  for i, p in ipairs(ports) do
    local f = "ports[" .. i .. "]"
    if math.type(p) == "integer" then p = { port = p } end
    if type(p) ~= "table" then bad(fname, f, "must be a port number or a table") end
    check_keys(fname, p, set { "port", "target_port", "targetPort", "name", "protocol", "node_port", "nodePort" })
    local entry = { port = int_in(fname, f .. ".port", p.port, 1, 65535), name = p.name, protocol = p.protocol }
    local tp = p.target_port or p.targetPort
    if tp ~= nil then
      if math.type(tp) == "integer" then int_in(fname, f .. ".target_port", tp, 1, 65535)
      elseif type(tp) ~= "string" then bad(fname, f .. ".target_port", "must be a port number or a port name") end
      entry.targetPort = tp
    end
    local np = p.node_port or p.nodePort
    if np ~= nil then entry.nodePort = int_in(fname, f .. ".node_port", np, 1, 65535) end
    if p.protocol and not PROTOCOLS[p.protocol] then bad(fname, f .. ".protocol", "must be TCP, UDP or SCTP") end
    if #ports > 1 and not p.name then bad(fname, f .. ".name", "is required when there is more than one port") end
    if p.name then dns_name(fname, f .. ".name", p.name, true) end
    out[i] = entry
  end
  return out
end

--- A Service object. `ports` are numbers or {port, target_port, name, protocol, node_port};
--- `type` is ClusterIP (default), NodePort, LoadBalancer.
---@param spec {name:string, selector:table, ports:table, type?:string, namespace?:string, labels?:table}
---@return table service
function M.service(spec)
  local fname = "k8s.service"
  check_keys(fname, spec, set { "name", "selector", "ports", "type", "namespace", "labels", "annotations" })
  dns_name(fname, "name", spec.name, true)
  if spec.type and not SERVICE_TYPES[spec.type] then
    bad(fname, "type", "must be ClusterIP, NodePort, LoadBalancer or ExternalName")
  end
  local meta = { name = spec.name, labels = string_map(fname, "labels", spec.labels),
    annotations = string_map(fname, "annotations", spec.annotations) }
  if spec.namespace then dns_name(fname, "namespace", spec.namespace, true); meta.namespace = spec.namespace end
  return { apiVersion = "v1", kind = "Service", metadata = meta,
    spec = { type = spec.type, selector = string_map(fname, "selector", spec.selector), ports = service_ports(fname,
      spec.ports) } }
end

---@class myrmex.k8s.JobSpec
---@field name? string
---@field image string
---@field command? string[]
---@field args? string[]
---@field env? table
---@field parallelism? integer
---@field completions? integer
---@field backoff_limit? integer
---@field namespace? string
---@field labels? table
---@field resources? table

--- A batch/v1 Job object (restartPolicy Never).
---@param spec myrmex.k8s.JobSpec
---@return table job
function M.job(spec)
  local fname = "k8s.job"
  check_keys(fname, spec, set { "name", "image", "command", "args", "env", "parallelism", "completions",
    "backoff_limit", "namespace", "labels", "resources", "container_name", "timeout", "generate_name" })
  local meta = { labels = string_map(fname, "labels", spec.labels) }
  if spec.name then dns_name(fname, "name", spec.name); meta.name = spec.name
  else meta.generateName = spec.generate_name or "myrmex-job-" end
  if spec.namespace then dns_name(fname, "namespace", spec.namespace, true); meta.namespace = spec.namespace end
  local c = container(fname, spec, spec.container_name or "job")
  return { apiVersion = "batch/v1", kind = "Job", metadata = meta,
    spec = { parallelism = spec.parallelism and int_in(fname, "parallelism", spec.parallelism, 0),
      completions = spec.completions and int_in(fname, "completions", spec.completions, 0),
      backoffLimit = int_in(fname, "backoff_limit", spec.backoff_limit or 0, 0),
      template = { metadata = { labels = meta.labels }, spec = { restartPolicy = "Never", containers = { c } } } } }
end

---@class myrmex.k8s.RecipeJobSpec
---@field recipe string the recipe name or its path inside the image
---@field image string an image holding myrmex and the recipe
---@field params? table<string,string> recipe parameters, passed as --set KEY=VALUE
---@field name? string
---@field namespace? string
---@field completions? integer
---@field parallelism? integer
---@field backoff_limit? integer
---@field service_account? string
---@field env? table
---@field resources? table
---@field dry_run? boolean run the recipe in plan mode (myrmex plan)

--- A batch/v1 Job that runs `myrmex run RECIPE` (or `myrmex plan`) in `image`, for
--- `myrmex run --on kubernetes`. Logs are JSON so they can be collected line by line.
---@param spec myrmex.k8s.RecipeJobSpec
---@return table job
function M.recipe_job_manifest(spec)
  local fname = "k8s.recipe_job_manifest"
  check_keys(fname, spec, set { "recipe", "image", "params", "name", "namespace", "completions", "parallelism",
    "backoff_limit", "service_account", "env", "resources", "dry_run" })
  if type(spec.recipe) ~= "string" or spec.recipe == "" then bad(fname, "recipe", "is required") end
  local argv = { "myrmex", spec.dry_run and "plan" or "run", spec.recipe }
  local keys = {}
  for k in pairs(spec.params or {}) do
    if type(k) ~= "string" or not k:match("^[%w_]+$") then bad(fname, "params", "keys must be parameter names") end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    argv[#argv + 1] = "--set"
    argv[#argv + 1] = k .. "=" .. tostring(spec.params[k])
  end
  argv[#argv + 1] = "--log-format"
  argv[#argv + 1] = "json"
  local base = spec.recipe:match("([^/]+)$"):gsub("%.lua$", ""):lower():gsub("[^a-z0-9-]", "-")
  local job = M.job({ name = spec.name, generate_name = spec.name == nil and ("myrmex-" .. base:sub(1, 40)
    .. "-") or nil,
    image = spec.image, command = argv, env = spec.env, resources = spec.resources, namespace = spec.namespace,
    completions = spec.completions, parallelism = spec.parallelism, backoff_limit = spec.backoff_limit,
    container_name = "myrmex", labels = { ["app.kubernetes.io/name"] = "myrmex",
      ["myrmex.dev/recipe"] = base:sub(1, 63):gsub("^-+", ""):gsub("-+$", "") } })
  if spec.service_account then
    dns_name(fname, "service_account", spec.service_account)
    job.spec.template.spec.serviceAccountName = spec.service_account
  end
  return job
end

return M
