-- needs: registry
-- Registry auth for real: TLS with a CA made by openssl plus htpasswd Basic auth, the Bearer
-- token flow against a JWT token server the registry trusts, credentials from Docker's
-- config.json and credential helpers, and secrets that never reach a log line or an error.
local registry = require("myrmex.registry")
local auth = require("myrmex.registry.auth")
local credentials = require("myrmex.registry.credentials")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local USER, PASS = "tester", "s3cret-pass"

local function raises(code, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected a " .. code .. " error")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. errors.message(err))
  return err
end

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. sh.q(path)) end
end

-- Capture every log line while fn runs (at debug level, where requests are logged).
local function captured(fn)
  local lines = {}
  local before = log.settings()
  log.configure({ level = "debug" })
  local remove = log.add_hook(function(rec) lines[#lines + 1] = json.encode(rec) end)
  local ok, err = pcall(fn)
  if type(remove) == "function" then remove() end
  log.configure({ level = before.level })
  return table.concat(lines, "\n"), ok, err
end

describe("registry auth", function()
  local work, layout

  setup(function()
    work = R.tmpdir()
    layout = R.make_layout(work .. "/img", { tag = "v1" })
  end)

  teardown(function()
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  describe("parsing", function()
    it("parses WWW-Authenticate challenges with quoted and escaped values", function()
      local list = auth.parse_challenges(
        'Bearer realm="https://auth.example/token",service="reg, one",scope="repository:a/b:pull,push", Basic realm="x\\"y"')
      assert.are.equal(2, #list)
      assert.are.equal("bearer", list[1].scheme)
      assert.are.equal("https://auth.example/token", list[1].params.realm)
      assert.are.equal("reg, one", list[1].params.service)
      assert.are.equal("repository:a/b:pull,push", list[1].params.scope)
      assert.are.equal("basic", list[2].scheme)
      assert.are.equal('x"y', list[2].params.realm)
      assert.are.same({}, auth.parse_challenges(nil))
    end)

    it("reads auths entries (base64 auth, username/password) from config.json", function()
      local cfg = { auths = {
        ["https://index.docker.io/v1/"] = { auth = "aHViOmh1Yi1wYXNzd29yZA==" },
        ["127.0.0.1:5000"] = { username = "u", password = "p-word" },
        ["https://other.example:8443/v2/"] = { auth = "b3RoZXI6c2VjcmV0OndpdGg6Y29sb25z" },
      } }
      assert.are.same({ username = "hub", password = "hub-password" }, credentials.lookup("docker.io", cfg))
      assert.are.same({ username = "u", password = "p-word" }, credentials.lookup("127.0.0.1:5000", cfg))
      assert.are.same({ username = "other", password = "secret:with:colons" },
        credentials.lookup("other.example:8443", cfg))
      assert.is_nil(credentials.lookup("nowhere:1", cfg))
      raises("Invalid", function() credentials.lookup("bad", { auths = { bad = { auth = "bm9jb2xvbg==" } } }) end)
    end)
  end)

  describe("TLS and htpasswd", function()
    local reg

    setup(function() reg = R.start({ mode = "tls", users = { [USER] = PASS } }) end)
    teardown(function() if reg then reg:stop() end end)

    it("pushes and pulls over TLS with the test CA and Basic credentials", function()
      local c = registry.connect(reg.host, { ca = reg.tls.ca, username = USER, password = PASS })
      local res = c:push_image(work .. "/img", "secure/app:v1")
      assert.are.equal(layout.digest, res.digest)
      assert.are.equal("https", c.scheme)
      assert.are.equal("basic", c.auth.kind)
      assert.are.same({ "v1" }, c:tags("secure/app"))
      local out = work .. "/tls-pull"
      assert.are.equal(layout.digest, c:pull_image("secure/app:v1", { to = out }).digest)
    end)

    it("decides HTTPS by itself for a loopback registry that speaks TLS", function()
      local c = registry.connect(reg.host, { ca_data = io.open(reg.tls.ca):read("a"), username = USER, password = PASS })
      assert.is_true(c:ping())
      assert.are.equal("https", c.scheme)
    end)

    it("finds TLS on a loopback registry after asking plain HTTP first (the server answers 400)", function()
      -- No CA given, so nothing forces HTTPS: the probe decides. insecure skips verification.
      local c = registry.connect(reg.host, { insecure = true, username = USER, password = PASS, config = false })
      assert.is_true(c:ping())
      assert.are.equal("https", c.scheme)
      assert.are.same({ "v1" }, c:tags("secure/app"))
      -- Verified against the system's trust store, which lacks the test CA: the TLS error is
      -- the one reported, not the plain HTTP server's 400.
      local err = raises("Unreachable", function()
        registry.connect(reg.host, { username = USER, password = PASS, config = false }):ping()
      end)
      assert.truthy(errors.message(err):find("TLS", 1, true) or errors.message(err):find("certificate", 1, true),
        errors.message(err))
    end)

    it("raises Unauthorized for a wrong password, with the secret in no log line or error", function()
      local wrong = "Wr0ng-Passw0rd-42"
      local lines, ok, err = captured(function()
        local c = registry.connect(reg.host, { ca = reg.tls.ca, username = USER, password = wrong })
        c:tags("secure/app")
      end)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "Unauthorized"), errors.message(err))
      assert.is_nil(errors.message(err):find(wrong, 1, true))
      assert.is_nil(lines:find(wrong, 1, true))
      assert.is_truthy(lines:find("registry", 1, true))
      raises("Unauthorized", function()
        registry.connect(reg.host, { ca = reg.tls.ca, config = false }):tags("secure/app")
      end)
    end)

    it("refuses a server whose certificate the given CA did not sign", function()
      local other = R.tmpdir()
      local wrong = R.make_tls(other, "elsewhere")
      local err = raises("Unreachable", function()
        registry.connect(reg.host, { ca = wrong.ca, username = USER, password = PASS }):ping()
      end)
      assert.truthy(errors.message(err):find("TLS", 1, true) or errors.message(err):find("certificate", 1, true))
      -- Without a CA, loopback or not, the system trust store does not know the test CA either.
      raises("Unreachable", function()
        registry.connect("https://" .. reg.host, { username = USER, password = PASS }):ping()
      end)
      os.execute("rm -rf " .. sh.q(other))
    end)

    it("takes credentials from DOCKER_CONFIG: auths and a docker-credential helper", function()
      local cfgdir, bindir = work .. "/dockercfg", work .. "/bin"
      os.execute("mkdir -p " .. sh.q(cfgdir) .. " " .. sh.q(bindir))
      -- The helper logs the server URL it was asked about, then answers like the real ones.
      write(bindir .. "/docker-credential-mxtest", ([[#!/bin/sh
[ "$1" = get ] || exit 1
read server
echo "$server" >> %s
if [ "$server" = "%s" ]; then
  printf '{"ServerURL":"%%s","Username":"%s","Secret":"%s"}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
]]):format(sh.q(work .. "/helper.log"), reg.host, USER, PASS), "755")
      local script = work .. "/use-config.lua"
      write(script, ([[
local registry = require("myrmex.registry")
local c = registry.connect(%q, { ca = %q })
print(table.concat(c:tags("secure/app"), ","))
]]):format(reg.host, reg.tls.ca))
      local env = { DOCKER_CONFIG = cfgdir, PATH = bindir .. ":" .. os.getenv("PATH"),
        MYRMEX_LUA_PATH = os.getenv("MYRMEX_LUA_PATH") }
      write(cfgdir .. "/config.json", json.encode({ credHelpers = { [reg.host] = "mxtest" } }))
      local r = sh.myrmex({ script }, { env = env })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("v1\n", r.stdout)
      assert.are.equal(reg.host .. "\n", io.open(work .. "/helper.log"):read("a"))
      write(cfgdir .. "/config.json", json.encode({ credsStore = "mxtest" }))
      r = sh.myrmex({ script }, { env = env })
      assert.are.equal(0, r.code, r.stderr)
      local b64 = "dGVzdGVyOnMzY3JldC1wYXNz" -- base64("tester:s3cret-pass")
      write(cfgdir .. "/config.json", json.encode({ auths = { ["https://" .. reg.host] = { auth = b64 } } }))
      r = sh.myrmex({ script }, { env = env })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("v1\n", r.stdout)
      -- A helper that knows nothing means anonymous, which this registry refuses.
      write(cfgdir .. "/config.json", json.encode({ credHelpers = { [reg.host] = "mxtest" } }))
      write(script, ([[
local registry = require("myrmex.registry")
local c = registry.connect(%q, { ca = %q })
c:tags("secure/app")
]]):format("localhost:" .. reg.port, reg.tls.ca))
      r = sh.myrmex({ script }, { env = env })
      assert.are_not.equal(0, r.code)
      assert.truthy(r.stderr:find("Unauthorized", 1, true), r.stderr)
      assert.is_nil(r.stderr:find(PASS, 1, true))
    end)
  end)

  describe("credential files in skopeo's order", function()
    local reg

    setup(function() reg = R.start({ mode = "tls", users = { [USER] = PASS } }) end)
    teardown(function() if reg then reg:stop() end end)

    it("reads REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR's, ~/.config's auth.json, then Docker's", function()
      local root = work .. "/authfiles"
      local home, run, docker_dir = root .. "/home", root .. "/run", root .. "/docker"
      os.execute("mkdir -p " .. sh.q(home .. "/.config/containers") .. " " .. sh.q(run .. "/containers") .. " "
        .. sh.q(docker_dir))
      local function auth_json(user, pass)
        local enc = sh.run({ "sh", "-c", "printf %s " .. sh.q(user .. ":" .. pass) .. " | base64 -w0" }).stdout
        return json.encode({ auths = { [reg.host] = { auth = enc } } })
      end
      local good, bad = auth_json(USER, PASS), auth_json(USER, "wrong-password")
      local script = root .. "/tags.lua"
      write(script, ([[
local c = require("myrmex.registry").connect(%q, { ca = %q })
print(table.concat(c:tags("secure/app"), ","))
]]):format(reg.host, reg.tls.ca))
      local function try(files, env_extra)
        for _, p in ipairs({ home .. "/.config/containers/auth.json", run .. "/containers/auth.json",
          docker_dir .. "/config.json", root .. "/override.json" }) do os.remove(p) end
        for path, text in pairs(files) do write(path, text) end
        local env = { HOME = home, XDG_RUNTIME_DIR = run, XDG_CONFIG_HOME = "", DOCKER_CONFIG = docker_dir,
          REGISTRY_AUTH_FILE = "", MYRMEX_LUA_PATH = os.getenv("MYRMEX_LUA_PATH") }
        for k, v in pairs(env_extra or {}) do env[k] = v end
        local r = sh.myrmex({ script }, { env = env })
        assert.is_nil(r.stderr:find(PASS, 1, true))
        return r
      end
      local pushed = registry.connect(reg.host, { ca = reg.tls.ca, username = USER, password = PASS })
      pushed:push_image(work .. "/img", "secure/app:v1")
      -- Each file alone is found.
      for _, path in ipairs({ home .. "/.config/containers/auth.json", run .. "/containers/auth.json",
        docker_dir .. "/config.json" }) do
        local r = try({ [path] = good })
        assert.are.equal(0, r.code, path .. ": " .. r.stderr)
        assert.are.equal("v1\n", r.stdout)
      end
      local r = try({ [root .. "/override.json"] = good }, { REGISTRY_AUTH_FILE = root .. "/override.json" })
      assert.are.equal(0, r.code, r.stderr)
      -- The first file with an entry for the registry wins: the runtime file before ~/.config
      -- and Docker's, REGISTRY_AUTH_FILE instead of the runtime file.
      r = try({ [run .. "/containers/auth.json"] = good, [home .. "/.config/containers/auth.json"] = bad,
        [docker_dir .. "/config.json"] = bad })
      assert.are.equal(0, r.code, r.stderr)
      r = try({ [home .. "/.config/containers/auth.json"] = bad, [docker_dir .. "/config.json"] = good })
      assert.are_not.equal(0, r.code)
      assert.truthy(r.stderr:find("Unauthorized", 1, true), r.stderr)
      r = try({ [root .. "/override.json"] = good, [run .. "/containers/auth.json"] = bad },
        { REGISTRY_AUTH_FILE = root .. "/override.json" })
      assert.are.equal(0, r.code, r.stderr)
      r = try({ [root .. "/override.json"] = bad, [run .. "/containers/auth.json"] = good },
        { REGISTRY_AUTH_FILE = root .. "/override.json" })
      assert.are_not.equal(0, r.code)
      -- A file without an entry for this registry is passed over.
      r = try({ [run .. "/containers/auth.json"] = json.encode({ auths = { ["other.example"] = { auth = "eDp5" } } }),
        [docker_dir .. "/config.json"] = good })
      assert.are.equal(0, r.code, r.stderr)
    end)

    it("lists the files in order and matches namespaced auth.json keys, the longest first", function()
      local files = credentials.auth_files()
      assert.truthy(#files >= 3)
      assert.truthy(files[#files].path:match("/%.dockercfg$"))
      assert.is_true(files[#files].legacy)
      local cfg = { auths = {
        ["reg.example:5000"] = { auth = "aG9zdDpob3N0LXBhc3M=" },          -- host:host-pass
        ["reg.example:5000/team"] = { auth = "dGVhbTp0ZWFtLXBhc3M=" },     -- team:team-pass
        ["reg.example:5000/team/app"] = { auth = "YXBwOmFwcC1wYXNz" },     -- app:app-pass
      } }
      assert.are.same({ username = "app", password = "app-pass" },
        credentials.lookup("reg.example:5000", cfg, "team/app"))
      assert.are.same({ username = "team", password = "team-pass" },
        credentials.lookup("reg.example:5000", cfg, "team/other"))
      assert.are.same({ username = "host", password = "host-pass" },
        credentials.lookup("reg.example:5000", cfg, "elsewhere/x"))
      assert.are.same({ username = "host", password = "host-pass" }, credentials.lookup("reg.example:5000", cfg))
    end)
  end)

  describe("token auth", function()
    local reg

    setup(function() reg = R.start({ mode = "token", users = { [USER] = PASS }, token_expires = 13 }) end)
    teardown(function() if reg then reg:stop() end end)

    it("gets Bearer tokens per scope from the realm with the Basic credentials, cached", function()
      local c = registry.connect(reg.host, { username = USER, password = PASS })
      local res = c:push_image(work .. "/img", "tok/app:v1")
      assert.are.equal(layout.digest, res.digest)
      assert.are.equal("bearer", c.auth.kind)
      assert.are.same({ "v1" }, c:tags("tok/app"))
      assert.are.equal(layout.digest, c:digest("tok/app:v1"))
      local stats = json.decode(reg:token_stats())
      -- One token for the push scope, one for the pull scope: the cache served the rest.
      assert.are.equal(1, stats["repository:tok/app:pull,push"])
      assert.are.equal(1, stats["repository:tok/app:pull"])
      assert.are.equal(2, c.auth.fetched)
    end)

    it("uses an identity token from config.json through the OAuth2 refresh-token grant", function()
      local cfg = { auths = { [reg.host] = { identitytoken = "refresh-" .. USER } } }
      local c = registry.connect(reg.host, { config = cfg })
      c:push_image(work .. "/img", "tok/oauth:v1")
      assert.are.same({ "v1" }, c:tags("tok/oauth"))
      raises("Unauthorized", function()
        registry.connect(reg.host, { config = { auths = { [reg.host] = { identitytoken = "refresh-nobody" } } } })
          :push_image(work .. "/img", "tok/oauth:v2")
      end)
    end)

    it("refreshes a token when it is about to expire", function()
      local c = registry.connect(reg.host, { username = USER, password = PASS })
      c:tags("tok/app")
      assert.are.equal(1, c.auth.fetched)
      c:tags("tok/app")
      assert.are.equal(1, c.auth.fetched)
      os.execute("sleep 3.2") -- 13 s tokens are refreshed 10 s before they expire
      c:tags("tok/app")
      assert.are.equal(2, c.auth.fetched)
    end)

    it("lets anonymous clients pull what the token server allows, and refuses them push", function()
      local anon = registry.connect(reg.host, { config = false })
      assert.are.same({ "v1" }, anon:tags("tok/app"))
      local err = raises("Unauthorized", function() anon:push_image(work .. "/img", "tok/anon:v1") end)
      assert.is_nil(errors.message(err):find("eyJ", 1, true))
    end)

    it("raises Unauthorized when the token server refuses the password, leaking nothing", function()
      local wrong = "Not-The-Password-77"
      local lines, ok, err = captured(function()
        registry.connect(reg.host, { username = USER, password = wrong }):tags("tok/app")
      end)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "Unauthorized"), errors.message(err))
      assert.is_nil(lines:find(wrong, 1, true))
      assert.is_nil(errors.message(err):find(wrong, 1, true))
    end)

    it("never logs a token it was given", function()
      local lines, ok, err = captured(function()
        local c = registry.connect(reg.host, { username = USER, password = PASS })
        c:tags("tok/app")
        local tok = c.auth.tokens["repository:tok/app:pull"].token
        assert.truthy(tok:find("^eyJ"))
        log.info("about to use " .. tok, { authorization = "Bearer " .. tok })
        return tok
      end)
      assert(ok, err)
      assert.is_nil(lines:find("eyJ", 1, true))
      assert.is_nil(lines:find(PASS, 1, true))
    end)
  end)
end)
