--- Image builds: BuildKit through the Engine API (POST /build?version=2) or the classic
--- builder. A method of the docker client; see docs/docker.md ("Builds").
---
--- BuildKit's progress comes as {"id":"moby.buildkit.trace","aux":"<base64>"} messages whose
--- aux is a protobuf StatusResponse: decoded in C (myrmex.core.buildkit), turned here into
--- structured events, one log line per step start and finish, and the progress display.
-- libarchive is opened on first use (dlopen): only builds and copies need it.
local function archive() return require("myrmex.core.archive") end
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

-- How many output lines of a step are kept for its error.
local KEEP_LINES = 20

local function keep(list, line)
  list[#list + 1] = line
  if #list > KEEP_LINES then table.remove(list, 1) end
end

local function build_label(o, tags)
  return "build " .. (tags[1] or o.context)
end

-- ---------------------------------------------------------------------------------------
-- The classic builder's output: JSON messages whose text arrives in "stream" pieces that need
-- not end at line ends. This keeps the current step for error messages and logs whole lines.
local function classic_reader(o, tags)
  local r = { step = nil, id = nil, tail = "", lines = {} }
  local function line(text)
    local n, total, step = text:match("^Step (%d+)/(%d+) : (.*)$")
    if step then
      r.step = step
      r.progress = r.progress or log.progress(build_label(o, tags), { total = tonumber(total), every = 10 })
      r.progress:update(tonumber(n) - 1)
    end
    local built = text:match("^Successfully built (%x+)$")
    if built and not r.id then r.id = built end
    keep(r.lines, text)
    log.info(text, { engine = "docker", op = "build" })
  end
  function r.message(msg)
    if o.on_progress then o.on_progress(msg) end
    if type(msg.stream) == "string" then
      local text = r.tail .. msg.stream
      local start = 1
      for l, nl in text:gmatch("([^\n]*)()\n") do
        line(l)
        start = nl + 1
      end
      r.tail = text:sub(start)
    end
    if type(msg.aux) == "table" and type(msg.aux.ID) == "string" then r.id = msg.aux.ID end
    if msg.errorDetail or msg.error then
      r.error = type(msg.errorDetail) == "table" and msg.errorDetail or { message = msg.error }
      return false
    end
  end
  function r.finish()
    if r.tail ~= "" then line(r.tail) end
    r.tail = ""
    if r.progress then
      if r.error then r.progress.total = nil end -- a failed build is not shown as complete
      r.progress:finish(r.error and "failed" or "done")
    end
  end
  function r.failure()
    return {
      code = "Engine", engine = "docker",
      message = ("build failed%s: %s"):format(r.step and (" at step '" .. r.step .. "'") or "",
        tostring(r.error.message)),
      details = { step = r.step, exit_code = r.error.code, output = r.lines },
    }
  end
  return r
end

-- ---------------------------------------------------------------------------------------
-- BuildKit's output. Vertexes are the steps of the build graph (a Dockerfile instruction, a
-- context load, the export); each is numbered in the order it first appears, as the docker
-- CLI's --progress=plain numbers them (#1, #2, ...).

-- "[stage-1 2/3] RUN make" -> "RUN make": the instruction, as the classic builder names steps.
local function instruction_of(name)
  return (name:gsub("^%[[^%]]*%]%s*", ""))
end

local function seconds(a, b)
  if not a or not b then return nil end
  return b - a
end

