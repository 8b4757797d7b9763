-- myrmex.yaml: loading as Kubernetes reads YAML (checked against kubectl itself, which parses
-- with sigs.k8s.io/yaml), the YAML 1.2 core schema, anchors and merges, limits and errors,
-- and dumping that kubectl reads back to the same values.
local yaml = require("myrmex.yaml")
local json = require("myrmex.json")
local sh = require("tests.support.sh")

local SAMPLES = sh.fixtures .. "/kubernetes/samples"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Structural equality where 1000 == 1000.0 (JSON has one number type) and null is json.null.
local function same(a, b, path)
  path = path or "(root)"
  if type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do
      local ok, where = same(v, b[k], path .. "." .. tostring(k))
      if not ok then return false, where end
    end
    for k in pairs(b) do
      if a[k] == nil then return false, path .. "." .. tostring(k) .. " missing on the left" end
    end
    return true
  end
  if type(a) == "number" and type(b) == "number" then
    if a == b or (a ~= a and b ~= b) then return true end
    return false, path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
  end
  if a == b then return true end
  return false, path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
end

local function assert_same(a, b)
  local ok, where = same(a, b)
  assert(ok, where)
end

-- What kubectl makes of a single-object manifest, with no server: `label --local` parses the
-- file exactly as `apply` does (YAML -> JSON through sigs.k8s.io/yaml) and prints the JSON.
local ORACLE_LABEL = "myrmex-oracle"
local function kubectl_view(text)
  local path = sh.tmpfile(text, ".yaml")
  local r = sh.run({ "kubectl", "label", "--local", "-f", path, ORACLE_LABEL .. "=1", "-o", "json" },
    { env = { KUBECONFIG = "/dev/null" } })
  os.remove(path)
  assert(r.code == 0, "kubectl: " .. r.stderr)
  local obj = json.decode(r.stdout)
  obj.metadata.labels[ORACLE_LABEL] = nil
  if next(obj.metadata.labels) == nil then obj.metadata.labels = nil end
  return obj
end

-- Our view of the same text, as the JSON we would send.
local function our_view(text, opts)
  return json.decode(json.encode(yaml.load(text, opts)))
end

local function configmap(body)
  return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: oracle\n" .. body
end

