-- needs: docker
-- myrmex.docker against the real engine: connecting, versions, errors, events, dry run,
-- and an engine that is missing, hangs, or goes away in the middle of a call.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local plan = require("myrmex.plan")
local rt = require("myrmex.core.runtime")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local connect_in_child = dt.connect_in_child

describe("docker.connect", function()
  local d
  setup(function() d = docker.connect() end)
  teardown(function() dt.cleanup() end)

  it("negotiates the API version from the ping", function()
    local server = d:version()
    assert.are.equal(docker.min_version(server.ApiVersion, docker.api_version), d.api_version)
    assert.is_true(d:ping())
    assert.is_number(d:info().Containers)
  end)

  it("pins a version when asked, and refuses one below the minimum", function()
    local pinned = docker.connect { version = "1.40" }
    assert.are.equal("1.40", pinned.api_version)
    assert.is_true(pinned:ping())
    local err = raised(docker.connect, { version = "1.12" })
    assert.is_true(errors.is(err, "Engine"), tostring(err))
  end)

  it("honours DOCKER_HOST, unix:// and tcp://", function()
    local p = dt.proxy()
    assert.are.equal(p.host .. " true", connect_in_child { DOCKER_HOST = p.host })
    p.stop()
    local port = dt.free_port()
    local tcp = dt.proxy { tcp = port }
    local c = docker.connect { host = tcp.host }
    assert.is_true(c:ping())
    assert.are.equal(d:info().ID, c:info().ID)
    tcp.stop()
  end)

  it("speaks TLS with a client certificate, from options or DOCKER_TLS_VERIFY/DOCKER_CERT_PATH", function()
    local pki = dt.pki()
    local port = dt.free_port()
    local p = dt.proxy { tcp = port, tls = { cert = pki .. "/server.pem", key = pki .. "/server.key",
      client_ca = pki .. "/ca.pem" } }
    local host = "tcp://127.0.0.1:" .. port
    local c = docker.connect { host = host,
      tls = { ca = pki .. "/ca.pem", cert = pki .. "/cert.pem", key = pki .. "/key.pem" } }
    assert.is_true(c:ping())
    assert.are.equal(d:info().ID, c:info().ID)
    assert.are.equal(host .. " true",
      connect_in_child { DOCKER_HOST = host, DOCKER_TLS_VERIFY = "1", DOCKER_CERT_PATH = pki })
    -- an engine whose certificate another CA signed is refused, as is a missing client cert
    local err = raised(docker.connect, { host = host, tls = { ca = pki .. "/other-ca.pem",
      cert = pki .. "/cert.pem", key = pki .. "/key.pem" } })
    assert.is_true(errors.is(err, "Unreachable"), tostring(err))
    err = raised(docker.connect, { host = host, tls = { ca = pki .. "/ca.pem" } })
    assert.is_true(errors.is(err, "Unreachable"), tostring(err))
    p.stop()
    sh.run({ "rm", "-rf", pki })
  end)

  it("follows the current Docker context", function()
    local p = dt.proxy()
    local cfgdir = dt.tmpdir {
      ["config.json"] = '{"currentContext": "mx-test"}',
      ["contexts/meta/0123abcd/meta.json"] = ('{"Name":"mx-test","Metadata":{},'
        .. '"Endpoints":{"docker":{"Host":"%s","SkipTLSVerify":false}}}'):format(p.host),
    }
    assert.are.equal(p.host .. " true", connect_in_child { DOCKER_CONFIG = cfgdir, DOCKER_HOST = "" })
    assert.matches('^error docker.connect: Docker context "missing" not found under',
      connect_in_child { DOCKER_CONFIG = cfgdir, DOCKER_HOST = "", DOCKER_CONTEXT = "missing" })
    p.stop()
    os.execute("rm -rf " .. cfgdir)
  end)

  it("fails fast with Unreachable, the address and the --dry-run hint", function()
    for _, host in ipairs { "unix:///tmp/mx-no-such.sock", "tcp://127.0.0.1:1" } do
      local t0 = rt.monotonic()
      local err = raised(docker.connect, { host = host })
      assert.is_true(rt.monotonic() - t0 < 1.5)
      assert.is_true(errors.is(err, "Unreachable"), tostring(err))
      assert.matches(host:gsub("%p", "%%%0"), err.message)
      assert.matches("%-%-dry%-run", err.message)
    end
  end)

  it("gives up on an engine that accepts and never answers within about a second", function()
    local p = dt.proxy { mute = true }
    local t0 = rt.monotonic()
    local err = raised(docker.connect, { host = p.host })
    local took = rt.monotonic() - t0
    p.stop()
    assert.is_true(took < 2.5, "took " .. took)
    assert.is_true(errors.is(err, "Unreachable"), tostring(err))
  end)

  it("rejects typos in options and unsupported hosts as misuse", function()
    assert.has_error(function() docker.connect { hots = "x" } end, "docker.connect: option hots: unknown key")
    assert.has_error(function() docker.connect { host = "ssh://box" } end)
  end)
end)

