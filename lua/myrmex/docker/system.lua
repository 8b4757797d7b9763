--- The engine's own registry traffic and housekeeping: pull and push through the engine
--- (/images/create, /images/{name}/push), /distribution/{name}/json, system df and the
--- build-cache prune. Methods of the docker client; see docs/docker.md ("Engine pulls and
--- pushes", "Disk usage and pruning").
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- URL-safe base64, as the engine decodes X-Registry-Auth (a few hundred bytes of JSON: not
-- worth a C binding).
local function base64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local function ch(shift)
      local v = (n >> shift) & 63
      return B64:sub(v + 1, v + 1)
    end
    out[#out + 1] = ch(18) .. ch(12) .. (b and ch(6) or "=") .. (c and ch(0) or "=")
  end
  return table.concat(out)
end

-- The registry host of a reference, as the engine would resolve it ("docker.io" for Hub).
local function registry_of(ref)
  return require("myrmex.registry.reference").parse(ref).registry
end

-- The X-Registry-Auth value for `ref`: `auth` when given ({username=, password=} or
-- {identity_token=}; false for anonymous), else myrmex's credential lookup (Docker's
-- config.json, credential helpers). The engine wants the header even when anonymous.
local function registry_auth(fname, ref, auth)
  if auth ~= nil and auth ~= false and type(auth) ~= "table" then
    error(("docker.%s: auth: expected a table or false, got %s"):format(fname, type(auth)), 3)
  end
  local host = registry_of(ref)
  if auth == nil then auth = require("myrmex.registry.credentials").lookup(host) end
  local doc = json.object()
  if auth then
    for k in pairs(auth) do
      if k ~= "username" and k ~= "password" and k ~= "identity_token" then
        error(("docker.%s: auth.%s: unknown key"):format(fname, tostring(k)), 3)
      end
    end
    if auth.identity_token then
      doc.identitytoken = auth.identity_token
    else
      doc.username, doc.password = auth.username, auth.password
    end
    doc.serveraddress = host
    log.secret(auth.password)
    log.secret(auth.identity_token)
  end
  return base64url(json.encode(doc, { sort_keys = true }))
end

-- The error object for an {"error": ...} message in a pull or push stream: the engine says
-- 200 first and fails later, so the code comes from the words.
local function stream_error(what, msg)
  local text = tostring(type(msg.errorDetail) == "table" and msg.errorDetail.message or msg.error)
  local low = text:lower()
  local code = "Engine"
  if low:find("not found", 1, true) or low:find("manifest unknown", 1, true)
    or low:find("does not exist", 1, true) then
    code = "NotFound"
  elseif low:find("unauthorized", 1, true) or low:find("authentication required", 1, true)
    or low:find("denied", 1, true) then
    code = "Unauthorized"
  elseif low:find("connection refused", 1, true) or low:find("no such host", 1, true)
    or low:find("i/o timeout", 1, true) then
    code = "Unreachable"
  end
  return errors.new { code = code, engine = "docker", message = what .. ": " .. text }
end

local function list_or_empty(v)
  if type(v) == "table" and not json.isnull(v) then return v end
  return {}
end

return function(Client, H)
  local function check_ref(fname, ref)
    if type(ref) ~= "string" or ref == "" then
      H.misuse(fname, "image reference expected, got " .. type(ref))
    end
    local ok, err = pcall(registry_of, ref)
    if not ok then H.misuse(fname, tostring(err):gsub("^[^:]*: ", "")) end
  end

  -- Run a pull or push stream: each message to on_progress, status lines to the debug log,
  -- an error message raised. Returns the messages' aux payloads and the last Digest status.
  local function progress_stream(self, op, ref, t, on_progress)
    local aux, digest, failure = {}, nil, nil
    self:_stream_json(op, ref, t, function(msg)
      if on_progress then on_progress(msg) end
      if msg.error or msg.errorDetail then
        failure = msg
        return false
      end
      if type(msg.aux) == "table" then aux[#aux + 1] = msg.aux end
      if type(msg.status) == "string" then
        digest = msg.status:match("^Digest: (sha256:%x+)") or msg.status:match("digest: (sha256:%x+)") or digest
        log.debug(msg.status, { engine = "docker", op = op, id = msg.id })
      end
    end)
    if failure then error(stream_error(op .. " " .. ref, failure), 0) end
    return aux, digest
  end

  local PULL_OPTS = H.set { "platform", "auth", "on_progress", "timeout" }

  --- Pull an image through the engine (docker pull): the engine fetches it from its registry
  --- with the credentials myrmex finds for that registry (or `auth`). `on_progress(msg)`
  --- gets each progress message. Returns {id=, digest=, ref=}.
  ---@param ref string "registry/repo:tag" or "...@sha256:..."
  ---@param o? {platform?:string, auth?:table|false, on_progress?:fun(msg:table), timeout?:number}
  ---@return {id:string, digest:string|nil, ref:string}
  function Client:pull_image_engine(ref, o)
    check_ref("pull_image_engine", ref)
    o = H.options("pull_image_engine", o, PULL_OPTS)
    local header = registry_auth("pull_image_engine", ref, o.auth)
    local name, digest = ref:match("^([^@]+)@(.+)$")
    local repo, tag
    if name then repo, tag = name, digest else repo, tag = H.split_ref(ref) end
    return self:_mutate("pull_image_engine", ref, { platform = o.platform }, function()
      local _, got = progress_stream(self, "pull_image_engine", ref, { method = "POST", path = "/images/create",
        query = { fromImage = repo, tag = tag or "latest", platform = o.platform },
        headers = { ["X-Registry-Auth"] = header }, timeout = o.timeout or false }, o.on_progress)
      local info = self:inspect_image(name and ref or (repo .. ":" .. (tag or "latest")))
      return { id = info.Id, digest = got, ref = ref }
    end, { ref = ref })
  end

  --- Push an image the engine has to its registry (docker push), with the credentials myrmex
  --- finds for that registry (or `auth`). Returns {digest=, size=, tag=} from the engine.
  ---@param ref string "registry/repo:tag"
  ---@param o? {auth?:table|false, on_progress?:fun(msg:table), timeout?:number}
  ---@return {digest:string|nil, size:integer|nil, tag:string|nil}
  function Client:push_image_engine(ref, o)
    check_ref("push_image_engine", ref)
    o = H.options("push_image_engine", o, H.set { "auth", "on_progress", "timeout" })
    local header = registry_auth("push_image_engine", ref, o.auth)
    local repo, tag = H.split_ref(ref)
    return self:_mutate("push_image_engine", ref, nil, function()
      local aux, digest = progress_stream(self, "push_image_engine", ref, { method = "POST",
        path = "/images/" .. H.path(repo) .. "/push", query = { tag = tag },
        headers = { ["X-Registry-Auth"] = header }, timeout = o.timeout or false }, o.on_progress)
      local last = aux[#aux] or {}
      return { digest = last.Digest or digest, size = last.Size, tag = last.Tag or tag }
    end, { ref = ref })
  end

  --- What the registry holds for a reference, asked through the engine (GET
  --- /distribution/{name}/json): {media_type=, digest=, size=, platforms={{os=, architecture=,
  --- variant=}...}, raw=}.
  ---@param ref string
  ---@param o? {auth?:table|false}
  ---@return table
  function Client:inspect_distribution(ref, o)
    check_ref("inspect_distribution", ref)
    o = H.options("inspect_distribution", o, H.set { "auth" })
    local r = self:_call("inspect_distribution", ref, { path = "/distribution/" .. H.path(ref) .. "/json",
      headers = { ["X-Registry-Auth"] = registry_auth("inspect_distribution", ref, o.auth) } })
    local d = r.Descriptor or {}
    local platforms = {}
    for i, p in ipairs(list_or_empty(r.Platforms)) do
      platforms[i] = { os = p.os, architecture = p.architecture, variant = p.variant }
    end
    return { media_type = d.mediaType, digest = d.digest, size = d.size, platforms = platforms, raw = r }
  end

  --- Disk usage (docker system df): the engine's lists of images, containers, volumes and
  --- build-cache records, layers_size, and per kind a summary {total=, active=, size=,
  --- reclaimable=} as the CLI prints it.
  ---@return {images:table[], containers:table[], volumes:table[], build_cache:table[],
  ---  layers_size:integer, summary:table}
  function Client:system_df()
    local r = self:_call("system_df", nil, { path = "/system/df", timeout = false })
    local out = { images = list_or_empty(r.Images), containers = list_or_empty(r.Containers),
      volumes = list_or_empty(r.Volumes), build_cache = list_or_empty(r.BuildCache),
      layers_size = r.LayersSize or 0 }
    local function summary(list, active_of, size_of)
      local s = { total = #list, active = 0, size = 0, reclaimable = 0 }
      for _, e in ipairs(list) do
        local size = size_of(e)
        s.size = s.size + size
        if active_of(e) then s.active = s.active + 1 else s.reclaimable = s.reclaimable + size end
      end
      return s
    end
    out.summary = {
      images = summary(out.images, function(e) return (e.Containers or 0) > 0 end,
        function(e) return e.Size or 0 end),
      containers = summary(out.containers, function(e) return e.State == "running" end,
        function(e) return e.SizeRw or 0 end),
      volumes = summary(out.volumes, function(e) return ((e.UsageData or {}).RefCount or 0) > 0 end,
        function(e) return math.max((e.UsageData or {}).Size or 0, 0) end),
      build_cache = summary(out.build_cache, function(e) return e.InUse end,
        function(e) return e.Size or 0 end),
    }
    return out
  end

  --- Remove build cache (docker builder prune): unused records by default, all = true for
  --- every one, `filters` ({id = ..., ["until"] = "24h", type = "regular"}), `keep_storage`
  --- bytes to keep. Returns {deleted = record ids, space_reclaimed = bytes}.
  ---@param o? {all?:boolean, filters?:table, keep_storage?:integer|string}
  ---@return {deleted:string[], space_reclaimed:integer}
  function Client:prune_build_cache(o)
    o = H.options("prune_build_cache", o, H.set { "all", "filters", "keep_storage" })
    if o.all ~= nil and type(o.all) ~= "boolean" then
      H.misuse("prune_build_cache", "all: expected boolean, got " .. type(o.all))
    end
    local keep
    if o.keep_storage ~= nil then
      keep = require("myrmex.docker.config").bytes(o.keep_storage)
      if not keep then
        H.misuse("prune_build_cache", "keep_storage: expected bytes, got " .. tostring(o.keep_storage))
      end
    end
    return self:_mutate("prune_build_cache", nil, o, function()
      local r = self:_call("prune_build_cache", nil, { method = "POST", path = "/build/prune", timeout = false,
        query = { all = o.all or nil, filters = H.filters(o.filters), ["keep-storage"] = keep } })
      return { deleted = list_or_empty(r.CachesDeleted), space_reclaimed = r.SpaceReclaimed or 0 }
    end, { deleted = {}, space_reclaimed = 0 })
  end
end
