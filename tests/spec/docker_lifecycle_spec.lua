-- needs: docker
-- Containers after they run, against the real engine: update (live limits), commit, export,
-- changes (diff), resize, container prune (by this run's label only), and the config keys
-- for ulimits, devices, GPU requests, log_config, ipc/pid modes, cpusets and shares, mount
-- propagation and tmpfs size.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local archive = require("myrmex.core.archive")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local d, IMAGE
setup(function()
  d = docker.connect()
  IMAGE = dt.image()
end)
teardown(function() dt.cleanup() end)

local cfg = dt.config

describe("update_container", function()
  it("changes memory, cpus, pids and restart on a running container", function()
    local c <close> = d:run_container(cfg { cmd = { "sleep", "60" } })
    local warnings = d:update_container(c, { memory = "64m", memory_swap = -1, cpus = 0.5, pids_limit = 50,
      restart = "on-failure:2", cpu_shares = 256 })
    assert.is_table(warnings)
    local hc = d:inspect_container(c).HostConfig
    assert.are.equal(64 * 1024 * 1024, hc.Memory)
    assert.are.equal(500000000, hc.NanoCpus)
    assert.are.equal(50, hc.PidsLimit)
    assert.are.equal(256, hc.CpuShares)
    assert.are.same({ Name = "on-failure", MaximumRetryCount = 2 }, hc.RestartPolicy)
    -- the process sees the new pids limit in its cgroup
    local r = c:exec { cmd = { "sh", "-c", "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max" } }
    assert.are.equal("50", r.stdout:match("%d+"))
    c:update { pids_limit = 60 }
    assert.are.equal(60, d:inspect_container(c).HostConfig.PidsLimit)
  end)

  it("checks its keys like the create keys", function()
    assert.has_error(function() d:update_container("x", { cpus = -1 }) end,
      "docker.update_container: config.cpus: expected a non-negative number, got -1")
    assert.has_error(function() d:update_container("x", { memroy = "1g" }) end,
      "docker.update_container: config.memroy: unknown key")
    assert.has_error(function() d:update_container("x", {}) end, "docker.update_container: nothing to update")
    local err = select(2, pcall(d.update_container, d, "mxt-no-such-" .. dt.run_id, { pids_limit = 5 }))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)
end)

describe("commit, export and changes", function()
  it("lists what changed, commits it as an image with changes applied, and exports the filesystem", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "echo made > /tmp/new.txt; rm /etc/group; echo x >> /etc/passwd" },
      wait = true })
    assert.are.equal(0, c.exit_code)
    local changes = d:container_changes(c)
    local by_path = {}
    for _, ch in ipairs(changes) do by_path[ch.path] = ch.kind end
    assert.are.equal("added", by_path["/tmp/new.txt"])
    assert.are.equal("deleted", by_path["/etc/group"])
    assert.are.equal("changed", by_path["/etc/passwd"])
    assert.are.same({}, d:container_changes(d:create_container(cfg { cmd = { "true" } })))

    local tag = "mxt-commit-" .. dt.run_id .. ":1"
    local id = c:commit { tag = tag, message = "by the spec", author = "myrmex",
      changes = { "ENV COMMITTED=yes", 'LABEL myrmex.test="' .. dt.run_id .. '"', 'CMD ["cat", "/tmp/new.txt"]' } }
    assert.matches("^sha256:%x+$", id)
    local img = d:inspect_image(tag)
    assert.are.equal(id, img.Id)
    assert.are.equal("by the spec", img.Comment)
    assert.are.equal("myrmex", img.Author)
    local run <close> = d:run_container(cfg { image = tag, wait = true, cmd = { "sh", "-c", "echo $COMMITTED; cat /tmp/new.txt" } })
    assert.are.equal("yes\nmade\n", run.stdout)
    d:remove_image(tag, { force = true })

    local path = os.tmpname()
    local n = d:export_container(c, path)
    assert.is_true(n > 500000, "export of busybox too small: " .. n)
    local r <close> = archive.open(path)
    local found = {}
    for e in r:entries() do
      if e.path == "tmp/new.txt" then found.new = r:read_all() end
      if e.path == "bin/busybox" then found.busybox = e.size end
      if e.path == "etc/group" then found.group = true end
    end
    assert.are.equal("made\n", found.new)
    assert.is_true(found.busybox > 0)
    assert.is_nil(found.group)
    os.remove(path)
    -- a sink gets the same bytes
    local total = 0
    assert.are.equal(n, c:export(function(chunk) total = total + #chunk end))
    assert.are.equal(n, total)
  end)

  it("keeps no partial file and the engine's message when the container is missing", function()
    local path = os.tmpname()
    os.remove(path)
    local err = select(2, pcall(d.export_container, d, "mxt-no-such-" .. dt.run_id, path))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.truthy(tostring(err):find("mxt-no-such-", 1, true), tostring(err))
    assert.is_nil(io.open(path))
    assert.is_nil(io.open(path .. ".part"))
    assert.has_error(function() d:export_container("x", 5) end,
      "docker.export_container: a file path or a function(chunk) expected, got number")
    assert.has_error(function() d:commit_container("x", { changes = { 1 } }) end,
      "docker.commit_container: changes[1]: expected string, got number")
  end)
end)

