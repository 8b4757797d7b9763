-- needs: registry
-- Plant a registry password (as a parameter and in Docker's config.json), a bearer token and a
-- kubeconfig client key, run recipes and commands every way that writes output — debug logs in
-- text and JSON, --junit, --report, plan mode, a failing step, doctor — and grep every stream
-- and every file the runs wrote for each secret and its encoded forms.
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local PASSWORD = "Sw33p-pl4nted-passw0rd"
local TOKEN = "pl4nted.bearer.T0ken-" .. ("q"):rep(24)
local USER = "sweeper"

local function b64(s)
  local r = sh.run({ "base64", "-w0" }, { stdin = s })
  return (r.stdout:gsub("%s+$", ""))
end

local write = sh.write

local read = sh.read

-- The recipe plants the secrets on every path one can take: connect credentials, a raw
-- Authorization header, a log line quoting the password, a URL with userinfo, a step that
-- fails after authenticating.
local RECIPE = [[
local registry = require("myrmex.registry")
local http = require("myrmex.http")
local log = require("myrmex.log")
return {
  description = "secrets sweep",
  params = {
    host = { type = "string", required = true },
    ca = { type = "string", required = true },
    layout = { type = "string", required = true },
    password = { type = "string", secret = true },
    token = { type = "string", secret = true },
  },
  run = function(p, ctx)
    local r = registry.connect(p.host, { ca = p.ca, username = p.password and "sweeper" or nil,
      password = p.password })
    log.debug("connecting with " .. tostring(p.password), { url = "https://sweeper:" .. tostring(p.password)
      .. "@" .. p.host .. "/v2/" })
    ctx.step("push", function() return r:push_image(p.layout, p.host .. "/sweep/app:1") end)
    ctx.step("tags", function() return r:tags("sweep/app") end)
    ctx.step("bearer", function()
      return http.request({ url = "https://" .. p.host .. "/v2/", tls = { ca = p.ca }, engine = "registry",
        headers = { Authorization = "Bearer " .. p.token } }).status
    end)
    ctx.step("missing", function() return r:manifest("sweep/none:1") end)
  end,
}
]]

describe("secrets sweep", function()
  local reg, work, layout, secrets, key_pem

  setup(function()
    reg = R.start({ mode = "tls", users = { [USER] = PASSWORD } })
    work = R.tmpdir()
    layout = work .. "/layout"
    R.make_layout(layout, { tag = "v1" })
    write(work .. "/sweep.lua", RECIPE)
    -- Docker's config.json with the password as a base64 auth entry.
    sh.run({ "mkdir", "-p", work .. "/home/.docker", work .. "/home/.kube", work .. "/out" })
    write(work .. "/home/.docker/config.json", ('{"auths":{"%s":{"auth":"%s"}}}')
      :format(reg.host, b64(USER .. ":" .. PASSWORD)))
    -- A kubeconfig whose client key is a real private key.
    assert.are.equal(0, sh.run({ "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
      "-out", work .. "/client.key" }).code)
    key_pem = read(work .. "/client.key")
    write(work .. "/home/.kube/config", table.concat({
      "apiVersion: v1", "kind: Config", "current-context: sweep",
      "clusters:", "- name: sweep", "  cluster:", "    server: https://127.0.0.1:1",
      "contexts:", "- name: sweep", "  context: {cluster: sweep, user: sweep}",
      "users:", "- name: sweep", "  user:", "    client-key-data: " .. b64(key_pem),
      "    token: " .. TOKEN, "" }, "\n"))
    os.remove(work .. "/client.key")
    secrets = {
      password = PASSWORD,
      ["password base64"] = b64(USER .. ":" .. PASSWORD),
      token = TOKEN,
      ["token base64"] = b64(TOKEN),
      ["client key base64"] = b64(key_pem),
    }
    -- Every line of the key's PEM body, so a key printed in any wrapping is found.
    for line in key_pem:gmatch("[^\n]+") do
      if not line:find("-----", 1, true) then secrets["client key line " .. line:sub(1, 8)] = line end
    end
  end)

  teardown(function()
    if reg then reg:stop() end
    if work then sh.run({ "rm", "-rf", work }) end
  end)

  -- Runs myrmex with the planted environment; returns the texts to sweep, by name.
  local function run(name, args, env)
    local e = { HOME = work .. "/home", DOCKER_CONFIG = work .. "/home/.docker",
      KUBECONFIG = work .. "/home/.kube/config", MYRMEX_PARAM_TOKEN = TOKEN }
    for k, v in pairs(env or {}) do e[k] = v end
    local r = sh.myrmex(args, { env = e, cwd = work .. "/out" })
    return r, { [name .. " stdout"] = r.stdout, [name .. " stderr"] = r.stderr }
  end

  local function sweep(outputs)
    -- and every file any run left in the output folder
    for path in sh.run({ "find", work .. "/out", "-type", "f" }).stdout:gmatch("[^\n]+") do
      outputs[path] = read(path)
    end
    for where, text in pairs(outputs) do
      for what, secret in pairs(secrets) do
        assert.is_nil(text:find(secret, 1, true), what .. " found in " .. where)
      end
    end
  end

  local function recipe_args(extra)
    local args = { "run", work .. "/sweep.lua", "--set", "host=" .. reg.host, "--set", "ca=" .. reg.tls.ca,
      "--set", "layout=" .. layout }
    for _, a in ipairs(extra) do args[#args + 1] = a end
    return args
  end

  it("a debug run with JUnit and HTML reports, text logs, leaks nothing", function()
    local r, out = run("text", recipe_args({ "--set", "password=" .. PASSWORD, "--log-level", "debug",
      "--log-format", "text", "--junit", "junit.xml", "--report", "report.html" }))
    -- the run really authenticated (push and tags passed) and then failed on the missing tag
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("NotFound", 1, true), r.stderr)
    assert.truthy(read(work .. "/out/junit.xml"):find("missing", 1, true))
    assert.truthy(read(work .. "/out/report.html"))
    assert.truthy(r.stderr:find("***", 1, true), "nothing was redacted: the secrets took no path to the output")
    sweep(out)
  end)

  it("a debug run with JSON logs (CI) and credentials from config.json leaks nothing", function()
    local r, out = run("json", recipe_args({ "--log-level", "debug", "--junit", "junit-ci.xml",
      "--report", "report-ci.html" }), { CI = "true" })
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('"level":"debug"', 1, true) or r.stderr:find('"level": "debug"', 1, true),
      "no JSON debug lines")
    sweep(out)
  end)

  it("plan mode in text and JSON leaks nothing", function()
    local all = {}
    for _, fmt in ipairs({ "text", "json" }) do
      local args = recipe_args({ "--set", "password=" .. PASSWORD, "--log-level", "debug", "--plan-format", fmt,
        "--junit", "plan-" .. fmt .. ".xml" })
      args[1] = "plan"
      local _, out = run("plan " .. fmt, args)
      for k, v in pairs(out) do all[k] = v end
    end
    local _, out = run("dry-run deploy", { "run", sh.src .. "/recipes/deploy.lua", "--dry-run", "--set",
      "image=" .. reg.host .. "/sweep/app:1", "--log-level", "debug", "--report", "deploy.html" })
    for k, v in pairs(out) do all[k] = v end
    sweep(all)
  end)

  it("doctor, which reads the kubeconfig and config.json, leaks nothing", function()
    local _, out = run("doctor", { "doctor" })
    assert.truthy((out["doctor stdout"] .. out["doctor stderr"]):find("kube", 1, true), "doctor did not look")
    sweep(out)
  end)
end)

describe("credentials stay on the registry host", function()
  it("a Link to another host is followed without the registry's credentials", function()
    local registry = require("myrmex.registry")
    local c = registry.connect("127.0.0.1:5999", { plain_http = true, config = false, username = USER,
      password = PASSWORD })
    c.auth.kind = "basic"
    local sent = {}
    -- The transport is replaced: what matters is what _call hands it.
    c._raw = function(_, t)
      sent[#sent + 1] = t
      local link = #sent == 1 and '<http://127.0.0.2:5999/v2/a/tags/list?last=t1>; rel="next"' or nil
      return { status = 200, body = '{"name":"a","tags":["t' .. #sent .. '"]}', headers = { link = link } }
    end
    assert.are.same({ "t1", "t2" }, c:tags("a"))
    assert.are.equal(2, #sent)
    assert.truthy(sent[1].basic_auth, "the registry itself got no credentials")
    assert.are.equal("http://127.0.0.2:5999/v2/a/tags/list?last=t1", sent[2].url)
    assert.is_nil(sent[2].basic_auth)
    for k, v in pairs(sent[2].headers or {}) do
      assert.is_nil(k:lower():find("authorization", 1, true), k .. ": " .. tostring(v))
    end
  end)
end)