local function buildkit_reader(o, tags)
  local bk = require("myrmex.core.buildkit")
  local r = { id = nil, vertexes = {}, order = {}, completed = 0, lines = {} }
  local function emit(ev)
    if o.on_progress then o.on_progress(ev) end
  end
  local function progress()
    if not r.progress then
      r.progress = log.progress(build_label(o, tags), { total = 1, unit = "steps", every = 10 })
    end
    r.progress.total = #r.order
    return r.progress
  end
  local function vertex_of(digest, name)
    local v = r.vertexes[digest]
    if not v then
      v = { digest = digest, n = #r.order + 1, name = name or digest, out = {}, tail = "" }
      r.vertexes[digest] = v
      r.order[#r.order + 1] = v
    end
    return v
  end
  local function fields(v, extra)
    local f = { engine = "docker", op = "build", builder = "buildkit", step = v.n }
    for k, x in pairs(extra or {}) do f[k] = x end
    return f
  end

  local function on_vertex(u)
    local v = vertex_of(u.digest, u.name)
    if u.name then v.name = u.name end
    local was_started, was_done = v.started ~= nil or v.cached, v.completed ~= nil
    v.started = u.started or v.started
    v.cached = u.cached or v.cached
    if u.error then v.error = u.error end
    if (v.started or v.cached) and not was_started then
      log.info(("#%d %s"):format(v.n, v.name), fields(v, { vertex = v.name }))
    end
    if u.completed and not was_done then
      v.completed = u.completed
      r.completed = r.completed + 1
      local took = seconds(v.started, v.completed)
      if v.error then
        log.info(("#%d ERROR: %s"):format(v.n, v.error), fields(v, { vertex = v.name }))
      elseif v.cached then
        log.info(("#%d CACHED"):format(v.n), fields(v, { vertex = v.name, cached = true }))
      else
        log.info(("#%d DONE %.1fs"):format(v.n, took or 0),
          fields(v, { vertex = v.name, duration_ms = took and math.floor(took * 1000 + 0.5) }))
      end
    end
    progress():update(r.completed, v.completed and nil or v.name)
    emit { vertex = v.digest, step = v.n, name = v.name, started = v.started, completed = v.completed,
      cached = v.cached or false, error = v.error, inputs = u.inputs }
  end

  local function on_status(s)
    local v = vertex_of(s.vertex)
    emit { vertex = v.digest, step = v.n, name = s.id or v.name, current = s.current, total = s.total,
      started = s.started, completed = s.completed }
  end

  local function output_line(v, text)
    keep(v.out, text)
    keep(r.lines, text)
    log.debug(("#%d %s"):format(v.n, text), fields(v))
  end

  local function on_log(l)
    local v = vertex_of(l.vertex)
    local text = v.tail .. l.msg
    local start = 1
    for line, nl in text:gmatch("([^\n]*)()\n") do
      output_line(v, (line:gsub("\r$", "")))
      start = nl + 1
    end
    v.tail = text:sub(start)
    emit { vertex = v.digest, step = v.n, name = v.name, log = l.msg, stream = l.stream }
  end

  local function on_warning(w)
    local v = vertex_of(w.vertex)
    log.warn(("#%d %s"):format(v.n, w.short or "warning"), fields(v, { vertex = v.name, url = w.url }))
    emit { vertex = v.digest, step = v.n, name = v.name, warning = w.short, detail = w.detail }
  end

  function r.message(msg)
    if msg.id == "moby.buildkit.trace" and type(msg.aux) == "string" then
      local st, why = bk.decode_status(msg.aux)
      if not st then
        errors.raise({ code = "Invalid", engine = "docker",
          message = ("%s: a progress message from the engine could not be read: %s"):format(
            build_label(o, tags), why) }, 0)
      end
      for _, u in ipairs(st.vertexes) do on_vertex(u) end
      for _, s in ipairs(st.statuses) do on_status(s) end
      for _, l in ipairs(st.logs) do on_log(l) end
      for _, w in ipairs(st.warnings) do on_warning(w) end
    elseif msg.id == "moby.image.id" and type(msg.aux) == "table" and type(msg.aux.ID) == "string" then
      r.id = msg.aux.ID
    elseif type(msg.stream) == "string" then
      for line in msg.stream:gmatch("[^\n]+") do log.debug(line, { engine = "docker", op = "build" }) end
    end
    if msg.errorDetail or msg.error then
      r.error = type(msg.errorDetail) == "table" and msg.errorDetail or { message = msg.error }
      return false
    end
  end

  function r.finish()
    for _, v in ipairs(r.order) do
      if v.tail ~= "" then output_line(v, v.tail) end
      v.tail = ""
    end
    if r.progress then
      if r.error then r.progress.total = nil end
      r.progress:finish(r.error and "failed" or "done")
    end
  end

  -- The step that failed: the first vertex with an error of its own (when one branch of a
  -- parallel build fails, BuildKit cancels the others and they report "context canceled").
  function r.failed_vertex()
    local fallback
    for _, v in ipairs(r.order) do
      if v.error then
        if not v.error:find("context canceled", 1, true) then return v end
        fallback = fallback or v
      end
    end
    return fallback
  end

  function r.failure()
    local v = r.failed_vertex()
    local msg = tostring(r.error.message or (v and v.error) or "build failed")
    local code = tonumber(msg:match("exit code: (%d+)") or (v and v.error and v.error:match("exit code: (%d+)")))
    local out = v and v.out or r.lines
    local last = {}
    for i = math.max(1, #out - 2), #out do last[#last + 1] = out[i] end
    return {
      code = "Engine", engine = "docker",
      message = ("build failed%s: %s%s"):format(v and (" at step '" .. v.name .. "'") or "", msg,
        #last > 0 and ("; last output: " .. table.concat(last, " | ")) or ""),
      details = { step = v and instruction_of(v.name), vertex = v and v.name, exit_code = code,
        output = out },
    }
  end
  return r
end

-- ---------------------------------------------------------------------------------------

---@class myrmex.docker.BuildOptions
---@field context string the context directory
---@field dockerfile? string path relative to context, or anywhere
---@field tags? string[]|string
---@field builder? "buildkit"|"classic" default: BuildKit unless the engine's /_ping says Builder-Version 1
---@field buildargs? table<string,string>
---@field labels? table<string,string>
---@field target? string
---@field nocache? boolean
---@field pull? boolean default false: nothing is pulled unless asked
---@field platform? string
---@field network? string network mode for RUN steps ("default", "none", "host"; classic: any)
---@field extra_hosts? string[]
---@field cache_from? string[]
---@field shm_size? integer bytes of /dev/shm for RUN steps (classic builder)
---@field ulimits? table<string,{soft:integer, hard:integer}> (classic builder)
---@field rm? boolean remove intermediate containers (classic builder, default true)
---@field secrets? table<string, {file?:string, env?:string}> build secrets for RUN --mount=type=secret (BuildKit)
---@field ssh? table<string,string> SSH agents for RUN --mount=type=ssh: {default = SOCKET_PATH} (BuildKit)
---@field sync_context? boolean BuildKit: send the context through the session's file sync (default true), else as a tar
---@field timeout? number seconds
---@field on_progress? fun(ev:table) BuildKit: one structured event per update; classic: each JSON message

local BUILD_OPTS = {
  context = true, dockerfile = true, tags = true, buildargs = true, labels = true,
  target = true, nocache = true, pull = true, platform = true, on_progress = true,
  network = true, timeout = true, rm = true, extra_hosts = true, cache_from = true,
  builder = true, shm_size = true, ulimits = true, no_cache_filter = true, secrets = true,
  sync_context = true, ssh = true,
}

-- Network modes BuildKit in dockerd accepts for RUN steps.
local BUILDKIT_NETWORKS = { default = true, none = true, host = true }

local function version_number(v)
  local major, minor = tostring(v):match("^(%d+)%.(%d+)")
  return major and (tonumber(major) * 1000 + tonumber(minor)) or 0
end

-- The directories the session offers ("context", and "dockerfile": the Dockerfile's own
-- directory) and the Dockerfile's name in it. The Dockerfile never joins the context.
local function sync_dirs(o)
  local rt = require("myrmex.core.runtime")
  local st = rt.stat(o.context)
  if not st or st.type ~= "directory" then
    errors.raise({ code = "NotFound", engine = "docker",
      message = ("build context %s: %s"):format(o.context, st and "not a directory" or "no such directory") }, 0)
  end
  local context = rt.realpath and rt.realpath(o.context) or o.context
  local df = o.dockerfile or "Dockerfile"
  if df:sub(1, 1) ~= "/" then df = context .. "/" .. df end
  local dir, name = df:match("^(.*)/([^/]+)$")
  return { context = context, dockerfile = dir ~= "" and dir or "/" }, name
end

return function(Client, H)
  --- Which builder a build uses, and why: "buildkit" or "classic", and a reason for the log.
  ---@param o myrmex.docker.BuildOptions
  ---@return string builder, string reason
  local function choose_builder(self, o)
    if o.builder ~= nil and o.builder ~= "buildkit" and o.builder ~= "classic" then
      H.misuse("build_image", "builder: \"buildkit\" or \"classic\" expected, got " .. tostring(o.builder))
    end
    local api = version_number(self.api_version)
    if o.builder == "buildkit" then
      if api < version_number("1.39") then
        H.misuse("build_image", ("builder: BuildKit needs engine API 1.39, this engine speaks %s")
          :format(self.api_version))
      end
      return "buildkit", "asked for"
    elseif o.builder == "classic" then
      return "classic", "asked for"
    end
    -- Docker 23 and later announce their default builder in /_ping; 20.10 says nothing unless
    -- configured, and builds with BuildKit when asked. The docker CLI (23+) takes a missing
    -- header as BuildKit on Linux; so does myrmex.
    local announced = self.builder_version
    if announced == "1" then return "classic", "the engine's default (Builder-Version: 1)" end
    if api < version_number("1.39") then return "classic", "engine API older than 1.39" end
    if announced == "2" then return "buildkit", "the engine's default (Builder-Version: 2)" end
    return "buildkit", "the engine supports it (no Builder-Version announced)"
  end

  -- Options BuildKit in this engine would silently ignore or refuse: misuse, named.
  local function check_buildkit_options(self, o)
    if o.rm ~= nil then H.misuse("build_image", "rm: only the classic builder keeps intermediate containers") end
    if o.network ~= nil and not BUILDKIT_NETWORKS[o.network] then
      H.misuse("build_image", ("network: BuildKit runs steps with \"default\", \"none\" or \"host\", not %q")
        :format(tostring(o.network)))
    end
    -- dockerd gained shm-size and ulimits for BuildKit in API 1.42 (Docker 23); 20.10 accepts
    -- the parameters and drops them.
    if version_number(self.api_version) < version_number("1.42") then
      for _, k in ipairs { "shm_size", "ulimits" } do
        if o[k] ~= nil then
          H.misuse("build_image", ("%s: BuildKit on engine API %s ignores it; use builder = \"classic\"")
            :format(k, self.api_version))
        end
      end
    end
    if o.no_cache_filter ~= nil then
      H.misuse("build_image", "no_cache_filter: the Engine's /build endpoint has no such parameter; "
        .. "use nocache = true")
    end
  end

  local function check_classic_options(o)
    for _, k in ipairs { "no_cache_filter", "secrets", "ssh" } do
      if o[k] ~= nil then H.misuse("build_image", k .. ": needs builder = \"buildkit\"") end
    end
  end

  local function ulimits_param(u)
    if u == nil then return nil end
    if type(u) ~= "table" then H.misuse("build_image", "ulimits: table {nofile = {soft=, hard=}} expected") end
    local names = {}
    for k in pairs(u) do names[#names + 1] = k end
    table.sort(names)
    local out = json.array {}
    for _, k in ipairs(names) do
      local l = u[k]
      if type(l) ~= "table" or math.type(l.soft) ~= "integer" or math.type(l.hard) ~= "integer" then
        H.misuse("build_image", ("ulimits.%s: {soft = integer, hard = integer} expected"):format(tostring(k)))
      end
      out[#out + 1] = { Name = k, Soft = l.soft, Hard = l.hard }
    end
    return out
  end

  -- A BuildKit session serving the build's secrets and context (docker/session.lua).
  function Client:_build_session(o, dirs)
    local session = require("myrmex.docker.session")
    local shared
    if dirs then
      -- The engine's copy of a context is found again by this key: one per context directory.
      shared = require("myrmex.digest").string("myrmex build context " .. dirs.context):gsub("^sha256:", "")
    end
    return session.open(self, { secrets = o.secrets and session.read_secrets(o.secrets, "build_image"),
      ssh = o.ssh, dirs = dirs, shared_key = shared })
  end

  --- Build an image from a context directory, with BuildKit (POST /build?version=2) or the
  --- classic builder. The context is streamed as a tar built with libarchive, honouring
  --- .dockerignore; progress goes to the log (one line per step start and finish), the
  --- progress display and on_progress. A failing step raises Engine naming the step, its exit
  --- code and its last output lines.
  ---@param o myrmex.docker.BuildOptions
  ---@return {id:string, tags:string[], builder:string, sent?:{files:integer, bytes:integer}}
  function Client:build_image(o)
    o = H.options("build_image", o, BUILD_OPTS)
    if type(o.context) ~= "string" then H.misuse("build_image", "context must be a directory path") end
    local tags = o.tags or {}
    if type(tags) == "string" then tags = { tags } end
    if o.shm_size ~= nil and math.type(o.shm_size) ~= "integer" then
      H.misuse("build_image", "shm_size: integer bytes expected")
    end
    if o.ssh ~= nil then
      if type(o.ssh) ~= "table" then H.misuse("build_image", "ssh: table {default = SOCKET_PATH} expected") end
      for id, path in pairs(o.ssh) do
        if type(id) ~= "string" or type(path) ~= "string" then
          H.misuse("build_image", ("ssh.%s: a socket path (string) expected"):format(tostring(id)))
        end
      end
    end
    local builder, why = choose_builder(self, o)
    if builder == "buildkit" then check_buildkit_options(self, o) else check_classic_options(o) end
    return self:_mutate("build_image", tags[1] or o.context,
      { context = o.context, tags = tags, target = o.target, builder = builder }, function()
        log.info(("%s: %s builder (%s)"):format(build_label(o, tags), builder == "buildkit" and "BuildKit"
          or "classic", why), { engine = "docker", op = "build", builder = builder })
        -- With BuildKit the context goes through the session's file sync: the engine asks for
        -- what it needs and keeps a copy between builds. Otherwise it is streamed as a tar.
        local sync = builder == "buildkit" and o.sync_context ~= false
        local src, dockerfile, dirs
        if sync then
          dirs, dockerfile = sync_dirs(o)
        else
          src, dockerfile = archive().pack { dir = o.context,
            exclude = self:read_dockerignore(o.context), dockerfile = o.dockerfile,
            buildkit = builder == "buildkit" }
        end
        local r = builder == "buildkit" and buildkit_reader(o, tags) or classic_reader(o, tags)
        local query = {
          t = H.multi(tags), dockerfile = dockerfile, buildargs = o.buildargs,
          labels = o.labels, target = o.target, nocache = o.nocache or nil,
          pull = o.pull or nil, platform = o.platform, networkmode = o.network,
          extrahosts = o.extra_hosts and table.concat(o.extra_hosts, ",") or nil,
          cachefrom = o.cache_from and json.array(o.cache_from) or nil,
          shmsize = o.shm_size, ulimits = ulimits_param(o.ulimits),
        }
        if builder == "buildkit" then
          query.version = "2"
        else
          query.rm, query.forcerm = o.rm ~= false, o.rm ~= false
        end
        -- The context (file sync), secrets and SSH agents need BuildKit's session: the engine
        -- asks myrmex for them while the build runs, over a second connection served beside it.
        local sess <close> = (o.secrets or o.ssh or sync) and self:_build_session(o, dirs) or nil
        if sess then query.session = sess.id end
        if sync then query.remote = "client-session" end
        local function run()
          local ok, err = pcall(self._stream_json, self, "build_image", tags[1] or o.context, {
            method = "POST", path = "/build", body = src, timeout = o.timeout or false,
            headers = { ["Content-Type"] = "application/x-tar" }, query = query,
          }, r.message)
          if sess then sess:stop() end
          return { ok, err }
        end
        local outcome
        if sess then
          outcome = require("myrmex.parallel").run({ build = run, session = function() sess:serve() end }).build
        else
          outcome = run()
        end
        local ok, err = outcome[1], outcome[2]
        r.finish()
        if not ok then error(err, 0) end
        if r.error then errors.raise(r.failure(), 0) end
        if not r.id then
          errors.raise({ code = "Engine", engine = "docker", message = "build ended without an image id",
            details = { output = r.lines } }, 0)
        end
        if not r.id:find(":", 1, true) then r.id = "sha256:" .. r.id end
        local sent
        if sync and sess then sent = { files = sess.sent_files, bytes = sess.sent_bytes } end
        return { id = r.id, tags = tags, builder = builder, sent = sent }
      end, { tags = tags, builder = builder })
  end
end
