-- needs: docker registry
-- The recipe library against the real local engines: dockerd and docker-registry.
local sh = require("tests.support.sh")
local registry = require("tests.support.registry")
local json = require("myrmex.json")

local function engine_state()
  local imgs = sh.run("docker images -q --no-trunc | sort").stdout
  local ctrs = sh.run("docker ps -aq --no-trunc | sort").stdout
  local nets = sh.run("docker network ls -q | sort").stdout
  return imgs .. "|" .. ctrs .. "|" .. nets
end

describe("recipe library", function()
  local reg, ctxdir, image, fake

  setup(function()
    reg = registry.start()
    ctxdir = os.tmpname()
    os.remove(ctxdir)
    assert(os.execute("mkdir -p " .. ctxdir .. " && gcc -static -O2 -o " .. ctxdir .. "/hello "
      .. sh.src .. "/examples/app/hello.c"))
    image = reg.host .. "/myrmex-test/hello:" .. os.time()
    -- A fake trivy on PATH that prints Trivy's real report of a clean image.
    fake = os.tmpname()
    os.remove(fake)
    os.execute("mkdir -p " .. fake .. " && ln -s " .. sh.src .. "/tests/support/fake-scanners/fake-scanner " .. fake .. "/trivy")
    local f = assert(io.open(fake .. "/fake.json", "w"))
    f:write(json.encode({ report = os.getenv("MYRMEX_FIXTURES") .. "/scanners/trivy/sl-micro-rancher5.4.json" }))
    f:close()
  end)

  teardown(function()
    reg:stop()
    os.execute("docker rmi -f " .. image .. " >/dev/null 2>&1; rm -rf " .. ctxdir .. " " .. fake)
  end)

  local function run(args, env)
    local e = { CI = "", PATH = (env and env.PATH) or os.getenv("PATH") }
    for k, v in pairs(env or {}) do e[k] = v end
    local cmd = { "run" }
    for _, a in ipairs(args) do cmd[#cmd + 1] = a end
    return sh.myrmex(cmd, { env = e, cwd = sh.src })
  end

  it("plans a release without changing the engine or the registry", function()
    local before = engine_state()
    local r = sh.myrmex({ "plan", "release", "--set", "context=" .. ctxdir, "--set", "image=" .. image,
      "--set", "language=c", "--set", "binary=hello", "--plan-format", "json" }, { cwd = sh.src, env = { CI = "" } })
    assert.are.equal(0, r.code, r.stderr)
    local plan = json.decode(r.stdout:match("(%{\"actions\".*)$"))
    local ops = {}
    for _, a in ipairs(plan.actions) do ops[#ops + 1] = a.engine .. " " .. a.op end
    assert.truthy(table.concat(ops, ","):find("docker build_image", 1, true), table.concat(ops, ","))
    assert.truthy(table.concat(ops, ","):find("registry push_image", 1, true), table.concat(ops, ","))
    assert.truthy(table.concat(ops, ","):find("k8s apply", 1, true))
    assert.are.equal(before, engine_state())
    assert.is_nil(io.open(ctxdir .. "/Dockerfile"), "plan mode wrote no Dockerfile")
    local tags = sh.run({ "curl", "-s", "http://" .. reg.host .. "/v2/myrmex-test/hello/tags/list" }).stdout
    assert.falsy(tags:find('"tags":%["'), "nothing was pushed: " .. tags)
  end)

  it("releases: build, analyze, scan, push, pull back and run, planned deploy, reports", function()
    local html, junit = os.tmpname() .. ".html", os.tmpname() .. ".xml"
    local r = run({ "release", "--set", "context=" .. ctxdir, "--set", "image=" .. image, "--set", "language=c",
      "--set", "binary=hello", "--set", "verify_cmd=spec", "--report", html, "--junit", junit },
      { PATH = fake .. ":" .. os.getenv("PATH") })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find('verified the pushed image output="hello from a spec image built by myrmex"', 1, true), r.stderr)
    assert.truthy(r.stderr:find("summary: ok build", 1, true))
    -- What myrmex pushed, the registry serves and docker itself can run.
    os.execute("docker rmi -f " .. image .. " >/dev/null 2>&1")
    assert.are.equal(0, sh.run("docker pull -q " .. image).code)
    assert.are.equal("hello from a cli image built by myrmex\n", sh.run("docker run --rm --network none " .. image .. " cli").stdout)
    assert.are.equal(0, sh.run({ "xmllint", "--noout", junit }).code)
    local f = assert(io.open(html))
    local page = f:read("a")
    f:close()
    assert.truthy(page:find("build/lint", 1, true), "nested steps are in the report")
    assert.truthy(page:find("k8s", 1, true))
    local argv = assert(io.open(fake .. "/argv.log")):read("a")
    assert.truthy(argv:find(image, 1, true), "trivy was asked to scan the image")
    os.remove(html)
    os.remove(junit)
  end)

  it("fails the build on lint errors with the step named, exit 1", function()
    local bad = os.tmpname()
    os.remove(bad)
    os.execute("mkdir -p " .. bad .. " && printf 'FROM scratch\\nCOPY a /a\\nCMD [\"/a\"]\\nCMD [\"/b\"]\\n' > " .. bad .. "/Dockerfile")
    local r = run({ "build", "--set", "context=" .. bad, "--set", "tag=myrmex-test/bad:1", "--set", "lint_fail=warning" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("step=lint", 1, true) or r.stderr:find("step 'lint'", 1, true), r.stderr)
    os.execute("rm -rf " .. bad)
  end)

  it("scans with the policy and exports SARIF, CSV and JSON", function()
    local out = os.tmpname()
    local r = run({ "scan", "--set", "report=" .. os.getenv("MYRMEX_FIXTURES") .. "/scanners/trivy/alpine-310.json",
      "--set", "fail_on=CRITICAL", "--set", "sarif=" .. out .. ".sarif", "--set", "csv=" .. out .. ".csv",
      "--set", "json=" .. out .. ".json" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("2.1.0", json.decode(assert(io.open(out .. ".sarif")):read("a")).version)
    r = run({ "scan", "--set", "report=" .. os.getenv("MYRMEX_FIXTURES") .. "/scanners/trivy/alpine-310.json",
      "--set", "fail_on=MEDIUM" })
    assert.are.equal(1, r.code, "4 MEDIUM findings fail a MEDIUM policy")
    assert.truthy(r.stderr:find("policy failed", 1, true), r.stderr)
    os.remove(out .. ".sarif"); os.remove(out .. ".csv"); os.remove(out .. ".json")
  end)

  it("promotes only what passes the scan", function()
    local dst = reg.host .. "/myrmex-test/promoted:1"
    local r = run({ "promote", "--set", "from=" .. image, "--set", "to=" .. dst },
      { PATH = fake .. ":" .. os.getenv("PATH") })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(0, sh.run({ "skopeo", "inspect", "--tls-verify=false", "docker://" .. dst }).code)
    local f = assert(io.open(fake .. "/fake.json", "w"))
    f:write(json.encode({ report = os.getenv("MYRMEX_FIXTURES") .. "/scanners/trivy/debian-buster.json" }))
    f:close()
    r = run({ "promote", "--set", "from=" .. image, "--set", "to=" .. reg.host .. "/myrmex-test/blocked:1" },
      { PATH = fake .. ":" .. os.getenv("PATH") })
    assert.are.equal(1, r.code)
    assert.are.equal(1, sh.run({ "skopeo", "inspect", "--tls-verify=false", "docker://" .. reg.host .. "/myrmex-test/blocked:1" }).code ~= 0 and 1 or 0)
  end)

  it("gates an analysis on efficiency, wasted bytes and wasted share (image.check)", function()
    -- Two layers: the second deletes a 20000-byte file and rewrites a 5000-byte one, so
    -- efficiency is 6000/32000 and 31000 of the 6000 bytes above the base are wasted.
    local archive = require("myrmex.core.archive")
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local function layer(name, entries)
      local w <close> = archive.writer(dir .. "/" .. name)
      for _, e in ipairs(entries) do w:add(e) end
    end
    local function f(p, n) return { path = p, data = ("z"):rep(n) } end
    layer("l1.tar", { f("etc/app.conf", 1000), f("bin/tool", 5000), f("var/tmp/junk", 20000) })
    layer("l2.tar", { f("var/tmp/.wh.junk", 0), f("bin/tool", 6000) })
    do
      local w <close> = archive.writer(dir .. "/img.tar")
      w:add({ path = "l1/layer.tar", data = { file = dir .. "/l1.tar" } })
      w:add({ path = "l2/layer.tar", data = { file = dir .. "/l2.tar" } })
      w:add({ path = "cfg.json", data = json.encode({ os = "linux", rootfs = { type = "layers" } }) })
      w:add({ path = "manifest.json", data = json.encode({ { Config = "cfg.json",
        Layers = { "l1/layer.tar", "l2/layer.tar" } } }) })
    end
    local tar = dir .. "/img.tar"
    local ok = run({ "analyze", "--set", "image=" .. tar, "--set", "min_efficiency=0.18" })
    local low = run({ "analyze", "--set", "image=" .. tar, "--set", "min_efficiency=0.19" })
    local share = run({ "analyze", "--set", "image=" .. tar, "--set", "max_wasted_share=0.5" })
    local bytes = run({ "analyze", "--set", "image=" .. tar, "--set", "max_wasted_mb=0.01" })
    os.execute("rm -rf " .. dir)
    assert.are.equal(0, ok.code, ok.stderr)
    assert.are_not.equal(0, low.code)
    assert.truthy(low.stderr:find("efficiency 0.1875 is below 0.1900", 1, true), low.stderr)
    assert.are_not.equal(0, share.code)
    assert.truthy(share.stderr:find("wasted share 5.1667 is above 0.5000", 1, true), share.stderr)
    assert.are_not.equal(0, bytes.code)
    assert.truthy(bytes.stderr:find("wasted 30.3 KiB is above 10.2 KiB", 1, true), bytes.stderr)
  end)

  it("cleans up by label", function()
    os.execute("docker create --label myrmex-cleanup-test=1 --network none " .. image .. " >/dev/null")
    local r = run({ "cleanup", "--set", "label=myrmex-cleanup-test=1", "--set", "older_than=0s" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("", sh.run("docker ps -aq --filter label=myrmex-cleanup-test=1").stdout)
  end)

  it("deploys in plan mode without a cluster and writes the manifests", function()
    local out = os.tmpname() .. ".yaml"
    local r = run({ "deploy", "--set", "image=" .. image, "--set", "name=web", "--set", "port=8080", "--set", "out=" .. out },
      { KUBECONFIG = "", HOME = "/nonexistent" })
    assert.are.equal(0, r.code, r.stderr)
    local docs = require("myrmex.yaml").load_all(assert(io.open(out)):read("a"))
    assert.are.equal("Deployment", docs[1].kind)
    assert.are.equal(image, docs[1].spec.template.spec.containers[1].image)
    assert.are.equal("Service", docs[2].kind)
    assert.truthy(r.stderr:find("no Kubernetes cluster configured", 1, true))
    os.remove(out)
  end)
end)
