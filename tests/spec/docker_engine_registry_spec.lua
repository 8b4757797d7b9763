-- needs: docker registry
-- Pulls and pushes made by the engine itself (/images/create, /images/{name}/push) and
-- /distribution/{name}/json, against registries this spec starts on 127.0.0.1 (dockerd takes
-- 127.0.0.0/8 as insecure): plain, and token auth with credentials given or found by
-- myrmex's lookup in DOCKER_CONFIG. Images are built locally; nothing comes from a remote.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local dt = require("tests.support.docker")
local reg = require("tests.support.registry")
local sh = require("tests.support.sh")

local d, IMAGE
local plain, token
setup(function()
  d = docker.connect()
  IMAGE = dt.image()
  plain = reg.start()
  token = reg.start { mode = "token" }
end)
teardown(function()
  if plain then plain:stop() end
  if token then token:stop() end
  dt.cleanup()
end)

local tagged = {}
after_each(function()
  for _, ref in ipairs(tagged) do pcall(d.remove_image, d, ref, { force = true }) end
  tagged = {}
end)

local function tag(host, name)
  local ref = ("%s/mxt-%s/%s:1"):format(host, dt.run_id, name)
  d:tag_image(IMAGE, ref)
  tagged[#tagged + 1] = ref
  return ref
end

describe("push_image_engine / pull_image_engine", function()
  it("pushes a local image, reports progress and the digest, and pulls it back", function()
    local ref = tag(plain.host, "bb")
    local messages = {}
    local pushed = d:push_image_engine(ref, { on_progress = function(m) messages[#messages + 1] = m end })
    assert.matches("^sha256:%x+$", pushed.digest)
    assert.are.equal("1", pushed.tag)
    assert.is_true(pushed.size > 0)
    assert.is_true(#messages > 1)
    -- the registry has what the engine says it pushed
    local manifest = sh.run({ "curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}",
      ("http://%s/v2/mxt-%s/bb/manifests/%s"):format(plain.host, dt.run_id, pushed.digest) })
    assert.are.equal("200", manifest.stdout)

    local dist = d:inspect_distribution(ref)
    assert.are.equal(pushed.digest, dist.digest)
    assert.are.equal("amd64", dist.platforms[1].architecture)

    local id = d:inspect_image(ref).Id
    d:remove_image(ref)
    assert.is_false(d:image_exists(ref))
    local progress = 0
    local pulled = d:pull_image_engine(ref, { on_progress = function() progress = progress + 1 end })
    assert.are.equal(id, pulled.id)
    assert.are.equal(pushed.digest, pulled.digest)
    assert.is_true(progress > 0)
    -- by digest too
    d:remove_image(ref)
    local by_digest = ref:gsub(":1$", "") .. "@" .. pushed.digest
    local again = d:pull_image_engine(by_digest)
    assert.are.equal(id, again.id)
    tagged[#tagged + 1] = by_digest
  end)

  it("maps a missing image to NotFound and bad references to a misuse error", function()
    local err = select(2, pcall(d.pull_image_engine, d, plain.host .. "/mxt-nope/none:1"))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    err = select(2, pcall(d.push_image_engine, d, plain.host .. "/mxt-" .. dt.run_id .. "/not-here:1"))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.has_error(function() d:pull_image_engine("Bad//Ref") end)
    assert.has_error(function() d:pull_image_engine(42) end,
      "docker.pull_image_engine: image reference expected, got number")
    assert.has_error(function() d:push_image_engine("x:1", { auth = "secret" }) end,
      "docker.push_image_engine: auth: expected a table or false, got string")
    assert.has_error(function() d:push_image_engine("x:1", { auth = { user = "a" } }) end,
      "docker.push_image_engine: auth.user: unknown key")
  end)
end)

describe("with a token-auth registry", function()
  it("sends the credentials given, and fails Unauthorized without them", function()
    local ref = tag(token.host, "auth")
    local err = select(2, pcall(d.push_image_engine, d, ref, { auth = false }))
    assert.is_true(errors.is(err, "Unauthorized"), tostring(err))
    err = select(2, pcall(d.push_image_engine, d, ref, { auth = { username = "tester", password = "wrong" } }))
    assert.is_true(errors.is(err, "Unauthorized"), tostring(err))
    assert.is_nil(tostring(err):find("wrong", 1, true), "the password reached the error: " .. tostring(err))
    local pushed = d:push_image_engine(ref, { auth = { username = "tester", password = "s3cret-pass" } })
    assert.matches("^sha256:%x+$", pushed.digest)
    d:remove_image(ref)
    local pulled = d:pull_image_engine(ref, { auth = { username = "tester", password = "s3cret-pass" } })
    assert.matches("^sha256:", pulled.id)
    local dist = d:inspect_distribution(ref, { auth = { username = "tester", password = "s3cret-pass" } })
    assert.are.equal(pushed.digest, dist.digest)
  end)

  it("finds the credentials with myrmex's lookup (DOCKER_CONFIG's auths)", function()
    local ref = tag(token.host, "lookup")
    local b64 = sh.run("base64 -w0", { stdin = "tester:s3cret-pass" }).stdout
    assert.are.equal("dGVzdGVyOnMzY3JldC1wYXNz", b64)
    local cfgdir = dt.tmpdir { ["config.json"] = ('{"auths": {"%s": {"auth": "%s"}}}'):format(token.host, b64) }
    local script = sh.tmpfile(([[
      local d = require("myrmex.docker").connect()
      local ok, r = pcall(d.push_image_engine, d, %q)
      io.write(ok and r.digest or ("error " .. tostring(r)))
    ]]):format(ref), ".lua")
    local home = dt.tmpdir {}
    local r = sh.run({ sh.bin, script }, { env = { DOCKER_CONFIG = cfgdir, HOME = home, XDG_RUNTIME_DIR = "",
      REGISTRY_AUTH_FILE = "" } })
    assert.matches("^sha256:%x+$", r.stdout, r.stdout .. r.stderr)
    -- and without that file the same push is refused
    local empty = dt.tmpdir { ["config.json"] = "{}" }
    r = sh.run({ sh.bin, script }, { env = { DOCKER_CONFIG = empty, HOME = home, XDG_RUNTIME_DIR = "",
      REGISTRY_AUTH_FILE = "" } })
    assert.matches("^error docker: Unauthorized", r.stdout, r.stdout .. r.stderr)
    os.remove(script)
    sh.run({ "rm", "-rf", cfgdir, empty, home })
  end)
end)
