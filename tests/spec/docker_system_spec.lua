-- needs: docker
-- Disk usage and the build-cache prune against the real engine, and the small defects of
-- issue #22: an engine error said twice, an invalid tag reported as an engine fault, a
-- missing copy_from path without the engine's words, the cleanup recipe's log field, and
-- DOCKER_TLS.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local d, IMAGE
setup(function()
  d = docker.connect()
  IMAGE = dt.image()
end)
teardown(function() dt.cleanup() end)

local cfg = dt.config

describe("system_df", function()
  it("lists images, containers, volumes and build cache, with summaries that add up", function()
    local name = dt.name("df")
    local c <close> = d:create_container(cfg { name = name, cmd = { "true" } })
    local vol = d:create_volume { name = dt.name("dfvol"), labels = dt.labels }
    local df = d:system_df()
    local seen_c, seen_v, seen_i = false, false, false
    for _, e in ipairs(df.containers) do if e.Id == c.id then seen_c = true end end
    for _, e in ipairs(df.volumes) do if e.Name == vol.Name then seen_v = true end end
    for _, e in ipairs(df.images) do
      for _, t in ipairs(type(e.RepoTags) == "table" and e.RepoTags or {}) do
        if t == IMAGE then seen_i = (e.Containers or 0) >= 1 end
      end
    end
    assert.is_true(seen_c, "the new container is not in system_df")
    assert.is_true(seen_v, "the new volume is not in system_df")
    assert.is_true(seen_i, "the test image is not listed as used by a container")
    assert.is_true(df.layers_size > 0)
    for _, kind in ipairs { "images", "containers", "volumes", "build_cache" } do
      local s = df.summary[kind]
      assert.are.equal(#df[kind], s.total, kind)
      assert.is_true(s.active <= s.total and s.reclaimable <= s.size, kind)
    end
    assert.is_true(df.summary.images.active >= 1)
    d:remove_volume(vol.Name)
  end)
end)

describe("prune_build_cache", function()
  -- The engine's build cache is shared with the other specs and users of this engine: only
  -- records this spec made (a RUN naming this run's id) are selected, by id.
  it("removes the record a BuildKit build of this run left, by id, and reports its size", function()
    local marker = "mxt-bc-" .. dt.run_id
    local tag = marker .. ":1"
    local dir = dt.tmpdir { Dockerfile = "FROM " .. IMAGE .. "\nRUN echo " .. marker .. " > /m\n" }
    local img = d:build_image { context = dir, tags = { tag }, labels = dt.labels, builder = "buildkit" }
    assert.are.equal("buildkit", img.builder)
    local mine
    for _, r in ipairs(d:system_df().build_cache) do
      if tostring(r.Description):find(marker, 1, true) then mine = r end
    end
    assert.is_table(mine, "no build-cache record names " .. marker)
    local r = d:prune_build_cache { all = true, filters = { id = mine.ID } }
    assert.are.same({ mine.ID }, r.deleted)
    assert.are.equal(mine.Size, r.space_reclaimed)
    for _, rec in ipairs(d:system_df().build_cache) do assert.are_not.equal(mine.ID, rec.ID) end
    d:remove_image(tag, { force = true })
    sh.run({ "rm", "-rf", dir })
  end)

  it("passes its filters to the engine and returns what it reclaimed", function()
    local r = d:prune_build_cache { all = true, filters = { id = "mxt-none-" .. dt.run_id } }
    assert.are.same({}, r.deleted)
    assert.are.equal(0, r.space_reclaimed)
    local err = select(2, pcall(d.prune_build_cache, d, { filters = { mxt_bogus = "1" } }))
    assert.is_true(errors.is(err), tostring(err))
    assert.truthy(tostring(err):find("mxt_bogus", 1, true), tostring(err))
    assert.has_error(function() d:prune_build_cache { all = "yes" } end,
      "docker.prune_build_cache: all: expected boolean, got string")
    assert.has_error(function() d:prune_build_cache { keep_storage = "lots" } end,
      "docker.prune_build_cache: keep_storage: expected bytes, got lots")
  end)
end)

describe("engine errors", function()
  it("says a missing image once", function()
    local ref = "mxt-nope-" .. dt.run_id .. ":1"
    local err = select(2, pcall(d.inspect_image, d, ref))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.are.equal("No such image: " .. ref, err.message)
  end)

  it("reports an invalid tag as Invalid, not as an engine fault", function()
    local err = select(2, pcall(d.tag_image, d, IMAGE, "Bad..Name:x"))
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.truthy(err.message:find("invalid reference format", 1, true), tostring(err))
    err = select(2, pcall(d.commit_container, d, d:create_container(cfg { cmd = { "true" } }), { tag = "UPPER/case:1" }))
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
  end)

  it("keeps the engine's message for a missing copy_from path", function()
    local c <close> = d:create_container(cfg { cmd = { "true" } })
    local err = select(2, pcall(c.copy_from, c, "/no/such/path"))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.truthy(err.message:find("Could not find the file /no/such/path", 1, true), tostring(err))
    local out = dt.tmpdir {}
    err = select(2, pcall(c.copy_from, c, "/no/such/path", { to = out }))
    assert.truthy(err.message:find("/no/such/path", 1, true), tostring(err))
    sh.run({ "rm", "-rf", out })
  end)
end)

describe("the cleanup recipe", function()
  it("logs the space it reclaimed under space_reclaimed", function()
    local label = "mxt.cleanup=" .. dt.run_id
    local r = sh.myrmex({ "run", "cleanup", "--set", "label=" .. label, "--set", "older_than=0s" },
      { env = { CI = "1", MYRMEX_LUA_PATH = sh.src .. "/lua" } })
    assert.are.equal(0, r.code, r.stderr)
    local pruned
    for line in r.stderr:gmatch("[^\n]+") do
      local rec = json.safe_decode(line)
      if type(rec) == "table" and rec.msg == "pruned" then pruned = rec end
    end
    assert.is_table(pruned, r.stderr)
    assert.are.equal(0, pruned.space_reclaimed, r.stderr)
  end)
end)

describe("DOCKER_TLS", function()
  local connect_in_child = dt.connect_in_child

  it("turns TLS on without verifying the engine, sending the client pair from DOCKER_CERT_PATH", function()
    local pki = dt.pki()
    local port = dt.free_port()
    -- the proxy demands a client certificate that the test CA signed
    local p = dt.proxy { tcp = port, tls = { cert = pki .. "/server.pem", key = pki .. "/server.key",
      client_ca = pki .. "/ca.pem" } }
    local host = "tcp://127.0.0.1:" .. port
    -- no ca.pem in the cert path: only an unverified connection can succeed
    local certs = dt.tmpdir {}
    sh.run(("cp %s/cert.pem %s/key.pem %s/"):format(pki, pki, certs))
    assert.are.equal(host .. " true", connect_in_child { DOCKER_HOST = host, DOCKER_TLS = "1",
      DOCKER_CERT_PATH = certs, DOCKER_TLS_VERIFY = "" })
    -- without DOCKER_TLS the client speaks plain HTTP to the TLS port and fails
    assert.matches("^error docker: Unreachable", connect_in_child { DOCKER_HOST = host, DOCKER_TLS = "",
      DOCKER_CERT_PATH = certs, DOCKER_TLS_VERIFY = "" })
    -- DOCKER_TLS_VERIFY still verifies: no ca.pem there, so the connection is refused
    assert.matches("^error docker: Unreachable", connect_in_child { DOCKER_HOST = host, DOCKER_TLS = "1",
      DOCKER_CERT_PATH = certs, DOCKER_TLS_VERIFY = "1" })
    p.stop()
    sh.run({ "rm", "-rf", pki, certs })
  end)
end)
