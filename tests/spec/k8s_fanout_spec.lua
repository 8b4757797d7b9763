-- needs: k8s docker
-- Fan-out (#20): client:fan_out against the test bed's real control plane (a namespace of its
-- own, behind tests/k8s/recorder.py), the runner image myrmex packs of itself pushed to the
-- test bed's registry and loaded into the Docker engine, and the pod side of it run for real
-- by the Docker engine with what the kubelet would give it.
--
-- What is not tested against pods, and why: the nodes are kwok's (tests/README.md), so no
-- process runs in a Job's pod. kwok ends every Job pod with exit 0 (exit 1 when its command is
-- `false`), the same for every index, and writes no termination message. So against the
-- server: the Job and ConfigMap fan_out makes, the real job controller's Indexed completions,
-- per-index retries (backoffLimitPerIndex) and failed indexes, ordering by the completion
-- index of the real pods, the timeout and <close> deleting everything, plan mode, the image
-- reused by digest. A mix of succeeding and failing items in one Job, and results read from
-- termination messages written by pods, cannot happen on kwok nodes: the recipe's results and
-- failures are checked by running the packed image with Docker (JOB_COMPLETION_INDEX, the
-- items file at the ConfigMap's mount path, /dev/termination-log bind-mounted), and the
-- collector is fed those very messages in pod objects the spec builds (said where it does).
local sh = require("tests.support.sh")
local K = require("tests.k8s.support")
local dt = require("tests.support.docker")
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local fanout = require("myrmex.k8s.fanout")
local selfimage = require("myrmex.selfimage")

local STATE = os.getenv("MYRMEX_CI_STATE") or "/tmp/myrmex-ci"
local function registry_host()
  return (assert(io.open(STATE .. "/registry"), "no test bed registry"):read("a"):gsub("%s+$", ""))
end

-- A recipe folder of its own (fan-out packs the whole folder into the image).
local RECIPE = [[
local errors = require("myrmex.errors")
return {
  description = "fan-out spec recipe",
  params = { n = { type = "integer", required = true }, fail = { type = "boolean", default = false },
    big = { type = "integer", default = 0 }, marker = { type = "string", default = "" },
    flaky = { type = "string", default = "" } },
  run = function(p)
    if p.flaky ~= "" and not io.open(p.flaky) then
      assert(io.open(p.flaky, "w")):close()
      errors.raise({ code = "Unreachable", engine = "spec", message = "first attempt fails" })
    end
    if p.fail then errors.raise({ code = "Invalid", engine = "spec", message = "item " .. p.n .. " fails" }) end
    if p.big > 0 then return string.rep("x", p.big) end
    return { n = p.n, square = p.n * p.n, marker = p.marker }
  end,
}
]]

local function recipe_dir(extra)
  local files = { ["work.lua"] = RECIPE }
  for k, v in pairs(extra or {}) do files[k] = v end
  local dir = dt.tmpdir(files)
  return dir, dir .. "/work.lua"
end

describe("fan-out: the Job it makes (no server)", function()
  it("is one Indexed Job with a completion per item, per-index retries and the items in a ConfigMap", function()
    local items = { { n = 1 }, { n = 2 }, { n = 3 } }
    local cm, job = fanout.manifests({ recipe = "work.lua", items = items, parallelism = 2, retries = 1,
      timeout = 30, resources = { limits = { cpu = "1" } } }, "reg.local/r@sha256:" .. ("a"):rep(64), "/myrmex/recipe/work.lua", "items-x")
    assert.are.equal("Indexed", job.spec.completionMode)
    assert.are.equal(3, job.spec.completions)
    assert.are.equal(2, job.spec.parallelism)
    assert.are.equal(1, job.spec.backoffLimitPerIndex)
    assert.is_nil(job.spec.backoffLimit)
    assert.are.equal(30, job.spec.activeDeadlineSeconds)
    assert.are.equal("FailIndex", job.spec.podFailurePolicy.rules[1].action)
    assert.are.same({ 2 }, job.spec.podFailurePolicy.rules[1].onExitCodes.values)
    local pod = job.spec.template.spec
    assert.are.equal("Never", pod.restartPolicy)
    assert.are.equal("items-x", pod.volumes[1].configMap.name)
    local c = pod.containers[1]
    assert.are.equal("/etc/myrmex/fanout", c.volumeMounts[1].mountPath)
    assert.are.equal("/usr/local/bin/myrmex", c.command[1]) -- no shell
    assert.are.equal("File", c.terminationMessagePolicy)
    assert.are.same({ limits = { cpu = "1" } }, c.resources)
    assert.are.same(items, json.decode(cm.data["items.json"]))
  end)

  it("says what is wrong with a spec, naming it", function()
    local function msg(spec)
      local ok, err = pcall(fanout.manifests, spec, "i", "r", "c")
      assert.is_false(ok)
      return tostring(err)
    end
    assert.truthy(msg({ recipe = "r", items = {} }):find("items must be a non-empty list", 1, true))
    assert.truthy(msg({ recipe = "r", items = { { n = 1 }, "x" } }):find("items[2] must be a table of params, got string", 1, true))
    assert.truthy(msg({ recipe = "r", items = { {} }, paralelism = 2 }):find("unknown option 'paralelism'", 1, true))
    assert.truthy(msg({ recipe = "r", items = { {} }, parallelism = 0 }):find("parallelism must be a positive integer", 1, true))
    assert.truthy(msg({ recipe = "r", items = { { s = ("x"):rep(1100 * 1024) } } }):find("a ConfigMap holds about", 1, true))
    assert.truthy(msg({ recipe = "r", items = { {} }, image = "a", push_to = "b" }):find("exclude each other", 1, true))
  end)

  it("without backoffLimitPerIndex on the server, has each pod retry its own item and exit 0", function()
    local _, job = fanout.manifests({ recipe = "work.lua", items = { { n = 1 } }, retries = 2 }, "i", "/r", "c", true)
    assert.is_nil(job.spec.backoffLimitPerIndex)
    assert.is_nil(job.spec.podFailurePolicy)
    assert.are.equal(6, job.spec.backoffLimit)
    local env = {}
    for _, e in ipairs(job.spec.template.spec.containers[1].env) do env[e.name] = e.value end
    assert.are.equal("2", env.MYRMEX_FANOUT_RETRIES)
  end)

  it("reads completedIndexes / failedIndexes", function()
    local s = fanout.parse_indexes("0-2,5,7-8")
    assert.are.same({ [0] = true, [1] = true, [2] = true, [5] = true, [7] = true, [8] = true }, s)
    assert.are.same({}, fanout.parse_indexes(nil))
  end)

  it("refuses a result over the 4 KiB termination message limit with a clear error", function()
    local text, replaced = fanout.encode_record({ ok = true, result = ("y"):rep(5000), seconds = 0.1 }, 7)
    assert.is_true(replaced)
    local rec = json.decode(text)
    assert.is_false(rec.ok)
    assert.are.equal("Invalid", rec.error.code)
    assert.truthy(rec.error.message:find("item 7: the recipe's result is 5", 1, true), rec.error.message)
    assert.truthy(rec.error.message:find("4096-byte termination message limit", 1, true))
    assert.is_true(#text <= 4096)
  end)
end)

describe("fan-out: the packed image, run by the Docker engine as the kubelet would run it", function()
  local d, dir, path, img
  local tags = {}
  setup(function()
    d = require("myrmex.docker").connect()
    dir, path = recipe_dir()
    img = selfimage.ensure({ recipe = path, tag = "mxt-fan-" .. dt.run_id .. "/runner:1" })
    tags[#tags + 1] = img.image
  end)
  teardown(function()
    for _, t in ipairs(tags) do pcall(d.remove_image, d, t, { force = true }) end
    dt.cleanup()
    os.execute("rm -rf " .. sh.q(dir))
  end)

  -- Run item `index` (0-based, as JOB_COMPLETION_INDEX) of `items`; returns the exit code and
  -- what the container left in its termination message file.
  local function run_item(items, index, extra_env)
    local work = dt.tmpdir({ ["items/items.json"] = json.encode(json.array(items)), ["termination-log"] = "" })
    os.execute("chmod 0666 " .. sh.q(work .. "/termination-log"))
    local c <close> = d:run_container({ image = img.image, name = dt.name("fan"), labels = dt.labels,
      cmd = { "-e", "os.exit(require('myrmex.k8s.fanout').pod_main())" }, network = "none",
      env = { JOB_COMPLETION_INDEX = tostring(index), MYRMEX_FANOUT_RECIPE = img.recipe,
        MYRMEX_FANOUT_ITEMS = "/etc/myrmex/fanout/items.json",
        MYRMEX_FANOUT_RETRIES = extra_env and extra_env.MYRMEX_FANOUT_RETRIES or nil },
      mounts = { { type = "bind", source = work .. "/items", target = "/etc/myrmex/fanout", read_only = true },
        { type = "bind", source = work .. "/termination-log", target = "/dev/termination-log" } },
      wait = true })
    local msg = sh.read(work .. "/termination-log")
    os.execute("rm -rf " .. sh.q(work))
    return c.exit_code, msg, c
  end

  it("is FROM scratch: the binary, its libraries and the recipe folder, nothing pulled", function()
    local info = d:inspect_image(img.image)
    assert.are.equal(1, #info.RootFS.Layers)
    assert.are.same({ "/usr/local/bin/myrmex" }, info.Config.Entrypoint)
    assert.are.equal(img.config_digest, info.Id)
  end)

  it("runs the item of its JOB_COMPLETION_INDEX and writes the result as JSON to the termination message", function()
    local code, msg = run_item({ { n = 1 }, { n = 2, marker = "two" }, { n = 3 } }, 1)
    assert.are.equal(0, code, msg)
    local rec = json.decode(msg)
    assert.is_true(rec.ok)
    assert.are.same({ n = 2, square = 4, marker = "two" }, rec.result)
    assert.is_number(rec.seconds)
  end)

  it("writes a failing recipe's error object and exits 1 (the index may be retried)", function()
    local code, msg = run_item({ { n = 1 }, { n = 2, fail = true } }, 1)
    assert.are.equal(1, code, msg)
    local rec = json.decode(msg)
    assert.is_false(rec.ok)
    assert.are.equal("Invalid", rec.error.code)
    assert.are.equal("item 2 fails", rec.error.message)
  end)

  it("exits 2 (podFailurePolicy fails the index at once) for bad params and for a result over 4 KiB", function()
    local code, msg = run_item({ { n = "two" } }, 0)
    assert.are.equal(2, code, msg)
    local rec = json.decode(msg)
    assert.are.equal("Usage", rec.error.code)
    assert.truthy(rec.error.message:find("parameter 'n'", 1, true), rec.error.message)
    code, msg = run_item({ { n = 1, big = 6000 } }, 0)
    assert.are.equal(2, code, msg)
    assert.truthy(json.decode(msg).error.message:find("over the 4096-byte termination message limit", 1, true))
  end)

  it("retries in the pod when told to (a server without backoffLimitPerIndex), exiting 0 with the outcome", function()
    local code, msg = run_item({ { n = 1, fail = true } }, 0, { MYRMEX_FANOUT_RETRIES = "2" })
    assert.are.equal(0, code, msg)
    local rec = json.decode(msg)
    assert.is_false(rec.ok)
    assert.are.equal(3, rec.attempts)
    code, msg = run_item({ { n = 5, flaky = "/tmp/flaky" } }, 0, { MYRMEX_FANOUT_RETRIES = "1" })
    assert.are.equal(0, code, msg)
    rec = json.decode(msg)
    assert.is_true(rec.ok, msg)
    assert.are.equal(2, rec.attempts)
    assert.are.equal(25, rec.result.square)
    -- the collector reports the failure carried in a completed pod's record, with its attempts
    local _, bad = run_item({ { n = 1, fail = true } }, 0, { MYRMEX_FANOUT_RETRIES = "1" })
    local res = fanout.collect(1, { status = { completedIndexes = "0" } }, { { metadata = { name = "j-0-x",
      annotations = { ["batch.kubernetes.io/job-completion-index"] = "0" } }, status = { phase = "Succeeded",
      containerStatuses = { { name = "item", state = { terminated = { exitCode = 0, message = bad } } } } } } })
    assert.is_false(res[1].ok)
    assert.are.equal(2, res[1].attempts)
    assert.are.equal("item 1 fails", res[1].error.message)
  end)

  it("says so when the index has no item", function()
    local code, msg = run_item({ { n = 1 } }, 4)
    assert.are.equal(2, code)
    assert.truthy(json.decode(msg).error.message:find("has no item 5 (index 4)", 1, true), msg)
  end)

  it("collect turns those messages into results (pod objects built by the spec: kwok cannot run the image)", function()
    local _, ok_msg = run_item({ { n = 1 }, { n = 2 } }, 1)
    local _, bad_msg = run_item({ { n = 1, fail = true } }, 0)
    local function pod(i, phase, code, msg)
      return { metadata = { name = "j-" .. i .. "-x", creationTimestamp = "2026-01-01T00:00:00Z",
        annotations = { ["batch.kubernetes.io/job-completion-index"] = tostring(i) } },
        status = { phase = phase, containerStatuses = { { name = "item", state = { terminated = {
          exitCode = code, message = msg, startedAt = "2026-01-01T00:00:01Z", finishedAt = "2026-01-01T00:00:03Z" } } } } } }
    end
    local res = fanout.collect(3, { status = { completedIndexes = "1", failedIndexes = "0" } },
      { pod(1, "Succeeded", 0, ok_msg), pod(0, "Failed", 1, bad_msg) })
    assert.are.equal(3, #res)
    assert.is_false(res[1].ok)
    assert.are.equal("item 1 fails", res[1].error.message)
    assert.are.equal("j-0-x", res[1].pod)
    assert.is_true(res[2].ok)
    assert.are.same({ n = 2, square = 4, marker = "" }, res[2].result)
    assert.are.equal(2, res[2].index)
    assert.is_false(res[3].ok)
    assert.truthy(res[3].error.message:find("item 3: no pod ran for it", 1, true))
  end)
end)

describe("fan-out on the real control plane", function()
  local srv, c, dir, path
  local function ns_list(kind)
    return c:list(kind, { namespace = srv.namespace })
  end
  setup(function()
    srv = K.cluster("fan")
    c = require("myrmex.k8s").connect({ kubeconfig = srv:kubeconfig(), namespace = srv.namespace })
    dir, path = recipe_dir()
  end)
  teardown(function()
    srv.stop()
    os.execute("rm -rf " .. sh.q(dir))
  end)

  -- Wait (at most a minute) until `fn()` is true: the garbage collector and kwok act on
  -- their own time. Not a timing assertion: only that it happens.
  local function eventually(fn, what)
    local http = require("myrmex.http")
    for _ = 1, 240 do
      if fn() then return end
      http.sleep(0.25)
    end
    error("never happened: " .. what)
  end
  local function only_root_ca()
    for _, cm in ipairs(ns_list("configmaps")) do
      if cm.metadata.name ~= "kube-root-ca.crt" then return false end
    end
    return true
  end

  it("creates the Indexed Job and the items ConfigMap, and returns results in item order", function()
    local items = {}
    for i = 1, 6 do items[i] = { n = i } end
    local h <close> = c:fan_out_start({ recipe = path, items = items, parallelism = 2, image = "myrmex.test/runner:1" })
    local job = c:get("jobs", h.name)
    assert.are.equal("Indexed", job.spec.completionMode)
    assert.are.equal(6, job.spec.completions)
    assert.are.equal(2, job.spec.parallelism)
    assert.are.equal(0, job.spec.backoffLimitPerIndex) -- kept: the server has the field
    local cm_name = job.spec.template.spec.volumes[1].configMap.name
    local cm = c:get("configmaps", cm_name)
    assert.are.same(items, json.decode(cm.data["items.json"]))
    assert.are.equal(job.metadata.uid, cm.metadata.ownerReferences[1].uid)
    local res = h:wait()
    assert.are.equal(6, #res)
    for i, r in ipairs(res) do
      assert.are.equal(i, r.index)
      assert.is_true(r.ok, r.error and r.error.message)
      -- the job controller names a pod after its completion index
      assert.truthy(r.pod:find("^" .. h.name:gsub("%-", "%%-") .. "%-" .. (i - 1) .. "%-"), r.pod)
      assert.are.equal(1, r.attempts)
      assert.is_nil(r.result) -- kwok's pods write no termination message
    end
    h:close()
    eventually(function() return #ns_list("jobs") == 0 and #ns_list("pods") == 0 and only_root_ca() end,
      "job, pods and items gone after the results were collected")
  end)

  it("retries each failing index on its own (backoffLimitPerIndex) and pins the failure to it", function()
    -- kwok fails a Job pod whose command is `false`: every index fails, through the real job
    -- controller; each is retried once, then reported with its pod and exit code.
    local res = c:fan_out({ recipe = path, items = { { n = 1 }, { n = 2 }, { n = 3 } }, parallelism = 3,
      retries = 1, image = "myrmex.test/runner:1", command = { "false" } })
    assert.are.equal(3, #res)
    for i, r in ipairs(res) do
      assert.is_false(r.ok)
      assert.are.equal(2, r.attempts)
      assert.are.equal("Engine", r.error.code)
      assert.truthy(r.error.message:find(("item %d: pod .* exited with code 1 %%(Error%%)"):format(i)), r.error.message)
      assert.truthy(r.pod:find("%-" .. (i - 1) .. "%-"), r.pod)
    end
  end)

  it("a timeout deletes the Job, its pods and its ConfigMap and says which items finished", function()
    -- No node has 1000 CPUs: the real scheduler leaves the pods Pending.
    local ok, err = pcall(c.fan_out, c, { recipe = path, items = { { n = 1 }, { n = 2 } }, timeout = 2,
      image = "myrmex.test/runner:1", resources = { requests = { cpu = "1000" } } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Timeout"), tostring(err))
    assert.truthy(tostring(err):find("items finished: none (0 of 2); job and pods deleted", 1, true), tostring(err))
    assert.are.same({}, err.details.finished)
    eventually(function() return #ns_list("jobs") == 0 and #ns_list("pods") == 0 and only_root_ca() end,
      "job, pods and items gone after the timeout")
  end)

  it("<close> deletes an unfinished Job when the scope is left by an error", function()
    local name
    local ok, err = pcall(function()
      local h <close> = c:fan_out_start({ recipe = path, items = { { n = 1 } }, image = "myrmex.test/runner:1",
        resources = { requests = { cpu = "1000" } } })
      name = h.name
      assert.are.equal(name, c:get("jobs", name).metadata.name)
      error("stop here")
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("stop here", 1, true))
    local gone, gerr = pcall(c.get, c, "jobs", name)
    assert.is_true(not gone and errors.is(gerr, "NotFound") or
      (gone and gerr.metadata.deletionTimestamp ~= nil), "job still there")
    eventually(function() return #ns_list("pods") == 0 and only_root_ca() end, "pods and items gone")
  end)

  it("Ctrl-C while it waits deletes the Job, its pods and its ConfigMap (exit 130)", function()
    local script = sh.tmpfile(([[
local rt = require("myrmex.core.runtime")
local c = require("myrmex.k8s").connect({ kubeconfig = %q, namespace = %q })
local h <close> = c:fan_out_start({ recipe = %q, items = { { n = 1 }, { n = 2 } }, image = "myrmex.test/runner:1",
  resources = { requests = { cpu = "1000" } } })
io.stdout:write(rt.getpid(), " ", h.name, "\n")
io.stdout:flush()
h:wait()
]]):format(srv:kubeconfig(), srv.namespace, path), ".lua")
    local errfile = sh.tmpfile("", ".log")
    local p = assert(io.popen(sh.q(sh.bin) .. " " .. sh.q(script) .. " 2>" .. sh.q(errfile) .. "; echo exit=$?"))
    local first = p:read("l")
    local pid, name = first:match("^(%d+) (%S+)$")
    assert.truthy(pid, first)
    assert.are.equal(name, c:get("jobs", name).metadata.name)
    os.execute("kill -INT " .. pid)
    local rest = p:read("a")
    p:close()
    local log_text = sh.read(errfile)
    os.remove(errfile)
    assert.truthy(rest:find("exit=130", 1, true), rest .. log_text)
    assert.truthy(log_text:find("fan-out stopped: job and pods deleted", 1, true), log_text)
    assert.truthy(log_text:find("none (0 of 2)", 1, true), log_text)
    local there, got = pcall(c.get, c, "jobs", name)
    assert.is_true(not there and errors.is(got, "NotFound") or (there and got.metadata.deletionTimestamp ~= nil))
    eventually(function() return #ns_list("pods") == 0 and only_root_ca() end, "pods and items gone after Ctrl-C")
  end)

  it("packs myrmex, pushes it to the registry the nodes pull from, and reuses it by digest", function()
    local reg = registry_host()
    local target = reg .. "/mxt-fan-" .. dt.run_id .. "/runner:1"
    local first = c:fan_out_start({ recipe = path, items = { { n = 1 } }, push_to = target })
    local image = first.image
    assert.truthy(image:find("^" .. reg:gsub("%p", "%%%0") .. "/mxt%-fan%-" .. dt.run_id .. "/runner@sha256:%x+$"), image)
    assert.are.equal(image, c:get("jobs", first.name).spec.template.spec.containers[1].image)
    assert.is_true(first:wait()[1].ok)
    first:close()
    -- Nothing changed: same digest, nothing pushed.
    local again = selfimage.ensure({ recipe = path, push_to = target })
    assert.is_true(again.reused)
    assert.are.equal(image, again.image)
    local second <close> = c:fan_out_start({ recipe = path, items = { { n = 2 } }, push_to = target })
    assert.is_true(second.image_reused)
    assert.are.equal(image, second.image)
    second:wait()
    -- A file added to the recipe's folder is a new image.
    sh.write(dir .. "/helper.lua", "return 1\n")
    local changed = selfimage.ensure({ recipe = path, push_to = target })
    assert.is_false(changed.reused)
    assert.are_not.equal(image, changed.image)
    os.remove(dir .. "/helper.lua")
  end)

  it("plan mode shows the Job and the ConfigMap and creates nothing", function()
    local plan = require("myrmex.plan")
    plan.set_active(true)
    local ok, res = pcall(c.fan_out, c, { recipe = path, items = { { n = 1 }, { n = 2 } }, image = "myrmex.test/runner:1" })
    plan.set_active(false)
    assert.is_true(ok, tostring(res))
    assert.is_true(res.planned)
    assert.are.equal("Indexed", res.manifests[2].spec.completionMode)
    assert.are.equal(0, #ns_list("jobs"))
  end)

  describe("the command line", function()
    local function run(args)
      return sh.myrmex(args, { env = { KUBECONFIG = srv:kubeconfig(), CI = "" } })
    end
    local items_file
    setup(function()
      items_file = sh.tmpfile(json.encode(json.array({ { n = 1 }, { n = 2, fail = true }, { n = 3 } })), ".json")
    end)

    it("runs the items here through myrmex.parallel: one line per item, exit 1 when one failed", function()
      local r = run({ "run", path, "--items", items_file, "--parallelism", "2", "--quiet" })
      assert.are.equal(1, r.code, r.stderr)
      local lines = {}
      for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(3, #lines, r.stdout)
      assert.truthy(lines[1]:match('^item 1 ok [%d.]+s {"marker":"","n":1,"square":1}$'), lines[1])
      assert.truthy(lines[2]:match("^item 2 FAILED [%d.]+s: Invalid: item 2 fails$"), lines[2])
      assert.truthy(lines[3]:match('^item 3 ok [%d.]+s {"marker":"","n":3,"square":9}$'), lines[3])
    end)

    it("runs examples/fan-out as docs/recipes.md shows", function()
      local ex = sh.src .. "/examples/fan-out/"
      local r = run({ "run", ex .. "square.lua", "--items", ex .. "items.json", "--quiet" })
      assert.are.equal(1, r.code, r.stderr)
      local out = r.stdout:gsub(" %d+%.%d%ds", " T")
      assert.are.equal('item 1 ok T {"n":1,"square":1}\nitem 2 ok T {"n":2,"square":4}\n'
        .. "item 3 FAILED T: Invalid: item n=3 was asked to fail\n"
        .. 'item 4 ok T {"n":4,"square":16}\n', out)
    end)

    it("names the item whose params are wrong before anything runs", function()
      local bad = sh.tmpfile('[{"n": 1}, {"n": "x"}]', ".json")
      local r = run({ "run", path, "--items", bad, "--on", "kubernetes", "--image", "x:1" })
      assert.are.equal(2, r.code)
      assert.truthy(r.stderr:find("item 2: parameter 'n'", 1, true), r.stderr)
    end)

    it("--on kubernetes --plan prints the Job it would make", function()
      local r = run({ "run", path, "--items", items_file, "--on", "kubernetes", "--plan", "--image", "x:1",
        "--parallelism", "2", "--quiet" })
      assert.are.equal(0, r.code, r.stderr)
      local objs = json.decode(r.stdout)
      assert.are.equal("ConfigMap", objs[1].kind)
      assert.are.equal("Job", objs[2].kind)
      assert.are.equal(3, objs[2].spec.completions)
      assert.are.equal(2, objs[2].spec.parallelism)
      assert.are.equal(0, #ns_list("jobs"))
    end)

    it("--on kubernetes runs the Job and prints one line per item, with its pod", function()
      local r = run({ "run", path, "--items", items_file, "--on", "kubernetes", "--image", "myrmex.test/runner:1",
        "--namespace", srv.namespace, "--quiet" })
      assert.are.equal(0, r.code, r.stderr) -- kwok completes every pod: the failing item cannot fail there
      local n = 0
      for l in r.stdout:gmatch("[^\n]+") do
        n = n + 1
        assert.truthy(l:match("^item " .. n .. " ok [%d.]+s pod=myrmex%-fan%-work%-%w+%-" .. (n - 1) .. "%-%w+ null$"), l)
      end
      assert.are.equal(3, n)
    end)
  end)
end)
