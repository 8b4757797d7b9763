--- Container configuration tables: checked key by key (a typo is an error naming the key),
--- then translated into the Engine API's create body. See docs/docker.md ("Container config").
local json = require("myrmex.json")

local M = {}

-- A misuse error: a plain string naming the function and the key, raised at the caller.
local function fail(fname, key, msg)
  error(("%s: config.%s: %s"):format(fname, key, msg), 0)
end

local function typename(v)
  return math.type(v) or type(v)
end

local function check_string(fname, key, v)
  if type(v) ~= "string" then fail(fname, key, "expected string, got " .. typename(v)) end
  return v
end

local function check_boolean(fname, key, v)
  if type(v) ~= "boolean" then fail(fname, key, "expected boolean, got " .. typename(v)) end
  return v
end

-- A number is shown by its value, anything else by its type: "got -1", "got string".
local function shown(v)
  if type(v) == "number" then return tostring(v) end
  return typename(v)
end

local function check_number(fname, key, v)
  if type(v) ~= "number" or v < 0 or v ~= v then
    fail(fname, key, "expected a non-negative number, got " .. shown(v))
  end
  return v
end

local function check_integer(fname, key, v)
  if math.type(v) ~= "integer" then fail(fname, key, "expected integer, got " .. typename(v)) end
  return v
end