describe("resize", function()
  it("sets the TTY size a process in the container sees", function()
    local c <close> = d:run_container(cfg { cmd = { "sleep", "60" }, tty = true })
    d:resize(c, { h = 33, w = 111 })
    local r = c:exec { cmd = { "stty", "-F", "/dev/pts/0", "size" } }
    assert.are.equal("33 111", (r.stdout:gsub("%s+$", "")))
    c:resize { h = 40, w = 100 }
    assert.are.equal("40 100", (c:exec { cmd = { "stty", "-F", "/dev/pts/0", "size" } }.stdout:gsub("%s+$", "")))
    assert.has_error(function() d:resize(c, { h = 0, w = 10 }) end, "docker.resize: h: expected a positive integer, got 0")
  end)
end)

describe("prune_containers", function()
  it("removes the stopped containers its label filter selects and nothing else", function()
    local mine = { ["myrmex.test"] = dt.run_id, ["mxt.prune"] = dt.run_id }
    local stopped = d:create_container(cfg { cmd = { "true" }, labels = mine })
    local running = d:run_container(cfg { cmd = { "sleep", "60" }, labels = mine })
    local other = d:create_container(cfg { cmd = { "true" } }) -- without the prune label
    local r = d:prune_containers { filters = { label = { "mxt.prune=" .. dt.run_id } } }
    assert.are.same({ stopped.id }, r.deleted)
    assert.is_number(r.space_reclaimed)
    assert.is_true(select(1, pcall(d.inspect_container, d, running)))
    assert.is_true(select(1, pcall(d.inspect_container, d, other)))
    local again = d:prune_containers { filters = { label = { "mxt.prune=" .. dt.run_id } } }
    assert.are.same({}, again.deleted)
    running:remove { force = true }
    other:remove()
  end)
end)

