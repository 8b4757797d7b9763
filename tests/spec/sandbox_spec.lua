-- --sandbox: each way out is tried by a real recipe and must be refused.
local sh = require("tests.support.sh")

local recipe = sh.src .. "/tests/fixtures/recipes/escape.lua"

local function run(what, extra)
  local work = os.tmpname()
  os.remove(work)
  assert(os.execute("mkdir -p " .. work .. " && ln -s /tmp " .. work .. "/link"))
  local args = { "run", recipe, "--sandbox", "--workdir", work, "--set", "what=" .. what, "--set", "work=" .. work,
    "--memory-limit", "64", "--time-limit", "3" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local r = sh.myrmex(args, { env = { CI = "" } })
  r.work = work
  return r
end

describe("--sandbox", function()
  local refused = {
    { "exec", "sandbox: os.execute is not allowed" },
    { "popen", "sandbox: io.popen is not allowed" },
    { "write_out", "sandbox: opening for write '/tmp/sbx-escape.txt' is outside the work folder" },
    { "remove_out", "sandbox: removing '/etc/hostname' is outside the work folder" },
    { "loadlib", "sandbox: package.loadlib is not allowed" },
    { "global", "attempted to access nonexistent global variable 'undefined_thing'" },
    { "binary", "attempted to index a nil value" },
    { "debug", "nonexistent global variable 'debug'" },
    { "core", "module 'myrmex.core.process' is not allowed" },
    { "process", "module 'myrmex.process' is not allowed" },
    { "scanner", "scan.new: path and args are not allowed under --sandbox" },
    { "link", "opening for write 'link/escape.txt' is outside the work folder" },
    { "string_mt", "sandbox: 'rep' cannot be set: this table belongs to trusted code" },
    { "handle_mt", "sandbox: 'write' cannot be set: this table belongs to trusted code" },
    { "concat", "sandbox: __concat metamethods are not allowed (a liblua 5.4.4 defect" },
    { "concat_rawset", "sandbox: __concat metamethods are not allowed (a liblua 5.4.4 defect" },
    { "concat_later", "sandbox: __concat metamethods are not allowed (a liblua 5.4.4 defect" },
    { "concat_meta", "sandbox: __concat metamethods are not allowed (a liblua 5.4.4 defect" },
    { "docker_bind", "docker.create_container: config.volumes[1]: bind-mounting '/' (outside the work folder) is not allowed under --sandbox" },
    { "docker_mount", "docker.create_container: config.mounts[1].source: bind-mounting '/etc' (outside the work folder) is not allowed under --sandbox" },
    { "docker_privileged", "docker.create_container: config.privileged: a privileged container is not allowed under --sandbox" },
    { "docker_hostnet", "docker.create_container: config.network: the host's namespace is not allowed under --sandbox" },
    { "docker_volume", "docker.create_volume: options are not allowed under --sandbox" },
    { "k8s_hostpath", "k8s.create: body.spec.volumes[1].hostPath reaches the node, which is not allowed under --sandbox" },
    { "k8s_privileged", "k8s.create: body.spec.containers[1].securityContext.privileged reaches the node" },
    { "k8s_hostnet_patch", "k8s.patch: body.spec.template.spec.hostNetwork reaches the node" },
    { "k8s_caps_json_patch", "k8s.patch: body[1].value.capabilities.add reaches the node" },
    { "memory", "not enough memory" },
    { "time", "Timeout: sandbox: the recipe's time limit was exceeded" },
  }
  for _, c in ipairs(refused) do
    it("refuses " .. c[1], function()
      -- The memory cap must stop that recipe, not the clock, even on a loaded ASan build.
      -- The docker cases run under --dry-run against no engine: the refusal comes first.
      local r = run(c[1], c[1] == "memory" and { "--time-limit", "120" }
        or c[1]:match("^docker_") and { "--dry-run" } or nil)
      assert.are.equal(1, r.code, r.stdout .. r.stderr)
      assert.falsy(r.stdout:find("not stopped", 1, true))
      if c[1] ~= "binary" then
        assert.truthy(r.stderr:find(c[2], 1, true), r.stderr)
      end
      os.execute("rm -rf " .. r.work)
    end)
  end

  it("lets the recipe write inside its work folder", function()
    local r = run("write_in")
    assert.are.equal(0, r.code, r.stderr)
    local f = assert(io.open(r.work .. "/inside.txt"))
    assert.are.equal("ok", f:read("a"))
    f:close()
    os.execute("rm -rf " .. r.work)
  end)

  it("gives the recipe its own metatables as they are and reads of trusted ones", function()
    local r = run("own_mt")
    assert.are.equal(0, r.code, r.stderr)
    local n = tonumber(r.stdout:match("own metatable ok, (%d+) string functions, abab"))
    assert.is_true(n ~= nil and n >= 17, r.stdout)
    os.execute("rm -rf " .. r.work)
  end)

  it("lets a container mount what is in the work folder and named volumes", function()
    local r = run("docker_inside")
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("inside ok 2", 1, true), r.stdout)
    os.execute("rm -rf " .. r.work)
  end)

  it("leaves nothing written outside", function()
    assert.is_nil(io.open("/tmp/sbx-escape.txt"))
  end)

  it("rejects sandbox limits without --sandbox", function()
    local r = sh.myrmex({ "run", recipe, "--set", "what=x", "--time-limit", "3" })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("go with --sandbox", 1, true))
  end)
end)
