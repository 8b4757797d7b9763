--- myrmex.registry: OCI distribution (Docker Registry HTTP API v2) through the shared
--- transport — references, auth (anonymous, Basic, Bearer tokens), manifests, blobs
--- streamed and verified, resumable chunked uploads, cross-repository mounts; image push,
--- pull and copy live in myrmex.registry.image. See docs/registry.md.
local http = require("myrmex.http")
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local digest = require("myrmex.digest")
local reference = require("myrmex.registry.reference")
local credentials = require("myrmex.registry.credentials")
local auth = require("myrmex.registry.auth")

local M = {}

M.reference = reference
M.credentials = credentials

--- Media types this module knows.
M.media = {
  oci_manifest = "application/vnd.oci.image.manifest.v1+json",
  oci_index = "application/vnd.oci.image.index.v1+json",
  docker_manifest = "application/vnd.docker.distribution.manifest.v2+json",
  docker_list = "application/vnd.docker.distribution.manifest.list.v2+json",
  oci_config = "application/vnd.oci.image.config.v1+json",
  docker_config = "application/vnd.docker.container.image.v1+json",
  oci_layer = "application/vnd.oci.image.layer.v1.tar",
  oci_layer_gzip = "application/vnd.oci.image.layer.v1.tar+gzip",
  docker_layer = "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
local MEDIA = M.media
local ACCEPT = table.concat({ MEDIA.oci_manifest, MEDIA.oci_index, MEDIA.docker_manifest, MEDIA.docker_list }, ", ")

--- Manifests larger than this are refused (the distribution spec's suggested cap).
M.max_manifest_size = 4 * 1024 * 1024
--- Cap on one page of a catalog or tag listing.
M.max_listing_size = 16 * 1024 * 1024
--- Size of each PATCH of a chunked upload.
M.chunk_size = 8 * 1024 * 1024
--- Attempts per chunk before an upload gives up (the registry may be restarting).
M.upload_retries = 6

---@class myrmex.registry.Client
---@field host string "host:port" as connected
---@field scheme string|nil "https" or "http" (nil until decided for loopback hosts)
---@field parallel integer layers transferred at once
local Client = {}
Client.__index = Client
Client.__name = "myrmex.registry.Client"

function Client:__tostring()
  return ("registry %s://%s"):format(self.scheme or "auto", self.host)
end

local function misuse(fname, msg)
  error(("registry.%s: %s"):format(fname, msg), 3)
end

local argcheck = require("myrmex.check")

local function options(fname, opts, allowed)
  return argcheck.options("registry", fname, opts, allowed)
end

local set = argcheck.set

local function fail(t)
  t.engine = "registry"
  errors.raise(t, 3)
end

-- Registry replies carry {"errors":[{code, message, detail}]}; keep them as details.
local function api_error(res, what)
  local ok, doc = pcall(json.decode, res.body or "")
  local list = ok and type(doc) == "table" and type(doc.errors) == "table" and doc.errors or {}
  local first = list[1]
  local text = first and (tostring(first.code) .. ": " .. tostring(first.message or "")) or ("HTTP " .. res.status)
  local code = errors.from_status(res.status) or "Engine"
  if first and (first.code == "BLOB_UNKNOWN" or first.code == "MANIFEST_UNKNOWN"
      or first.code == "NAME_UNKNOWN") then
    code = "NotFound"
  elseif first and first.code == "MANIFEST_BLOB_UNKNOWN" then
    code = "NotFound"
  elseif first and (first.code == "DIGEST_INVALID") then
    code = "DigestMismatch"
  end
  errors.raise({ code = code, engine = "registry", status = res.status,
    message = what .. ": " .. text, details = { errors = list } }, 3)
end
M._api_error = api_error

---@class myrmex.registry.ConnectOptions
---@field username? string
---@field password? string
---@field token? string
---@field ca? string
---@field ca_data? string
---@field cert? string
---@field key? string
---@field insecure? boolean
---@field plain_http? boolean
---@field config? string|table|false
---@field timeout? number
---@field parallel? integer
---@field chunk_size? integer

--- Connect to a registry (see docs/registry.md for the options). Nothing is sent yet.
---@param host string "host[:port]", optionally with "https://" or "http://"
---@param opts? myrmex.registry.ConnectOptions
---@return myrmex.registry.Client
function M.connect(host, opts)
  if type(host) ~= "string" or host == "" then misuse("connect", "host must be a non-empty string") end
  opts = options("connect", opts, set { "username", "password", "token", "ca", "ca_data", "cert", "key",
    "insecure", "plain_http", "config", "timeout", "parallel", "chunk_size" })
  local scheme, bare = host:match("^(https?)://([^/]+)/?$")
  bare = bare or host
  if bare:find("/") then misuse("connect", "host must be host[:port], got " .. host) end
  if bare == "index.docker.io" or bare == "docker.io" then bare = "registry-1.docker.io" end
  if opts.plain_http then scheme = "http" end
  local tls = {}
  for _, k in ipairs { "ca", "ca_data", "cert", "key", "insecure" } do tls[k] = opts[k] end
  if not scheme and (opts.ca or opts.ca_data or opts.cert) then scheme = "https" end
  if not scheme and not reference.is_loopback(bare) then scheme = "https" end
  local creds
  if opts.username or opts.password or opts.token then
    creds = { username = opts.username, password = opts.password, token = opts.token }
  elseif opts.config ~= false then
    -- A given config (table or path) is the only one read; otherwise the user's files are
    -- searched in skopeo's order (REGISTRY_AUTH_FILE, containers auth.json, Docker's).
    local cfg = type(opts.config) == "table" and opts.config
      or (opts.config and credentials.load_config(opts.config)) or nil
    creds = credentials.lookup(host == "registry-1.docker.io" and "docker.io" or bare, cfg)
  end
  local self = setmetatable({ host = bare, scheme = scheme, tls = tls, timeout = opts.timeout,
    parallel = opts.parallel or 4, chunk_size = opts.chunk_size or M.chunk_size }, Client)
  self.auth = auth.new(creds, function(t) return self:_raw(t) end)
  return self
end

-- ---------------------------------------------------------------------------------------
-- Plumbing

--- One request with the client's TLS settings and no auth logic.
function Client:_raw(t)
  t.engine = "registry"
  t.tls = t.tls or self.tls
  if t.timeout == nil then t.timeout = self.timeout end
  return http.request(t)
end

-- Loopback registries speak plain HTTP unless they answer TLS, as Docker decides. Plain HTTP
-- is asked first: most loopback registries are plain, and a TLS probe costs a handshake and
-- the parse of the system's CA bundle (about 20 ms, a third of a small pull). A TLS server
-- answers a plain request 400 (Go's, nginx) or drops it; then TLS is tried, and its failure
-- is the error reported.
function Client:_resolve_scheme()
  if self.scheme then return end
  local ok, res = pcall(http.request, { method = "GET", url = "http://" .. self.host .. "/v2/",
    timeout = 15, engine = "registry" })
  if ok and res.status ~= 400 then
    self.scheme = "http"
    return
  end
  local ok2, res2 = pcall(http.request, { method = "GET", url = "https://" .. self.host .. "/v2/",
    tls = self.tls, timeout = 15, engine = "registry" })
  if not ok2 then error(res2, 0) end
  self.scheme = "https"
end

function Client:_base()
  self:_resolve_scheme()
  return self.scheme .. "://" .. self.host
end

-- Absolute URL for a Location header (relative or absolute).
function Client:_absolute(loc)
  if loc:match("^https?://") then return loc end
  return self:_base() .. loc
end

local function replayable(body)
  return body == nil or type(body) == "string" or (type(body) == "table" and body.file ~= nil
    and getmetatable(body) == nil)
end

--- An authenticated request: `t.path` (or `t.url`) plus the transport's fields; `scopes`
--- is the token scope list for Bearer registries. A 401 is answered once by the auth
--- state (new token or Basic credentials) and the request replayed when its body allows.
function Client:_call(t, scopes)
  t.url = t.url or (self:_base() .. t.path)
  t.path = nil
  -- A Link or Location header may name another host: credentials and tokens stay with the
  -- registry they belong to (as the transport does for redirects), and that host's 401 is
  -- not answered with them either.
  local host = t.url:match("^https?://([^/?#]+)")
  if host and host ~= self.host then return self:_raw(t) end
  if self.auth.kind == nil and not replayable(t.body) then self:ping() end
  for attempt = 1, 2 do
    local headers, basic = self.auth:headers(scopes or {})
    local req = {}
    for k, v in pairs(t) do req[k] = v end
    req.headers = {}
    for k, v in pairs(t.headers or {}) do req.headers[k] = v end
    for k, v in pairs(headers) do req.headers[k] = v end
    req.basic_auth = basic
    local sent_with = self.auth:state(scopes or {})
    local res = self:_raw(req)
    if res.status ~= 401 then
      if self.auth.kind == nil then self.auth.kind = "none" end
      return res
    end
    if attempt == 2 or not replayable(t.body) then return res end
    if self.auth:state(scopes or {}) == sent_with
        and not self.auth:challenge(res.headers["www-authenticate"], scopes or {}) then
      return res
    end
  end
end

local function pull_scope(repo) return "repository:" .. repo .. ":pull" end
local function push_scope(repo) return "repository:" .. repo .. ":pull,push" end
M._scopes = { pull = pull_scope, push = push_scope }

local function check(res, what, ...)
  for _, ok in ipairs { ... } do
    if res.status == ok then return res end
  end
  if res.status == 401 then
    errors.raise({ code = "Unauthorized", engine = "registry", status = 401,
      message = what .. ": authentication required or credentials rejected" }, 3)
  end
  api_error(res, what)
end

--- A reference relative to this registry: "repo:tag", "repo@sha256:..", or one naming this host.
---@param s string|myrmex.registry.Reference
---@return myrmex.registry.Reference
function Client:ref(s)
  if getmetatable(s) == reference.Reference then return s end
  if type(s) ~= "string" then misuse("ref", "reference string expected, got " .. type(s)) end
  -- Docker Hub names keep their defaults ("busybox" is library/busybox there).
  local hub = self.host == "registry-1.docker.io"
  local r = reference.parse(s, { registry = not hub and self.host or nil })
  if hub and r.registry == reference.default_registry then return r end
  if r.registry ~= self.host then
    errors.raise({ code = "Invalid", engine = "registry",
      message = ("reference %s names registry %s, client is connected to %s"):format(s, r.registry, self.host) }, 2)
  end
  return r
end

local function repo_path(repo, kind, ref)
  return ("/v2/%s/%s/%s"):format(repo, kind, ref)
end

-- ---------------------------------------------------------------------------------------
-- API version check, catalog, tags

--- Check the registry answers the v2 API (and learn its auth scheme).
---@return boolean true
function Client:ping()
  return log.span("registry", "ping", self.host, function()
    local res = self:_raw({ method = "GET", url = self:_base() .. "/v2/" })
    if res.status == 401 then
      self.auth:challenge(res.headers["www-authenticate"], {})
      if self.auth.kind == "basic" then
        res = self:_call({ method = "GET", path = "/v2/" })
      end
      if res.status == 401 and self.auth.kind ~= "bearer" then check(res, "ping " .. self.host) end
      return true
    end
    self.auth.kind = self.auth.kind or "none"
    check(res, "ping " .. self.host, 200)
    return true
  end)
end

-- Follow `Link: <...>; rel="next"` pages, collecting `field` of each JSON page.
function Client:_paged(path, query, field, scopes, what, limit)
  local out, url, seen = {}, nil, {}
  repeat
    local res = self:_call({ method = "GET", path = url and nil or path, url = url,
      query = not url and query or nil, max_body = M.max_listing_size }, scopes)
    check(res, what, 200)
    local ok, doc = pcall(json.decode, res.body or "")
    if not ok or type(doc) ~= "table" then fail({ code = "Engine", message = what .. ": unreadable reply" }) end
    for _, v in ipairs(type(doc[field]) == "table" and doc[field] or {}) do out[#out + 1] = v end
    local link = res.headers["link"]
    local next_url = link and link:match("<([^>]+)>%s*;%s*rel=\"?next\"?")
    url = next_url and self:_absolute(next_url) or nil
    -- A registry sending the same page again would otherwise keep us here forever.
    if url and seen[url] then fail({ code = "Engine", message = what .. ": Link header loops to " .. url }) end
    if url then seen[url] = true end
  until not url or (limit and #out >= limit)
  return out
end

-- One page when `n` is given, every page otherwise (`page_size` sets n per request then).
-- Registries that ignore n and last (distribution 2.8 for tags) get them applied here.
local function page(list, opts)
  if not opts.n then return list end
  table.sort(list)
  local out = {}
  for _, v in ipairs(list) do
    if #out >= opts.n then break end
    if not opts.last or v > opts.last then out[#out + 1] = v end
  end
  return out
end

--- Repository names in the registry: one page with `n` (after `last`), else every page,
--- requested `page_size` at a time (following the Link header).
---@param opts? {n?:integer, last?:string, page_size?:integer}
---@return string[]
function Client:catalog(opts)
  opts = options("catalog", opts, set { "n", "last", "page_size" })
  return log.span("registry", "catalog", self.host, function()
    local n = opts.n or opts.page_size
    local q = { n = n and tostring(n) or nil, last = opts.last }
    return page(self:_paged("/v2/_catalog", q, "repositories", { "registry:catalog:*" }, "catalog " .. self.host,
      opts.n), opts)
  end)
end

--- Tags of a repository, as a list of strings: one page with `n` (after `last`), else
--- every page, requested `page_size` at a time.
---@param repo string
---@param opts? {n?:integer, last?:string, page_size?:integer}
---@return string[]
function Client:tags(repo, opts)
  if type(repo) ~= "string" then misuse("tags", "repository name expected") end
  opts = options("tags", opts, set { "n", "last", "page_size" })
  local r = self:ref(repo)
  return log.span("registry", "tags", r.repository, function()
    local n = opts.n or opts.page_size
    local q = { n = n and tostring(n) or nil, last = opts.last }
    return page(self:_paged(repo_path(r.repository, "tags", "list"), q, "tags", { pull_scope(r.repository) },
      "tags " .. r.repository, opts.n), opts)
  end)
end

-- ---------------------------------------------------------------------------------------
-- Manifests

---@class myrmex.registry.Manifest
---@field body string the exact bytes
---@field media_type string
---@field digest string sha256 of body
---@field size integer
---@field manifest table the decoded JSON

local function media_of(res, body)
  local ct = res.headers["content-type"]
  ct = ct and ct:match("^[^;%s]+")
  local ok, doc = pcall(json.decode, body)
  if ok and type(doc) == "table" and type(doc.mediaType) == "string" then return doc.mediaType, doc end
  return ct, ok and doc or nil
end

--- Fetch a manifest (or index) by tag or digest; its digest is computed from the bytes and
--- checked against Docker-Content-Digest and the reference's own digest.
---@param ref string|myrmex.registry.Reference
---@return myrmex.registry.Manifest
function Client:manifest(ref)
  local r = self:ref(ref)
  return log.span("registry", "manifest_get", tostring(r), function()
    local res = self:_call({ method = "GET", path = repo_path(r.repository, "manifests", r:reference()),
      headers = { Accept = ACCEPT }, max_body = M.max_manifest_size }, { pull_scope(r.repository) })
    check(res, "manifest " .. tostring(r), 200)
    local body = res.body or ""
    if #body > M.max_manifest_size then
      fail({ code = "Invalid", message = "manifest " .. tostring(r) .. " too large" })
    end
    local d = digest.string(body)
    local header = res.headers["docker-content-digest"]
    if header and header:match("^sha256:") and header ~= d then
      fail({ code = "DigestMismatch",
        message = ("manifest %s: body is %s, registry says %s"):format(tostring(r), d, header) })
    end
    if r.digest and r.digest:match("^sha256:") and r.digest ~= d then
      fail({ code = "DigestMismatch", message = ("manifest %s: body is %s"):format(tostring(r), d) })
    end
    local mt, doc = media_of(res, body)
    if type(doc) ~= "table" then fail({ code = "Invalid", message = "manifest " .. tostring(r) .. ": not JSON" }) end
    return { body = body, media_type = mt, digest = d, size = #body, manifest = doc }
  end)
end

--- HEAD a manifest: {digest=, media_type=, size=} or nil when absent.
---@param ref string|myrmex.registry.Reference
---@return {digest:string, media_type:string, size:integer}|nil
function Client:manifest_head(ref)
  local r = self:ref(ref)
  local res = self:_call({ method = "HEAD", path = repo_path(r.repository, "manifests", r:reference()),
    headers = { Accept = ACCEPT } }, { pull_scope(r.repository) })
  if res.status == 404 then return nil end
  check(res, "manifest " .. tostring(r), 200)
  local ct = res.headers["content-type"]
  return { digest = res.headers["docker-content-digest"], media_type = ct and ct:match("^[^;%s]+"),
    size = tonumber(res.headers["content-length"]) }
end

--- The digest of what a reference points at ("sha256:...").
---@param ref string|myrmex.registry.Reference
---@return string
function Client:digest(ref)
  local r = self:ref(ref)
  if r.digest then return r.digest end
  local h = self:manifest_head(r)
  if h and h.digest and h.digest:match("^sha256:%x+$") then return h.digest end
  if not h then fail({ code = "NotFound", status = 404, message = "manifest " .. tostring(r) .. ": not found" }) end
  return self:manifest(r).digest
end

--- Store a manifest under a tag or its digest. Returns the digest.
---@param ref string|myrmex.registry.Reference "repo:tag" or "repo@sha256:..."
---@param body string exact bytes
---@param media_type? string default: the body's mediaType field
---@return string digest
function Client:put_manifest(ref, body, media_type)
  if type(body) ~= "string" then misuse("put_manifest", "body must be the manifest bytes") end
  local r = self:ref(ref)
  local d = digest.string(body)
  if not media_type then
    local ok, doc = pcall(json.decode, body)
    media_type = ok and type(doc) == "table" and doc.mediaType or MEDIA.oci_manifest
  end
  if plan.active() then
    plan.record({ engine = "registry", op = "put_manifest", target = tostring(r), args = { digest = d } })
    return d
  end
  return log.span("registry", "manifest_put", tostring(r), function()
    -- A manifest PUT is idempotent: a registry restarting under us is simply asked again.
    local res = self:_retrying(function()
      return self:_call({ method = "PUT", path = repo_path(r.repository, "manifests", r:reference()),
        headers = { ["Content-Type"] = media_type }, body = body }, { push_scope(r.repository) })
    end)
    check(res, "put manifest " .. tostring(r), 201, 200)
    local got = res.headers["docker-content-digest"]
    if got and got ~= d then
      fail({ code = "DigestMismatch",
        message = ("put manifest %s: registry stored %s, sent %s"):format(tostring(r), got, d) })
    end
    return d
  end)
end

--- Delete a manifest by digest (a tag is resolved to its digest first).
---@param ref string|myrmex.registry.Reference
---@return string digest the deleted digest
function Client:delete(ref)
  local r = self:ref(ref)
  if plan.active() then
    return plan.record({ engine = "registry", op = "delete", target = tostring(r) })
  end
  return log.span("registry", "delete", tostring(r), function()
    local d = self:digest(r)
    local res = self:_call({ method = "DELETE", path = repo_path(r.repository, "manifests", d) },
      { "repository:" .. r.repository .. ":delete", push_scope(r.repository) })
    check(res, "delete " .. tostring(r), 202, 200)
    return d
  end)
end

--- Point another tag at the manifest `src` points at (same repository or another one
--- on this registry; blobs are mounted when the repository differs).
---@param src string|myrmex.registry.Reference
---@param dst string|myrmex.registry.Reference "repo:newtag" or a bare new tag
---@return string digest
function Client:tag(src, dst)
  local s = self:ref(src)
  if type(dst) == "string" and not dst:find("[:/@]") then dst = s:with({ tag = dst, digest = false }) end
  local d = self:ref(dst)
  if not d.tag then misuse("tag", "destination needs a tag") end
  local m = self:manifest(s)
  if d.repository ~= s.repository then
    require("myrmex.registry.image").copy_between(self, s, self, d, {})
    return m.digest
  end
  return self:put_manifest(d, m.body, m.media_type)
end

-- ---------------------------------------------------------------------------------------
-- Referrers (OCI distribution 1.1)

--- The tag under which the referrers tag schema keeps the index of what refers to `d`
--- ("sha256-<hex>"), used where a registry lacks the referrers API (distribution 2.8).
---@param d string digest
---@return string
function M.fallback_tag(d)
  return (d:gsub(":", "-"):sub(1, 128))
end

--- Whether the registry serves the referrers API for `repo`: a GET of it answers 200 (an
--- index, maybe empty) where it does, 404 where it does not.
---@param repo string
---@param d string digest
---@return boolean, table|nil the reply when it does
function Client:_referrers_api(repo, d, artifact_type)
  local res = self:_call({ method = "GET", path = repo_path(repo, "referrers", d),
    headers = { Accept = MEDIA.oci_index },
    query = artifact_type and { artifactType = artifact_type } or nil, max_body = M.max_manifest_size },
    { pull_scope(repo) })
  if res.status == 404 or res.status == 405 or res.status == 400 then return false end
  check(res, "referrers " .. repo .. "@" .. d, 200)
  local ok, doc = pcall(json.decode, res.body or "")
  if not ok or type(doc) ~= "table" then
    -- Something answered 200 that is not an index: not the referrers API.
    return false
  end
  return true, { doc = doc, filters = res.headers["oci-filters-applied"] or "" }
end

--- The descriptors of the manifests that refer to `ref` (their `subject` is its digest):
--- signatures, attestations, SBOMs, any artifact. Asked through the OCI 1.1 referrers API,
--- else read from the tag schema fallback (the index tagged `sha256-<hex>`). Each has
--- `mediaType`, `digest`, `size`, and `artifactType` and `annotations` when known.
---@param ref string|myrmex.registry.Reference
---@param opts? {artifact_type?:string} only referrers of this artifact type
---@return table[] descriptors, boolean fallback true when the tag schema was used
function Client:referrers(ref, opts)
  opts = options("referrers", opts, set { "artifact_type" })
  local r = self:ref(ref)
  return log.span("registry", "referrers", tostring(r), function()
    local d = r.digest or self:digest(r)
    local api, reply = self:_referrers_api(r.repository, d, opts.artifact_type)
    local list, filtered, fallback = {}, false, not api
    if api then
      list = type(reply.doc.manifests) == "table" and reply.doc.manifests or {}
      filtered = reply.filters:find("artifactType", 1, true) ~= nil
    else
      local ok, m = pcall(self.manifest, self, r:with({ tag = M.fallback_tag(d), digest = false }))
      if ok and type(m.manifest.manifests) == "table" then
        list = m.manifest.manifests
      elseif not ok and not errors.is(m, "NotFound") then
        error(m, 0)
      end
    end
    local out = {}
    for _, desc in ipairs(list) do
      if type(desc) == "table" and reference.is_digest(desc.digest)
          and (filtered or not opts.artifact_type or desc.artifactType == opts.artifact_type) then
        out[#out + 1] = desc
      end
    end
    return out, fallback
  end)
end

-- ---------------------------------------------------------------------------------------
-- Blobs

--- Size of a blob when the repository has it, else nil.
---@param repo string
---@param d string digest
---@return integer|nil
function Client:blob_exists(repo, d)
  local res = self:_call({ method = "HEAD", path = repo_path(repo, "blobs", d), follow = true },
    { pull_scope(repo) })
  if res.status == 404 then return nil end
  check(res, "blob " .. repo .. "@" .. d, 200)
  return tonumber(res.headers["content-length"]) or 0
end

--- Download a blob, sha256 checked while streaming: to a file (`to`, written atomically and
--- removed on a mismatch), to a consumer (`on_data`), or returned as a string (neither).
---@param repo string
---@param d string digest
---@param opts? {to?:string, on_data?:fun(chunk:string), max?:integer}
---@return string|integer body (no to/on_data) or the size
function Client:blob(repo, d, opts)
  opts = options("blob", opts, set { "to", "on_data", "max" })
  if not reference.is_digest(d) then misuse("blob", "digest expected, got " .. tostring(d)) end
  return log.span("registry", "blob_get", repo .. "@" .. d, function()
    -- The transport hashes; the comparison is made here so that the error can name both
    -- digests. A file is downloaded beside its final name and moved there once it matches.
    local part = opts.to and (opts.to .. ".dl")
    local alg = d:match("^(%w+):")
    local res = self:_call({ method = "GET", path = repo_path(repo, "blobs", d), follow = true,
      to_file = part, on_data = opts.on_data, hash = alg, timeout = self.timeout or 0,
      max_body = not (opts.to or opts.on_data) and opts.max or nil }, { pull_scope(repo) })
    if res.status ~= 200 and part then os.remove(part) end
    check(res, "blob " .. repo .. "@" .. d, 200)
    if res.digest ~= d then
      if part then os.remove(part) end
      fail({ code = "DigestMismatch", details = { expected = d, actual = res.digest },
        message = ("blob %s@%s: content is %s (%d bytes), expected %s"):format(repo, d, tostring(res.digest),
          res.size or 0, d) })
    end
    if part then
      local moved, err = os.rename(part, opts.to)
      if not moved then fail({ code = "Engine", message = "cannot rename " .. part .. ": " .. tostring(err) }) end
    end
    if opts.to or opts.on_data then return res.size end
    if opts.max and #(res.body or "") > opts.max then
      fail({ code = "Invalid", message = "blob " .. d .. " larger than " .. opts.max })
    end
    return res.body
  end)
end

--- Open a blob as a stream (for a request body elsewhere: registry-to-registry copy). With
--- `opts.source`, the stream comes from http.open_source: `s:source()` feeds a C reader
--- (image analysis reads a layer's tar straight from the registry).
---@param repo string
---@param d string digest
---@param opts? {source?:boolean}
---@return table stream (s.status, s.headers, s:read(), <close>)
function Client:blob_open(repo, d, opts)
  opts = options("blob_open", opts, set { "source", "_hash" })
  self:_resolve_scheme()
  local scopes = { pull_scope(repo) }
  if self.auth.kind == nil then self:ping() end
  local headers, basic = self.auth:headers(scopes)
  local open = opts.source and http.open_source or http.open
  local s = open({ method = "GET", url = self:_base() .. repo_path(repo, "blobs", d), headers = headers,
    basic_auth = basic, tls = self.tls, follow = true, engine = "registry", timeout = 0,
    -- _hash: hashed only, for a caller that compares and names both digests itself
    digest = not opts._hash and d or nil, hash = opts._hash and d:match("^(%w+):") or nil })
  if s.status ~= 200 then
    local status = s.status
    s:close()
    check({ status = status, headers = {}, body = "" }, "blob " .. repo .. "@" .. d, 200)
  end
  return s
end

--- Start an upload session; returns its absolute Location, or nil when `mount` succeeded.
function Client:_start_upload(repo, mount_digest, from)
  local q = {}
  local scopes = { push_scope(repo) }
  if mount_digest then
    q.mount, q.from = mount_digest, from
    scopes[#scopes + 1] = pull_scope(from)
  end
  local res = self:_call({ method = "POST", path = repo_path(repo, "blobs", "uploads/"), query = q,
    headers = { ["Content-Length"] = "0" }, body = "" }, scopes)
  if res.status == 201 and mount_digest then return nil end
  check(res, "start upload " .. repo, 202)
  local loc = res.headers["location"]
  if not loc then fail({ code = "Engine", message = "start upload " .. repo .. ": no Location" }) end
  return self:_absolute(loc)
end

local function with_digest(loc, d)
  return loc .. (loc:find("?", 1, true) and "&" or "?") .. "digest=" .. d
end

--- Mount a blob from another repository of this registry. True when mounted.
---@param repo string destination repository
---@param d string digest
---@param from string source repository
---@return boolean
function Client:mount(repo, d, from)
  if plan.active() then
    plan.record({ engine = "registry", op = "mount", target = repo .. "@" .. d, args = { from = from } })
    return true
  end
  local loc = self:_start_upload(repo, d, from)
  if loc then
    -- Not mountable (no access to `from`): drop the session the registry opened instead.
    pcall(self._call, self, { method = "DELETE", url = loc }, { push_scope(repo) })
    return false
  end
  return true
end

-- Upload status: the next offset the registry expects, or nil when the session is gone.
function Client:_upload_offset(loc, repo)
  local ok, res = pcall(self._call, self, { method = "GET", url = loc }, { push_scope(repo) })
  if not ok or res.status ~= 204 then return nil, ok and res.status or res end
  local hi = (res.headers["range"] or ""):match("%-(%d+)$")
  return hi and tonumber(hi) + 1 or 0, res.headers["location"]
end

--- Upload a blob in one request: `body` is a string, {file=PATH} or a source/stream.
--- Skips the upload when the repository has the blob already. Returns the digest.
---@param repo string
---@param d string the digest (verified by the registry)
---@param body string|table
---@param size? integer bytes in body (required for streams of unknown length)
---@return string digest, boolean uploaded
function Client:upload(repo, d, body, size)
  if not reference.is_digest(d) then misuse("upload", "digest expected, got " .. tostring(d)) end
  if plan.active() then
    plan.record({ engine = "registry", op = "upload", target = repo .. "@" .. d, args = { size = size } })
    return d, true
  end
  if self:blob_exists(repo, d) then return d, false end
  return log.span("registry", "blob_upload", repo .. "@" .. d, function()
    local loc = self:_start_upload(repo)
    local headers = { ["Content-Type"] = "application/octet-stream" }
    if size then headers["Content-Length"] = tostring(size) end
    local res = self:_call({ method = "PUT", url = with_digest(loc, d), headers = headers, body = body,
      timeout = self.timeout or 0 }, { push_scope(repo) })
    check(res, "upload " .. repo .. "@" .. d, 201)
    return d, true
  end)
end

--- Chunked upload from a reader: `read(n)` returns up to n bytes or nil at the end. Each
--- chunk is a PATCH with Content-Range; when a PATCH fails (connection dropped, registry
--- restarting) the session's offset is asked for and the upload resumes from there, as
--- long as that offset is inside the chunk still held. The digest is computed while
--- sending and given to the final PUT; `expect` is checked against it when given.
---@param repo string
---@param read fun(n:integer):string|nil
---@param expect? string the digest the data must have
---@return string digest
function Client:upload_chunked(repo, read, expect)
  if type(read) ~= "function" then misuse("upload_chunked", "read must be a function") end
  if plan.active() then
    plan.record({ engine = "registry", op = "upload", target = repo .. (expect and ("@" .. expect) or "") })
    return expect or "planned"
  end
  if expect and self:blob_exists(repo, expect) then
    -- The data is not needed; the caller's reader is simply left unread.
    return expect
  end
  return log.span("registry", "blob_upload_chunked", repo, function()
    local loc = self:_start_upload(repo)
    local h = digest.new("sha256")
    local offset = 0
    while true do
      local chunk = read(self.chunk_size)
      if chunk == nil or chunk == "" then break end
      h:update(chunk)
      loc = self:_patch(repo, loc, chunk, offset)
      offset = offset + #chunk
    end
    local d = h:final()
    if expect and d ~= expect then
      pcall(self._call, self, { method = "DELETE", url = loc }, { push_scope(repo) })
      fail({ code = "DigestMismatch", message = ("upload %s: data is %s, expected %s"):format(repo, d, expect) })
    end
    local res = self:_retrying(function()
      return self:_call({ method = "PUT", url = with_digest(loc, d), headers = { ["Content-Length"] = "0" },
        body = "" }, { push_scope(repo) })
    end)
    check(res, "upload " .. repo .. "@" .. d, 201)
    return d
  end)
end

-- Run fn, retrying Unreachable/Timeout failures with a backoff (a restarting registry).
function Client:_retrying(fn) -- luacheck: ignore self
  local wait = 0.25
  for attempt = 1, M.upload_retries do
    local res = table.pack(pcall(fn))
    if res[1] then return table.unpack(res, 2, res.n) end
    res = res[2]
    if attempt == M.upload_retries or not (errors.is(res, "Unreachable") or errors.is(res, "Timeout")) then
      error(res, 0)
    end
    log.warn("registry: request failed, retrying", { error = errors.message(res), attempt = attempt })
    http.sleep(wait)
    wait = math.min(wait * 2, 4)
  end
end

--- Upload a blob whose digest is not known in advance from a source (e.g. a tar entry): one
--- streamed PATCH hashed as it is sent, then the PUT with the digest. Not resumable (a
--- source cannot be read twice), flat memory, and the bytes never pass through Lua.
---@param repo string
---@param src userdata a source (myrmex.core.source)
---@param size? integer
---@param before_commit? fun(digest:string) called once the data is sent, before the PUT that
--- commits the blob; raising in it cancels the upload session instead
---@return string digest
function Client:upload_source(repo, src, size, before_commit)
  if plan.active() then
    plan.record({ engine = "registry", op = "upload", target = repo, args = { size = size } })
    return "planned"
  end
  return log.span("registry", "blob_upload_stream", repo, function()
    local loc = self:_start_upload(repo)
    local headers = { ["Content-Type"] = "application/octet-stream" }
    if size then headers["Content-Length"] = tostring(size) end
    local res = self:_call({ method = "PATCH", url = loc, body = src, body_size = size, headers = headers,
      hash_sent = "sha256", timeout = self.timeout or 0 }, { push_scope(repo) })
    check(res, "upload " .. repo, 202)
    loc = self:_absolute(res.headers["location"] or loc)
    if before_commit then
      local ok, err = pcall(before_commit, res.digest)
      if not ok then
        pcall(self._call, self, { method = "DELETE", url = loc }, { push_scope(repo) })
        error(err, 0)
      end
    end
    local put = self:_call({ method = "PUT", url = with_digest(loc, res.digest), headers = { ["Content-Length"] = "0" },
      body = "" }, { push_scope(repo) })
    check(put, "upload " .. repo .. "@" .. res.digest, 201)
    return res.digest
  end)
end

-- One PATCH of `chunk` starting at `offset`, resuming inside the chunk after a failure.
function Client:_patch(repo, loc, chunk, offset)
  local sent = 0
  local wait = 0.25
  for attempt = 1, M.upload_retries do
    local part = sent == 0 and chunk or chunk:sub(sent + 1)
    local first = offset + sent
    local ok, res = pcall(self._call, self, { method = "PATCH", url = loc, body = part, headers = {
      ["Content-Type"] = "application/octet-stream",
      ["Content-Range"] = ("%d-%d"):format(first, first + #part - 1) } }, { push_scope(repo) })
    if ok and res.status == 202 then
      return self:_absolute(res.headers["location"] or loc)
    end
    if ok and res.status ~= 202 and res.status < 500 then check(res, "upload chunk " .. repo, 202) end
    if attempt == M.upload_retries then
      if ok then check(res, "upload chunk " .. repo, 202) end
      error(res, 0)
    end
    log.warn("registry: chunk upload failed, resuming", { repo = repo, offset = first, attempt = attempt,
      error = ok and ("HTTP " .. res.status) or errors.message(res) })
    http.sleep(wait)
    wait = math.min(wait * 2, 4)
    local next_offset, new_loc = self:_upload_offset(loc, repo)
    if next_offset then
      if next_offset < offset or next_offset > offset + #chunk then
        fail({ code = "Conflict", message = ("upload %s: registry is at byte %d, outside the chunk held (%d-%d)")
          :format(repo, next_offset, offset, offset + #chunk) })
      end
      sent = next_offset - offset
      if new_loc then loc = self:_absolute(new_loc) end
      if sent == #chunk then return loc end
    end
  end
end

M.Client = Client

-- Image-level operations (push/pull/copy/inspect) extend the client.
require("myrmex.registry.image").install(M, Client)

--- Copy an image between registries (full references), streaming blobs with no temp files.
--- See docs/registry.md for opts.
---@param src string full reference "host/repo:tag"
---@param dst string full reference
---@param opts? table
---@return string digest of the copied manifest (or index)
function M.copy(src, dst, opts)
  return require("myrmex.registry.image").copy(M, src, dst, opts)
end

return M
