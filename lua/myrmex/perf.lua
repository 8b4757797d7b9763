--- Container right-sizing: resource metrics sampled from the engine's stats stream (CPU,
--- memory, network, block I/O, pids, with averages, peaks and the 95th percentile), and
--- limits advice from them with the numbers behind each. See docs/perf.md.
local log = require("myrmex.log")
local check = require("myrmex.check")

local M = {}

local MIB = 1048576

local function misuse(fname, msg)
  error("perf." .. fname .. ": " .. msg, 3)
end

-- Seconds since the epoch of an RFC 3339 UTC time with fractions ("...T17:41:42.656Z"),
-- computed without the local time zone (k8s fan-out reads pod times with it too).
local function rfc3339(s)
  local y, mo, d, h, mi, sec, frac = tostring(s or ""):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)")
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + tonumber(d) - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  return t + (frac ~= "" and tonumber("0." .. frac) or 0)
end

-- avg, peak and nearest-rank 95th percentile of a list of numbers.
local function summary(list)
  local n = #list
  if n == 0 then return { avg = 0, peak = 0, p95 = 0 } end
  local sum, peak, sorted = 0, list[1], {}
  for i, v in ipairs(list) do
    sum = sum + v
    if v > peak then peak = v end
    sorted[i] = v
  end
  table.sort(sorted)
  return { avg = sum / n, peak = peak, p95 = sorted[math.max(1, math.ceil(0.95 * n))] }
end

local function positive(v)
  v = tonumber(v)
  if v and v > 0 then return v end
  return nil
end

local function cpu_limit(hc)
  if positive(hc.NanoCpus) then return hc.NanoCpus / 1e9 end
  if positive(hc.CpuQuota) and positive(hc.CpuPeriod) then return hc.CpuQuota / hc.CpuPeriod end
  return nil
end

-- A docker container handle (userdata) or a table with an id.
local function is_handle(v)
  return (type(v) == "table" or type(v) == "userdata") and v.id ~= nil
end

local function client_for(container, opts)
  if opts.docker then return opts.docker end
  if is_handle(container) and container.client then return container.client end
  return require("myrmex.docker").connect()
end

---@class myrmex.perf.ContainerMetrics
---@field id string
---@field name string
---@field image string
---@field running boolean whether it was running when sampled
---@field samples integer samples taken (0 for a stopped container)
---@field duration number seconds between the first and the last sample
---@field cpu {avg:number, peak:number, p95:number, limit:number|nil, series:number[]} percent of one CPU; limit in CPUs
---@field memory {avg:number, peak:number, p95:number, limit:number|nil, max_usage:number|nil, series:number[]}
---@field network {rx_bytes:integer, tx_bytes:integer, rx_rate:number, tx_rate:number}
---@field block {read_bytes:integer, write_bytes:integer, read_rate:number, write_rate:number}
---@field pids {avg:number, peak:number, limit:integer|nil}
---@field restarts integer
---@field oom_killed boolean

---@class myrmex.perf.MetricsOptions
---@field samples? integer how many samples (default 5)
---@field interval? number seconds between samples (default 1; the engine emits one a second)
---@field docker? table a myrmex.docker client

local METRICS_OPTS = { samples = "number", interval = "number", docker = "table|userdata" }

-- Take samples from the stats stream. The first message of a stream has no previous CPU
-- reading, so it yields no CPU figure and is skipped.
local function sample(d, id, want, interval)
  local series, last_t = {}, nil
  d:container_stats(id, { on_stats = function(s)
    local raw = s.raw or {}
    local pre = raw.precpu_stats
    if type(pre) ~= "table" or not pre.system_cpu_usage then return true end
    local t = rfc3339(s.read) or 0
    if last_t and t - last_t < interval - 0.5 then return true end
    last_t = t
    local ms = type(raw.memory_stats) == "table" and raw.memory_stats or {}
    series[#series + 1] = { t = t, cpu = s.cpu_percent, mem = s.memory.used, pids = s.pids or 0,
      rx = s.network.rx_bytes, tx = s.network.tx_bytes, rd = s.block.read_bytes,
      wr = s.block.write_bytes, max_usage = ms.max_usage }
    return #series < want
  end })
  return series
end

