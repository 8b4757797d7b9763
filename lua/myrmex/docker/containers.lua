--- Containers: create/run from a checked config, lifecycle calls, logs, exec, stats, copy,
--- handles that clean up with <close>, and batch operations through myrmex.parallel.
--- Methods of the docker client; see docs/docker.md ("Containers").
-- libarchive is opened on first use (dlopen): only builds and copies need it, not every
-- recipe that lists or runs containers.
local function archive() return require("myrmex.core.archive") end
local rt = require("myrmex.core.runtime")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local config = require("myrmex.docker.config")
local stream = require("myrmex.docker.stream")

---@class myrmex.docker.Container
---@field id string
---@field name string|nil
---@field planned boolean|nil true for a container that plan mode only recorded
---@field exit_code integer|nil set by run_container{wait=true}
---@field stdout string|nil set by run_container{wait=true}
---@field stderr string|nil set by run_container{wait=true}
---@field keep boolean|nil set to true to keep the container when the handle is closed
---@field removed boolean|nil true once the container was removed through this handle
local Container = {}
Container.__name = "myrmex.docker.Container"
-- Handles are userdata (runtime.handle) whose fields live in a table: reads look there first,
-- then at the methods. No __gc, by decision: a container outlives a handle that was only
-- dropped (a collection at an unpredictable time must not remove it), only <close> (or
-- :remove) removes it. A handle owns no transfer: log, exec and stats streams are transport
-- handles scoped to the call, and those have a __gc that aborts their transfer.
local fields = rt.fields
function Container:__index(k)
  local v = fields(self)[k]
  if v == nil then return Container[k] end
  return v
end
function Container:__newindex(k, v) fields(self)[k] = v end
function Container:__pairs() return next, fields(self), nil end

-- docker.container(0123456789ab name), the name left out when there is none.
function Container:__tostring()
  local f = fields(self)
  local id = tostring(f.id):sub(1, 12)
  return ("docker.container(%s%s)"):format(id, f.name and (" " .. f.name) or "")
end

-- <close>: remove the container (force, with its anonymous volumes) whether the scope ended
-- normally or by an error; a failure here is logged, never raised over the original error.
function Container:__close()
  if self.planned or self.removed or self.keep then return end
  local ok, err = pcall(self.client.remove_container, self.client, self, { force = true, volumes = true })
  if not ok and not errors.is(err, "NotFound") then
    log.warn("docker: could not remove container on close", { id = self.id, error = errors.message(err) })
  end
end

local function handle(client, id, name, extra)
  local f = { client = client, id = id, name = name }
  for k, v in pairs(extra or {}) do f[k] = v end
  return rt.handle(Container, f)
end

-- A container handle, or a table with an id (what inspect and list return).
local function is_ref(v)
  return type(v) == "table" or (type(v) == "userdata" and getmetatable(v) == Container)
end

-- A removed handle is a closed one: using it again is a recipe bug, said plainly rather than
-- as the engine's 404 (remove and <close> accept it: closing twice is harmless).
local function ref_id(fname, ref, closed_ok)
  if type(ref) == "userdata" and is_ref(ref) and ref.removed and not closed_ok then
    error(("docker.%s: %s was removed; the handle is closed"):format(fname, tostring(ref)), 3)
  end
  if is_ref(ref) and ref.id then return ref.id end
  if type(ref) == "string" and ref ~= "" then return ref end
  error(("docker.%s: container id, name or handle expected, got %s"):format(fname, type(ref)), 3)
end

local function cpath(ref, tail) return "/containers/" .. ref .. (tail or "") end

-- Collect or forward demultiplexed output.
local function output_sink(o)
  local out = { stdout = {}, stderr = {} }
  local cb = { stdout = o.on_stdout, stderr = o.on_stderr }
  local sink = function(kind, data)
    if cb[kind] then cb[kind](data) else table.insert(out[kind], data) end
  end
  local function result()
    return table.concat(out.stdout), table.concat(out.stderr)
  end
  return sink, result
end

