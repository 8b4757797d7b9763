--- Registry authentication: `WWW-Authenticate` challenges, Basic, and the Bearer token flow
--- (realm, service, scope) with tokens cached per scope and refreshed before they expire.
--- Basic credentials go to the registry only when it asks for Basic, and to the token realm
--- otherwise; tokens and passwords are registered with log.secret as soon as they are held.
local http = require("myrmex.http")
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local M = {}

-- Form values for the OAuth2 refresh-token grant (RFC 3986 unreserved kept as is).
local function escape(s)
  return (tostring(s):gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Seconds before expiry at which a cached token is no longer used.
M.refresh_margin = 10
--- Token lifetime assumed when the server gives none (the token spec's default).
M.default_expires = 60

--- Parse a WWW-Authenticate header into challenges {scheme=lowercase, params={k=v}}.
---@param header string|nil
---@return {scheme:string, params:table<string,string>}[]
function M.parse_challenges(header)
  local out = {}
  if type(header) ~= "string" then return out end
  local i, n = 1, #header
  local current
  while i <= n do
    local s = header:match("^[%s,]*()", i)
    i = s
    if i > n then break end
    local key, after = header:match("^([%w!#$%%&'*+.^_`|~-]+)()", i)
    if not key then break end
    local eq = header:match("^%s*=%s*()", after)
    if eq then
      local value
      if header:sub(eq, eq) == '"' then
        local buf, j = {}, eq + 1
        while j <= n do
          local c = header:sub(j, j)
          if c == "\\" then
            buf[#buf + 1] = header:sub(j + 1, j + 1)
            j = j + 2
          elseif c == '"' then
            j = j + 1
            break
          else
            buf[#buf + 1] = c
            j = j + 1
          end
        end
        value, i = table.concat(buf), j
      else
        value, i = header:match("^([^,%s]*)()", eq)
      end
      if current then current.params[key:lower()] = value end
    else
      current = { scheme = key:lower(), params = {} }
      out[#out + 1] = current
      i = after
    end
  end
  return out
end

---@class myrmex.registry.Auth
---@field kind "none"|"basic"|"bearer"|nil nil until the registry has answered once
local Auth = {}
Auth.__index = Auth

--- New auth state for one registry client.
---@param creds? {username?:string, password?:string, token?:string, identity_token?:string}
---@param request fun(t:table):table the client's raw request function (TLS settings applied)
---@return myrmex.registry.Auth
function M.new(creds, request)
  creds = creds or {}
  log.secret(creds.password)
  log.secret(creds.token)
  log.secret(creds.identity_token)
  return setmetatable({ creds = creds, request = request, tokens = {}, inflight = {}, kind = nil,
    fetched = 0 }, Auth)
end

--- Headers to send for a request needing `scope` (a list of scope strings), fetching a
--- token first when the registry uses Bearer and none valid is cached.
---@param scopes string[]
---@return table<string,string>
function Auth:headers(scopes)
  local c = self.creds
  if c.token and self.kind ~= "basic" then return { Authorization = "Bearer " .. c.token } end
  if self.kind == "basic" then
    if not c.username then return {} end
    return {}, { c.username, c.password or "" }
  end
  if self.kind == "bearer" then
    return { Authorization = "Bearer " .. self:token(scopes) }
  end
  return {}
end

local function scope_key(scopes)
  local copy = {}
  for i, s in ipairs(scopes or {}) do copy[i] = s end
  table.sort(copy)
  return table.concat(copy, " ")
end

--- A token for `scopes`, from the cache or the realm.
---@param scopes string[]
---@return string
function Auth:token(scopes)
  local key = scope_key(scopes)
  -- Parallel branches asking for the same scope wait for the one fetch in flight.
  while self.inflight[key] do http.sleep(0.005) end
  local cached = self.tokens[key]
  local now = os.time()
  if cached and cached.expires - M.refresh_margin > now then return cached.token end
  self.inflight[key] = true
  local ok, tok, expires = pcall(self.fetch, self, key)
  self.inflight[key] = nil
  if not ok then error(tok, 0) end
  self.tokens[key] = { token = tok, expires = now + expires }
  return tok
end

--- What a request for `scopes` would be sent with now: after a 401, a different answer
--- means another branch has learnt better credentials meanwhile, so a retry is worth it.
---@param scopes string[]
---@return string
function Auth:state(scopes)
  local cached = self.tokens[scope_key(scopes)]
  return tostring(self.kind) .. "|" .. (cached and cached.token or "")
end

local function fail(code, msg, status)
  errors.raise({ code = code, engine = "registry", message = msg, status = status }, 3)
end

--- Ask the token realm for a token covering `scope` (space-separated scopes).
---@param scope string
---@return string token, integer expires_in
function Auth:fetch(scope)
  local b, c = self.bearer, self.creds
  local query = { service = b.service }
  if scope ~= "" then query.scope = scope end
  local t = { method = "GET", url = b.realm, query = query, timeout = 60, max_body = 1024 * 1024 }
  if c.identity_token then
    -- OAuth2 refresh-token grant, as docker login stores for some registries.
    local form = { "grant_type=refresh_token", "client_id=myrmex",
      "refresh_token=" .. escape(c.identity_token), "service=" .. escape(b.service or "") }
    if scope ~= "" then form[#form + 1] = "scope=" .. escape(scope) end
    t = { method = "POST", url = b.realm, timeout = 60, body = table.concat(form, "&"), max_body = 1024 * 1024,
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
  elseif c.username and c.password then
    t.basic_auth = { c.username, c.password }
  end
  local res = self.request(t)
  self.fetched = self.fetched + 1
  -- OAuth2 servers answer a bad refresh token with 400 invalid_grant.
  if res.status == 401 or res.status == 403 or (res.status == 400 and c.identity_token) then
    fail("Unauthorized", ("token server %s refused the credentials for %s"):format(b.realm,
      scope ~= "" and scope or "the registry"), res.status)
  elseif res.status ~= 200 then
    fail(errors.from_status(res.status) or "Engine", ("token server %s answered %d"):format(b.realm, res.status),
      res.status)
  end
  local ok, doc = pcall(json.decode, res.body or "")
  local tok = ok and type(doc) == "table" and (doc.token or doc.access_token)
  if type(tok) ~= "string" or tok == "" then fail("Engine", "token server " .. b.realm .. ": no token in reply") end
  log.secret(tok)
  if type(doc.refresh_token) == "string" then log.secret(doc.refresh_token) end
  local expires = tonumber(doc.expires_in) or M.default_expires
  if expires < 1 then expires = M.default_expires end
  return tok, math.floor(expires)
end

--- Learn from a 401: returns true when a retry with new credentials makes sense.
---@param header string|nil the WWW-Authenticate value
---@param scopes string[]
---@return boolean
function Auth:challenge(header, scopes)
  local c = self.creds
  for _, ch in ipairs(M.parse_challenges(header)) do
    if ch.scheme == "bearer" and ch.params.realm then
      local first = self.kind ~= "bearer"
      self.kind = "bearer"
      self.bearer = { realm = ch.params.realm, service = ch.params.service }
      local key = scope_key(scopes)
      -- A challenge naming a scope (insufficient_scope) is a hint we merge in.
      if ch.params.scope and not key:find(ch.params.scope, 1, true) then
        self.tokens[key] = nil
        return true
      end
      if first or self.tokens[key] then
        self.tokens[key] = nil
        return first
      end
      return false
    elseif ch.scheme == "basic" then
      local first = self.kind ~= "basic"
      self.kind = "basic"
      return first and c.username ~= nil and c.password ~= nil
    end
  end
  return false
end

M.scope_key = scope_key
return M
