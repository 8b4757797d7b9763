-- needs: docker
-- Containers against the real engine (busybox FROM scratch, network none): config checking,
-- run, lifecycle, logs (50 MB, follow, TTY), exec, stats, copy, <close> cleanup, batches.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local archive = require("myrmex.core.archive")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local d, IMAGE
setup(function()
  d = docker.connect()
  IMAGE = dt.image()
end)
teardown(function() dt.cleanup() end)

local cfg = dt.config

local function exists(id)
  local ok, err = pcall(d.inspect_container, d, id)
  if ok then return true end
  assert(errors.is(err, "NotFound"), tostring(err))
  return false
end

describe("container config", function()
  it("rejects unknown keys and wrong types, naming the key", function()
    local cases = {
      { { image = IMAGE, imag = "x" }, "docker.create_container: config.imag: unknown key" },
      { { image = IMAGE, cmd = 42 }, "docker.create_container: config.cmd: expected list of strings, got integer" },
      { { image = IMAGE, cmd = { "a", 1 } }, "docker.create_container: config.cmd[2]: expected string, got integer" },
      { { image = IMAGE, memory = "lots" }, 'docker.create_container: config.memory: expected bytes (number or "256m"), got lots' },
      { { image = IMAGE, privileged = "yes" }, "docker.create_container: config.privileged: expected boolean, got string" },
      { { image = IMAGE, restart = { name = "sometimes" } }, "docker.create_container: config.restart.name: unknown policy sometimes" },
      { { image = IMAGE, mounts = { { target = "/x", sorce = "/y" } } }, "docker.create_container: config.mounts[1].sorce: unknown key" },
      { { image = IMAGE, healthcheck = { tset = "true" } }, "docker.create_container: config.healthcheck.tset: unknown key" },
      { { image = IMAGE, wait = true }, "docker.create_container: config.wait: unknown key" },
      { { cmd = { "true" } }, "docker.create_container: config.image: required" },
    }
    for _, case in ipairs(cases) do
      assert.has_error(function() d:create_container(case[1]) end, case[2])
    end
    assert.has_error(function() d:run_container { image = IMAGE, wiat = true } end,
      "docker.run_container: config.wiat: unknown key")
  end)

  it("translates every key into what the engine stores", function()
    local dir = dt.tmpdir { ["data.txt"] = "bound" }
    local vol = d:create_volume { name = dt.name("vol"), labels = dt.labels }
    local c <close> = d:create_container(cfg {
      name = dt.name("cfg"), cmd = { "sleep", "1" }, entrypoint = { "/bin/env" },
      env = { B = "2", A = "1" }, workdir = "/tmp", user = "nobody",
      labels = { ["myrmex.test"] = dt.run_id, role = "cfg" },
      ports = { "127.0.0.1:18080:80", ["81/udp"] = 18081 }, network = "host",
      mounts = { { type = "bind", source = dir, target = "/data", read_only = true },
        { type = "volume", source = vol.Name, target = "/vol" }, { type = "tmpfs", target = "/scratch" } },
      volumes = { dir .. ":/data2:ro" }, restart = "on-failure:3", memory = "64m", cpus = 0.5,
      pids = 64, healthcheck = { test = "true", interval = 2, retries = 3 }, read_only = true,
      cap_add = { "NET_ADMIN" }, cap_drop = { "MKNOD" }, privileged = false, init = true,
      hostname = "mx", stop_signal = "SIGINT", stop_timeout = 3, extra_hosts = { "a.test:127.0.0.1" },
    })
    local i = d:inspect_container(c)
    local hc, cc = i.HostConfig, i.Config
    assert.are.same({ "A=1", "B=2" }, { cc.Env[1], cc.Env[2] })
    assert.are.same({ "/bin/env" }, cc.Entrypoint)
    assert.are.equal("/tmp", cc.WorkingDir)
    assert.are.equal("nobody", cc.User)
    assert.are.equal("cfg", cc.Labels.role)
    assert.are.equal("127.0.0.1", hc.PortBindings["80/tcp"][1].HostIp)
    assert.are.equal("18081", hc.PortBindings["81/udp"][1].HostPort)
    assert.are.equal("host", hc.NetworkMode)
    assert.are.equal(3, #hc.Mounts)
    assert.are.same({ dir .. ":/data2:ro" }, hc.Binds)
    assert.are.same({ Name = "on-failure", MaximumRetryCount = 3 }, hc.RestartPolicy)
    assert.are.equal(64 * 1024 * 1024, hc.Memory)
    assert.are.equal(500000000, hc.NanoCpus)
    assert.are.equal(64, hc.PidsLimit)
    assert.are.same({ "CMD-SHELL", "true" }, cc.Healthcheck.Test)
    assert.are.equal(2000000000, cc.Healthcheck.Interval)
    assert.is_true(hc.ReadonlyRootfs)
    assert.are.same({ "NET_ADMIN" }, hc.CapAdd)
    assert.are.same({ "MKNOD" }, hc.CapDrop)
    assert.is_true(hc.Init)
    assert.are.equal("mx", cc.Hostname)
    assert.are.equal("SIGINT", cc.StopSignal)
    assert.are.same({ "a.test:127.0.0.1" }, hc.ExtraHosts)
    c:remove()
    d:remove_volume(vol.Name)
    sh.run({ "rm", "-rf", dir })
  end)
end)

describe("run_container", function()
  it("waits and returns exit code, stdout and stderr separately", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "echo out; echo err >&2; exit 3" }, wait = true })
    assert.are.equal(3, c.exit_code)
    assert.are.equal("out\n", c.stdout)
    assert.are.equal("err\n", c.stderr)
  end)

  it("raises NotFound for a missing image and Conflict for a name in use", function()
    local err = raised(d.run_container, d, cfg { image = "mxt-missing-image:1", wait = true })
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    local name = dt.name("dup")
    local c <close> = d:run_container(cfg { name = name, cmd = { "sleep", "5" } })
    err = raised(d.run_container, d, cfg { name = name, cmd = { "true" } })
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
    assert.are.equal(409, err.status)
  end)

  it("removes a container whose start failed, and honours remove/auto_remove with wait", function()
    local name = dt.name("nostart")
    local err = raised(d.run_container, d, cfg { name = name, cmd = { "/no/such/program" } })
    assert.is_true(errors.is(err), tostring(err))
    assert.is_false(exists(name))
    local c = d:run_container(cfg { cmd = { "echo", "bye" }, wait = true, auto_remove = true })
    assert.are.equal("bye\n", c.stdout)
    assert.is_false(exists(c.id))
  end)

  it("kills and removes a container that outlives its timeout", function()
    local name = dt.name("slow")
    local err = raised(d.run_container, d, cfg { name = name, cmd = { "sleep", "30" }, wait = true, timeout = 0.5 })
    assert.is_true(errors.is(err, "Timeout"), tostring(err))
    assert.is_false(exists(name))
  end)

  it("removes the container at the end of a <close> scope, even after an error", function()
    local id
    local ok, err = pcall(function()
      local c <close> = d:run_container(cfg { cmd = { "sleep", "30" } })
      id = c.id
      assert.is_true(exists(id))
      error("recipe failed")
    end)
    assert.is_false(ok)
    assert.matches("recipe failed", err)
    assert.is_false(exists(id))
  end)

  it("closes a handle removed inside its scope without complaint, and a nameless one names its id", function()
    local id
    do
      local c <close> = d:create_container(cfg { cmd = { "true" } })
      id = c.id
      assert.are.equal("userdata", type(c))
      assert.are.equal(("docker.container(%s)"):format(id:sub(1, 12)), tostring(c))
      c:remove()
      assert.is_true(c.removed)
    end -- the scope's <close> on a removed handle: no request, no error
    assert.is_false(exists(id))
    local kept
    do
      local c <close> = d:create_container(cfg { cmd = { "true" } })
      c.keep = true
      kept = c.id
    end
    assert.is_true(exists(kept))
    d:remove_container(kept, { force = true })
  end)

  it("hands out userdata handles: fields, methods, tostring, pairs, and a harmless second close", function()
    local name = dt.name("handle")
    local c = d:run_container(cfg { name = name, cmd = { "sleep", "30" } })
    assert.are.equal("userdata", type(c))
    assert.matches("^%x+$", c.id)
    assert.are.equal(name, c.name)
    assert.are.equal(("docker.container(%s %s)"):format(c.id:sub(1, 12), name), tostring(c))
    c.note = "kept"
    local seen = {}
    for k, v in pairs(c) do seen[k] = v end
    assert.are.equal("kept", seen.note)
    assert.are.equal(c.id, seen.id)
    assert.are.equal(c.id, c:inspect().Id)
    local close = getmetatable(c).__close
    close(c)
    assert.is_false(exists(c.id))
    close(c) -- removed already: nothing raised, nothing logged as a failure
    assert.has_error(function() c:inspect() end,
      ("docker.inspect_container: docker.container(%s %s) was removed; the handle is closed"):format(c.id:sub(1, 12), name))
    assert.has_error(function() d:start_container(c) end,
      ("docker.start_container: docker.container(%s %s) was removed; the handle is closed"):format(c.id:sub(1, 12), name))
    assert.has_error(function() d:start_container(42) end,
      "docker.start_container: container id, name or handle expected, got number")
  end)
