--- Image references per the distribution reference grammar, with Docker's normalisation
--- (`busybox` is `docker.io/library/busybox:latest`). See docs/registry.md.
local errors = require("myrmex.errors")

local M = {}

M.default_registry = "docker.io"
M.default_tag = "latest"
M.max_name_length = 255

---@class myrmex.registry.Reference
---@field registry string host[:port] ("docker.io" for Docker Hub)
---@field repository string path inside the registry ("library/busybox")
---@field tag string|nil tag, "latest" when neither tag nor digest was given
---@field digest string|nil "sha256:<64 hex>"
local Ref = {}
Ref.__index = Ref
Ref.__name = "myrmex.registry.Reference"

--- The canonical string: registry/repository[:tag][@digest].
function Ref:__tostring()
  local s = self.registry .. "/" .. self.repository
  if self.tag then s = s .. ":" .. self.tag end
  if self.digest then s = s .. "@" .. self.digest end
  return s
end

--- What the manifest endpoint takes: the digest when there is one, else the tag.
---@return string
function Ref:reference()
  return self.digest or self.tag or M.default_tag
end

--- A copy with other fields replaced (e.g. {tag=..., digest=false}).
---@param t table
---@return myrmex.registry.Reference
function Ref:with(t)
  local r = setmetatable({ registry = self.registry, repository = self.repository,
    tag = self.tag, digest = self.digest }, Ref)
  for k, v in pairs(t) do r[k] = v or nil end
  return r
end

local function invalid(s, why)
  errors.raise({ code = "Invalid", engine = "registry",
    message = ("invalid reference %q: %s"):format(tostring(s), why) }, 3)
end

-- path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | [-]+
local function valid_component(c)
  if c == "" then return false end
  local rest = c:match("^[a-z0-9]+(.*)$")
  while rest and rest ~= "" do
    rest = rest:match("^__[a-z0-9]+(.*)$") or rest:match("^[_.][a-z0-9]+(.*)$")
      or rest:match("^%-+[a-z0-9]+(.*)$")
  end
  return rest == ""
end

-- domain := component ('.' component)* [':' port], or an IPv6 literal in brackets
local function valid_domain(d)
  local host, port = d:match("^(.-):(%d+)$")
  if not host then host = d end
  if port and (tonumber(port) < 1 or tonumber(port) > 65535) then return false end
  if host:match("^%[[%x:.]+%]$") then return true end
  for part in (host .. "."):gmatch("(.-)%.") do
    if not (part:match("^[%w]$") or part:match("^[%w][%w%-]*[%w]$")) then return false end
  end
  return true
end

local function valid_tag(t)
  return #t <= 128 and t:match("^[%w_][%w_.%-]*$") ~= nil
end

local function valid_digest(d)
  local algo, hex = d:match("^([a-z0-9]+[a-z0-9+._-]*):([%x]+)$")
  if not algo then return false end
  if algo == "sha256" then return #hex == 64 and not hex:match("%u") end
  if algo == "sha512" then return #hex == 128 and not hex:match("%u") end
  return #hex >= 32
end

--- Split "name[:tag][@digest]": the tag colon is the last one after the last slash.
local function split(s)
  local name, digest = s:match("^(.-)@(.*)$")
  if not name then name = s end
  local last_slash = name:find("/[^/]*$") or 0
  local colon = name:find(":[^:]*$")
  local tag
  if colon and colon > last_slash then
    tag = name:sub(colon + 1)
    name = name:sub(1, colon - 1)
  end
  return name, tag, digest
end

--- Parse a full reference with Docker Hub defaults.
--- opts.registry: a default registry for names with no domain (then no `library/` prefix);
--- opts.default_tag = false keeps tag nil when absent.
---@param s string
---@param opts? {registry?:string, default_tag?:string|false}
---@return myrmex.registry.Reference
function M.parse(s, opts)
  if type(s) ~= "string" then error("registry.reference.parse: string expected, got " .. type(s), 2) end
  opts = opts or {}
  if s == "" then invalid(s, "empty") end
  if s:match("%s") then invalid(s, "contains white space") end
  local name, tag, digest = split(s)
  if name == "" then invalid(s, "no repository name") end
  if tag and not valid_tag(tag) then invalid(s, "bad tag " .. ("%q"):format(tag)) end
  if digest and not valid_digest(digest) then invalid(s, "bad digest " .. ("%q"):format(digest)) end
  local registry, path
  local first, rest = name:match("^([^/]+)/(.+)$")
  if first and (first:find("[.:]") or first == "localhost" or first:match("%u") or first:match("^%[")) then
    registry, path = first, rest
    if not valid_domain(registry) then invalid(s, "bad registry host " .. ("%q"):format(registry)) end
  else
    registry, path = opts.registry or M.default_registry, name
  end
  if registry == "index.docker.io" or registry == "registry-1.docker.io" then registry = M.default_registry end
  if path:match("%u") then invalid(s, "repository name must be lowercase") end
  for comp in (path .. "/"):gmatch("(.-)/") do
    if not valid_component(comp) then invalid(s, ("bad path component %q"):format(comp)) end
  end
  if registry == M.default_registry and not opts.registry and not path:find("/") then
    path = "library/" .. path
  end
  if #registry + 1 + #path > M.max_name_length then invalid(s, "name longer than 255 characters") end
  if not tag and not digest and opts.default_tag ~= false then tag = opts.default_tag or M.default_tag end
  return setmetatable({ registry = registry, repository = path, tag = tag, digest = digest }, Ref)
end

--- True when `s` parses.
---@param s string
---@return boolean
function M.valid(s)
  return (pcall(M.parse, s))
end

--- True for a digest string "sha256:<64 lowercase hex>".
---@param d string
---@return boolean
function M.is_digest(d)
  return type(d) == "string" and valid_digest(d)
end

--- True when a registry host is a loopback address (plain HTTP allowed, as Docker does).
---@param host string
---@return boolean
function M.is_loopback(host)
  local h = host:match("^%[(.-)%]") or host:match("^([^:]+)") or host
  return h == "localhost" or h == "::1" or h:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

M.Reference = Ref
return M
