-- needs: docker
-- myrmex.perf from real busybox containers doing known work: 48 MiB written into /dev/shm
-- (tmpfs pages are charged to the container's memory), CPU loops with and without a limit
-- (checked against the kernel's own cpuacct counter), an OOM kill and a restart loop.
local perf = require("myrmex.perf")
local docker = require("myrmex.docker")
local rt = require("myrmex.core.runtime")
local dt = require("tests.support.docker")

local MIB = 1048576
local d

setup(function()
  d = docker.connect()
  dt.image()
end)
teardown(function() dt.cleanup() end)

local function run(cfg)
  cfg.image = cfg.image or dt.IMAGE
  cfg.network = "none"
  cfg.labels = dt.labels
  cfg.name = dt.name("perf")
  return d:run_container(cfg)
end

-- Wait until the container printed `word` (its known work is done).
local function wait_output(c, word)
  for _ = 1, 100 do
    if d:container_logs(c).stdout:find(word, 1, true) then return end
    os.execute("sleep 0.1")
  end
  error("container never printed " .. word)
end

local function cpuacct(id)
  for _, p in ipairs({ "/sys/fs/cgroup/cpuacct/docker/" .. id .. "/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/docker/" .. id .. "/cpuacct.usage" }) do
    local f = io.open(p)
    if f then
      local v = tonumber(f:read("l"))
      f:close()
      return v
    end
  end
  local f = io.open("/sys/fs/cgroup/system.slice/docker-" .. id .. ".scope/cpu.stat")
    or io.open("/sys/fs/cgroup/docker/" .. id .. "/cpu.stat")
  if not f then return nil end
  local v = tonumber(f:read("a"):match("usage_usec (%d+)")) * 1000
  f:close()
  return v
end

describe("perf.metrics", function()
  it("sees 48 MiB written to /dev/shm as the memory peak, and the limit", function()
    local c = run({ cmd = { "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null;"
      .. " echo filled; sleep 600" }, memory = "256m", shm_size = "128m" })
    wait_output(c, "filled")
    local m = perf.metrics(c, { samples = 3 })
    assert.are.equal(3, m.samples)
    assert.are.equal(3, #m.memory.series)
    assert.is_true(m.memory.peak >= 48 * MIB, tostring(m.memory.peak))
    assert.is_true(m.memory.peak < 48 * MIB + 12 * MIB, tostring(m.memory.peak))
    assert.is_true(m.memory.avg <= m.memory.peak)
    assert.are.equal(256 * MIB, m.memory.limit)
    assert.is_nil(m.cpu.limit)
    assert.is_true(m.cpu.avg < 50, tostring(m.cpu.avg)) -- it only sleeps
    assert.are.same({ 0, 0 }, { m.network.rx_bytes, m.network.tx_bytes }) -- network "none"
    assert.is_true(m.pids.peak == 1 or m.pids.peak == 2, tostring(m.pids.peak)) -- sh (+ sleep)
    assert.is_true(m.duration >= 1.5 and m.duration < 10, tostring(m.duration))
    assert.is_false(m.oom_killed)
    assert.are.equal(0, m.restarts)
    assert.is_true(m.running)

    local advice = perf.optimize({ m })
    assert.are.equal(2, #advice)
    local mem = advice[1]
    assert.are.same({ "memory", "lower", 256 * MIB }, { mem.kind, mem.action, mem.current })
    assert.are.equal(math.ceil(m.memory.peak * 1.25 / MIB) * MIB, mem.recommended)
    assert.are.equal(m.memory.peak, mem.basis.peak)
    assert.are.equal(m.name, mem.container)
    assert.are.equal("cpu", advice[2].kind)
    assert.are.equal("set", advice[2].action)
    d:remove_container(c, { force = true })
  end)

  it("measures a CPU loop as the kernel's cpuacct counter does, within the limit", function()
    local c = run({ cmd = { "sh", "-c", "while :; do :; done" }, cpus = 0.5 })
    local u0, t0 = cpuacct(c.id), rt.monotonic()
    local m = perf.metrics(c, { samples = 4 })
    local u1, t1 = cpuacct(c.id), rt.monotonic()
    assert.are.equal(4, m.samples)
    assert.are.equal(0.5, m.cpu.limit)
    for _, v in ipairs(m.cpu.series) do assert.is_true(v <= 60, "over the 0.5 CPU limit: " .. v) end
    assert.is_true(m.cpu.avg > 0)
    assert.is_true(m.cpu.p95 <= m.cpu.peak and m.cpu.avg <= m.cpu.peak)
    if u0 then
      -- The kernel's figure over a slightly wider window (one more second at most).
      local kernel = (u1 - u0) / ((t1 - t0) * 1e9) * 100
      assert.is_true(math.abs(kernel - m.cpu.avg) < 20, ("kernel %.1f%%, perf %.1f%%"):format(kernel, m.cpu.avg))
    end
    d:remove_container(c, { force = true })
  end)

  it("sizes an unlimited CPU loop from its p95", function()
    local c = run({ cmd = { "sh", "-c", "while :; do :; done" } })
    local m = perf.metrics(c, { samples = 3 })
    assert.is_true(m.cpu.peak > 5, tostring(m.cpu.peak))
    local cpu
    for _, a in ipairs(perf.optimize({ m }, { cpu_headroom = 1.5 })) do
      if a.kind == "cpu" then cpu = a end
    end
    assert.are.equal("set", cpu.action)
    local want = math.max(math.ceil(m.cpu.p95 / 100 * 1.5 / 0.05 - 1e-9) * 0.05, 0.05)
    assert.is_true(math.abs(want - cpu.recommended) < 1e-9, cpu.recommended .. " vs " .. want)
    assert.are.equal(m.cpu.p95, cpu.basis.p95)
    d:remove_container(c, { force = true })
  end)
end)

describe("perf.optimize", function()
  it("reports an OOM kill with a larger limit, from a stopped container", function()
    local c = run({ cmd = { "dd", "if=/dev/zero", "of=/dev/shm/x", "bs=1M", "count=64" },
      memory = "32m", shm_size = "128m" })
    assert.are.equal(137, d:wait_container(c))
    local advice = perf.optimize({ c.id }, { docker = d })
    local kinds = {}
    for _, a in ipairs(advice) do kinds[#kinds + 1] = a.kind .. ":" .. a.action end
    assert.are.same({ "oom:investigate", "idle:none", "memory:raise" }, kinds)
    assert.are.equal(48 * MIB, advice[3].recommended) -- 32 MiB x 1.5
    assert.are.equal(32 * MIB, advice[3].current)
  end)

  it("reports restarts counted by the engine", function()
    local c = run({ cmd = { "sh", "-c", "exit 3" }, restart = "on-failure:2" })
    local restarts = 0
    for _ = 1, 150 do
      local info = d:inspect_container(c)
      restarts = info.RestartCount
      if restarts == 2 and not info.State.Running and not info.State.Restarting then break end
      os.execute("sleep 0.1")
    end
    assert.are.equal(2, restarts)
    local advice = perf.optimize({ c })
    assert.are.same({ "restarts", 2 }, { advice[1].kind, advice[1].current })
    assert.truthy(advice[1].message:find("restarted 2 times", 1, true))
  end)

  it("samples containers given by reference in parallel", function()
    local a = run({ cmd = { "sleep", "600" } })
    local b = run({ cmd = { "sleep", "600" }, memory = "64m" })
    local t0 = rt.monotonic()
    local advice = perf.optimize({ a.name, b }, { samples = 2 })
    local took = rt.monotonic() - t0
    local by = {}
    for _, x in ipairs(advice) do by[x.container .. ":" .. x.kind] = x end
    assert.are.equal("set", by[a.name .. ":memory"].action)
    assert.are.equal("lower", by[b.name .. ":memory"].action)
    assert.are.equal(6 * MIB, by[b.name .. ":memory"].recommended) -- a sleeping busybox: the floor
    assert.is_true(took < 8, ("took %.1f s"):format(took))
  end)

  it("raises misuse as strings naming the function", function()
    assert.has_error(function() perf.metrics(42) end, "perf.metrics: container id, name or handle expected")
    assert.has_error(function() perf.metrics("x", { sample = 2 }) end, "perf.metrics: option sample: unknown key")
    assert.has_error(function() perf.metrics("x", { interval = "1s" }) end,
      "perf.metrics: option interval: number expected, got string")
    assert.has_error(function() perf.optimize({}, { headroom = "2" }) end,
      "perf.optimize: option headroom: number expected, got string")
    assert.has_error(function() perf.metrics("x", { samples = 0 }) end,
      "perf.metrics: samples must be a positive integer")
    assert.has_error(function() perf.optimize("x") end, "perf.optimize: a list of containers or metrics expected")
  end)

  it("parses the engine's RFC 3339 times in UTC", function()
    assert.are.equal(0, perf._rfc3339("1970-01-01T00:00:00Z"))
    assert.are.equal(951782400.5, perf._rfc3339("2000-02-29T00:00:00.5Z"))
    assert.are.equal(1795887702.25, perf._rfc3339("2026-11-28T17:41:42.250000000Z"))
  end)
end)