--- Resource metrics of a container from `samples` readings of the engine's stats stream.
---@param container string|table id, name or myrmex.docker container handle
---@param opts? myrmex.perf.MetricsOptions
---@return myrmex.perf.ContainerMetrics
function M.metrics(container, opts)
  opts = check.options("perf", "metrics", opts, METRICS_OPTS)
  if type(container) ~= "string" and not is_handle(container) then
    misuse("metrics", "container id, name or handle expected")
  end
  local want = opts.samples or 5
  local interval = opts.interval or 1
  if math.type(want) ~= "integer" or want < 1 then misuse("metrics", "samples must be a positive integer") end
  if type(interval) ~= "number" or interval <= 0 then misuse("metrics", "interval must be a positive number") end
  local d = client_for(container, opts)
  local info = d:inspect_container(container)
  local id = info.Id
  return log.span("perf", "metrics", id:sub(1, 12), function()
    local state = info.State or {}
    local series = state.Running and sample(d, id, want, interval) or {}
    if state.Running then info = d:inspect_container(id) end
    local hc = info.HostConfig or {}
    local cpu, mem, pids, max_usage = {}, {}, {}, nil
    for i, s in ipairs(series) do
      cpu[i], mem[i], pids[i] = s.cpu, s.mem, s.pids
      if s.max_usage and (not max_usage or s.max_usage > max_usage) then max_usage = s.max_usage end
    end
    local first, last = series[1], series[#series]
    local span = (first and last) and (last.t - first.t) or 0
    local function rate(k) return span > 0 and (last[k] - first[k]) / span or 0.0 end
    local c, m, p = summary(cpu), summary(mem), summary(pids)
    c.limit, c.series = cpu_limit(hc), cpu
    m.limit, m.series, m.max_usage = positive(hc.Memory), mem, max_usage
    p.p95, p.limit = nil, positive(hc.PidsLimit)
    return {
      id = id, name = (info.Name or ""):gsub("^/", ""), image = info.Config and info.Config.Image,
      running = state.Running == true, samples = #series, duration = span,
      cpu = c, memory = m, pids = p,
      network = { rx_bytes = last and last.rx or 0, tx_bytes = last and last.tx or 0,
        rx_rate = last and rate("rx") or 0.0, tx_rate = last and rate("tx") or 0.0 },
      block = { read_bytes = last and last.rd or 0, write_bytes = last and last.wr or 0,
        read_rate = last and rate("rd") or 0.0, write_rate = last and rate("wr") or 0.0 },
      restarts = info.RestartCount or 0, oom_killed = state.OOMKilled == true,
    }
  end)
end

local function human(n)
  if n >= 1024 * MIB then return ("%.2f GiB"):format(n / (1024 * MIB)) end
  return ("%.1f MiB"):format(n / MIB)
end

local function round_up(v, step) return math.ceil(v / step - 1e-9) * step end

-- Memory advice for one container (nil when the limit fits).
local function memory_advice(m, o)
  local peak, limit = m.memory.peak, m.memory.limit
  local rec = math.max(round_up(peak * o.headroom, MIB), o.min_memory)
  local basis = { peak = peak, headroom = o.headroom, samples = m.samples, limit = limit }
  if m.oom_killed and limit then
    rec = math.max(rec, round_up(limit * 1.5, MIB))
    return { kind = "memory", action = "raise", current = limit, recommended = rec, basis = basis,
      message = ("was OOM-killed at its %s limit: raise it to %s (peak seen %s), or find what grows")
        :format(human(limit), human(rec), human(peak)) }
  end
  if not limit then
    return { kind = "memory", action = "set", current = nil, recommended = rec, basis = basis,
      message = ("no memory limit: set %s (peak %s x %.2f headroom)"):format(human(rec), human(peak), o.headroom) }
  end
  if peak > 0.9 * limit then
    rec = math.max(rec, round_up(limit * 1.25, MIB))
    return { kind = "memory", action = "raise", current = limit, recommended = rec, basis = basis,
      message = ("memory peak %s is %.0f%% of the %s limit: raise it to %s")
        :format(human(peak), peak / limit * 100, human(limit), human(rec)) }
  end
  if rec < 0.5 * limit then
    return { kind = "memory", action = "lower", current = limit, recommended = rec, basis = basis,
      saves = limit - rec,
      message = ("memory limit %s is more than twice what it needs: lower it to %s (peak %s x %.2f headroom)")
        :format(human(limit), human(rec), human(peak), o.headroom) }
  end
end

local function cpus_text(v) return ("%.2f CPUs"):format(v) end

local function cpu_advice(m, o)
  local p95, limit = m.cpu.p95, m.cpu.limit
  local need = math.max(round_up(p95 / 100 * o.cpu_headroom, 0.05), o.min_cpus)
  local basis = { p95 = p95, peak = m.cpu.peak, avg = m.cpu.avg, headroom = o.cpu_headroom,
    samples = m.samples, limit = limit }
  if not limit then
    return { kind = "cpu", action = "set", current = nil, recommended = need, basis = basis,
      message = ("no CPU limit: set %s (p95 use %.1f%% of a CPU x %.2f headroom)")
        :format(cpus_text(need), p95, o.cpu_headroom) }
  end
  if p95 / 100 >= 0.9 * limit then
    local rec = math.max(need, round_up(limit * 1.5, 0.05))
    return { kind = "cpu", action = "raise", current = limit, recommended = rec, basis = basis,
      message = ("CPU p95 %.1f%% is at the %s limit (throttled): raise it to %s")
        :format(p95, cpus_text(limit), cpus_text(rec)) }
  end
  if need < 0.5 * limit then
    return { kind = "cpu", action = "lower", current = limit, recommended = need, basis = basis,
      message = ("CPU limit %s is more than twice the p95 use (%.1f%%): lower it to %s")
        :format(cpus_text(limit), p95, cpus_text(need)) }
  end
end

---@class myrmex.perf.OptimizeOptions
---@field headroom? number memory limit = peak x headroom (default 1.25)
---@field cpu_headroom? number CPU limit = p95 x cpu_headroom (default 1.25)
---@field min_memory? integer smallest memory limit to recommend (default 6 MiB, Docker's minimum)
---@field min_cpus? number smallest CPU limit to recommend (default 0.05)
---@field samples? integer for containers given by reference
---@field interval? number
---@field docker? table

local OPTIMIZE_OPTS = { headroom = "number", cpu_headroom = "number", min_memory = "number",
  min_cpus = "number", samples = "number", interval = "number", docker = "table|userdata" }

--- Right-sizing advice for containers: metrics tables from perf.metrics, or containers (ids,
--- names, handles) sampled here in parallel. Returns a list of
--- `{container=, id=, kind=, action=, current=, recommended=, message=, basis=}`, where kind is
--- memory, cpu, restarts, oom or idle, and basis holds the numbers behind it.
---@param containers (myrmex.perf.ContainerMetrics|string|table)[]
---@param opts? myrmex.perf.OptimizeOptions
---@return table[]
function M.optimize(containers, opts)
  opts = check.options("perf", "optimize", opts, OPTIMIZE_OPTS)
  if type(containers) ~= "table" then misuse("optimize", "a list of containers or metrics expected") end
  local o = { headroom = opts.headroom or 1.25, cpu_headroom = opts.cpu_headroom or 1.25,
    min_memory = opts.min_memory or 6 * MIB, min_cpus = opts.min_cpus or 0.05 }
  local metrics, fns = {}, {}
  for i, c in ipairs(containers) do
    if type(c) == "table" and c.cpu and c.memory then
      metrics[i] = c
    else
      fns[#fns + 1] = function()
        metrics[i] = M.metrics(c, { samples = opts.samples, interval = opts.interval, docker = opts.docker })
      end
    end
  end
  if #fns > 0 then require("myrmex.parallel")(fns) end
  local out = {}
  for _, m in ipairs(metrics) do
    local function add(a)
      if a then
        a.container, a.id = m.name, m.id
        out[#out + 1] = a
      end
    end
    if m.oom_killed then
      add({ kind = "oom", action = "investigate", current = m.memory.limit, basis = { limit = m.memory.limit },
        message = "was killed by the kernel for running out of memory" })
    end
    if m.restarts > 0 then
      add({ kind = "restarts", action = "investigate", current = m.restarts, basis = { restarts = m.restarts },
        message = ("restarted %d times: read its logs and health check before resizing"):format(m.restarts) })
    end
    if m.samples == 0 then
      add({ kind = "idle", action = "none", basis = { samples = 0 },
        message = "not running: no samples to size it from" })
      if m.oom_killed then add(memory_advice(m, o)) end
    else
      add(memory_advice(m, o))
      add(cpu_advice(m, o))
    end
  end
  return out
end

M._rfc3339 = rfc3339

return M
