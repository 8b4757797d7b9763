--- Kubeconfig loading for myrmex.k8s: KUBECONFIG lists merged the way kubectl merges them,
--- relative paths, `*-data`, token files, basic auth, exec credential plugins, and the
--- in-cluster service account. See docs/k8s.md.
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local log = require("myrmex.log")
local yaml = require("myrmex.yaml")

local M = {}

M.SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function fail(msg)
  errors.raise({ code = "Invalid", engine = "k8s", message = msg }, 0)
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function absolute(path, base)
  if path == nil or path == "" or path:sub(1, 1) == "/" then return path end
  if path:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. path:sub(2) end
  return base .. "/" .. path
end

-- Paths in a kubeconfig are relative to the file that holds them (client-go ResolveLocalPaths).
local PATH_KEYS = {
  cluster = { "certificate-authority" },
  user = { "client-certificate", "client-key", "tokenFile" },
}

local function resolve_paths(section, kind, base)
  for _, key in ipairs(PATH_KEYS[kind]) do
    if type(section[key]) == "string" then section[key] = absolute(section[key], base) end
  end
  local exec = kind == "user" and section.exec
  if type(exec) == "table" and type(exec.command) == "string" and exec.command:find("/", 1, true) then
    exec.command = absolute(exec.command, base)
  end
end

local function home_config()
  local home = os.getenv("HOME")
  return home and (home .. "/.kube/config") or nil
end

