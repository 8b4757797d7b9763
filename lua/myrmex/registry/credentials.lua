--- Registry credentials from Docker's client configuration: `auths` entries, `credHelpers`
--- and `credsStore` through `docker-credential-<name>` helpers (their `get` protocol: the
--- server URL on stdin, JSON on stdout), run without a shell. See docs/registry.md.
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

--- The parsed config.json, or an empty table when there is none.
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

--- Credentials for a registry host from the Docker configuration, or nil (anonymous).
---@param host string "host:port" or "docker.io"
---@param cfg? table a parsed config.json (default: the user's)
---@return {username:string, password?:string, identity_token?:string}|nil
function M.lookup(host, cfg)
  cfg = cfg or M.load_config()
  local keys = keys_for(host)
  if type(cfg.credHelpers) == "table" then
    for _, k in ipairs(keys) do
      local helper = cfg.credHelpers[k]
      if type(helper) == "string" and helper ~= "" then return M.from_helper(helper, keys[1]) end
    end
  end
  if type(cfg.auths) == "table" then
    local wanted = {}
    for _, k in ipairs(keys) do wanted[bare(k)] = true end
    for key, entry in pairs(cfg.auths) do
      if type(entry) == "table" and wanted[bare(key)] then
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
              message = "config.json: auths[" .. key .. "].auth is not base64 user:password" }, 2)
          end
        end
        if user then
          log.secret(pass)
          return { username = user, password = pass }
        end
      end
    end
  end
  if type(cfg.credsStore) == "string" and cfg.credsStore ~= "" then
    return M.from_helper(cfg.credsStore, keys[1])
  end
  return nil
end

M._b64decode = b64decode
return M