local function check_list(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected list of strings, got " .. typename(v)) end
  local out = {}
  for i = 1, #v do
    if type(v[i]) ~= "string" then
      fail(fname, key .. "[" .. i .. "]", "expected string, got " .. typename(v[i]))
    end
    out[i] = v[i]
  end
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      fail(fname, key, "expected list of strings, found key " .. tostring(k))
    end
  end
  return json.array(out)
end

-- A command: a list of arguments, or one string (run as given, Docker splits nothing).
local function check_argv(fname, key, v)
  if type(v) == "string" then return json.array { v } end
  return check_list(fname, key, v)
end

local function check_string_map(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table of strings, got " .. typename(v)) end
  local out = json.object()
  for k, val in pairs(v) do
    if type(k) ~= "string" then fail(fname, key, "keys must be strings") end
    if type(val) ~= "string" and type(val) ~= "number" and type(val) ~= "boolean" then
      fail(fname, key .. "." .. k, "expected string, got " .. typename(val))
    end
    out[k] = tostring(val)
  end
  return out
end

-- env: {"K=V", ...} or {K = "V"}; sorted so that the same config gives the same request.
local function check_env(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table, got " .. typename(v)) end
  if #v > 0 then return check_list(fname, key, v) end
  local out = {}
  for k, val in pairs(check_string_map(fname, key, v)) do out[#out + 1] = k .. "=" .. val end
  table.sort(out)
  return json.array(out)
end

local UNITS = { b = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3, t = 1024 ^ 4 }

--- Bytes from a number or a Docker-style size ("256m", "1g", "512k", "100b").
---@param v number|string
---@return integer|nil
function M.bytes(v)
  if math.type(v) == "integer" then return v end
  if type(v) == "number" then return math.floor(v) end
  if type(v) ~= "string" then return nil end
  local n, unit = v:lower():match("^%s*([%d%.]+)%s*([bkmgt]?)i?b?%s*$")
  if not n or not tonumber(n) then return nil end
  return math.floor(tonumber(n) * (UNITS[unit] or 1))
end

local function check_bytes(fname, key, v)
  local n = M.bytes(v)
  if not n or n < 0 then fail(fname, key, "expected bytes (number or \"256m\"), got " .. tostring(v)) end
  return n
end

-- ports: list of "[ip:]host:container[/proto]" or "container[/proto]" (expose only), or a
-- map {["80/tcp"] = 8080 | "127.0.0.1:8080"}.
local function parse_port(fname, key, spec)
  local parts = {}
  for p in (spec .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
  local cport = parts[#parts]
  if not cport:find("/", 1, true) then cport = cport .. "/tcp" end
  if not cport:match("^%d+/%a+$") then fail(fname, key, "bad port " .. spec) end
  local ip, host = "", nil
  if #parts == 2 then host = parts[1] elseif #parts == 3 then ip, host = parts[1], parts[2] end
  if #parts > 3 or (host and not host:match("^%d*$")) then fail(fname, key, "bad port " .. spec) end
  return cport, host and { HostIp = ip, HostPort = host } or nil
end

local function check_ports(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table, got " .. typename(v)) end
  local exposed, bindings = json.object(), json.object()
  local function add(cport, binding)
    exposed[cport] = json.object()
    bindings[cport] = bindings[cport] or json.array()
    if binding then table.insert(bindings[cport], binding) end
  end
  for k, val in pairs(v) do
    if math.type(k) == "integer" then
      add(parse_port(fname, key, check_string(fname, key .. "[" .. k .. "]", val)))
    elseif type(k) == "string" then
      local host = type(val) == "number" and tostring(math.floor(val)) or val
      add(parse_port(fname, key, check_string(fname, key .. "." .. k, host) .. ":" .. k))
    else
      fail(fname, key, "bad key " .. tostring(k))
    end
  end
  return { exposed = exposed, bindings = bindings }
end

local MOUNT_KEYS = { type = true, source = true, target = true, read_only = true,
  propagation = true, tmpfs_size = true, tmpfs_mode = true }
local PROPAGATION = { private = true, rprivate = true, shared = true, rshared = true,
  slave = true, rslave = true }

local function check_mounts(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected list of mounts, got " .. typename(v)) end
  local out = json.array()
  for i, m in ipairs(v) do
    local k = key .. "[" .. i .. "]"
    if type(m) ~= "table" then fail(fname, k, "expected table, got " .. typename(m)) end
    for mk in pairs(m) do
      if not MOUNT_KEYS[mk] then fail(fname, k .. "." .. tostring(mk), "unknown key") end
    end
    local t = m.type or "bind"
    if t ~= "bind" and t ~= "volume" and t ~= "tmpfs" then
      fail(fname, k .. ".type", "expected bind, volume or tmpfs, got " .. tostring(t))
    end
    local bind, tmpfs
    if m.propagation ~= nil then
      if t ~= "bind" then fail(fname, k .. ".propagation", "only a bind mount has a propagation") end
      if not PROPAGATION[m.propagation] then
        fail(fname, k .. ".propagation", "expected private, rprivate, shared, rshared, slave or rslave, got "
          .. tostring(m.propagation))
      end
      bind = { Propagation = m.propagation }
    end
    if m.tmpfs_size ~= nil or m.tmpfs_mode ~= nil then
      if t ~= "tmpfs" then fail(fname, k .. ".tmpfs_size", "only a tmpfs mount has a size and a mode") end
      tmpfs = {
        SizeBytes = m.tmpfs_size ~= nil and check_bytes(fname, k .. ".tmpfs_size", m.tmpfs_size) or nil,
        Mode = m.tmpfs_mode ~= nil and check_integer(fname, k .. ".tmpfs_mode", m.tmpfs_mode) or nil,
      }
    end
    out[i] = {
      Type = t,
      Source = m.source and check_string(fname, k .. ".source", m.source) or nil,
      Target = check_string(fname, k .. ".target", m.target),
      ReadOnly = m.read_only ~= nil and check_boolean(fname, k .. ".read_only", m.read_only) or nil,
      BindOptions = bind,
      TmpfsOptions = tmpfs,
    }
  end
  return out
end

local function check_restart(fname, key, v)
  if type(v) == "string" then
    local name, n = v:match("^([%a-]+):?(%d*)$")
    if not name then fail(fname, key, "bad restart policy " .. v) end
    v = { name = name, max_retries = tonumber(n) }
  end
  if type(v) ~= "table" then fail(fname, key, "expected string or table, got " .. typename(v)) end
  local ok = { no = true, always = true, ["unless-stopped"] = true, ["on-failure"] = true }
  if not ok[v.name] then fail(fname, key .. ".name", "unknown policy " .. tostring(v.name)) end
  for k in pairs(v) do
    if k ~= "name" and k ~= "max_retries" then fail(fname, key .. "." .. tostring(k), "unknown key") end
  end
  return { Name = v.name, MaximumRetryCount = v.max_retries or 0 }
end

local HEALTH_KEYS = { test = true, interval = true, timeout = true, retries = true,
  start_period = true }

local function seconds_ns(fname, key, v)
  return v and math.floor(check_number(fname, key, v) * 1e9) or nil
end

local function check_healthcheck(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table, got " .. typename(v)) end
  for k in pairs(v) do
    if not HEALTH_KEYS[k] then fail(fname, key .. "." .. tostring(k), "unknown key") end
  end
  local test = v.test
  if type(test) == "string" then
    test = json.array { "CMD-SHELL", test }
  else
    test = check_list(fname, key .. ".test", test)
    if test[1] ~= "CMD" and test[1] ~= "CMD-SHELL" and test[1] ~= "NONE" then
      table.insert(test, 1, "CMD")
    end
  end
  return {
    Test = test,
    Interval = seconds_ns(fname, key .. ".interval", v.interval),
    Timeout = seconds_ns(fname, key .. ".timeout", v.timeout),
    StartPeriod = seconds_ns(fname, key .. ".start_period", v.start_period),
    Retries = v.retries and check_integer(fname, key .. ".retries", v.retries) or nil,
  }
end

-- ulimits: {nofile = 1024 | {soft = 1024, hard = 2048}, ...} -> [{Name, Soft, Hard}], sorted.
local function check_ulimits(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table of limits, got " .. typename(v)) end
  local names = {}
  for name in pairs(v) do
    if type(name) ~= "string" or not name:match("^[%a_]+$") then
      fail(fname, key, "expected limit names (nofile, nproc, ...), got " .. tostring(name))
    end
    names[#names + 1] = name
  end
  table.sort(names)
  local out = json.array()
  for _, name in ipairs(names) do
    local l, k = v[name], key .. "." .. name
    if math.type(l) == "integer" then l = { soft = l, hard = l } end
    if type(l) ~= "table" then fail(fname, k, "expected integer or {soft=, hard=}, got " .. shown(l)) end
    for lk in pairs(l) do
      if lk ~= "soft" and lk ~= "hard" then fail(fname, k .. "." .. tostring(lk), "unknown key") end
    end
    local soft = check_integer(fname, k .. ".soft", l.soft)
    local hard = l.hard == nil and soft or check_integer(fname, k .. ".hard", l.hard)
    if soft > hard and hard >= 0 then fail(fname, k, ("soft %d above hard %d"):format(soft, hard)) end
    out[#out + 1] = { Name = name, Soft = soft, Hard = hard }
  end
  return out
end

-- devices: {"/dev/fuse", "/dev/a:/dev/b:rw"} or {{host=, container=, permissions=}}.
local function check_devices(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected list of devices, got " .. typename(v)) end
  local out = json.array()
  for i, d in ipairs(v) do
    local k = key .. "[" .. i .. "]"
    local host, cont, perms
    if type(d) == "string" then
      local parts = {}
      for p in (d .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
      if #parts > 3 or parts[1] == "" then fail(fname, k, "bad device " .. d) end
      host, cont, perms = parts[1], parts[2], parts[3]
      if #parts == 2 and parts[2]:match("^[rwm]+$") then cont, perms = nil, parts[2] end
    elseif type(d) == "table" then
      for dk in pairs(d) do
        if dk ~= "host" and dk ~= "container" and dk ~= "permissions" then
          fail(fname, k .. "." .. tostring(dk), "unknown key")
        end
      end
      host = check_string(fname, k .. ".host", d.host)
      cont = d.container ~= nil and check_string(fname, k .. ".container", d.container) or nil
      perms = d.permissions ~= nil and check_string(fname, k .. ".permissions", d.permissions) or nil
    else
      fail(fname, k, "expected string or table, got " .. typename(d))
    end
    if perms and not perms:match("^[rwm]+$") then
      fail(fname, k, "permissions are letters of rwm, got " .. perms)
    end
    out[i] = { PathOnHost = host, PathInContainer = cont or host, CgroupPermissions = perms or "rwm" }
  end
  return out
end

-- gpus: "all" | integer count | {count=, device_ids=, driver=, capabilities=, options=}.
local GPU_KEYS = { count = true, device_ids = true, driver = true, capabilities = true, options = true }
local function check_gpus(fname, key, v)
  local r
  if v == "all" then
    r = { Count = -1 }
  elseif math.type(v) == "integer" and v > 0 then
    r = { Count = v }
  elseif type(v) == "table" then
    for k in pairs(v) do if not GPU_KEYS[k] then fail(fname, key .. "." .. tostring(k), "unknown key") end end
    if v.count ~= nil and v.device_ids ~= nil then fail(fname, key, "count and device_ids exclude each other") end
    local count = v.count
    if count == "all" then count = -1 elseif count ~= nil then count = check_integer(fname, key .. ".count", count) end
    r = { Count = count, DeviceIDs = v.device_ids and check_list(fname, key .. ".device_ids", v.device_ids) or nil,
      Driver = v.driver and check_string(fname, key .. ".driver", v.driver) or nil,
      Options = v.options and check_string_map(fname, key .. ".options", v.options) or nil }
    if v.capabilities ~= nil then
      r.Capabilities = json.array { check_list(fname, key .. ".capabilities", v.capabilities) }
    end
    if r.Count == nil and r.DeviceIDs == nil then r.Count = -1 end
  else
    fail(fname, key, "expected \"all\", a count or a table, got " .. shown(v))
  end
  r.Capabilities = r.Capabilities or json.array { json.array { "gpu" } }
  return json.array { r }
end

-- log_config: {type = "json-file", options = {["max-size"] = "10m"}}.
local function check_log_config(fname, key, v)
  if type(v) ~= "table" then fail(fname, key, "expected table, got " .. typename(v)) end
  for k in pairs(v) do
    if k ~= "type" and k ~= "options" then fail(fname, key .. "." .. tostring(k), "unknown key") end
  end
  return { Type = check_string(fname, key .. ".type", v.type),
    Config = v.options and check_string_map(fname, key .. ".options", v.options) or json.object() }
end

-- ipc and pid modes: the engine's own words, checked so a typo fails here and not at start.
local function check_mode(allowed)
  return function(fname, key, v)
    check_string(fname, key, v)
    if allowed[v] or v:match("^container:.+") then return v end
    local names = {}
    for n in pairs(allowed) do names[#names + 1] = n end
    table.sort(names)
    fail(fname, key, ("expected %s or container:NAME, got %s"):format(table.concat(names, ", "), v))
  end
end
local check_ipc = check_mode { host = true, private = true, shareable = true, none = true }
local check_pid = check_mode { host = true }

-- cpuset_cpus / cpuset_mems: "0-3", "0,1", "1".
local function check_cpuset(fname, key, v)
  check_string(fname, key, v)
  if not v:match("^%d+%-?%d*[%d,%-]*$") then fail(fname, key, "expected a list like \"0-3\" or \"0,2\", got " .. v) end
  return v
end

local function check_positive_integer(fname, key, v)
  if math.type(v) ~= "integer" or v < 0 then fail(fname, key, "expected a non-negative integer, got " .. shown(v)) end
  return v
end

local function check_user(fname, key, v)
  if math.type(v) == "integer" then return tostring(v) end
  return check_string(fname, key, v)
end

-- key -> checker. `run` keys steer run_container rather than the container itself.
local FIELDS = {
  image = check_string, name = check_string, cmd = check_argv, entrypoint = check_argv,
  env = check_env, workdir = check_string, user = check_user, labels = check_string_map,
  ports = check_ports, mounts = check_mounts, volumes = check_list, network = check_string,
  restart = check_restart, memory = check_bytes, cpus = check_number, pids = check_integer,
  healthcheck = check_healthcheck, auto_remove = check_boolean, read_only = check_boolean,
  cap_add = check_list, cap_drop = check_list, privileged = check_boolean, init = check_boolean,
  tty = check_boolean, hostname = check_string, extra_hosts = check_list,
  stop_signal = check_string, stop_timeout = check_integer, platform = check_string,
  tmpfs = check_string_map, shm_size = check_bytes, security_opt = check_list,
  group_add = check_list, dns = check_list, sysctls = check_string_map,
  stdin_open = check_boolean, stdin_once = check_boolean, ulimits = check_ulimits,
  devices = check_devices, gpus = check_gpus, log_config = check_log_config, ipc = check_ipc,
  pid_mode = check_pid, cpuset_cpus = check_cpuset, cpuset_mems = check_cpuset,
  cpu_shares = check_positive_integer,
}

--- stdin for run_container and exec: a string, a function(write) that calls write(data) as
--- often as it likes, or {file = PATH}. Returns it, or raises naming the key.
---@param fname string
---@param key string
---@param v any
---@return string|function|{file:string}|nil
function M.check_stdin(fname, key, v)
  if v == nil or type(v) == "string" or type(v) == "function" then return v end
  if type(v) == "table" then
    for k in pairs(v) do
      if k ~= "file" then error(("%s: %s.%s: unknown key"):format(fname, key, tostring(k)), 0) end
    end
    if type(v.file) == "string" then return v end
  end
  error(("%s: %s: expected a string, a function(write) or {file = PATH}, got %s"):format(fname, key,
    typename(v)), 0)
end

local RUN_FIELDS = { wait = check_boolean, timeout = check_number, remove = check_boolean,
  stdout = check_boolean, stderr = check_boolean,
  stdin = function(fname, key, v) return M.check_stdin(fname, "config." .. key, v) end }

local NOT_UNDER_SANDBOX = {
  privileged = "a privileged container", cap_add = "added capabilities", devices = "host devices",
  gpus = "host GPUs",
}

--- Under --sandbox, refuse what would let the engine, which runs as root, act past the work
--- folder for the recipe: a host folder outside it bind-mounted, privileges, host devices, the
--- host's network, PID or IPC namespace, security options other than no-new-privileges.
--- Raises "<fname>: config.<key>: ... under --sandbox". A no-op outside the sandbox.
---@param fname string
---@param c table a checked config (M.check's result)
function M.sandbox_policy(fname, c)
  local sandbox = require("myrmex.sandbox")
  if not sandbox.active() then return end
  local function refuse(key, what) fail(fname, key, what .. " is not allowed under --sandbox") end
  for key, what in pairs(NOT_UNDER_SANDBOX) do
    local v = c[key]
    if v and (type(v) ~= "table" or next(v) ~= nil) then refuse(key, what) end
  end
  for _, key in ipairs({ "network", "pid_mode", "ipc" }) do
    if c[key] == "host" then refuse(key, "the host's namespace") end
  end
  for i, opt in ipairs(c.security_opt or {}) do
    if not tostring(opt):match("^no%-new%-privileges") then refuse("security_opt[" .. i .. "]", tostring(opt)) end
  end
  local function host_path(key, path)
    if path and path:sub(1, 1) == "/" and not sandbox.inside(path) then
      refuse(key, "bind-mounting '" .. path .. "' (outside the work folder)")
    end
  end
  for i, b in ipairs(c.volumes or {}) do host_path("volumes[" .. i .. "]", tostring(b):match("^([^:]*)")) end
  for i, m in ipairs(c.mounts or {}) do
    if m.Type == "bind" then host_path("mounts[" .. i .. "].source", m.Source) end
  end
end

--- Check a config table; returns a normalized copy. Raises "<fname>: config.<key>: ..." for an
--- unknown key or a wrong type. `run` allows the run_container keys (wait, timeout, remove).
---@param fname string the public function name for messages
---@param cfg table
---@param run? boolean
---@return table
function M.check(fname, cfg, run)
  if type(cfg) ~= "table" then
    error(("%s: config table expected, got %s"):format(fname, typename(cfg)), 0)
  end
  local out = {}
  for k, v in pairs(cfg) do
    local checker = FIELDS[k] or (run and RUN_FIELDS[k])
    if type(k) ~= "string" or not checker then fail(fname, tostring(k), "unknown key") end
    out[k] = checker(fname, k, v)
  end
  if out.image == nil then fail(fname, "image", "required") end
  M.sandbox_policy(fname, out)
  return out
end

local function host_config(c)
  return {
    Binds = c.volumes,
    Mounts = c.mounts,
    PortBindings = c.ports and c.ports.bindings or nil,
    NetworkMode = c.network,
    RestartPolicy = c.restart,
    Memory = c.memory,
    NanoCpus = c.cpus and math.floor(c.cpus * 1e9) or nil,
    PidsLimit = c.pids,
    AutoRemove = c.auto_remove,
    ReadonlyRootfs = c.read_only,
    CapAdd = c.cap_add,
    CapDrop = c.cap_drop,
    Privileged = c.privileged,
    Init = c.init,
    ExtraHosts = c.extra_hosts,
    Tmpfs = c.tmpfs,
    ShmSize = c.shm_size,
    SecurityOpt = c.security_opt,
    GroupAdd = c.group_add,
    Dns = c.dns,
    Sysctls = c.sysctls,
    Ulimits = c.ulimits,
    Devices = c.devices,
    DeviceRequests = c.gpus,
    LogConfig = c.log_config,
    IpcMode = c.ipc,
    PidMode = c.pid_mode,
    CpusetCpus = c.cpuset_cpus,
    CpusetMems = c.cpuset_mems,
    CpuShares = c.cpu_shares,
  }
end

-- update_container's keys: key -> {checker, the API field, a conversion}.
local UPDATE = {
  memory = { check_bytes, "Memory" }, memory_swap = { function(f, k, v)
    if v == -1 then return -1 end
    return check_bytes(f, k, v)
  end, "MemorySwap" },
  memory_reservation = { check_bytes, "MemoryReservation" },
  cpus = { check_number, "NanoCpus", function(v) return math.floor(v * 1e9) end },
  cpu_shares = { check_positive_integer, "CpuShares" },
  cpu_period = { check_positive_integer, "CpuPeriod" }, cpu_quota = { check_integer, "CpuQuota" },
  cpuset_cpus = { check_cpuset, "CpusetCpus" }, cpuset_mems = { check_cpuset, "CpusetMems" },
  pids_limit = { check_integer, "PidsLimit" }, blkio_weight = { check_positive_integer, "BlkioWeight" },
  restart = { check_restart, "RestartPolicy" },
}

--- The keys update_container accepts.
M.UPDATE_KEYS = {}
for k in pairs(UPDATE) do M.UPDATE_KEYS[k] = true end

--- The /containers/{id}/update body for update_container's options, each checked like the
--- create keys of the same name ("docker.update_container: config.cpus: ...").
---@param fname string
---@param o table
---@return table
function M.update_body(fname, o)
  if type(o) ~= "table" then error(("%s: options table expected, got %s"):format(fname, typename(o)), 0) end
  local body = {}
  for k, v in pairs(o) do
    local u = type(k) == "string" and UPDATE[k]
    if not u then fail(fname, tostring(k), "unknown key") end
    local checked = u[1](fname, k, v)
    body[u[2]] = u[3] and u[3](checked) or checked
  end
  if next(body) == nil then error(fname .. ": nothing to update", 0) end
  return body
end

--- The create-container request body for a checked config.
---@param c table a table returned by M.check
---@return table body
function M.to_api(c)
  return {
    Image = c.image,
    Cmd = c.cmd,
    Entrypoint = c.entrypoint,
    Env = c.env,
    WorkingDir = c.workdir,
    User = c.user,
    Labels = c.labels,
    ExposedPorts = c.ports and c.ports.exposed or nil,
    Healthcheck = c.healthcheck,
    Tty = c.tty,
    Hostname = c.hostname,
    StopSignal = c.stop_signal,
    StopTimeout = c.stop_timeout,
    AttachStdout = true,
    AttachStderr = true,
    -- stdin given to run_container is written once and closed: the engine then closes the
    -- process's stdin too (StdinOnce), so `cat` ends.
    OpenStdin = (c.stdin_open or c.stdin ~= nil) or nil,
    AttachStdin = (c.stdin_open or c.stdin ~= nil) or nil,
    StdinOnce = (c.stdin_once or c.stdin ~= nil) or nil,
    HostConfig = host_config(c),
  }
end

return M