--- The kubeconfig files to read, in order: `files` (a path or a list), else $KUBECONFIG
--- (colon-separated), else ~/.kube/config.
---@param files? string|string[]
---@return string[]
function M.files(files)
  if type(files) == "string" then return { files } end
  if type(files) == "table" then return files end
  local env = os.getenv("KUBECONFIG")
  if env and env ~= "" then
    local list = {}
    for p in env:gmatch("[^:]+") do list[#list + 1] = p end
    return list
  end
  return { home_config() }
end

-- YAML's `~` arrives as the null sentinel: an absent section, as kubectl reads it.
local function absent(v)
  return v == nil or v == yaml.null
end

local function merge_named(into, list, kind, base, seen)
  if absent(list) then return end
  if type(list) ~= "table" then fail("kubeconfig " .. base .. ": " .. kind .. "s must be a list") end
  for i, entry in ipairs(list) do
    if type(entry) ~= "table" or type(entry.name) ~= "string" then
      fail("kubeconfig " .. base .. ": " .. kind .. "s[" .. i .. "] has no name")
    end
    -- The first file to define a name wins.
    if not seen[entry.name] then
      seen[entry.name] = true
      local section = entry[kind]
      if absent(section) then section = {} end
      if type(section) ~= "table" then
        fail("kubeconfig " .. base .. ": " .. kind .. " " .. entry.name .. " must be a mapping")
      end
      if kind ~= "context" then resolve_paths(section, kind, base) end
      into[entry.name] = section
    end
  end
end

--- Read and merge kubeconfig files. Missing files in a list are skipped, as kubectl does; a
--- file that was named explicitly and is missing raises NotFound.
---@param files? string|string[]
---@return {clusters:table, users:table, contexts:table, current_context:string|nil, files:string[]}
function M.load(files)
  local explicit = files ~= nil
  local list = M.files(files)
  local cfg = { clusters = {}, users = {}, contexts = {}, files = {} }
  local seen = { cluster = {}, user = {}, context = {} }
  for _, path in ipairs(list) do
    local text = read_file(path)
    if not text and explicit and #list == 1 then
      errors.raise({ code = "NotFound", engine = "k8s", message = "kubeconfig " .. path .. " does not exist" }, 0)
    end
    if text then
      local ok, doc = pcall(yaml.load, text)
      if not ok then fail("kubeconfig " .. path .. ": " .. tostring(doc)) end
      if type(doc) == "table" then
        local base = dirname(path)
        cfg.files[#cfg.files + 1] = path
        merge_named(cfg.clusters, doc.clusters, "cluster", base, seen.cluster)
        merge_named(cfg.users, doc.users, "user", base, seen.user)
        merge_named(cfg.contexts, doc.contexts, "context", base, seen.context)
        local cc = doc["current-context"]
        if cfg.current_context == nil and type(cc) == "string" and cc ~= "" then cfg.current_context = cc end
      end
    end
  end
  return cfg
end

local function data_or_file(section, key)
  local data = section[key .. "-data"]
  if type(data) == "string" and data ~= "" then return nil, M.b64decode(data) end
  return section[key], nil
end

--- Standard base64 decoding of kubeconfig `*-data` fields (OpenSSL, through YAML's !!binary).
---@param s string
---@return string
function M.b64decode(s)
  local clean = s:gsub("%s", "")
  if not clean:match("^[A-Za-z0-9+/]*=?=?$") then fail("kubeconfig: invalid base64 data") end
  local ok, v = pcall(yaml.load, "!!binary " .. clean)
  if not ok or type(v) ~= "string" then fail("kubeconfig: invalid base64 data") end
  return v
end

local function tls_of(cluster, user)
  local tls = {}
  tls.ca, tls.ca_data = data_or_file(cluster, "certificate-authority")
  tls.cert, tls.cert_data = data_or_file(user, "client-certificate")
  tls.key, tls.key_data = data_or_file(user, "client-key")
  if cluster["insecure-skip-tls-verify"] == true then tls.insecure = true end
  if type(cluster["tls-server-name"]) == "string" then tls.server_name = cluster["tls-server-name"] end
  return tls
end

local function auth_of(user, name)
  if type(user.exec) == "table" then
    local e = user.exec
    if type(e.command) ~= "string" then fail("kubeconfig user " .. name .. ": exec.command is required") end
    return { kind = "exec", exec = e }
  end
  local token = type(user.token) == "string" and user.token ~= "" and user.token or nil
  if token then log.secret(token) end
  -- With both, client-go reads the file (and re-reads it: projected tokens rotate), keeping
  -- the inline token only for when the file cannot be read.
  if type(user.tokenFile) == "string" and user.tokenFile ~= "" then
    return { kind = "token_file", path = user.tokenFile, token = token }
  end
  if token then return { kind = "token", token = token } end
  if type(user.username) == "string" then
    if type(user.password) == "string" then log.secret(user.password) end
    return { kind = "basic", username = user.username, password = user.password or "" }
  end
  if user["auth-provider"] then
    fail("kubeconfig user " .. name .. ": auth-provider plugins are not supported; use an exec plugin")
  end
  return { kind = "none" }
end

-- NO_PROXY matching as Go's net/http/httpproxy does it (what kubectl and client-go use): "*"
-- matches everything; an IP or CIDR matches addresses; "example.com" matches it and its
-- subdomains, ".example.com" (or "*.example.com") only the subdomains; an entry with a port
-- matches that port only.
local function ip_bits(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = 0
  for _, part in ipairs({ a, b, c, d }) do
    local v = tonumber(part)
    if v > 255 then return nil end
    n = n * 256 + v
  end
  return n
end

local function no_proxy_match(entry, host, port)
  local want_port
  local h = entry
  local p = entry:match(":(%d+)$")
  if p and not entry:find("/", 1, true) then h, want_port = entry:sub(1, -(#p + 2)), p end
  if want_port and want_port ~= port then return false end
  local net, bits = h:match("^([%d%.]+)/(%d+)$")
  if net then
    local a, x = ip_bits(net), ip_bits(host)
    bits = tonumber(bits)
    if not a or not x or bits > 32 then return false end
    local size = 2 ^ (32 - bits)
    return a // size == x // size
  end
  if h:sub(1, 2) == "*." then h = h:sub(2) end
  if h:sub(1, 1) == "." then return host:sub(-#h) == h end
  return host == h or host:sub(-(#h + 1)) == "." .. h
end

--- The proxy that $HTTPS_PROXY / $HTTP_PROXY (by the server's scheme) and $NO_PROXY give for
--- `server`, as client-go reads them: never for localhost or a loopback address, upper-case
--- names before lower-case ones, `http://` assumed when the value has no scheme.
---@param server string
---@param getenv? fun(name:string):string|nil defaults to os.getenv
---@return string|nil
function M.env_proxy(server, getenv)
  getenv = getenv or os.getenv
  local function env(name)
    local v = getenv(name)
    if v == nil or v == "" then v = getenv(name:lower()) end
    if v == "" then return nil end
    return v
  end
  local scheme, authority = server:match("^(%a+)://([^/]*)")
  if not scheme then return nil end
  local host, port
  if authority:sub(1, 1) == "[" then
    host, port = authority:match("^%[(.-)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:]*):?(%d*)$")
  end
  if not host then return nil end
  host, scheme = host:lower(), scheme:lower()
  port = port ~= "" and port or (scheme == "https" and "443" or "80")
  local proxy = env(scheme == "https" and "HTTPS_PROXY" or "HTTP_PROXY")
  if not proxy then return nil end
  if host == "localhost" or host:match("^127%.") or host == "::1" then return nil end
  for entry in (env("NO_PROXY") or ""):gmatch("[^,%s]+") do
    entry = entry:lower()
    if entry == "*" or no_proxy_match(entry, host, port) then return nil end
  end
  if not proxy:find("://", 1, true) then proxy = "http://" .. proxy end
  return proxy
end

--- The connection settings of one context: server URL, namespace, TLS table for
--- myrmex.http, auth and proxy.
---@param cfg table from M.load
---@param opts? {context?:string, namespace?:string}
---@return {server:string, namespace:string, context:string, cluster:string, user:string,
---  tls:table, auth:table, proxy:string|nil}
function M.resolve(cfg, opts)
  opts = opts or {}
  local ctx_name = opts.context or cfg.current_context
  if not ctx_name then fail("kubeconfig: no current-context and no context given (files: "
    .. table.concat(cfg.files, ", ") .. ")") end
  local ctx = cfg.contexts[ctx_name]
  if not ctx then errors.raise({ code = "NotFound", engine = "k8s", message = 'context "' .. ctx_name
    .. '" does not exist in the kubeconfig' }, 0) end
  local cluster = cfg.clusters[ctx.cluster or ""]
  if not cluster then fail('kubeconfig context "' .. ctx_name .. '": cluster "' .. tostring(ctx.cluster)
    .. '" not found') end
  if type(cluster.server) ~= "string" or cluster.server == "" then
    fail('kubeconfig cluster "' .. ctx.cluster .. '": server is required')
  end
  local user = cfg.users[ctx.user or ""] or {}
  local ns = opts.namespace or ctx.namespace
  if ns == nil or ns == "" then ns = "default" end
  return {
    server = cluster.server:gsub("/+$", ""), namespace = ns, context = ctx_name,
    cluster = ctx.cluster, user = ctx.user, tls = tls_of(cluster, user),
    auth = auth_of(user, tostring(ctx.user)), cluster_info = cluster,
    proxy = cluster["proxy-url"] or M.env_proxy(cluster.server),
  }
end

--- Settings for a pod's service account, or nil when not running in a cluster.
---@param dir? string the service account directory (tests point it elsewhere)
---@return table|nil
function M.in_cluster(dir)
  dir = dir or M.SERVICEACCOUNT_DIR
  local host, port = os.getenv("KUBERNETES_SERVICE_HOST"), os.getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not read_file(dir .. "/token") then return nil end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  local ns = read_file(dir .. "/namespace")
  return {
    server = "https://" .. host .. ":" .. (port or "443"), namespace = ns and ns:gsub("%s+$", "") or "default",
    context = "in-cluster", tls = { ca = dir .. "/ca.crt" },
    proxy = M.env_proxy("https://" .. host .. ":" .. (port or "443")),
    auth = { kind = "token_file", path = dir .. "/token" },
  }
end

-- ---- exec credential plugins ----------------------------------------------------------------

local exec_cache = {}

local function parse_time(ts)
  local y, mo, d, h, mi, s = ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local t = os.time({ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
    min = tonumber(mi), sec = tonumber(s), isdst = false })
  local utc_offset = os.time(os.date("*t", 0)) - os.time(os.date("!*t", 0))
  return t + utc_offset
end
M.parse_time = parse_time

local function exec_key(e)
  return json.encode({ e.command, e.args or json.array(), e.env or json.array() })
end

local function run_plugin(e, cluster, timeout)
  local process = require("myrmex.process")
  local overrides = {}
  for _, kv in ipairs(e.env or {}) do overrides[kv.name] = tostring(kv.value) end
  local info = { apiVersion = e.apiVersion or "client.authentication.k8s.io/v1", kind = "ExecCredential",
    spec = { interactive = false } }
  if e.provideClusterInfo and cluster then
    -- As client-go fills ExecCredential's Cluster: the CA's bytes whether the kubeconfig
    -- inlines them or names a file, the proxy, and the cluster's exec extension as `config`.
    local ca = cluster["certificate-authority-data"]
    if (ca == nil or ca == "") and type(cluster["certificate-authority"]) == "string" then
      local pem = read_file(cluster["certificate-authority"])
      if not pem then
        errors.raise({ code = "Unauthorized", engine = "k8s", message = "exec plugin " .. e.command
          .. ": certificate-authority " .. cluster["certificate-authority"] .. " cannot be read" }, 0)
      end
      ca = require("myrmex.digest").base64(pem)
    end
    local config
    for _, ext in ipairs(type(cluster.extensions) == "table" and cluster.extensions or {}) do
      if type(ext) == "table" and ext.name == "client.authentication.k8s.io/exec" then config = ext.extension end
    end
    info.spec.cluster = { server = cluster.server, ["certificate-authority-data"] = ca,
      ["insecure-skip-tls-verify"] = cluster["insecure-skip-tls-verify"],
      ["tls-server-name"] = cluster["tls-server-name"], ["proxy-url"] = cluster["proxy-url"],
      ["disable-compression"] = cluster["disable-compression"], config = config }
  end
  overrides.KUBERNETES_EXEC_INFO = json.encode(info)
  local argv = { e.command }
  for _, a in ipairs(e.args or {}) do argv[#argv + 1] = tostring(a) end
  local ok, res = pcall(process.run, { argv = argv, env = process.environ(overrides), timeout = timeout or 30 })
  if not ok then
    errors.raise({ code = "Unauthorized", engine = "k8s",
      message = "exec plugin " .. e.command .. " could not start: " .. errors.message(res) }, 0)
  end
  if res.timed_out or res.status ~= 0 then
    errors.raise({ code = "Unauthorized", engine = "k8s", message = "exec plugin " .. e.command .. " failed ("
      .. process.describe(res) .. "): " .. (res.stderr or ""):sub(1, 500) }, 0)
  end
  return res.stdout
end

--- Run (or reuse) an exec credential plugin. Output is cached until its expirationTimestamp.
---@param e table the kubeconfig user's `exec` section
---@param cluster? table the cluster section (for provideClusterInfo)
---@param opts? {refresh?:boolean, timeout?:number}
---@return {token:string|nil, cert_data:string|nil, key_data:string|nil, expires:number|nil}
function M.exec_credential(e, cluster, opts)
  opts = opts or {}
  local key = exec_key(e)
  local cached = exec_cache[key]
  if cached and not opts.refresh and (not cached.expires or cached.expires > os.time() + 10) then return cached end
  local out = run_plugin(e, cluster, opts.timeout)
  local ok, doc = pcall(json.decode, out)
  if not ok or type(doc) ~= "table" or type(doc.status) ~= "table" then
    errors.raise({ code = "Unauthorized", engine = "k8s", message = "exec plugin " .. e.command
      .. " printed no ExecCredential: " .. out:sub(1, 200) }, 0)
  end
  local st = doc.status
  local cred = { token = st.token, cert_data = st.clientCertificateData, key_data = st.clientKeyData }
  if cred.token then log.secret(cred.token) end
  if cred.key_data then log.secret(cred.key_data) end
  if type(st.expirationTimestamp) == "string" then cred.expires = parse_time(st.expirationTimestamp) end
  exec_cache[key] = cred
  return cred
end

--- Forget cached exec credentials (all of them).
function M.reset_cache() exec_cache = {} end

return M