end)

describe("container lifecycle", function()
  it("starts, pauses, tops, stops, restarts, kills, renames, waits, lists and removes", function()
    local c <close> = d:create_container(cfg { name = dt.name("life"),
      cmd = { "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done" } })
    assert.are.equal("created", c:inspect().State.Status)
    c:start()
    c:start() -- already started: 304 is fine
    local top = c:top()
    assert.are.equal("PID", top.Titles[1] == "UID" and "PID" or top.Titles[2])
    c:pause()
    assert.is_true(c:inspect().State.Paused)
    c:unpause()
    local listed = d:list_containers { filters = { label = { dt.label_filter }, status = { "running" } } }
    assert.are.equal(c.id, listed[1].Id)
    c:stop { timeout = 5 }
    assert.are.equal(42, c:wait())
    c:restart { timeout = 1 }
    assert.is_true(c:inspect().State.Running)
    c:kill { signal = "SIGKILL" }
    assert.are.equal(137, c:wait())
    local new = dt.name("renamed")
    c:rename(new)
    assert.are.equal("/" .. new, d:inspect_container(new).Name)
    local all = d:list_containers { all = true, filters = { name = { new } } }
    assert.are.equal(1, #all)
    local stopped = d:list_containers { filters = { name = { new } } }
    assert.are.equal(0, #stopped)
    c:remove { force = true, volumes = true }
    assert.is_false(exists(c.id))
    assert.matches("was removed; the handle is closed", raised(c.start, c))
    local err = raised(d.start_container, d, c.id) -- by id: the engine's answer
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)

  it("looks up existing containers by name", function()
    local name = dt.name("lookup")
    local c <close> = d:run_container(cfg { name = name, cmd = { "sleep", "10" } })
    local same = d:container(name)
    assert.are.equal(c.id, same.id)
    assert.are.equal(name, same.name)
    local err = raised(d.container, d, "mxt-nope-" .. dt.run_id)
    assert.is_true(errors.is(err, "NotFound"))
  end)
end)

describe("container logs", function()
  it("decodes the multiplexed stream with tail, timestamps and since", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; done" }, wait = true })
    local all = c:logs()
    assert.are.equal("o1\no2\no3\no4\no5\n", all.stdout)
    assert.are.equal("e1\ne2\ne3\ne4\ne5\n", all.stderr)
    local only_err = c:logs { stdout = false }
    assert.are.equal("", only_err.stdout)
    assert.are.equal("e1\ne2\ne3\ne4\ne5\n", only_err.stderr)
    -- tail counts the lines of both streams in the engine's order, so use stdout alone
    local o <close> = d:run_container(cfg { cmd = { "sh", "-c", "for i in 1 2 3 4 5; do echo o$i; done" }, wait = true })
    assert.are.equal("o4\no5\n", o:logs { tail = 2 }.stdout)
    local ts = o:logs { timestamps = true, tail = 1 }
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z o5\n$", ts.stdout)
    local later = c:logs { since = os.time() + 60 }
    assert.are.equal("", later.stdout)
  end)

  it("passes a TTY stream through", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "echo tty-out; echo tty-err >&2" }, tty = true, wait = true })
    assert.matches("tty%-out\r?\n", c.stdout)
    assert.matches("tty%-err", c.stdout)
    assert.are.equal("", c.stderr)
    assert.matches("tty%-out", d:container_logs(c.id).stdout) -- a plain id: TTY found by inspect
  end)

  it("follows until the container exits", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done" } })
    local got = {}
    local t0 = os.time()
    c:logs { follow = true, on_stdout = function(s) got[#got + 1] = s end }
    assert.are.equal("1\n2\n3\n", table.concat(got))
    assert.is_true(os.time() - t0 < 10)
    assert.is_false(c:inspect().State.Running)
  end)

  it("streams 50 MB of output with flat memory", function()
    local size = 50 * 1024 * 1024
    -- A daemon.json may rotate json-file logs below 50 MB (this test bed's: max-size 10m,
    -- max-file 3): one file of 100 MB keeps them whole.
    local c <close> = d:run_container(cfg { wait = true, stdout = false, cmd = { "sh", "-c",
      ("yes $(head -c 1023 /dev/zero | tr '\\0' x) | head -c %d; echo done >&2"):format(size) },
      log_config = { type = "json-file", options = { ["max-size"] = "100m", ["max-file"] = "1" } } })
    assert.are.equal(0, c.exit_code)
    collectgarbage()
    local before = dt.peak_rss_kib()
    local total, lines = 0, 0
    c:logs { on_stdout = function(s)
      total = total + #s
      local _, n = s:gsub("\n", "")
      lines = lines + n
    end }
    local grown = dt.peak_rss_kib() - before
    assert.are.equal(size, total)
    assert.are.equal(size // 1024, lines)
    if not dt.sanitized() then
      assert.is_true(grown < 16 * 1024, ("peak RSS grew by %d KiB"):format(grown))
    end
  end)
end)

describe("exec", function()
  local c
  setup(function() c = d:run_container(cfg { cmd = { "sleep", "300" } }) end)
  teardown(function() c:remove { force = true } end)

  it("returns exit codes, stdout and stderr, with env, workdir and user", function()
    local r = c:exec { cmd = { "sh", "-c", "echo $GREETING; pwd; id -u; echo bad >&2; exit 5" },
      env = { GREETING = "hi" }, workdir = "/tmp", user = "nobody" }
    assert.are.equal(5, r.exit_code)
    assert.are.equal("hi\n/tmp\n65534\n", r.stdout)
    assert.are.equal("bad\n", r.stderr)
    assert.are.equal(0, c:exec { cmd = { "true" } }.exit_code)
    assert.are.equal(127, c:exec { cmd = { "sh", "-c", "no-such-command" } }.exit_code)
  end)

  it("keeps the exit code in streaming mode", function()
    local out, err = {}, {}
    local r = c:exec { cmd = { "sh", "-c", "for i in 1 2 3; do echo $i; echo x$i >&2; done; exit 9" },
      on_stdout = function(s) out[#out + 1] = s end, on_stderr = function(s) err[#err + 1] = s end }
    assert.are.equal(9, r.exit_code)
    assert.are.equal("1\n2\n3\n", table.concat(out))
    assert.are.equal("x1\nx2\nx3\n", table.concat(err))
    assert.are.equal("", r.stdout)
  end)

  it("raises Conflict in a stopped container and NotFound in a missing one", function()
    local stopped <close> = d:run_container(cfg { cmd = { "true" }, wait = true })
    local e = raised(stopped.exec, stopped, { cmd = { "true" } })
    assert.is_true(errors.is(e, "Conflict"), tostring(e))
    e = raised(d.exec, d, "mxt-gone-" .. dt.run_id, { cmd = { "true" } })
    assert.is_true(errors.is(e, "NotFound"), tostring(e))
  end)
end)

describe("stats", function()
  it("derives CPU, memory, network and block figures, one-shot and streamed", function()
    local c <close> = d:run_container(cfg { memory = "32m",
      cmd = { "sh", "-c", "while true; do :; done" } })
    local s = c:stats()
    assert.are.equal(32 * 1024 * 1024, s.memory.limit)
    assert.is_true(s.memory.used > 0 and s.memory.percent > 0 and s.memory.percent < 100)
    assert.is_true(s.cpu_percent > 1, "a busy loop should show CPU, got " .. s.cpu_percent)
    assert.is_number(s.network.rx_bytes)
    assert.is_number(s.block.read_bytes)
    local n = 0
    c:stats { on_stats = function(st)
      n = n + 1
      assert.are.equal(32 * 1024 * 1024, st.memory.limit)
      return n < 2
    end }
    assert.are.equal(2, n)
  end)
end)

describe("copy", function()
  it("copies a directory, a file and a tar in, and copies out to a directory or a reader", function()
    local c <close> = d:run_container(cfg { cmd = { "sleep", "60" } })
    local dir = dt.tmpdir { ["a.txt"] = "A", ["sub/b.txt"] = "B", ["run.sh"] = { data = "echo", mode = 493 } }
    c:copy_to("/tmp", dir)
    c:copy_to("/root", dir .. "/a.txt")
    local w = archive.writer(nil)
    w:add { path = "gen/c.txt", data = "C" }
    c:copy_to("/", w:source())
    local r = c:exec { cmd = { "sh", "-c", "cat /tmp/a.txt /tmp/sub/b.txt /root/a.txt /gen/c.txt; stat -c %a /tmp/run.sh" } }
    assert.are.equal("ABAC755\n", r.stdout)
    local out = dt.tmpdir {}
    local n = c:copy_from("/tmp/sub", { to = out })
    assert.are.equal(2, n)
    local f = assert(io.open(out .. "/sub/b.txt"))
    assert.are.equal("B", f:read("a"))
    f:close()
    local reader <close> = c:copy_from("/gen/c.txt")
    local seen = {}
    for e in reader:entries() do seen[e.path] = reader:read_all() end
    assert.are.same({ ["c.txt"] = "C" }, seen)
    local e = raised(c.copy_from, c, "/no/such/path")
    assert.is_true(errors.is(e, "NotFound"), tostring(e))
    e = raised(c.copy_to, c, "/no/such/dir", dir)
    assert.is_true(errors.is(e, "NotFound"), tostring(e))
    sh.run({ "rm", "-rf", dir, out })
  end)
end)

describe("batches", function()
  it("runs many containers concurrently and manages them together", function()
    local configs = {}
    for i = 1, 10 do configs[i] = cfg { name = dt.name("batch"), cmd = { "sleep", "60" } } end
    local cs = d:run_containers(configs, { max = 4 })
    assert.are.equal(10, #cs)
    for i, c in ipairs(cs) do assert.are.equal(configs[i].name, c.name) end
    local running = d:list_containers { filters = { label = { dt.label_filter }, name = { "batch" } } }
    assert.are.equal(10, #running)
    d:manage_containers(cs, "kill", { max = 4 })
    d:manage_containers(cs, "remove", { max = 4 })
    assert.are.equal(0, #d:list_containers { all = true, filters = { label = { dt.label_filter }, name = { "batch" } } })
  end)

  it("cleans up the containers of a batch that partly failed", function()
    local name = dt.name("partial")
    local configs = { cfg { name = name .. "-a", cmd = { "sleep", "60" } },
      cfg { name = name .. "-b", image = "mxt-missing-image:1" },
      cfg { name = name .. "-c", cmd = { "sleep", "60" } } }
    local err = raised(d.run_containers, d, configs, { max = 3 })
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.are.equal(0, #d:list_containers { all = true, filters = { name = { name } } })
  end)
end)

describe("libraries", function()
  it("running and listing containers does not open libarchive (only builds and copies need it)", function()
    local src = os.tmpname()
    assert(io.open(src, "w")):close()
    local r = sh.myrmex({ "-e", ([[
      local d = require("myrmex.docker").connect()
      local c <close> = d:run_container { image = %q, cmd = { "true" }, network = "none", wait = true,
        labels = { ["myrmex.test"] = %q } }
      d:list_containers { all = true }
      print("libarchive:" .. tostring(io.open("/proc/self/maps"):read("a"):find("libarchive", 1, true) ~= nil))
      c:copy_to("/", %q)
      print("after copy:" .. tostring(io.open("/proc/self/maps"):read("a"):find("libarchive", 1, true) ~= nil))
    ]]):format(IMAGE, dt.run_id, src) })
    os.remove(src)
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("libarchive:false\nafter copy:true", r.stdout)
  end)
end)
