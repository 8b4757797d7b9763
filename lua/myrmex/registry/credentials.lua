--- Registry credentials from the files users have, in skopeo's order: `REGISTRY_AUTH_FILE`
--- (else `$XDG_RUNTIME_DIR/containers/auth.json`), `$XDG_CONFIG_HOME/containers/auth.json`,
--- Docker's `config.json`, `~/.dockercfg`; in each, `credHelpers`, `auths` entries and
--- `credsStore` through `docker-credential-<name>` helpers (their `get` protocol: the server
--- URL on stdin, JSON on stdout), run without a shell. See docs/registry.md.
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local process = require("myrmex.process")

local M = {}

--- How long a helper may take before it is killed.
M.helper_timeout = 30

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, 64 do B64_INDEX[B64:byte(i)] = i - 1 end

-- The `auth` field is base64("user:password"); nothing else here needs base64.
local function b64decode(s)
  s = s:gsub("[%s=]", "")
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = B64_INDEX[s:byte(i)]
    if not v then return nil end
    bits = (bits << 6) | v
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      out[#out + 1] = string.char((bits >> nbits) & 0xff)
    end
  end
  return table.concat(out)
end

--- The directory of the Docker client configuration.
---@return string
function M.config_dir()
  local d = os.getenv("DOCKER_CONFIG")
  if d and d ~= "" then return d end
  return (os.getenv("HOME") or "") .. "/.docker"
end

--- The parsed config.json (or any auth file given), an empty table when there is none.
---@param path? string
---@return table
function M.load_config(path)
  path = path or (M.config_dir() .. "/config.json")
  local f = io.open(path, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local ok, cfg = pcall(json.decode, text)
  if not ok or type(cfg) ~= "table" then
    errors.raise({ code = "Invalid", engine = "registry", message = path .. ": not valid JSON" }, 2)
  end
  return cfg
end

local function env(name)
  local v = os.getenv(name)
  return v ~= "" and v or nil
end

--- The credential files searched, in order, as containers-auth.json(5) and skopeo read them:
--- the primary file (`REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`),
--- `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`), Docker's `config.json`
--- (`$DOCKER_CONFIG` or `~/.docker`), and the legacy `~/.dockercfg` (`legacy = true`).
---@return {path:string, legacy?:boolean}[]
function M.auth_files()
  local home = os.getenv("HOME") or ""
  local list = {}
  local primary = env("REGISTRY_AUTH_FILE")
  if not primary and env("XDG_RUNTIME_DIR") then primary = env("XDG_RUNTIME_DIR") .. "/containers/auth.json" end
  if primary then list[#list + 1] = { path = primary } end
  list[#list + 1] = { path = (env("XDG_CONFIG_HOME") or (home .. "/.config")) .. "/containers/auth.json" }
  list[#list + 1] = { path = M.config_dir() .. "/config.json" }
  list[#list + 1] = { path = home .. "/.dockercfg", legacy = true }
  return list
end

-- Docker Hub's credentials live under its v1 index URL.
local function keys_for(host)
  if host == "docker.io" or host == "index.docker.io" or host == "registry-1.docker.io" then
    return { "https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io" }
  end
  return { host, "https://" .. host, "http://" .. host, "https://" .. host .. "/v1/", "https://" .. host .. "/v2/" }
end

-- Normalise an `auths` key: scheme and path dropped, so "https://h:5000/v1/" matches "h:5000".
local function bare(key)
  return (key:gsub("^%a+://", ""):gsub("/.*$", ""))
end

--- Run `docker-credential-<helper> get` for `server`; nil when it knows no credentials.
---@param helper string
---@param server string
---@return {username:string, password?:string, identity_token?:string}|nil
function M.from_helper(helper, server)
  if not helper:match("^[%w_.%-]+$") then
    errors.raise({ code = "Invalid", engine = "registry", message = "bad credential helper name " .. helper }, 2)
  end
  local prog = "docker-credential-" .. helper
  local res = process.run({ argv = { prog, "get" }, stdin = server, timeout = M.helper_timeout,
    max_output = 1024 * 1024 })
  if res.timed_out then
    errors.raise({ code = "Timeout", engine = "registry", message = prog .. " get: timed out" }, 2)
  end
  if res.status ~= 0 then
    local out = (res.stdout .. res.stderr):gsub("%s+$", "")
    if out:lower():find("credentials not found", 1, true) then return nil end
    errors.raise({ code = "Unauthorized", engine = "registry",
      message = ("%s get: %s: %s"):format(prog, process.describe(res), out) }, 2)
  end
  local ok, doc = pcall(json.decode, res.stdout)
  if not ok or type(doc) ~= "table" or type(doc.Secret) ~= "string" then
    errors.raise({ code = "Engine", engine = "registry", message = prog .. " get: unreadable reply" }, 2)
  end
  log.secret(doc.Secret)
  -- "<token>" as the user name means the secret is an identity (refresh) token.
  if doc.Username == "<token>" then return { username = "<token>", identity_token = doc.Secret } end
  return { username = doc.Username or "", password = doc.Secret }
end

local lookup_in

--- Credentials for a registry host, or nil (anonymous): from `cfg` when given, else from the
--- first of `auth_files()` that has an entry for it. With `repo`, auth.json entries scoped to
--- a namespace (`host/team/app`, `host/team`) are tried first, the longest first.
---@param host string "host:port" or "docker.io"
---@param cfg? table a parsed config.json or auth.json (default: search the user's files)
---@param repo? string the repository the credentials are for
---@return {username:string, password?:string, identity_token?:string}|nil
function M.lookup(host, cfg, repo)
  if cfg then return lookup_in(host, cfg, repo) end
  for _, file in ipairs(M.auth_files()) do
    local loaded = M.load_config(file.path)
    -- ~/.dockercfg is the bare auths map.
    if file.legacy then loaded = { auths = loaded } end
    local creds = next(loaded) and lookup_in(host, loaded, repo)
    if creds then
      log.debug("registry: credentials found", { host = host, file = file.path })
      return creds
    end
  end
  return nil
end

-- Credentials for host (and repo) from one parsed file.
function lookup_in(host, cfg, repo)
  local keys = keys_for(host)
  if type(cfg.credHelpers) == "table" then
    for _, k in ipairs(keys) do
      local helper = cfg.credHelpers[k]
      if type(helper) == "string" and helper ~= "" then return M.from_helper(helper, keys[1]) end
    end
  end
  if type(cfg.auths) == "table" then
    -- Namespaced keys first, most specific first ("h/team/app", then "h/team"), then the host.
    local order = {}
    if type(repo) == "string" and host ~= "docker.io" then
      local parts = {}
      for c in repo:gmatch("[^/]+") do parts[#parts + 1] = c end
      for n = #parts, 1, -1 do order[#order + 1] = host .. "/" .. table.concat(parts, "/", 1, n) end
      for _, k in ipairs(order) do
        local entry = cfg.auths[k]
        if type(entry) == "table" then
          local creds = M._entry(k, entry)
          if creds then return creds end
        end
      end
    end
    local wanted = {}
    for _, k in ipairs(keys) do wanted[bare(k)] = true end
    for key, entry in pairs(cfg.auths) do
      -- A key without a scheme but with a path is scoped to a namespace (tried above).
      local scoped = not key:find("^%a+://") and key:find("/.", 1) ~= nil
      if type(entry) == "table" and not scoped and wanted[bare(key)] then
        local creds = M._entry(key, entry)
        if creds then return creds end
      end
    end
  end
  if type(cfg.credsStore) == "string" and cfg.credsStore ~= "" then
    return M.from_helper(cfg.credsStore, keys[1])
  end
  return nil
end

-- The credentials of one auths entry, or nil when it holds none.
function M._entry(key, entry)
  if type(entry.identitytoken) == "string" and entry.identitytoken ~= "" then
    log.secret(entry.identitytoken)
    return { username = entry.username or "<token>", identity_token = entry.identitytoken }
  end
  local user, pass = entry.username, entry.password
  if type(entry.auth) == "string" and entry.auth ~= "" then
    local plain = b64decode(entry.auth)
    user, pass = (plain or ""):match("^([^:]*):(.*)$")
    if not user then
      errors.raise({ code = "Invalid", engine = "registry",
        message = "credentials: auths[" .. key .. "].auth is not base64 user:password" }, 3)
    end
  end
  if user then
    log.secret(pass)
    return { username = user, password = pass }
  end
  return nil
end

M._b64decode = b64decode
return M