local function derive_stats(s)
  local cpu, pre = s.cpu_stats or {}, s.precpu_stats or {}
  local cu, pu = cpu.cpu_usage or {}, pre.cpu_usage or {}
  local cpu_delta = (cu.total_usage or 0) - (pu.total_usage or 0)
  local sys_delta = (cpu.system_cpu_usage or 0) - (pre.system_cpu_usage or 0)
  local ncpu = cpu.online_cpus or (type(cu.percpu_usage) == "table" and #cu.percpu_usage) or 1
  local mem = s.memory_stats or {}
  local ms = type(mem.stats) == "table" and mem.stats or {}
  local cache = ms.total_inactive_file or ms.inactive_file or 0
  local used = math.max((mem.usage or 0) - cache, 0)
  local limit = mem.limit or 0
  local rx, tx = 0, 0
  for _, n in pairs(type(s.networks) == "table" and s.networks or {}) do
    rx, tx = rx + (n.rx_bytes or 0), tx + (n.tx_bytes or 0)
  end
  local rd, wr = 0, 0
  local io = s.blkio_stats and s.blkio_stats.io_service_bytes_recursive
  for _, e in ipairs(type(io) == "table" and io or {}) do
    local op = tostring(e.op):lower()
    if op == "read" then rd = rd + (e.value or 0) elseif op == "write" then wr = wr + (e.value or 0) end
  end
  return {
    read = s.read,
    cpu_percent = (sys_delta > 0 and cpu_delta > 0) and (cpu_delta / sys_delta * ncpu * 100) or 0.0,
    online_cpus = ncpu,
    memory = { used = used, limit = limit, percent = limit > 0 and used / limit * 100 or 0.0 },
    network = { rx_bytes = rx, tx_bytes = tx },
    block = { read_bytes = rd, write_bytes = wr },
    pids = s.pids_stats and s.pids_stats.current or nil,
    raw = s,
  }
end

-- Run fns concurrently (at most `max` at a time) through myrmex.parallel; every function
-- runs to the end, then the first error (if any) is raised. Returns the results in order.
local function run_all(fns, max)
  local results, errs = {}, {}
  local wrapped = {}
  for i, fn in ipairs(fns) do
    wrapped[i] = function()
      local ok, v = pcall(fn)
      if ok then results[i] = v else errs[#errs + 1] = v end
    end
  end
  local ok, parallel = pcall(require, "myrmex.parallel")
  if ok and type(parallel) == "table" and parallel.run then parallel = parallel.run end
  if ok and (type(parallel) == "function" or getmetatable(parallel)) then
    parallel(wrapped, { max = max or 8 })
  else
    for _, fn in ipairs(wrapped) do fn() end
  end
  return results, errs[1]
end

---@class myrmex.docker.LogsOptions
---@field follow? boolean stream until the container stops
---@field since? number|string Unix time or Docker time string
---@field until? number|string
---@field tail? integer|string number of last lines, or "all"
---@field timestamps? boolean prefix lines with RFC 3339 times
---@field stdout? boolean default true
---@field stderr? boolean default true
---@field on_stdout? fun(chunk:string) stream instead of collecting
---@field on_stderr? fun(chunk:string)
---@field tty? boolean override the TTY detection

---@class myrmex.docker.ExecOptions
---@field cmd string[]|string
---@field env? table<string,string>|string[]
---@field workdir? string
---@field user? string
---@field privileged? boolean
---@field tty? boolean
---@field on_stdout? fun(chunk:string)
---@field on_stderr? fun(chunk:string)

local LOGS_OPTS = { follow = true, since = true, ["until"] = true, tail = true, timestamps = true,
  stdout = true, stderr = true, on_stdout = true, on_stderr = true, tty = true }
local EXEC_OPTS = { cmd = true, env = true, workdir = true, user = true, privileged = true,
  tty = true, on_stdout = true, on_stderr = true, stdin = true }
local ATTACH_OPTS = { stdin = true, stdout = true, stderr = true, logs = true, stream = true, tty = true }

-- Output queued by an attach handle while its writer waits for the engine to read, at most:
-- past it the writer waits without taking more (a reader that never reads bounds the memory).
local ATTACH_QUEUE_CAP = 8 << 20

-- Write stdin (a string, a function(write) or {file = PATH}, see config.check_stdin) into an
-- upgraded stream, then end our direction so the process reads end-of-file. `drain` runs
-- whenever the engine is not reading, to take the output meanwhile: a process that writes
-- before it reads more (cat) would otherwise stall with us.
local function feed_stdin(s, stdin, drain)
  local function write(data)
    if type(data) ~= "string" then
      error("docker: stdin write(data): string expected, got " .. type(data), 2)
    end
    s:send(data, drain)
  end
  if type(stdin) == "string" then
    write(stdin)
  elseif type(stdin) == "function" then
    stdin(write)
  else
    local f, msg = io.open(stdin.file, "rb")
    if not f then errors.raise({ code = "NotFound", engine = "docker", message = "stdin: " .. msg }, 0) end
    local ok, err = pcall(function()
      for chunk in function() return f:read(1 << 16) end do write(chunk) end
    end)
    f:close()
    if not ok then error(err, 0) end
  end
  s:close_write()
end

-- stdin is written beside curl on the connection's socket, which a TLS session would not
-- carry: refuse before anything is created rather than after the container started.
local function check_stdin_transport(client, fname)
  if client.tls then
    errors.raise({ code = "Invalid", engine = "docker", message = ("%s: writing stdin needs a unix-socket "
      .. "or plain tcp:// engine connection; %s is TLS"):format(fname, client.host) }, 3)
  end
end

-- Move the output of an upgraded stream into a demultiplexer: what has come so far, or
-- (to_end) everything until the engine closes the stream.
local function pump(s, dm, to_end)
  while true do
    local chunk
    if to_end then chunk = s:read() else chunk = s:read_nowait() end
    if not chunk then return end
    dm:feed(chunk)
  end
end

---@class myrmex.docker.Attach
---@field id string the container
---@field closed boolean
local Attach = {}
Attach.__name = "myrmex.docker.Attach"
function Attach:__index(k)
  local v = fields(self)[k]
  if v == nil then return Attach[k] end
  return v
end
function Attach:__tostring()
  return ("docker.attach(%s%s)"):format(tostring(self.id):sub(1, 12), self.closed and ", closed" or "")
end

local function attach_stream(self, fname)
  local f = fields(self)
  if f.closed then error(("docker.attach: %s: the attach handle is closed"):format(fname), 3) end
  return f
end

--- Write to the container's stdin (the attach was made with stdin = true). Waits while the
--- container is not reading; output that arrives meanwhile is kept for read().
---@param data string
function Attach:write(data)
  local f = attach_stream(self, "write")
  if not f.stdin then error("docker.attach: write: the attach was made without stdin = true", 2) end
  check_stdin_transport(f.client, "attach")
  if type(data) ~= "string" then error("docker.attach: write: string expected, got " .. type(data), 2) end
  f.s:send(data, function()
    if f.queued >= ATTACH_QUEUE_CAP then return false end
    pump(f.s, f.dm)
  end)
end

--- Close the container's stdin (with stdin_once, as run_container sets it, the engine then
--- closes the process's stdin: `cat` exits). Output can still be read.
function Attach:close_write()
  local f = attach_stream(self, "close_write")
  if f.stdin and not f.write_closed then
    f.write_closed = true
    f.s:close_write()
  end
end

--- The next piece of output: stream ("stdout" or "stderr"), data; nil once the container
--- closed its output (it exited, or the attach ended).
---@return string|nil stream, string|nil data
function Attach:read()
  local f = attach_stream(self, "read")
  while f.head > #f.queue do
    f.queue, f.head, f.queued = {}, 1, 0
    local chunk = f.s:read()
    if not chunk then return nil end
    f.dm:feed(chunk)
  end
  local item = f.queue[f.head]
  f.queue[f.head], f.head = nil, f.head + 1
  f.queued = f.queued - #item[2]
  return item[1], item[2]
end

--- Everything until the end of the output: {stdout=, stderr=}.
---@return {stdout:string, stderr:string}
function Attach:read_all()
  local out = { stdout = {}, stderr = {} }
  for kind, data in self.read, self do table.insert(out[kind], data) end
  return { stdout = table.concat(out.stdout), stderr = table.concat(out.stderr) }
end

--- End the attach (also <close>): the connection is closed; the container keeps running.
function Attach:close()
  local f = fields(self)
  if f.closed then return end
  f.closed = true
  f.s:close()
end
-- No __gc of its own: the stream's transfer has one, which aborts it.
Attach.__close = Attach.close
local STATS_OPTS = { stream = true, on_stats = true }

return function(Client, H)
  -- Lifecycle calls that take a container and a few query options; 304 (already in that
  -- state) is success, as the CLI treats it.
  local function simple(name, method, tail, query_of)
    return function(self, ref, o)
      local id = ref_id(name, ref, name == "remove_container")
      return self:_mutate(name, id, o, function()
        self:_call(name, id, { method = method, path = cpath(H.path(id), tail),
          query = query_of and query_of(o or {}) or nil, ok = { [304] = true }, timeout = false })
        if name == "remove_container" and is_ref(ref) then ref.removed = true end
        return true
      end)
    end
  end

  --- Create a container from a config table (see docs: "Container config"). Returns a handle.
  ---@param cfg table
  ---@return myrmex.docker.Container
  function Client:create_container(cfg)
    local c = config.check("docker.create_container", cfg)
    return self:_create(c, "create_container")
  end

  function Client:_create(c, op)
    local body = config.to_api(c)
    if plan.active() then
      local p = plan.record { engine = "docker", op = op, target = c.name or c.image, args = body }
      return handle(self, p.id, c.name, { planned = true, tty = c.tty })
    end
    -- finish_on_cancel: a create abandoned by Ctrl-C would still make a container, one whose
    -- id nobody has to remove it by.
    local r = self:_call(op, c.name or c.image, { method = "POST", path = "/containers/create",
      query = { name = c.name, platform = c.platform }, json = body, finish_on_cancel = true })
    for _, w in ipairs(type(r.Warnings) == "table" and r.Warnings or {}) do
      log.warn("docker: " .. tostring(w), { container = c.name or r.Id })
    end
    return handle(self, r.Id, c.name, { tty = c.tty or false })
  end

  Client.start_container = simple("start_container", "POST", "/start")
  Client.stop_container = simple("stop_container", "POST", "/stop",
    function(o) return { t = o.timeout } end)
  Client.restart_container = simple("restart_container", "POST", "/restart",
    function(o) return { t = o.timeout } end)
  Client.kill_container = simple("kill_container", "POST", "/kill",
    function(o) return { signal = o.signal } end)
  Client.pause_container = simple("pause_container", "POST", "/pause")
  Client.unpause_container = simple("unpause_container", "POST", "/unpause")
  Client.remove_container = simple("remove_container", "DELETE", nil,
    function(o) return { force = o.force or nil, v = o.volumes or nil } end)

  --- Rename a container.
  ---@param ref string|myrmex.docker.Container
  ---@param name string
  function Client:rename_container(ref, name)
    local id = ref_id("rename_container", ref)
    if type(name) ~= "string" then H.misuse("rename_container", "name must be a string") end
    return self:_mutate("rename_container", id, { name = name }, function()
      self:_call("rename_container", id, { method = "POST", path = cpath(H.path(id), "/rename"),
        query = { name = name } })
      if is_ref(ref) then ref.name = name end
      return true
    end)
  end

  --- Wait until the container stops; returns its exit code. `timeout` seconds (default: no
  --- limit) raises Timeout; `condition` is not-running (default), next-exit or removed.
  ---@param ref string|myrmex.docker.Container
  ---@param o? {timeout?:number, condition?:string}
  ---@return integer
  function Client:wait_container(ref, o)
    local id = ref_id("wait_container", ref)
    o = H.options("wait_container", o, H.set { "timeout", "condition" })
    if is_ref(ref) and ref.planned then return 0 end
    local ok, r = pcall(self._call, self, "wait_container", id, { method = "POST",
      path = cpath(H.path(id), "/wait"), query = { condition = o.condition or "not-running" },
      timeout = o.timeout or false })
    if not ok then
      if errors.is(r, "Timeout") then
        errors.raise({ code = "Timeout", engine = "docker",
          message = ("container %s did not stop within %ss"):format(id, o.timeout) }, 2)
      end
      error(r, 0)
    end
    if type(r.Error) == "table" and type(r.Error.Message) == "string" and r.Error.Message ~= "" then
      errors.raise({ code = "Engine", engine = "docker", message = r.Error.Message }, 2)
    end
    return r.StatusCode
  end

  --- The inspect document of a container; NotFound when it does not exist.
  ---@param ref string|myrmex.docker.Container
  ---@return table
  function Client:inspect_container(ref)
    local id = ref_id("inspect_container", ref)
    if is_ref(ref) and ref.planned then return { Id = id, planned = true } end
    return (self:_call("inspect_container", id, { path = cpath(H.path(id), "/json") }))
  end

  --- Containers on the engine (running ones unless all = true).
  ---@param o? {all?:boolean, filters?:table, limit?:integer, size?:boolean}
  ---@return table[]
  function Client:list_containers(o)
    o = H.options("list_containers", o, H.set { "all", "filters", "limit", "size" })
    return (self:_call("list_containers", nil, { path = "/containers/json", query = {
      all = o.all or nil, filters = H.filters(o.filters), limit = o.limit, size = o.size or nil } }))
  end

  --- The processes running in a container: {Titles = {...}, Processes = {{...}...}}.
  ---@param ref string|myrmex.docker.Container
  ---@param ps_args? string
  ---@return table
  function Client:top_container(ref, ps_args)
    local id = ref_id("top_container", ref)
    return (self:_call("top_container", id, { path = cpath(H.path(id), "/top"),
      query = { ps_args = ps_args } }))
  end

  --- Create and start a container. With wait = true also wait for it to stop and collect its
  --- logs: the handle then has exit_code, stdout and stderr (and remove = true removes it).
  --- A failure after the create removes the container before the error propagates.
  ---@param cfg table a container config plus wait?, timeout?, remove?
  ---@return myrmex.docker.Container
  function Client:run_container(cfg)
    local c = config.check("docker.run_container", cfg, true)
    local wait, remove = c.wait, c.remove or (c.wait and c.auto_remove)
    if c.stdin ~= nil then check_stdin_transport(self, "run_container") end
    -- The engine would remove an auto_remove container before its logs can be read.
    if wait then c.auto_remove = nil end
    local ct = self:_create(c, "run_container")
    if ct.planned then
      ct.exit_code, ct.stdout, ct.stderr = 0, "", ""
      return ct
    end
    local ok, err = pcall(function()
      if c.stdin ~= nil then
        -- Attached before the start, so no output is missed and stdin is there from the
        -- first read; the output then comes from this stream rather than from the logs.
        local a <close> = self:attach(ct, { stdin = true, stdout = c.stdout ~= false,
          stderr = c.stderr ~= false })
        local f = fields(a)
        self:start_container(ct)
        local sink, result = output_sink({})
        f.dm = stream.demux(sink, c.tty)
        feed_stdin(f.s, c.stdin, function() pump(f.s, f.dm) end)
        f.write_closed = true
        if not wait then
          -- Take what output has come before closing: a TCP close over unread bytes is a
          -- reset, which could cost the engine stdin it has not read yet.
          pump(f.s, f.dm)
          return
        end
        pump(f.s, f.dm, true)
        ct.exit_code = self:wait_container(ct, { timeout = c.timeout })
        ct.stdout, ct.stderr = result()
        return
      end
      self:start_container(ct)
      if not wait then return end
      ct.exit_code = self:wait_container(ct, { timeout = c.timeout })
      local logs = self:container_logs(ct, { stdout = c.stdout, stderr = c.stderr })
      ct.stdout, ct.stderr = logs.stdout, logs.stderr
    end)
    if not ok or remove then
      if not ok and errors.is(err, "Timeout") then pcall(self.kill_container, self, ct) end
      local rok, rerr = pcall(self.remove_container, self, ct, { force = true, volumes = true })
      if not ok then error(err, 0) end
      if not rok then error(rerr, 0) end
    end
    return ct
  end

  --- A handle for an existing container (id or name), checked with an inspect.
  ---@param ref string
  ---@return myrmex.docker.Container
  function Client:container(ref)
    local info = self:inspect_container(ref)
    return handle(self, info.Id, (info.Name or ""):gsub("^/", ""),
      { tty = info.Config and info.Config.Tty or false })
  end

  local function is_tty(self, ref, o)
    if o.tty ~= nil then return o.tty end
    if is_ref(ref) and ref.tty ~= nil then return ref.tty end
    local info = self:inspect_container(ref)
    return info.Config and info.Config.Tty or false
  end

  --- A container's output, demultiplexed: returns {stdout=, stderr=}, or streams to
  --- on_stdout/on_stderr(chunk) (then the strings are empty). With follow = true the call
  --- returns when the container stops.
  ---@param ref string|myrmex.docker.Container
  ---@param o? myrmex.docker.LogsOptions
  ---@return {stdout:string, stderr:string}
  function Client:container_logs(ref, o)
    local id = ref_id("container_logs", ref)
    o = H.options("container_logs", o, LOGS_OPTS)
    if is_ref(ref) and ref.planned then return { stdout = "", stderr = "" } end
    local sink, result = output_sink(o)
    local dm = stream.demux(sink, is_tty(self, ref, o))
    self:_stream("container_logs", id, { path = cpath(H.path(id), "/logs"), timeout = false,
      query = { stdout = o.stdout ~= false, stderr = o.stderr ~= false, follow = o.follow or nil,
        since = o.since, ["until"] = o["until"], tail = o.tail, timestamps = o.timestamps or nil } },
      function(chunk) dm:feed(chunk) end)
    local out, err = result()
    return { stdout = out, stderr = err }
  end

  local function exec_exit_code(self, exec_id)
    for _ = 1, 500 do
      local info = self:_call("exec_inspect", exec_id, { path = "/exec/" .. exec_id .. "/json" })
      if not info.Running then return info.ExitCode end
      require("myrmex.http").sleep(0.01) -- lets other parallel branches run
    end
    errors.raise({ code = "Timeout", engine = "docker", message = "exec " .. exec_id .. " still running" }, 0)
  end

  --- Run a command in a running container. Returns {exit_code, stdout, stderr}; with
  --- on_stdout/on_stderr the output streams to them and the exit code is still returned.
  ---@param ref string|myrmex.docker.Container
  ---@param o myrmex.docker.ExecOptions
  ---@return {exit_code:integer, stdout:string, stderr:string}
  function Client:exec(ref, o)
    local id = ref_id("exec", ref)
    o = H.options("exec", o, EXEC_OPTS)
    local cfg = config.check("docker.exec", { image = "-", cmd = o.cmd, env = o.env,
      workdir = o.workdir, user = o.user })
    if not cfg.cmd then H.misuse("exec", "cmd required") end
    if o.privileged and require("myrmex.sandbox").active() then
      H.misuse("exec", "privileged is not allowed under --sandbox")
    end
    local stdin = config.check_stdin("docker.exec", "stdin", o.stdin)
    if stdin ~= nil then check_stdin_transport(self, "exec") end
    return self:_mutate("exec", id, { cmd = cfg.cmd }, function()
      local r = self:_call("exec_create", id, { method = "POST", path = cpath(H.path(id), "/exec"),
        json = { Cmd = cfg.cmd, Env = cfg.env, WorkingDir = cfg.workdir, User = cfg.user,
          Privileged = o.privileged or false, Tty = o.tty or false,
          AttachStdin = stdin ~= nil, AttachStdout = true, AttachStderr = true } })
      local sink, result = output_sink(o)
      local dm = stream.demux(sink, o.tty)
      local start = { method = "POST", path = "/exec/" .. r.Id .. "/start",
        json = { Detach = false, Tty = o.tty or false }, timeout = false }
      if stdin ~= nil then
        local s <close> = self:_upgrade("exec_start", r.Id, start)
        feed_stdin(s, stdin, function() pump(s, dm) end)
        pump(s, dm, true)
      else
        self:_stream("exec_start", r.Id, start, function(chunk) dm:feed(chunk) end)
      end
      local out, err = result()
      return { exit_code = exec_exit_code(self, r.Id), stdout = out, stderr = err }
    end, { exit_code = 0, stdout = "", stderr = "" })
  end

  --- Resource usage. One-shot (default) returns the derived figures: cpu_percent,
  --- memory {used, limit, percent}, network {rx_bytes, tx_bytes}, block {read_bytes,
  --- write_bytes}, pids, raw. With on_stats(s) the engine's stream (about one sample a
  --- second) is delivered until on_stats returns false or the container stops.
  ---@param ref string|myrmex.docker.Container
  ---@param o? {on_stats?:fun(s:table):boolean?}
  ---@return table|nil
  function Client:container_stats(ref, o)
    local id = ref_id("container_stats", ref)
    o = H.options("container_stats", o, STATS_OPTS)
    if not o.on_stats then
      local s = self:_call("container_stats", id, { path = cpath(H.path(id), "/stats"),
        query = { stream = false }, timeout = false })
      return derive_stats(s)
    end
    self:_stream_json("container_stats", id, { path = cpath(H.path(id), "/stats"),
      query = { stream = true }, timeout = false }, function(s) return o.on_stats(derive_stats(s)) end)
  end

  --- Attach to a container's streams. Returns a handle with write(data), close_write(),
  --- read() -> stream, data (nil at the end), read_all() and close() (also <close>). stdin
  --- needs a container created with stdin_open = true; stdout and stderr default to true;
  --- logs = true replays the output so far first; stream = false gives only that replay.
  ---@param ref string|myrmex.docker.Container
  ---@param o? {stdin?:boolean, stdout?:boolean, stderr?:boolean, logs?:boolean, stream?:boolean, tty?:boolean}
  ---@return myrmex.docker.Attach
  function Client:attach(ref, o)
    local id = ref_id("attach", ref)
    o = H.options("attach", o, ATTACH_OPTS)
    for _, k in ipairs { "stdin", "stdout", "stderr", "logs", "stream", "tty" } do
      if o[k] ~= nil and type(o[k]) ~= "boolean" then
        H.misuse("attach", ("option %s: expected boolean, got %s"):format(k, type(o[k])))
      end
    end
    if is_ref(ref) and ref.planned then H.misuse("attach", "cannot attach to a planned container") end
    local s = self:_upgrade("attach_container", id, { method = "POST", path = cpath(H.path(id), "/attach"),
      timeout = false, query = { stream = o.stream ~= false, logs = o.logs or nil, stdin = o.stdin or nil,
        stdout = o.stdout ~= false, stderr = o.stderr ~= false } })
    local f = { client = self, id = id, s = s, stdin = o.stdin or false, queue = {}, head = 1,
      queued = 0, closed = false }
    local ok, tty = pcall(is_tty, self, ref, o)
    if not ok then
      s:close()
      error(tty, 0)
    end
    f.dm = stream.demux(function(kind, data)
      f.queue[#f.queue + 1] = { kind, data }
      f.queued = f.queued + #data
    end, tty)
    return rt.handle(Attach, f)
  end

  --- Change a container's limits while it runs (docker update): memory, memory_swap,
  --- memory_reservation, cpus, cpu_shares, cpu_period, cpu_quota, cpuset_cpus, cpuset_mems,
  --- pids_limit, blkio_weight, restart. Returns the engine's warnings (a list, often empty).
  ---@param ref string|myrmex.docker.Container
  ---@param o table
  ---@return string[]
  function Client:update_container(ref, o)
    local id = ref_id("update_container", ref)
    local body = config.update_body("docker.update_container", o)
    return self:_mutate("update_container", id, body, function()
      local r = self:_call("update_container", id, { method = "POST", path = cpath(H.path(id), "/update"),
        json = body })
      local warnings = type(r) == "table" and type(r.Warnings) == "table" and r.Warnings or {}
      for _, w in ipairs(warnings) do log.warn("docker: " .. tostring(w), { container = id }) end
      return warnings
    end, {})
  end

  --- Make an image from a container's filesystem (docker commit). `tag` is "repo[:tag]",
  --- `changes` Dockerfile instructions (a string or a list: "ENV A=1", "CMD [\"sh\"]"),
  --- `message` the commit message, `author`, `pause` (default true: the container is paused
  --- while committing). Returns the new image id ("sha256:..."); in plan mode the planned
  --- action ({planned = true, id = "planned-N"}).
  ---@param ref string|myrmex.docker.Container
  ---@param o? {tag?:string, changes?:string|string[], message?:string, author?:string, pause?:boolean}
  ---@return string|table
  function Client:commit_container(ref, o)
    local id = ref_id("commit_container", ref)
    o = H.options("commit_container", o, H.set { "tag", "changes", "message", "author", "pause" })
    local changes = o.changes
    if type(changes) == "string" then changes = { changes } end
    if changes ~= nil and type(changes) ~= "table" then
      H.misuse("commit_container", "changes: expected a string or a list of strings, got " .. type(changes))
    end
    for i, c in ipairs(changes or {}) do
      if type(c) ~= "string" then
        H.misuse("commit_container", ("changes[%d]: expected string, got %s"):format(i, type(c)))
      end
    end
    for _, k in ipairs { "tag", "message", "author" } do
      if o[k] ~= nil and type(o[k]) ~= "string" then
        H.misuse("commit_container", ("%s: expected string, got %s"):format(k, type(o[k])))
      end
    end
    local repo, tag
    if o.tag then repo, tag = H.split_ref(o.tag) end
    return self:_mutate("commit_container", id, o, function()
      local r = self:_call("commit_container", id, { method = "POST", path = "/commit", json = {},
        query = { container = id, repo = repo, tag = tag, comment = o.message, author = o.author,
          pause = o.pause ~= false, changes = changes and H.multi(changes) or nil } })
      return r.Id
    end)
  end

  --- Stream a container's filesystem as a tar (docker export) into the file `to` (written
  --- beside it and renamed when complete) or to a function called with each chunk. Memory
  --- stays bounded whatever the size. Returns the number of bytes.
  ---@param ref string|myrmex.docker.Container
  ---@param to string|fun(chunk:string)
  ---@return integer
  function Client:export_container(ref, to)
    local id = ref_id("export_container", ref)
    if type(to) ~= "string" and type(to) ~= "function" then
      H.misuse("export_container", "a file path or a function(chunk) expected, got " .. type(to))
    end
    return self:_download("export_container", id, { path = cpath(H.path(id), "/export"), timeout = false }, to)
  end

  local KINDS = { [0] = "changed", [1] = "added", [2] = "deleted" }

  --- What changed in a container's filesystem since it was created (docker diff):
  --- {{path=, kind="added"|"changed"|"deleted"}...}, in the engine's order.
  ---@param ref string|myrmex.docker.Container
  ---@return {path:string, kind:string}[]
  function Client:container_changes(ref)
    local id = ref_id("container_changes", ref)
    local r = self:_call("container_changes", id, { path = cpath(H.path(id), "/changes") })
    local out = {}
    for i, c in ipairs(type(r) == "table" and r or {}) do
      out[i] = { path = c.Path, kind = KINDS[c.Kind] or tostring(c.Kind) }
    end
    return out
  end

  --- Resize the TTY of a container created with tty = true: h rows, w columns.
  ---@param ref string|myrmex.docker.Container
  ---@param o {h:integer, w:integer}
  function Client:resize(ref, o)
    local id = ref_id("resize", ref)
    o = H.options("resize", o, H.set { "h", "w" })
    for _, k in ipairs { "h", "w" } do
      if math.type(o[k]) ~= "integer" or o[k] < 1 then
        H.misuse("resize", ("%s: expected a positive integer, got %s"):format(k, tostring(o[k])))
      end
    end
    return self:_mutate("resize", id, o, function()
      self:_call("resize", id, { method = "POST", path = cpath(H.path(id), "/resize"),
        query = { h = o.h, w = o.w } })
      return true
    end)
  end

  --- Remove stopped containers (docker container prune). `filters` as for list calls
  --- ({label = {"a=b"}, ["until"] = "1h"}). Returns {deleted = ids, space_reclaimed = bytes}.
  ---@param o? {filters?:table}
  ---@return {deleted:string[], space_reclaimed:integer}
  function Client:prune_containers(o)
    o = H.options("prune_containers", o, H.set { "filters" })
    return self:_mutate("prune_containers", nil, o, function()
      local r = self:_call("prune_containers", nil, { method = "POST", path = "/containers/prune",
        query = { filters = H.filters(o.filters) } })
      local deleted = r.ContainersDeleted
      return { deleted = type(deleted) == "table" and deleted or {}, space_reclaimed = r.SpaceReclaimed or 0 }
    end, { deleted = {}, space_reclaimed = 0 })
  end

  -- A tar source for copy_to: a directory's contents, one file, or a tar source as is.
  local function tar_source(what)
    if type(what) ~= "string" then return what end
    local st = rt.stat(what)
    if not st then
      errors.raise({ code = "NotFound", engine = "docker", message = "no such file: " .. what }, 0)
    end
    if st.type == "directory" then return (archive().pack { dir = what }) end
    local w = archive().writer(nil)
    w:add { path = what:match("([^/]+)$"), data = { file = what }, mode = st.mode, mtime = st.mtime }
    return w:source()
  end

  --- Copy into a container: `src` is a local directory (its contents land in `dest`), a local
  --- file (lands as dest/<name>), or a tar source. `dest` must be a directory in the container.
  ---@param ref string|myrmex.docker.Container
  ---@param dest string
  ---@param src string|userdata
  function Client:copy_to_container(ref, dest, src)
    local id = ref_id("copy_to_container", ref)
    if type(dest) ~= "string" then H.misuse("copy_to_container", "dest must be a path") end
    return self:_mutate("copy_to_container", id, { dest = dest, src = type(src) == "string" and src or "tar" },
      function()
        self:_call("copy_to_container", id, { method = "PUT", path = cpath(H.path(id), "/archive"),
          query = { path = dest }, body = tar_source(src), timeout = false,
          headers = { ["Content-Type"] = "application/x-tar" } })
        return true
      end)
  end

  --- Copy out of a container: with `to`, extracts `path` (a file or a directory, as its last
  --- component) into the local directory `to` and returns the entry count; without, returns
  --- an archive reader over the tar the engine sent.
  ---@param ref string|myrmex.docker.Container
  ---@param path string
  ---@param o? {to?:string}
  ---@return integer|userdata
  function Client:copy_from_container(ref, path, o)
    local id = ref_id("copy_from_container", ref)
    o = H.options("copy_from_container", o, H.set { "to" })
    if o.to then require("myrmex.sandbox").check_write(o.to, "extracting to") end
    local tmp = os.tmpname()
    -- Through _download, not the transport's to_file: an error reply ("Could not find the
    -- file /x in container y") must reach the error, not a file that is then thrown away.
    -- Into a writer of our own: the temporary file is myrmex's, not a path the recipe chose, so
    -- the sandbox's write check (which would refuse /tmp) is not asked.
    local f = assert(io.open(tmp, "wb"))
    local ok, err = pcall(self._download, self, "copy_from_container", id, { path = cpath(H.path(id), "/archive"),
      query = { path = path }, timeout = false }, function(chunk) assert(f:write(chunk)) end)
    f:close()
    if not ok then
      os.remove(tmp)
      error(err, 0)
    end
    local result
    ok, err = pcall(function()
      if o.to then result = archive().extract(tmp, o.to) else result = archive().open(tmp) end
    end)
    os.remove(tmp) -- the reader keeps its open descriptor
    if not ok then error(err, 0) end
    return result
  end

  --- Create and start many containers concurrently (at most `max` at a time, default 8).
  --- Returns the handles in order; on any failure, Ctrl-C and SIGTERM included, the ones that
  --- started are removed and the first error is raised.
  ---@param configs table[]
  ---@param o? {max?:integer}
  ---@return myrmex.docker.Container[]
  function Client:run_containers(configs, o)
    o = H.options("run_containers", o, H.set { "max" })
    local fns, made = {}, {}
    for i, cfg in ipairs(configs) do
      config.check("docker.run_containers[" .. i .. "]", cfg, true)
      fns[i] = function()
        made[i] = self:run_container(cfg)
        return made[i]
      end
    end
    -- An Interrupted error that reached the scheduler rather than a branch raises out of
    -- run_all; the handles made so far are in `made` either way. (A branch stopped between
    -- its create and its start removes its own container: run_container does.)
    local ok, results, err = pcall(run_all, fns, o.max)
    if not ok then results, err = made, results end
    if err then
      local cleanup = {}
      for _, ct in pairs(made) do
        cleanup[#cleanup + 1] = function() Container.__close(ct) end
      end
      run_all(cleanup, o.max)
      error(err, 0)
    end
    return results
  end

  local ACTIONS = H.set { "start", "stop", "restart", "kill", "remove", "pause", "unpause" }

  --- Apply one action (start, stop, restart, kill, remove, pause, unpause) to many containers
  --- concurrently. `opts` is passed to each call ({timeout=}, {signal=}, {force=}). Raises the
  --- first error after every call has finished.
  ---@param refs (string|myrmex.docker.Container)[]
  ---@param action string
  ---@param o? {max?:integer, timeout?:integer, signal?:string, force?:boolean, volumes?:boolean}
  function Client:manage_containers(refs, action, o)
    if not ACTIONS[action] then H.misuse("manage_containers", "unknown action " .. tostring(action)) end
    o = H.options("manage_containers", o, H.set { "max", "timeout", "signal", "force", "volumes" })
    local call_opts = { timeout = o.timeout, signal = o.signal, force = o.force, volumes = o.volumes }
    local method = self[action .. "_container"]
    local fns = {}
    for i, ref in ipairs(refs) do
      fns[i] = function() return method(self, ref, next(call_opts) and call_opts or nil) end
    end
    local _, err = run_all(fns, o.max)
    if err then error(err, 0) end
    return #refs
  end

  -- Handle methods: the same calls with the handle as the container.
  local METHODS = {
    start = "start_container", stop = "stop_container", restart = "restart_container",
    kill = "kill_container", pause = "pause_container", unpause = "unpause_container",
    remove = "remove_container", wait = "wait_container", inspect = "inspect_container",
    top = "top_container", rename = "rename_container", logs = "container_logs",
    exec = "exec", stats = "container_stats", copy_to = "copy_to_container",
    copy_from = "copy_from_container", attach = "attach", update = "update_container",
    commit = "commit_container", export = "export_container", changes = "container_changes",
    resize = "resize",
  }
  for short, long in pairs(METHODS) do
    Container[short] = function(self, ...)
      return self.client[long](self.client, self, ...)
    end
  end

  Client.Container = Container
end