describe("yaml.load (kubernetes schema)", function()
  -- Each row: a plain scalar as written in a manifest, and what it must mean. Every row is
  -- also checked against kubectl below, so the table cannot drift from Kubernetes.
  local rows = {
    { "on", true }, { "On", true }, { "ON", true }, { "yes", true }, { "Yes", true },
    { "y", true }, { "Y", true }, { "true", true }, { "True", true },
    { "off", false }, { "no", false }, { "n", false }, { "N", false }, { "FALSE", false },
    { "tRue", "tRue" }, { "oN", "oN" }, { "nULL", "nULL" },
    { "~", json.null }, { "null", json.null }, { "Null", json.null }, { "NULL", json.null },
    { "12", 12 }, { "+12", 12 }, { "-12", -12 }, { "0", 0 }, { "-0", 0 },
    { "0777", 511 }, { "0o17", 15 }, { "0x1F", 31 }, { "-0x10", -16 }, { "0b101", 5 },
    { "1_000", 1000 }, { "0x_1F", 31 }, { "09", 9.0 }, { "0o19", "0o19" },
    { "1.5", 1.5 }, { "1.", 1.0 }, { ".5", 0.5 }, { "+.5", 0.5 }, { "1e3", 1000.0 },
    { "12e03", 12000.0 }, { "1_0.5", 10.5 }, { "1e", "1e" }, { "1e400", "1e400" },
    { "9223372036854775807", math.maxinteger }, { "-9223372036854775808", math.mininteger },
    { "9223372036854775808", 9223372036854775808.0 },
    { "18446744073709551616", 18446744073709551616.0 },
    { ("9"):rep(200), tonumber(("9"):rep(200)) },
    { "2001-12-14", "2001-12-14" }, { "2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00" },
    { "190:20:30", "190:20:30" }, { "=", "=" }, { "<<", "<<" }, { "1.2.3", "1.2.3" },
    { "10Mi", "10Mi" }, { "500m", "500m" }, { "0.5Gi", "0.5Gi" }, { "v1", "v1" },
  }

  it("resolves plain scalars as go-yaml v2 does", function()
    for _, row in ipairs(rows) do
      local got = yaml.load("v: " .. row[1]).v
      assert(same(got, row[2]), row[1] .. " -> " .. tostring(got))
      assert.are.equal(math.type(row[2]), math.type(got), row[1])
    end
  end)

  it("agrees with kubectl on every row", function()
    local lines = {}
    for i, row in ipairs(rows) do lines[#lines + 1] = ("  k%02d: %s"):format(i, row[1]) end
    local text = configmap("values:\n" .. table.concat(lines, "\n") .. "\n")
    assert_same(our_view(text), kubectl_view(text))
  end)

  it("keeps quoted and block scalars as strings", function()
    local t = yaml.load([[
a: "on"
b: 'yes'
c: "123"
d: '0777'
e: !!str 12
f: |
  on
g: ""
h: !custom 12
]])
    assert.are.same({ "on", "yes", "123", "0777", "12", "on\n", "", "12" },
      { t.a, t.b, t.c, t.d, t.e, t.f, t.g, t.h })
  end)

  it("honours explicit standard tags", function()
    local t = yaml.load('a: !!int "12"\nb: !!float 3\nc: !!bool "yes"\nd: !!binary aGVs\n  bG8=\ne: !!null ""\n')
    assert.are.equal(12, t.a)
    assert.are.equal("integer", math.type(t.a))
    assert.are.equal("float", math.type(t.b))
    assert.are.equal(true, t.c)
    assert.are.equal("hello", t.d)
    assert.are.equal(json.null, t.e)
    local ok, err = pcall(yaml.load, "a: !!int abc")
    assert.is_false(ok)
    assert.matches("line 1 column 4: value does not match its tag !!int", err, 1, true)
  end)

  it("turns keys into strings as sigs.k8s.io/yaml does, and agrees with kubectl", function()
    local text = configmap([[
keys:
  on: a
  12: b
  0x10: c
  1.5: d
  1e3: e
  0.1: f
  100000000000000000000: g
  3.0: h
  123456.7: j
  0.000012345: k
  1e39: l
  -1e39: m
  1e-50: p
  123456789012345678901234567890: o
]])
    local ours = yaml.load(text).keys
    assert.are.same({ ["true"] = "a", ["12"] = "b", ["16"] = "c", ["1.5"] = "d", ["1000"] = "e",
      ["0.1"] = "f", ["1e+20"] = "g", ["3"] = "h",
      ["123456.7"] = "j", ["1.2345e-05"] = "k", [".inf"] = "l", ["-.inf"] = "m", ["0"] = "p",
      ["1.2345679e+29"] = "o" }, ours)
    assert_same(our_view(text), kubectl_view(text))
    local ok, err = pcall(yaml.load, "~: x")
    assert.is_false(ok)
    assert.matches("null cannot be a mapping key", err, 1, true)
    -- kubectl refuses these two as well ("unsupported map key").
    ok, err = pcall(yaml.load, "a: 1\n9223372036854775808: x")
    assert.is_false(ok)
    assert.are.equal("yaml: line 2 column 1: mapping key 9223372036854775808 is beyond the "
      .. "64-bit integer range", err)
    assert.is_false(pcall(kubectl_view, configmap("k:\n  9223372036854775808: x\n")))
  end)

  it("merges << the way kubectl does (later keys and earlier list items win)", function()
    local text = configmap([[
base: &b {a: 1, b: 2}
over: &o {a: 5, c: 6}
m1:
  <<: *b
  a: 9
m2:
  a: 9
  <<: *b
m3:
  <<: [*b, *o]
  c: 7
dup:
  a: 1
  a: 2
]])
    local t = yaml.load(text)
    assert.are.same({ a = 9, b = 2 }, t.m1)
    assert.are.same({ a = 1, b = 2 }, t.m2) -- go-yaml v2 applies << where it stands
    assert.are.same({ a = 1, b = 2, c = 7 }, t.m3)
    assert.are.same({ a = 2 }, t.dup)
    assert_same(our_view(text), kubectl_view(text))
  end)

  it("loads every kubectl testdata manifest the way kubectl does", function()
    for _, name in ipairs({ "deploy-serverside.yaml", "set-deployment.yaml", "set-job.yaml",
      "service.yaml" }) do
      local text = read(SAMPLES .. "/manifests/" .. name)
      assert_same(our_view(text), kubectl_view(text))
    end
    local list = yaml.load(read(SAMPLES .. "/manifests/cm.yaml"))
    assert.are.equal("ConfigMapList", list.kind)
    assert.are.equal("apple", list.items[2].data.key2)
    assert.are.equal("{}", json.encode(list.metadata))
  end)

  it("reads the server-side Deployment with the right types", function()
    local d = yaml.load(read(SAMPLES .. "/manifests/deploy-serverside.yaml"))
    assert.are.equal("1", d.metadata.annotations["deployment.kubernetes.io/revision"])
    assert.are.equal("integer", math.type(d.metadata.generation))
    assert.are.equal("integer", math.type(d.spec.replicas))
    local last = json.decode(d.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"])
    assert.are.equal("Deployment", last.kind)
  end)

  it("reads JSON (a YAML subset) exactly as json.decode does", function()
    for _, name in ipairs({ "apps.v1.Deployment", "core.v1.Service", "core.v1.ConfigMap",
      "core.v1.Secret", "batch.v1.Job", "core.v1.Namespace", "autoscaling.v1.Scale" }) do
      local text = read(SAMPLES .. "/roundtrip-v1.35/" .. name .. ".json")
      assert_same(yaml.load(text), json.decode(text))
      assert.are.equal(json.encode(json.decode(text), { sort_keys = true }),
        json.encode(yaml.load(text), { sort_keys = true }))
    end
  end)
end)

describe("yaml.load on kubeconfigs", function()
  local dir
  before_each(function()
    dir = sh.run("mktemp -d /tmp/mx-yaml-XXXXXX").stdout:gsub("%s+$", "")
  end)
  after_each(function() os.execute("rm -rf " .. sh.q(dir)) end)

  local function kubectl(args, path)
    local cmd = { "kubectl", "--kubeconfig", path }
    for _, a in ipairs(args) do cmd[#cmd + 1] = a end
    local r = sh.run(cmd)
    assert(r.code == 0, table.concat(cmd, " ") .. ": " .. r.stderr)
    return r.stdout
  end

  it("loads a kubeconfig written by kubectl itself", function()
    local path = dir .. "/config"
    local ca = ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    local ca_path = dir .. "/ca.crt"
    local f = assert(io.open(ca_path, "wb")); f:write(ca); f:close()
    kubectl({ "config", "set-cluster", "kind-dev", "--server=https://127.0.0.1:6443",
      "--certificate-authority=" .. ca_path, "--embed-certs=true" }, path)
    kubectl({ "config", "set-cluster", "yes", "--server=https://[::1]:7443",
      "--insecure-skip-tls-verify=true" }, path)
    kubectl({ "config", "set-credentials", "admin", "--token=0777" }, path)
    kubectl({ "config", "set-context", "dev", "--cluster=kind-dev", "--user=admin",
      "--namespace=on" }, path)
    kubectl({ "config", "use-context", "dev" }, path)
    local cfg = yaml.load(read(path))
    local want = json.decode(kubectl({ "config", "view", "--raw", "-o", "json" }, path))
    assert_same(cfg.clusters, want.clusters)
    assert_same(cfg.users, want.users)
    assert_same(cfg.contexts, want.contexts)
    assert.are.equal("dev", cfg["current-context"])
    -- The values that look like other types were quoted by kubectl, and stay strings.
    assert.are.equal("0777", cfg.users[1].user.token)
    assert.are.equal("on", cfg.contexts[1].context.namespace)
    local byname = {}
    for _, c in ipairs(cfg.clusters) do byname[c.name] = c.cluster end
    assert.are.equal(true, byname.yes["insecure-skip-tls-verify"])
    assert.are.equal(ca, (require("myrmex.core.yaml").load_all(
      "x: !!binary " .. byname["kind-dev"]["certificate-authority-data"]))[1].x)
  end)

  it("reads a hand-written kubeconfig with 1.1 booleans as kubectl does", function()
    local path = dir .. "/config"
    local f = assert(io.open(path, "wb"))
    f:write([[
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: yes
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: myrmex-test-no-such-plugin
      args: ["eks", "get-token", "--cluster-name", "on"]
      env: ~
      interactiveMode: Never
      provideClusterInfo: off
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
]])
    f:close()
    local cfg = yaml.load(read(path))
    local want = json.decode(kubectl({ "config", "view", "--raw", "-o", "json" }, path))
    assert.are.equal(true, cfg.clusters[1].cluster["insecure-skip-tls-verify"])
    assert.are.equal(false, cfg.users[1].user.exec.provideClusterInfo)
    assert.are.equal("on", cfg.users[1].user.exec.args[4])
    assert_same(cfg.clusters, want.clusters)
    assert_same(cfg.users[1].user.exec.args, want.users[1].user.exec.args)
    assert.are.equal(want.users[1].user.exec.provideClusterInfo,
      cfg.users[1].user.exec.provideClusterInfo)
  end)
end)

describe("yaml.load (core schema)", function()
  it("reads YAML 1.2 core scalars", function()
    local t = yaml.load([[
a: on
b: yes
c: true
d: 0777
e: 0o17
f: 0x1F
g: 1e3
h: ~
i: 0b101
j: 1_000
k: .inf
l: 99999999999999999999
]], { schema = "core" })
    assert.are.same({ "on", "yes", true, 777, 15, 31, 1000.0, json.null, "0b101", "1_000" },
      { t.a, t.b, t.c, t.d, t.e, t.f, t.g, t.h, t.i, t.j })
    assert.are.equal(math.huge, t.k)
    assert.are.equal("float", math.type(t.l))
  end)

  it("lets explicit keys win over merged ones, wherever << stands", function()
    local t = yaml.load([[
b: &b {a: 1, b: 2}
o: &o {a: 5, c: 6}
m1:
  a: 9
  <<: *b
m2:
  <<: [*b, *o]
  c: 7
]], { schema = "core" })
    assert.are.same({ a = 9, b = 2 }, t.m1)
    assert.are.same({ a = 1, b = 2, c = 7 }, t.m2)
  end)

  it("rejects duplicate keys", function()
    local ok, err = pcall(yaml.load, "a: 1\nb: 2\na: 3\n", { schema = "core" })
    assert.is_false(ok)
    assert.are.equal("yaml: line 3 column 1: duplicate mapping key 'a'", err)
  end)
end)

describe("yaml.load structure and limits", function()
  it("returns documents, with empty ones as null", function()
    assert.are.equal(0, #yaml.load_all(""))
    assert.are.equal(0, #yaml.load_all("# only a comment\n"))
    local docs = yaml.load_all("---\n---\na: 1\n---\n")
    assert.are.equal(3, #docs)
    assert.are.equal(json.null, docs[1])
    assert.are.same({ a = 1 }, docs[2])
    assert.are.equal(json.null, docs[3])
    assert.are.equal(1, #yaml.load_all("---\n---\na: 1\n---\n", { skip_empty = true }))
    assert.are.equal(json.null, yaml.load(""))
    assert.are.equal("[]", json.encode(yaml.load_all("")))
  end)

  it("keeps [] and {} apart through myrmex.json's markers", function()
    local t = yaml.load("a: []\nb: {}\nc: [1, {}]\n")
    assert.are.equal('{"a":[],"b":{},"c":[1,{}]}', json.encode(t, { sort_keys = true }))
    assert.are.equal(getmetatable(json.array()), getmetatable(t.a))
    assert.are.equal(getmetatable(json.object()), getmetatable(t.b))
  end)

  it("copies aliases, so changing one use leaves the others alone", function()
    local t = yaml.load("base: &b {env: [1, 2]}\np: *b\nq: *b\n")
    t.p.env[1] = 99
    assert.are.equal(1, t.q.env[1])
    assert.are.equal(1, t.base.env[1])
    assert.are_not.equal(t.p, t.q)
    -- `y` is a boolean key in the kubernetes schema, hence "true" (as in kubectl).
    assert.are.same({ "true" }, (function()
      local keys = {}
      for k in pairs(yaml.load("y: 1")) do keys[#keys + 1] = k end
      return keys
    end)())
  end)

  it("refuses a billion-laughs document quickly", function()
    local lines = { 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]' }
    local prev = "a"
    for _, n in ipairs({ "b", "c", "d", "e", "f", "g", "h", "i" }) do
      lines[#lines + 1] = ("%s: &%s [%s*%s]"):format(n, n, ("*" .. prev .. ","):rep(8), prev)
      prev = n
    end
    local t0 = os.clock()
    local ok, err = pcall(yaml.load, table.concat(lines, "\n"))
    assert.is_false(ok)
    assert.matches("aliases expand to too many nodes", err, 1, true)
    assert.is_true(os.clock() - t0 < 2)
  end)

  it("refuses unknown and self-referencing anchors", function()
    local ok, err = pcall(yaml.load, "a: *nope")
    assert.is_false(ok)
    assert.are.equal("yaml: line 1 column 4: unknown anchor 'nope'", err)
    ok, err = pcall(yaml.load, "a: &x [1, *x]")
    assert.is_false(ok)
    assert.matches("alias *x is used inside its own anchored node", err, 1, true)
  end)

  it("accepts 1000 levels of nesting and refuses 1001 with a position", function()
    assert.is_table(yaml.load(("["):rep(999) .. ("]"):rep(999)))
    local ok, err = pcall(yaml.load, ("["):rep(1001) .. ("]"):rep(1001))
    assert.is_false(ok)
    assert.are.equal("yaml: line 1 column 1001: nesting deeper than 1000 levels", err)
    local block = {}
    for i = 1, 1001 do block[i] = (" "):rep(i - 1) .. "k:" end
    ok, err = pcall(yaml.load, table.concat(block, "\n") .. " 1\n")
    assert.is_false(ok)
    assert.matches("nesting deeper than 1000 levels", err, 1, true)
  end)

  it("gives line and column for syntax errors", function()
    local ok, err = pcall(yaml.load, "a: 1\nb: c: d\n")
    assert.is_false(ok)
    assert.are.equal("yaml: line 2 column 5: mapping values are not allowed in this context", err)
    ok, err = pcall(yaml.load, "a:\n  - 1\n  b: 2\n")
    assert.is_false(ok)
    assert.matches("^yaml: line 3 column 3: ", err)
    ok, err = pcall(yaml.load, 'a: "unterminated\n')
    assert.is_false(ok)
    assert.matches("^yaml: line 2 column 1: found unexpected end of stream", err)
    local v, msg = yaml.safe_load("a: b: c")
    assert.is_nil(v)
    assert.matches("^yaml: line 1 column 5", msg)
  end)

  it("rejects invalid UTF-8 with its position", function()
    -- The position is the byte where the sequence went wrong (here the newline after \xC3).
    local ok, err = pcall(yaml.load, "a: 1\nname: caf\xC3\n")
    assert.is_false(ok)
    assert.are.equal("yaml: line 2 column 11: invalid UTF-8 (invalid trailing UTF-8 octet 0x0A "
      .. "at byte 16)", err)
    ok, err = pcall(yaml.load, "a: \xff\n")
    assert.is_false(ok)
    assert.are.equal("yaml: line 1 column 4: invalid UTF-8 (invalid leading UTF-8 octet 0xFF at byte 4)", err)
    ok, err = pcall(yaml.load, "a: \xC0\xAF\n") -- overlong '/'
    assert.is_false(ok)
    assert.matches("line 1 column 4", err, 1, true)
    ok, err = pcall(yaml.load, "a: \xED\xA0\x80\n") -- a UTF-16 surrogate
    assert.is_false(ok)
    assert.matches("^yaml: line 1 column 4: ", err)
  end)

  it("reads UTF-16 with a byte order mark", function()
    local text = "kind: Pod\nname: caf\xC3\xA9\n"
    local u16 = { "\xFF\xFE" }
    for _, cp in utf8.codes(text) do u16[#u16 + 1] = string.char(cp & 0xFF, cp >> 8) end
    assert.are.same({ kind = "Pod", name = "caf\xC3\xA9" }, yaml.load(table.concat(u16)))
  end)

  it("names the function on misuse", function()
    assert.has_error(function() yaml.load(nil) end, "yaml.load: text must be a string, got nil")
    assert.has_error(function() yaml.load("a", { schem = "core" }) end,
      "yaml.load: opts.schem: unknown option")
    assert.has_error(function() yaml.load_all("a", { schema = "1.1" }) end,
      "yaml.load_all: opts.schema: 'kubernetes' or 'core' expected, got '1.1'")
  end)
end)

describe("yaml.dump", function()
  it("quotes every string a reader would take for another type", function()
    local tricky = { "on", "off", "yes", "no", "y", "n", "Y", "true", "False", "null", "~", "",
      "0777", "0o17", "0x1F", "1.20", "1e3", "1_000", ".inf", "-.inf", ".nan", "12:30",
      "2001-12-14", "<<", "=", "-", "- x", "a: b", "#c", "x #y", "@x", "`x", "!x", "&x", "*x",
      "{x}", "[x]", "'q'", '"q"', " lead", "trail ", "multi\nline\n", "no newline\nat end",
      "  indented\nfirst\n", "tab\tin", "caf\xC3\xA9", "%x", "|", ">", "?", ":", "12e03", "+1",
      "0b101", "9223372036854775808", "1e400", "nULL", "tRue" }
    local data = {}
    for i, s in ipairs(tricky) do data[("k%02d"):format(i)] = s end
    local text = yaml.dump({ apiVersion = "v1", kind = "ConfigMap",
      metadata = { name = "oracle" }, data = data })
    -- Our loader, both schemas, and kubectl all read back the exact strings.
    assert.are.same(data, yaml.load(text).data)
    assert.are.same(data, yaml.load(text, { schema = "core" }).data)
    assert.are.same(data, kubectl_view(text).data)
  end)

  -- Random strings over an alphabet of YAML's troublemakers: indicators, quotes, escapes,
  -- line breaks YAML 1.1 knows (\r, NEL, LS), a BOM, control characters and scalar words.
  local ALPHABET = { "a", "Z", "0", "9", " ", " ", "\t", "\n", "\n", ":", "#", "-", "'", '"', "\\",
    "{", "}", "[", "]", ",", "&", "*", "!", "|", ">", "%", "@", "`", "?", ".", "~", "\xC3\xA9",
    "\xE6\x97\xA5", "\r", "\x7f", "\u{85}", "\u{2028}", "\u{feff}", "\x1b", "on", "yes", "null",
    "1.5", "0x1F", "e", "+", "_", "<<", "=" }
  local function random_strings(seed, count, nul)
    math.randomseed(seed)
    local out = {}
    for n = 1, count do
      local parts = {}
      for i = 1, math.random(0, 8) do parts[i] = ALPHABET[math.random(#ALPHABET)] end
      if nul and n % 50 == 0 then parts[#parts + 1] = "\0" end
      out[n] = table.concat(parts)
    end
    return out
  end

  it("round-trips random tricky strings as values and keys, in both schemas", function()
    for _, s in ipairs(random_strings(42, 5000, true)) do
      local key = s ~= "" and s or "empty"
      local text = yaml.dump({ v = s, l = { s }, [key] = 1 })
      for _, schema in ipairs({ "kubernetes", "core" }) do
        local back = yaml.load(text, { schema = schema })
        assert(back.v == s and back.l[1] == s and back[key] == 1,
          schema .. ": " .. ("%q"):format(s) .. " came back from " .. ("%q"):format(text))
      end
    end
  end)

  it("writes random tricky strings that kubectl reads back exactly", function()
    local data = {}
    for i, s in ipairs(random_strings(7, 1500, false)) do data[("k%04d"):format(i)] = s end
    local text = yaml.dump({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "oracle" }, data = data })
    assert.are.same(data, kubectl_view(text).data)
  end)

  it("writes numbers so that their types survive", function()
    local t = { i = 42, neg = -7, big = math.maxinteger, f = 1.0, h = 100.0, g = 0.1, e = 1e20,
      tiny = 1.5e-7, inf = math.huge, nan = 0 / 0, t = true, no = false, z = json.null }
    local back = yaml.load(yaml.dump(t))
    for k, v in pairs(t) do
      assert(same(back[k], v), k)
      assert.are.equal(math.type(v), math.type(back[k]), k)
    end
    assert.matches("\nf: 1.0\n", "\n" .. yaml.dump(t), 1, true)
    assert.matches("\nh: 100.0\n", "\n" .. yaml.dump(t), 1, true)
    assert.matches("\ne: 1.0e%+20\n", "\n" .. yaml.dump(t))
  end)

  it("sorts keys, keeps [] and {}, and writes block style", function()
    local text = yaml.dump({ b = { 1, 2 }, a = { x = json.array(), y = json.object(), z = {} } })
    -- 'y' is quoted: unquoted, kubectl would read that key as the boolean true.
    assert.are.equal("a:\n  x: []\n  'y': {}\n  z: {}\nb:\n- 1\n- 2\n", text)
  end)

  it("writes multi-line strings as literal blocks", function()
    local s = "line one\nline two\n"
    local text = yaml.dump({ script = s })
    assert.are.equal("script: |\n  line one\n  line two\n", text)
    assert.are.equal(s, yaml.load(text).script)
  end)

  it("round-trips every roundtrip fixture, and kubectl reads the dump back", function()
    for _, name in ipairs({ "apps.v1.Deployment", "core.v1.Service", "core.v1.ConfigMap",
      "core.v1.Secret", "batch.v1.Job" }) do
      local obj = json.decode(read(SAMPLES .. "/roundtrip-v1.35/" .. name .. ".json"))
      local text = yaml.dump(obj)
      assert_same(yaml.load(text), obj)
      -- `kubectl label` drops managedFields from what it prints; compare the rest.
      local want = json.decode(json.encode(obj))
      want.metadata.managedFields = nil
      assert_same(kubectl_view(text), want)
    end
  end)

  it("writes several documents", function()
    local text = yaml.dump_all({ { a = 1 }, "two", json.null })
    assert.are.equal("a: 1\n--- two\n--- null\n", text)
    local back = yaml.load_all(text)
    assert.are.same({ a = 1 }, back[1])
    assert.are.equal("two", back[2])
    assert.are.equal(json.null, back[3])
    assert.are.equal("", yaml.dump_all({}))
  end)

  it("refuses what YAML cannot hold, naming the path", function()
    assert.has_error(function() yaml.dump({ spec = { containers = { { image = "\xff" } } } }) end,
      "yaml.dump: spec.containers[1].image: string is not valid UTF-8")
    assert.has_error(function() yaml.dump({ f = print }) end,
      "yaml.dump: f: cannot dump a function")
    local cyc = {}
    cyc.self = cyc
    local ok, err = pcall(yaml.dump, cyc)
    assert.is_false(ok)
    assert.matches("nesting deeper than 1000 levels (a cycle?)", err, 1, true)
    assert.has_error(function() yaml.dump_all("x") end,
      "yaml.dump_all: list must be a table, got string")
  end)

  it("resolve tells what a plain scalar means and whether dump quotes it", function()
    assert.are.same({ true, true }, { yaml.resolve("on") })
    assert.are.same({ "on", true }, { yaml.resolve("on", "core") })
    assert.are.same({ "nginx", false }, { yaml.resolve("nginx") })
  end)
end)
