--- `myrmex doctor`: for each engine, whether it is reachable, its version, and where its
--- address came from (an environment variable, a config file, a default).
local rt = require("myrmex.core.runtime")
local errors = require("myrmex.errors")

local M = {}

local function env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

--- The first executable called `name` on PATH, or nil.
---@param name string
---@return string|nil
function M.which(name)
  for dir in (env("PATH") or ""):gmatch("[^:]+") do
    local st = rt.stat(dir .. "/" .. name)
    if st and st.type == "file" and st.mode & 73 ~= 0 then return dir .. "/" .. name end
  end
end

local function read_json(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(require("myrmex.json").decode, text)
  return ok and v or nil, not ok and v or nil
end

local function docker_config_dir()
  return env("DOCKER_CONFIG") or ((env("HOME") or "") .. "/.docker")
end

local function docker_check()
  local source
  if env("DOCKER_HOST") then
    source = "DOCKER_HOST"
  else
    local cfg = read_json(docker_config_dir() .. "/config.json")
    local ctx = cfg and cfg.currentContext
    source = (ctx and ctx ~= "default") and ("docker context " .. ctx) or "default socket"
  end
  local docker = require("myrmex.docker")
  local ok, c = pcall(docker.connect)
  if not ok then return { ok = false, detail = errors.message(c), source = source } end
  local okv, v = pcall(c.version, c)
  local version = okv and type(v) == "table" and v.Version or "?"
  return { ok = true, source = source,
    detail = string.format("Docker %s (API %s) at %s", version, c.api_version or "?", c.host or "?") }
end

local function kubeconfig_paths()
  local list = {}
  if env("KUBECONFIG") then
    for p in env("KUBECONFIG"):gmatch("[^:]+") do list[#list + 1] = p end
    return list, "KUBECONFIG"
  end
  local p = (env("HOME") or "") .. "/.kube/config"
  if rt.stat(p) then return { p }, "~/.kube/config" end
  if env("KUBERNETES_SERVICE_HOST") then return {}, "in-cluster service account" end
  return {}, nil
end

local function k8s_check()
  local paths, source = kubeconfig_paths()
  if not source then
    return { ok = false, optional = true, detail = "no KUBECONFIG, ~/.kube/config or in-cluster account" }
  end
  local okm, k8s = pcall(require, "myrmex.k8s")
  if not okm or type(k8s) ~= "table" or type(k8s.connect) ~= "function" then
    return { ok = false, optional = true, source = source, detail = "kubeconfig found: " .. table.concat(paths, ":") }
  end
  local ok, c = pcall(k8s.connect, {})
  if not ok then return { ok = false, optional = true, source = source, detail = errors.message(c) } end
  local where = (c.context and ("context " .. c.context .. ", ") or "") .. tostring(c.server or "?")
  local okv, v = pcall(function() return c:version() end)
  if not okv then
    return { ok = false, optional = true, source = source, detail = where .. ": " .. errors.message(v) }
  end
  return { ok = true, source = source,
    detail = string.format("Kubernetes %s at %s", type(v) == "table" and v.gitVersion or tostring(v), where) }
end

local function registry_check()
  local path = docker_config_dir() .. "/config.json"
  local cfg, err = read_json(path)
  if not cfg then
    return { ok = false, optional = true, source = path,
      detail = err and ("unreadable: " .. err) or "no Docker config (anonymous access only)" }
  end
  local names = {}
  for host in pairs(cfg.auths or {}) do names[#names + 1] = host end
  for host, helper in pairs(cfg.credHelpers or {}) do names[#names + 1] = host .. " (helper " .. helper .. ")" end
  table.sort(names)
  local detail = #names > 0 and ("credentials for " .. table.concat(names, ", ")) or "no stored credentials"
  if cfg.credsStore then detail = detail .. "; credsStore " .. cfg.credsStore end
  return { ok = true, source = path, detail = detail }
end

local function scanner_check()
  local found = {}
  for _, s in ipairs({ "trivy", "grype" }) do
    local p = M.which(s)
    if p then found[#found + 1] = s .. " (" .. p .. ")" end
  end
  local plugin = docker_config_dir() .. "/cli-plugins/docker-scout"
  if rt.stat(plugin) or M.which("docker-scout") then found[#found + 1] = "docker scout" end
  if #found == 0 then
    return { ok = false, optional = true, source = "PATH",
      detail = "no trivy, grype or docker scout found; scans will say so" }
  end
  return { ok = true, source = "PATH", detail = table.concat(found, ", ") }
end

--- Run every check: a list of {name=, ok=, optional=, detail=, source=}. Only Docker is
--- required; the others are reported as absent when not configured.
---@return table[]
function M.run()
  local checks = {}
  local function add(name, fn)
    local ok, res = pcall(fn)
    if not ok then res = { ok = false, detail = errors.message(res) } end
    res.name = name
    checks[#checks + 1] = res
  end
  add("docker", docker_check)
  add("kubernetes", k8s_check)
  add("registry", registry_check)
  add("scanners", scanner_check)
  return checks
end

return M
