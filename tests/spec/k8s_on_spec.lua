-- needs: k8s
-- `myrmex run --on kubernetes`: the recipe runs as a Job on the test bed's real control plane
-- (a namespace of its own, behind tests/k8s/recorder.py).
local sh = require("tests.support.sh")
local K = require("tests.k8s.support")
local json = require("myrmex.json")

describe("run --on kubernetes", function()
  local srv, kubeconfig
  setup(function()
    srv = K.cluster("on")
    kubeconfig = srv:kubeconfig()
  end)
  teardown(function() srv.stop() end)

  local function run(args)
    return sh.myrmex(args, { env = { KUBECONFIG = kubeconfig, CI = "", MYRMEX_RUNNER_IMAGE = "" } })
  end

  it("creates a Job running the same command line in the given image and waits for it", function()
    local r = run({ "run", "--on", "kubernetes", "--image", "registry.local/myrmex:1", "--namespace", srv.namespace,
      sh.src .. "/tests/fixtures/recipes/typed.lua", "--set", "name=web", "--set", "count=2" })
    assert.are.equal(0, r.code, r.stderr)
    local jobs = json.decode(sh.run({ "curl", "-s", srv.url .. "/apis/batch/v1/namespaces/" .. srv.namespace .. "/jobs" }).stdout).items
    local job = jobs[#jobs]
    local ctr = job.spec.template.spec.containers[1]
    assert.are.equal("registry.local/myrmex:1", ctr.image)
    assert.are.same({ "myrmex", "run", sh.src .. "/tests/fixtures/recipes/typed.lua", "--log-format", "json",
      "--set", "count=2", "--set", "name=web" }, ctr.command)
    assert.are.equal("myrmex", job.metadata.labels["app.kubernetes.io/managed-by"])
    assert.truthy(job.metadata.name:match("^myrmex%-typed%-"))
  end)

  it("checks parameters locally before scheduling anything", function()
    local r = run({ "run", "--on", "kubernetes", "--image", "x:1", sh.src .. "/tests/fixtures/recipes/typed.lua",
      "--set", "count=many", "--set", "name=a" })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("parameter 'count'", 1, true), r.stderr)
  end)

  it("needs an image, and --image needs --on", function()
    local r = run({ "run", "--on", "kubernetes", "typed" })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("--on kubernetes needs --image", 1, true), r.stderr)
    r = run({ "run", "--image", "x:1", sh.src .. "/tests/fixtures/recipes/typed.lua" })
    assert.are.equal(2, r.code)
    r = run({ "run", "--on", "mars", "typed" })
    assert.are.equal(2, r.code)
  end)

  it("plans the Job under plan and creates nothing", function()
    local before = #json.decode(sh.run({ "curl", "-s", srv.url .. "/apis/batch/v1/namespaces/" .. srv.namespace .. "/jobs" }).stdout).items
    local r = run({ "plan", "--on", "kubernetes", "--image", "x:1", sh.src .. "/tests/fixtures/recipes/typed.lua",
      "--set", "name=a" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("k8s create", 1, true) or r.stdout:find("Job", 1, true), r.stdout)
    local after = #json.decode(sh.run({ "curl", "-s", srv.url .. "/apis/batch/v1/namespaces/" .. srv.namespace .. "/jobs" }).stdout).items
    assert.are.equal(before, after)
  end)

  it("deploys with the deploy recipe, and rolls back a failing rollout", function()
    -- kwok never makes this image's pods Ready (tests/k8s/kwok.yaml): its rollout cannot finish.
    local broken = "myrmex.test/never-ready:2"
    local function deploy(image, timeout)
      return sh.myrmex({ "run", sh.src .. "/recipes/deploy.lua", "--set", "image=" .. image, "--set", "name=web",
        "--set", "port=8080", "--set", "timeout=" .. (timeout or 20) }, { env = { KUBECONFIG = kubeconfig, CI = "" } })
    end
    local function image_now()
      local d = json.decode(sh.run({ "curl", "-s", srv.url .. "/apis/apps/v1/namespaces/" .. srv.namespace .. "/deployments/web" }).stdout)
      return d.spec.template.spec.containers[1].image
    end
    local r = deploy("app:1")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("app:1", image_now())
    r = deploy(broken, 3)
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("rolling back", 1, true), r.stderr)
    assert.are.equal("app:1", image_now(), "the previous template is back")
    -- Someone else put the failing image in place; deploying that same image fails with nothing
    -- of this deploy to undo, so no going back past what runs (kubectl's plain undo would pick
    -- app:1, the revision before).
    local k = sh.run({ "kubectl", "--kubeconfig", kubeconfig, "set", "image", "deployment/web", "*=" .. broken })
    assert.are.equal(0, k.code, k.stderr)
    r = deploy(broken, 3)
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find("nothing to roll back", 1, true), r.stderr)
    assert.are.equal(broken, image_now())
  end)
end)