describe("config keys", function()
  it("sends ulimits, devices, GPU requests, log_config, ipc, pid, cpusets and shares, propagation, tmpfs size", function()
    local dir = dt.tmpdir { ["f"] = "x" }
    local c <close> = d:create_container(cfg {
      cmd = { "sleep", "1" },
      ulimits = { nofile = { soft = 1024, hard = 2048 }, nproc = 500 },
      devices = { "/dev/null:/dev/mxnull:rw", { host = "/dev/zero" } },
      gpus = { count = 1, capabilities = { "gpu", "compute" } },
      log_config = { type = "json-file", options = { ["max-size"] = "1m", ["max-file"] = 2 } },
      ipc = "shareable", pid_mode = "host", cpuset_cpus = "0", cpuset_mems = "0", cpu_shares = 512,
      mounts = { { type = "bind", source = dir, target = "/data", propagation = "rslave" },
        { type = "tmpfs", target = "/scratch", tmpfs_size = "16m", tmpfs_mode = 448 } },
    })
    local hc = d:inspect_container(c).HostConfig
    table.sort(hc.Ulimits, function(a, b) return a.Name < b.Name end)
    assert.are.same({ { Name = "nofile", Soft = 1024, Hard = 2048 }, { Name = "nproc", Soft = 500, Hard = 500 } },
      hc.Ulimits)
    assert.are.same({ PathOnHost = "/dev/null", PathInContainer = "/dev/mxnull", CgroupPermissions = "rw" }, hc.Devices[1])
    assert.are.same({ PathOnHost = "/dev/zero", PathInContainer = "/dev/zero", CgroupPermissions = "rwm" }, hc.Devices[2])
    assert.are.equal(1, hc.DeviceRequests[1].Count)
    assert.are.same({ { "gpu", "compute" } }, hc.DeviceRequests[1].Capabilities)
    assert.are.same({ Type = "json-file", Config = { ["max-size"] = "1m", ["max-file"] = "2" } }, hc.LogConfig)
    assert.are.equal("shareable", hc.IpcMode)
    assert.are.equal("host", hc.PidMode)
    assert.are.equal("0", hc.CpusetCpus)
    assert.are.equal("0", hc.CpusetMems)
    assert.are.equal(512, hc.CpuShares)
    assert.are.equal("rslave", hc.Mounts[1].BindOptions.Propagation)
    assert.are.same({ SizeBytes = 16 * 1024 * 1024, Mode = 448 }, hc.Mounts[2].TmpfsOptions)
    sh.run({ "rm", "-rf", dir })
  end)

  it("applies them: the process sees its ulimits, device and tmpfs size", function()
    local c <close> = d:run_container(cfg { wait = true,
      cmd = { "sh", "-c", "ulimit -n; ulimit -Hn; ls -l /dev/mxnull | cut -c1; df -k /scratch | tail -1" },
      ulimits = { nofile = { soft = 1000, hard = 1500 } }, devices = { "/dev/null:/dev/mxnull" },
      mounts = { { type = "tmpfs", target = "/scratch", tmpfs_size = "8m" } },
      log_config = { type = "json-file" } })
    assert.are.equal(0, c.exit_code, c.stderr)
    local soft, hard, kind, size = c.stdout:match("^(%d+)\n(%d+)\n(%a)\n%S+%s+(%d+)")
    assert.are.equal("1000", soft)
    assert.are.equal("1500", hard)
    assert.are.equal("c", kind)
    assert.are.equal("8192", size)
  end)

  it("rejects bad values naming the key and showing the value", function()
    local cases = {
      { { ulimits = { nofile = "many" } }, "config.ulimits.nofile: expected integer or {soft=, hard=}, got string" },
      { { ulimits = { nofile = { soft = 10, hard = 5 } } }, "config.ulimits.nofile: soft 10 above hard 5" },
      { { ulimits = { nofile = { sfot = 1 } } }, "config.ulimits.nofile.sfot: unknown key" },
      { { devices = { "/dev/null:/dev/x:rwx" } }, "config.devices[1]: permissions are letters of rwm, got rwx" },
      { { devices = { { hots = "/dev/null" } } }, "config.devices[1].hots: unknown key" },
      { { gpus = -2 }, 'config.gpus: expected "all", a count or a table, got -2' },
      { { gpus = { count = 1, device_ids = { "0" } } }, "config.gpus: count and device_ids exclude each other" },
      { { log_config = { driver = "x" } }, "config.log_config.driver: unknown key" },
      { { ipc = "hots" }, "config.ipc: expected host, none, private, shareable or container:NAME, got hots" },
      { { pid_mode = "private" }, "config.pid_mode: expected host or container:NAME, got private" },
      { { cpuset_cpus = "a-b" }, 'config.cpuset_cpus: expected a list like "0-3" or "0,2", got a-b' },
      { { cpu_shares = -5 }, "config.cpu_shares: expected a non-negative integer, got -5" },
      { { cpus = -1 }, "config.cpus: expected a non-negative number, got -1" },
      { { mounts = { { type = "volume", target = "/x", propagation = "rshared" } } },
        "config.mounts[1].propagation: only a bind mount has a propagation" },
      { { mounts = { { type = "bind", source = "/tmp", target = "/x", propagation = "sideways" } } },
        "config.mounts[1].propagation: expected private, rprivate, shared, rshared, slave or rslave, got sideways" },
      { { mounts = { { type = "tmpfs", target = "/x", tmpfs_size = "big" } } },
        'config.mounts[1].tmpfs_size: expected bytes (number or "256m"), got big' },
      { { stdin_open = "yes" }, "config.stdin_open: expected boolean, got string" },
    }
    for _, case in ipairs(cases) do
      local t = case[1]
      t.image = IMAGE
      assert.has_error(function() d:create_container(t) end, "docker.create_container: " .. case[2])
    end
  end)
end)

describe("dry run", function()
  local plan = require("myrmex.plan")
  before_each(function() plan.reset() plan.set_active(true) end)
  after_each(function() plan.set_active(false) plan.reset() end)

  it("records update, commit, resize, the prunes and engine pulls and pushes, changing nothing", function()
    plan.set_active(false)
    local c <close> = d:run_container(cfg { cmd = { "sleep", "60" } })
    plan.set_active(true)
    local before = d:inspect_container(c).HostConfig.PidsLimit
    local images = #d:list_images()
    assert.is_true(d:update_container(c, { pids_limit = 7 }).planned)
    assert.is_true(d:commit_container(c, { tag = "mxt-planned-" .. dt.run_id .. ":1" }).planned)
    assert.is_true(d:resize(c, { h = 10, w = 10 }).planned)
    assert.is_true(d:prune_containers { filters = { label = { dt.label_filter } } }.planned)
    assert.is_true(d:prune_build_cache { filters = { id = "mxt-none" } }.planned)
    assert.is_true(d:pull_image_engine("127.0.0.1:1/mxt/none:1", { auth = false }).planned)
    assert.is_true(d:push_image_engine("127.0.0.1:1/mxt/none:1", { auth = false }).planned)
    local ops = {}
    for _, a in ipairs(plan.actions()) do ops[#ops + 1] = a.op end
    assert.are.same({ "update_container", "commit_container", "resize", "prune_containers",
      "prune_build_cache", "pull_image_engine", "push_image_engine" }, ops)
    assert.are.equal(before, d:inspect_container(c).HostConfig.PidsLimit)
    assert.are.equal(images, #d:list_images())
    assert.is_true(d:inspect_container(c).State.Running)
  end)
end)