describe("docker errors", function()
  local d
  setup(function() d = docker.connect() end)

  it("maps 404, 409 and 400 to NotFound, Conflict and Invalid with the engine's message", function()
    local err = raised(d.inspect_image, d, "mxt-no-such-image:1")
    assert.is_true(errors.is(err, "NotFound"))
    assert.are.equal(404, err.status)
    assert.are.equal("docker", err.engine)
    assert.matches("mxt%-no%-such%-image", err.message)

    local name = dt.name("conflict")
    local c <close> = d:create_container { image = dt.image(), name = name, labels = dt.labels }
    err = raised(d.create_container, d, { image = dt.image(), name = name })
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
    assert.are.equal(409, err.status)

    err = raised(d.create_container, d, { image = dt.image(), labels = dt.labels,
      restart = "on-failure", auto_remove = true })
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.are.equal(400, err.status)
  end)
end)

describe("docker events", function()
  it("streams events as they happen and stops when asked", function()
    local d = docker.connect()
    local since = os.time() - 1
    local c = d:run_container { image = dt.image(), cmd = { "true" }, labels = dt.labels, wait = true }
    c:remove()
    local seen = {}
    local n = d:events {
      since = since, ["until"] = os.time() + 1,
      filters = { label = { dt.label_filter }, type = { "container" } },
      on_event = function(ev) seen[#seen + 1] = ev.Action end,
    }
    assert.are.equal(#seen, n)
    local all = table.concat(seen, ",")
    for _, action in ipairs { "create", "start", "die", "destroy" } do
      assert.matches(action, all)
    end
    -- stopping from the callback ends an open-ended stream
    local count = d:events { since = since, on_event = function() return false end }
    assert.are.equal(1, count)
  end)
end)

describe("docker dry run", function()
  before_each(function() plan.reset() plan.set_active(true) end)
  after_each(function() plan.set_active(false) plan.reset() end)

  it("records every change, returns marked results, and still reads", function()
    local d = docker.connect()
    local before = #dt.containers()
    local c = d:run_container { image = dt.image(), name = dt.name("planned"), wait = true,
      labels = dt.labels }
    assert.is_true(c.planned)
    assert.matches("^planned%-", c.id)
    c:stop()
    c:remove()
    local net = d:create_network { name = dt.name("net"), labels = dt.labels }
    assert.is_true(net.planned)
    local img = d:build_image { context = "/nonexistent", tags = { "x:1" } }
    assert.is_true(img.planned)
    assert.are.equal(before, #dt.containers())              -- nothing was created
    assert.is_table(d:inspect_image(dt.image()))            -- reads still happen
    local ops = {}
    for _, a in ipairs(plan.actions()) do ops[#ops + 1] = a.op end
    assert.are.same({ "run_container", "stop_container", "remove_container", "create_network",
      "build_image" }, ops)
  end)

  it("plans offline when the engine cannot be reached; reads then say so", function()
    local d = docker.connect { host = "unix:///tmp/mx-no-such.sock" }
    assert.is_true(d.offline)
    assert.is_false(d:ping())
    local v = d:create_volume { name = "v1" }
    assert.is_true(v.planned)
    local err = raised(d.list_containers, d)
    assert.is_true(errors.is(err, "Unreachable"))
    assert.matches("dry run", err.message)
  end)
end)

describe("an engine that goes away mid-call", function()
  local d
  setup(function() d = docker.connect() end)
  teardown(function() dt.cleanup() end)

  it("fails a blocked wait cleanly instead of hanging", function()
    local c <close> = d:run_container { image = dt.image(), cmd = { "sleep", "30" }, labels = dt.labels }
    local p = dt.proxy { die_after = 1 }
    local via = docker.connect { host = p.host }
    local t0 = rt.monotonic()
    local err = raised(via.wait_container, via, c.id)
    assert.is_true(rt.monotonic() - t0 < 5)
    assert.is_true(errors.is(err), tostring(err))
    assert.is_true(err.code == "Unreachable" or err.code == "Engine", tostring(err))
  end)

  it("fails a followed log stream cleanly", function()
    local c <close> = d:run_container { image = dt.image(), labels = dt.labels,
      cmd = { "sh", "-c", "while true; do echo tick; sleep 0.1; done" } }
    local p = dt.proxy { die_after = 1 }
    local via = docker.connect { host = p.host }
    local got = 0
    local err = raised(via.container_logs, via, c.id, { follow = true,
      on_stdout = function(s) got = got + #s end })
    assert.is_true(got > 0)
    assert.is_true(errors.is(err), tostring(err))
  end)
end)
