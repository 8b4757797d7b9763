-- needs: k8s
-- myrmex.k8s against the test bed's real control plane (.ci/services start kubernetes: etcd,
-- kube-apiserver, controller manager, scheduler, kwok nodes), each describe in a namespace of
-- its own behind tests/k8s/recorder.py, which logs the requests and cuts watches on demand:
-- CRUD, errors with the server's causes, builders validated by the official OpenAPI schemas,
-- scale, server-side apply, watches that survive drops and 410s (etcd compacted for real),
-- rollouts, Jobs, plan mode, TLS and credentials. Only basic auth, which the real server no
-- longer has, is checked against tests/k8s/apiserver.py.
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local plan = require("myrmex.plan")
local K = require("tests.k8s.support")
local sh = require("tests.support.sh")

local function raises(code, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected a " .. code .. " error")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. errors.message(err))
  return err
end

local function requests_since(srv, n)
  local all = srv:control("requests")
  local out = {}
  for i = n + 1, #all do
    if not all[i].path:match("^/_test/") then out[#out + 1] = all[i] end
  end
  return out, #all
end

describe("myrmex.k8s", function()
  local srv, c

  setup(function()
    srv = K.cluster("k8s", { "shop", "tiers", "tmp" })
    c = k8s.connect({ kubeconfig = srv:kubeconfig() })
  end)
  teardown(function() srv.stop() end)

  it("finds resources through discovery by kind, plural and short name", function()
    assert.are.equal("deployments", c:resource("Deployment").name)
    assert.are.equal("apps/v1", c:resource("deploy").api_version)
    assert.are.equal("services", c:resource("svc").name)
    assert.is_false(c:resource("namespaces").namespaced)
    local err = raises("NotFound", function() c:resource("Frobnicator") end)
    assert.matches('resource type "Frobnicator"', err.message)
    assert.are.equal("Active", c:get("namespace", "default").status.phase)
  end)

  it("builds Deployments and Services the official schema accepts, and rejects bad fields before sending", function()
    local d = k8s.deployment({ name = "web", image = "nginx:1.25", replicas = 2, ports = { 80,
      { containerPort = 443, name = "https" } },
      env = { B = "2", A = 1 }, resources = { requests = { cpu = "250m", memory = "64Mi" } } })
    assert.are.equal("", K.schema_errors(d))
    assert.are.same({ { name = "A", value = "1" }, { name = "B", value = "2" } },
      d.spec.template.spec.containers[1].env)
    local s = k8s.service({ name = "web", selector = { app = "web" }, ports = { { port = 80, target_port = 8080,
      name = "http" },
      { port = 443, name = "https" } }, type = "NodePort" })
    assert.are.equal("", K.schema_errors(s))
    assert.are.equal("", K.schema_errors(k8s.job({ name = "j", image = "busybox", command = { "echo", "hi" },
      completions = 2 })))
    local _, n = requests_since(srv, 0)
    assert.has_error(function() c:create_deployment({ name = "web", image = "x", replicas = "two" }) end,
      "k8s.deployment: replicas must be an integer >= 0, got two")
    assert.has_error(function() c:create_deployment({ name = "Web", image = "x" }) end)
    assert.has_error(function() c:create_deployment({ name = "web", image = "x", replica = 1 }) end,
      "k8s.deployment: unknown field 'replica'")
    assert.has_error(function() c:create_service({ name = "s", selector = {}, ports = { { port = 70000 } } }) end,
      "k8s.service: ports[1].port must be an integer between 1 and 65535, got 70000")
    assert.are.same({}, (requests_since(srv, n)))
  end)

  it("creates, reads, lists with selectors and pages, replaces, and reports the server's errors", function()
    local d = c:create_deployment({ name = "crud", image = "nginx:1.25", labels = { app = "crud", tier = "web" } })
    assert.are.equal(1, d.metadata.generation)
    assert.are.equal("IfNotPresent", d.spec.template.spec.containers[1].imagePullPolicy)
    local err = raises("Conflict", function() c:create_deployment({ name = "crud", image = "nginx:1.25" }) end)
    assert.are.equal(409, err.status)
    assert.are.equal("AlreadyExists", err.details.reason)
    assert.are.equal('deployments.apps "crud" already exists', err.message)
    err = raises("NotFound", function() c:get("deployments", "nope") end)
    assert.are.equal('deployments.apps "nope" not found', err.message)
    raises("NotFound", function() c:get("configmaps", "x", { namespace = "missing" }) end)

    for i = 1, 5 do
      c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "cm-" .. i, labels = { set = "a",
        n = tostring(i % 2) } },
        data = { i = tostring(i) } })
    end
    local items = c:list("configmaps", { label_selector = "set=a", limit = 2 })
    assert.are.equal(5, #items)
    assert.are.equal("ConfigMap", items[1].kind)
    assert.are.equal(2, #c:list("configmaps", { label_selector = "set=a,n=0" }))
    assert.are.equal(1, #c:list("cm", { field_selector = "metadata.name=cm-3" }))

    local live = c:get("deployments", "crud")
    local stale = live.metadata.resourceVersion
    live.metadata.annotations = { note = "one" }
    live.metadata.resourceVersion = nil
    local replaced = c:replace(live)
    assert.are.equal(2, replaced.metadata.generation)
    live.metadata.resourceVersion = stale
    err = raises("Conflict", function() c:replace(live) end)
    assert.matches("the object has been modified", err.message)

    err = raises("Invalid", function()
      c:create({ apiVersion = "v1", kind = "Service", metadata = { name = "svc2" },
        spec = { ports = { { port = 70000, protocol = "VHF" } } } })
    end)
    assert.are.equal(422, err.status)
    local causes = {}
    for _, cause in ipairs(err.details.causes) do causes[cause.field] = cause.reason end
    assert.are.equal("FieldValueNotSupported", causes["spec.ports[0].protocol"])
    assert.are.equal("FieldValueInvalid", causes["spec.ports[0].port"])
    assert.matches('Service "svc2" is invalid', tostring(err))
  end)

  it("patches with strategic, merge and JSON patches", function()
    c:create_deployment({ name = "pt", image = "nginx:1.25" })
    local d = c:patch("deployments", "pt", { spec = { template = { spec = { containers = {
      { name = "side", image = "busybox" } } } } } })
    assert.are.equal(2, #d.spec.template.spec.containers)
    local side -- where the strategic merge put it (the server puts a patch's new items first)
    for i, ctr in ipairs(d.spec.template.spec.containers) do
      if ctr.name == "side" then side = i - 1 end
    end
    d = c:patch("deployments", "pt", { metadata = { labels = { extra = "yes" } } }, { type = "merge" })
    assert.are.equal("yes", d.metadata.labels.extra)
    d = c:patch("deployments", "pt", { { op = "remove", path = "/spec/template/spec/containers/" .. side } },
      { type = "json" })
    assert.are.equal("pt", d.spec.template.spec.containers[1].name)
    assert.are.equal(1, #d.spec.template.spec.containers)
  end)

  it("scales through the scale subresource and waits for the rollout", function()
    c:create_deployment({ name = "sc", image = "nginx:1.25", replicas = 1 })
    -- kwok makes pods ready at once; minReadySeconds keeps the rollout under way for a second.
    c:patch("deployments", "sc", { spec = { minReadySeconds = 1 } }, { type = "merge" })
    local s = c:scale_deployment("sc", 3)
    assert.are.equal("Scale", s.kind)
    assert.are.equal(3, s.spec.replicas)
    -- The watch under rollout_wait is cut while the rollout is under way, and resumes.
    local parallel = require("myrmex.parallel")
    local d = parallel({
      function() return c:rollout_wait("deployment", "sc", { timeout = 20 }) end,
      function()
        require("myrmex.http").sleep(0.3)
        srv:control("drop-watches")
      end,
    })[1]
    assert.are.equal(3, d.status.availableReplicas)
    assert.are.equal(d.metadata.generation, d.status.observedGeneration)
    assert.has_error(function() c:scale_deployment("sc", -1) end,
      "k8s.scale_deployment: replicas must be a non-negative integer")
  end)

  it("rolls back like kubectl rollout undo: same template and annotations, revisions renumbered", function()
    local kc = srv:kubeconfig()
    local function deploy(name, image)
      local d = k8s.deployment({ name = name, image = image, replicas = 2 })
      d.metadata.annotations = { ["kubernetes.io/change-cause"] = "image " .. image }
      d.spec.template.metadata.annotations = { team = "a" }
      assert.are.equal("", K.schema_errors(d))
      c:apply_manifest(json.encode(d), { force = true })
      c:rollout_wait("deployment", name, { timeout = 20 })
    end
    for _, name in ipairs({ "undo-m", "undo-k" }) do
      deploy(name, "nginx:1.25")
      deploy(name, "nginx:1.26")
    end
    local _, mark = requests_since(srv, 0)
    local res = c:rollout_undo("undo-m")
    assert.are.equal(1, res.revision)
    assert.is_false(res.skipped)
    -- One JSON patch of template and annotations; what it puts in place passes the schema.
    local sent = requests_since(srv, mark)
    local patch = json.decode(sent[#sent].body)
    assert.are.equal("application/json-patch+json", sent[#sent].content_type)
    assert.are.same({ "/spec/template", "/metadata/annotations" }, { patch[1].path, patch[2].path })
    assert.is_nil(patch[1].value.metadata.labels["pod-template-hash"])
    assert.are.equal("", K.schema_errors({ apiVersion = "apps/v1", kind = "Deployment",
      metadata = { name = "undo-m", annotations = patch[2].value },
      spec = { selector = { matchLabels = { app = "undo-m" } }, template = patch[1].value } }))
    local r = sh.run({ "kubectl", "--kubeconfig", kc, "rollout", "undo", "deployment/undo-k" },
      { env = { HOME = srv.dir } })
    assert.are.equal(0, r.code, r.stderr)
    local m = c:rollout_wait("deployment", "undo-m", { timeout = 20 })
    local k = c:rollout_wait("deployment", "undo-k", { timeout = 20 })
    local function labels_free(t)
      t = json.decode(json.encode(t))
      t.metadata.labels, t.spec.containers[1].name = nil, nil -- both name the deployment
      return json.encode(t, { sort_keys = true })
    end
    assert.are.equal("nginx:1.25", m.spec.template.spec.containers[1].image)
    assert.are.equal(labels_free(k.spec.template), labels_free(m.spec.template))
    assert.are.same(k.metadata.annotations, m.metadata.annotations)
    assert.are.equal("image nginx:1.25", m.metadata.annotations["kubernetes.io/change-cause"])
    assert.are.equal("3", m.metadata.annotations["deployment.kubernetes.io/revision"])
    -- kubectl reads the history myrmex left: revision 1 became 3.
    r = sh.run({ "kubectl", "--kubeconfig", kc, "rollout", "history", "deployment/undo-m" }, { env = { HOME = srv.dir } })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("2%s+image nginx:1.26\n3%s+image nginx:1.25", r.stdout)
    -- To a named revision; to the current one is skipped; unknown ones raise.
    assert.are.equal("nginx:1.26", c:rollout_undo("undo-m", { to_revision = 2 }).deployment.spec.template.spec
      .containers[1].image)
    c:rollout_wait("deployment", "undo-m", { timeout = 20 })
    assert.is_true(c:rollout_undo("undo-m", { to_revision = 4 }).skipped)
    local err = raises("NotFound", function() c:rollout_undo("undo-m", { to_revision = 9 }) end)
    assert.matches('deployment "undo%-m": revision 9 not found', err.message)
    c:create_deployment({ name = "undo-new", image = "nginx:1.25" })
    c:rollout_wait("deployment", "undo-new", { timeout = 20 })
    err = raises("NotFound", function() c:rollout_undo("undo-new") end)
    assert.matches("no rollout history", err.message)
    assert.has_error(function() c:rollout_undo("undo-m", { to_revision = "2" }) end,
      "k8s.rollout_undo: to_revision must be an integer")
  end)

  it("reports a rollout that fails and one that never completes", function()
    -- Pods no node can take: the deployment controller reports ProgressDeadlineExceeded.
    local function unschedulable(name, deadline)
      local d = k8s.deployment({ name = name, image = "nginx:1.25" })
      d.spec.progressDeadlineSeconds = deadline
      d.spec.template.spec.nodeSelector = { ["myrmex.test/none"] = "true" }
      c:create(d)
    end
    unschedulable("bad", 1)
    local err = raises("Engine", function() c:rollout_wait("deployment", "bad", { timeout = 20 }) end)
    assert.matches('deployment "bad" exceeded its progress deadline', err.message)
    unschedulable("stuck", 600)
    err = raises("Timeout", function() c:rollout_wait("deployment", "stuck", { timeout = 1 }) end)
    assert.matches('deployment "stuck" not ready after 1s: 0 of 1 updated replicas are available', err.message)
  end)

  it("applies multi-document manifests server-side: order, no-op, conflicts with causes, force, dry run", function()
    local manifest = [[
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: shop, labels: {app: app}}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: "nginx:1.25", ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: shop}
spec:
  selector: {app: app}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
]]
    local out = c:apply_manifest(manifest)
    assert.are.same({ "Namespace", "Deployment", "Service" }, { out[1].kind, out[2].kind, out[3].kind })
    local mf = out[2].metadata.managedFields[1]
    assert.are.same({ "myrmex", "Apply" }, { mf.manager, mf.operation })
    -- Re-applying changes nothing (the controller writes the Deployment's status meanwhile).
    local again = c:apply_manifest(manifest)
    assert.are.equal(out[3].metadata.resourceVersion, again[3].metadata.resourceVersion)
    assert.are.equal(1, again[2].metadata.generation)
    c:patch("deployments", "app", { spec = { replicas = 5 } }, { type = "merge", subresource = "scale",
      namespace = "shop" })
    local err = raises("Conflict", function() c:apply_manifest(manifest) end)
    assert.are.equal("FieldManagerConflict", err.details.causes[1].reason)
    assert.are.equal(".spec.replicas", err.details.causes[1].field)
    assert.matches('conflict with "myrmex" with subresource "scale"', err.message)
    local dry = c:apply_manifest(manifest:gsub("replicas: 2", "replicas: 7"), { force = true, dry_run = true })
    assert.are.equal(7, dry[2].spec.replicas)
    assert.are.equal(5, c:get("deployments", "app", { namespace = "shop" }).spec.replicas)
    c:apply_manifest(manifest, { force = true, field_manager = "release" })
    assert.are.equal(2, c:get("deployments", "app", { namespace = "shop" }).spec.replicas)
    for _, o in ipairs(require("myrmex.k8s.apply").parse(manifest)) do assert.are.equal("", K.schema_errors(o)) end
  end)

  local function tiers_deployment(name)
    return (([[
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: tiers}
spec:
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec: {containers: [{name: app, image: "nginx:1.25"}]}
]]):gsub("NAME", name))
  end

  it("applies a manifest tier by tier, each tier concurrently, and tries every object of a failing tier", function()
    local manifest = tiers_deployment("tiers") .. [[
---
apiVersion: v1
kind: Service
metadata: {name: tiers, namespace: tiers}
spec: {selector: {app: tiers}, ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: tiers, namespace: tiers}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: tiers, namespace: tiers}
stringData: {token: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: tiers}
]]
    local _, n = requests_since(srv, 0)
    local out = c:apply_manifest(manifest)
    assert.are.same({ "Namespace", "ConfigMap", "Secret", "Deployment", "Service" },
      { out[1].kind, out[2].kind, out[3].kind, out[4].kind, out[5].kind })
    -- On the wire: the namespace alone, then config, then the workloads; never a tier early.
    local tier = { namespaces = 1, configmaps = 2, secrets = 2, deployments = 3, services = 3 }
    local last, patches = 0, 0
    for _, r in ipairs((requests_since(srv, n))) do
      local plural = r.method == "PATCH" and (r.path:match("/([a-z]+)/[^/]+$"))
      if plural then
        assert.is_true(tier[plural] >= last, r.path .. " came after a later tier")
        last, patches = tier[plural], patches + 1
      end
    end
    assert.are.equal(5, patches)
    local one = c:apply_manifest(manifest, { parallel = 1 })
    assert.are.equal(out[5].metadata.resourceVersion, one[5].metadata.resourceVersion)

    -- Two ConfigMaps whose data another manager owns and a good Secret in one tier: all three
    -- are tried, the Deployment of the next tier is not, and the error names the first
    -- failure and counts the others.
    for _, name in ipairs({ "bad1", "bad2" }) do
      c:apply({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = name, namespace = "tiers" },
        data = { a = "1" } }, { field_manager = "other" })
    end
    local bad = [[
apiVersion: v1
kind: ConfigMap
metadata: {name: bad1, namespace: tiers}
data: {a: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: good, namespace: tiers}
stringData: {token: "yes"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: bad2, namespace: tiers}
data: {a: "3"}
---
]] .. tiers_deployment("after")
    for _, width in ipairs({ 1, 8 }) do
      pcall(c.delete, c, "secrets", "good", { namespace = "tiers", wait = true })
      local err = raises("Conflict", function() c:apply_manifest(bad, { parallel = width }) end)
      assert.matches('^ConfigMap tiers/bad1: Apply failed with 1 conflict: conflict with "other"', err.message)
      assert.matches("%(and 1 more failed%)$", err.message)
      assert.are.same({ "ConfigMap tiers/bad1", "ConfigMap tiers/bad2" }, { err.failed[1].object, err.failed[2].object })
      assert.are.equal(".data.a", err.failed[2].error.details.causes[1].field)
      assert.is_table(c:get("secrets", "good", { namespace = "tiers" }))
      raises("NotFound", function() c:get("deployments", "after", { namespace = "tiers" }) end)
    end

    -- A kind the server does not have fails each of its objects after one fresh discovery,
    -- not one per object; the rest of the tier is applied.
    local unknown = [[
apiVersion: example.com/v1
kind: Frobnicator
metadata: {name: f1, namespace: tiers}
---
apiVersion: v1
kind: Service
metadata: {name: beside, namespace: tiers}
spec: {selector: {app: tiers}, ports: [{port: 80}]}
---
apiVersion: example.com/v1
kind: Frobnicator
metadata: {name: f2, namespace: tiers}
]]
    for _, width in ipairs({ 1, 8 }) do
      local _, before = requests_since(srv, 0)
      local err = raises("NotFound", function() c:apply_manifest(unknown, { parallel = width }) end)
      assert.are.equal('Frobnicator tiers/f1: the server doesn\'t have a resource type "Frobnicator" in '
        .. 'example.com/v1 (and 1 more failed)', err.message)
      assert.are.same({ "Frobnicator tiers/f1", "Frobnicator tiers/f2" }, { err.failed[1].object, err.failed[2].object })
      local lists = 0
      for _, r in ipairs((requests_since(srv, before))) do
        if r.method == "GET" and r.path == "/api" then lists = lists + 1 end
      end
      assert.are.equal(1, lists)
      assert.is_table(c:get("services", "beside", { namespace = "tiers" }))
      c:delete("services", "beside", { namespace = "tiers" })
    end
    assert.has_error(function() c:apply_manifest(manifest, { parallel = 0 }) end,
      "k8s.apply_manifest: parallel must be a positive integer")
  end)

  it("watches, resumes a dropped stream and re-lists after 410 Gone", function()
    local parallel = require("myrmex.parallel")
    local _, rv = c:list("configmaps", { label_selector = "w=1" })
    local seen = {}
    parallel({
      function()
        c:watch("configmaps", { resource_version = rv, label_selector = "w=1", timeout = 20 }, function(ev)
          seen[#seen + 1] = ev.type .. " " .. ev.object.metadata.name
          return ev.object.metadata.name ~= "w3"
        end)
      end,
      function()
        local http = require("myrmex.http")
        c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "w1", labels = { w = "1" } } })
        http.sleep(0.3)
        srv:control("drop-watches")
        c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "w2", labels = { w = "1" } } })
        http.sleep(0.3)
        c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "w3", labels = { w = "1" } } })
      end,
    })
    assert.are.same({ "ADDED w1", "ADDED w2", "ADDED w3" }, seen)
    K.compact_etcd()
    local _, mark = requests_since(srv, 0)
    local relisted = {}
    c:watch("configmaps", { resource_version = rv, label_selector = "w=1", timeout = 10 }, function(ev)
      relisted[#relisted + 1] = ev.object.metadata.name
      return #relisted < 3
    end)
    table.sort(relisted)
    assert.are.same({ "w1", "w2", "w3" }, relisted)
    -- The server answered the watch from the compacted revision with 410, and the client listed;
    -- the three objects came from that list.
    local seq = {}
    for _, r in ipairs((requests_since(srv, mark))) do
      if r.path:match("/configmaps$") then seq[#seq + 1] = r.query:match("watch=") and "watch" or "list" end
    end
    assert.are.same({ "watch", "list" }, seq)
  end)

  it("deletes and waits until the object is gone", function()
    c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "del" } })
    local st = c:delete("configmaps", "del", { dry_run = true })
    assert.are.equal("Success", st.status)
    assert.are.equal("del", c:get("configmaps", "del").metadata.name)
    c:delete("configmaps", "del", { wait = true, timeout = 5 })
    raises("NotFound", function() c:get("configmaps", "del") end)
    c:create({ apiVersion = "v1", kind = "Namespace", metadata = { name = "tmp" } })
    c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "inside", namespace = "tmp" } })
    c:delete("namespaces", "tmp", { wait = true, timeout = 10 })
    raises("NotFound", function() c:get("configmaps", "inside", { namespace = "tmp" }) end)
  end)

  it("runs a Job and collects each pod's exit code and log", function()
    -- On kwok nodes no process runs: a Job's pod ends with exit 1 when its command is `false`,
    -- else 0, and every pod's log is what kwok serves from the test bed's pod.log (CRI format).
    K.write(K.kwok_log(), "2026-01-01T00:00:00.000000000Z stdout F shard\n")
    local r = c:run_job({ image = "busybox", command = { "echo", "shard" }, completions = 3, parallelism = 3,
      timeout = 30 })
    assert.is_true(r.succeeded)
    assert.are.equal(3, #r.pods)
    for _, p in ipairs(r.pods) do
      assert.are.equal(0, p.exit_code)
      assert.are.equal("shard\n", p.log)
    end
    r = c:run_job({ name = "doomed", image = "busybox", command = { "false" }, timeout = 30 })
    assert.is_false(r.succeeded)
    assert.matches("BackoffLimitExceeded", r.reason)
    assert.are.equal(1, r.pods[1].exit_code)
  end)

  it("builds a Job that runs a recipe in the cluster, valid against the schema", function()
    local job = k8s.recipe_job_manifest({ recipe = "recipes/release.lua", image = "registry.local/myrmex:1",
      params = { tag = "1.4", env = "prod" }, service_account = "deployer", completions = 2 })
    assert.are.equal("", K.schema_errors(job))
    assert.are.equal("myrmex-release-", job.metadata.generateName)
    local ctr = job.spec.template.spec.containers[1]
    assert.are.same({ "myrmex", "run", "recipes/release.lua", "--set", "env=prod", "--set", "tag=1.4",
      "--log-format", "json" }, ctr.command)
    assert.are.equal("deployer", job.spec.template.spec.serviceAccountName)
    -- The pod's service account must exist, or the ServiceAccount admission refuses the pods.
    c:create({ apiVersion = "v1", kind = "ServiceAccount", metadata = { name = "deployer" } })
    local created = c:create(job)
    assert.matches("^myrmex%-release%-", created.metadata.name)
    assert.are.equal("Complete", c:rollout_wait("job", created.metadata.name,
      { timeout = 20 }).status.conditions[2].type)
    assert.has_error(function() k8s.recipe_job_manifest({ image = "x" }) end,
      "k8s.recipe_job_manifest: recipe is required")
  end)

  it("sent only objects the official schema accepts (every POST, PUT and apply so far)", function()
    local sent = {}
    for _, r in ipairs(srv:control("requests")) do
      local full = r.method == "POST" or r.method == "PUT"
        or (r.method == "PATCH" and r.content_type == "application/apply-patch+yaml")
      if full and r.body and not r.path:match("^/_test/") and (r.user_agent or ""):match("^myrmex") then
        local obj = json.decode(r.body)
        if obj.kind ~= "DeleteOptions" then
          sent[#sent + 1] = obj
        end
      end
    end
    assert.is_true(#sent >= 20, "only " .. #sent .. " objects checked")
    assert.are.equal("", K.schema_errors_all(sent))
  end)

  it("goes through the kubeconfig's proxy-url", function()
    local server = require("tests.support.server")
    local proxy = server.start("exec /usr/bin/python3 " .. (os.getenv("MYRMEX_SOURCE_DIR") or ".")
      .. "/tests/k8s/proxy.py")
    local ok, err = pcall(function()
      local pc = k8s.connect({ kubeconfig = srv:kubeconfig(nil, "proxied", { ["proxy-url"] = "http://127.0.0.1:"
        .. proxy.port }) })
      assert.are.equal("default", pc:get("namespaces", "default").metadata.name)
      local n = require("myrmex.http").request({ url = "http://127.0.0.1:" .. proxy.port .. "/_proxied" }).body
      assert.is_true(tonumber(n) >= 2, "requests through the proxy: " .. n)
    end)
    proxy.stop()
    assert(ok, err)
  end)

  it("records instead of changing anything in plan mode", function()
    plan.set_active(true)
    local ok, res = pcall(function()
      return c:create_deployment({ name = "planned", image = "nginx:1.25" })
    end)
    plan.set_active(false)
    assert.is_true(ok, tostring(res))
    assert.is_true(res.planned)
    raises("NotFound", function() c:get("deployments", "planned") end)
  end)
end)

describe("myrmex.k8s TLS and credentials", function()
  local srv

  setup(function()
    srv = K.real_tls()
    -- The static token's user may read namespaces, nothing more (RBAC as a cluster has it).
    local r = sh.run({ "kubectl", "--kubeconfig", srv.admin, "apply", "-f", "-" }, { stdin = [[
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: myrmex-testers-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: myrmex-testers}]
]] })
    assert(r.code == 0, r.stderr)
  end)
  teardown(function() srv.stop() end)

  it("uses bearer tokens, token files and client certificates (files and -data)", function()
    assert.are.equal("default", k8s.connect({ kubeconfig = srv:kubeconfig({ token = srv.token }) })
      :get("namespaces", "default").metadata.name)
    K.write(srv.dir .. "/tok", srv.token .. "\n")
    k8s.connect({ kubeconfig = srv:kubeconfig({ tokenFile = "tok" }, "tf") }):get("namespaces", "default")
    k8s.connect({ kubeconfig = srv:kubeconfig({ ["client-certificate"] = srv.dir .. "/client.pem",
      ["client-key"] = srv.dir .. "/client.key" }, "cert") }):get("namespaces", "default")
    local function b64(path) return sh.run("base64 -w0 " .. path).stdout end
    local kc = srv:kubeconfig({ ["client-certificate-data"] = b64(srv.dir .. "/client.pem"),
      ["client-key-data"] = b64(srv.dir .. "/client.key") }, "data",
      { ["certificate-authority"] = json.null, ["certificate-authority-data"] = b64(srv.dir .. "/ca.pem") })
    k8s.connect({ kubeconfig = kc }):get("namespaces", "default")
    -- RBAC: the token's user may read but not write.
    local err = raises("Forbidden", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ token = srv.token }, "ro") })
        :create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "nope", namespace = "default" } })
    end)
    assert.are.equal(403, err.status)
    assert.matches('User "tester" cannot create resource "configmaps"', err.message)
  end)

  it("fails with Unauthorized for a wrong or revoked token and refuses a wrong CA", function()
    local err = raises("Unauthorized", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ token = "wrong" }, "w") }):get("namespaces", "default")
    end)
    assert.are.equal(401, err.status)
    -- A service account's bound token (what `kubectl create token` makes) is revoked with its
    -- account.
    local ns = "default"
    local sa = "myrmex-revoked-" .. sh.run("od -An -N4 -tx4 /dev/urandom").stdout:gsub("%s", "")
    assert.are.equal(0, sh.run({ "kubectl", "--kubeconfig", srv.admin, "-n", ns, "create", "serviceaccount", sa }).code)
    local tok = sh.run({ "kubectl", "--kubeconfig", srv.admin, "-n", ns, "create", "token", sa })
    assert.are.equal(0, tok.code, tok.stderr)
    local c = k8s.connect({ kubeconfig = srv:kubeconfig({ token = (tok.stdout:gsub("%s+$", "")) }, "g") })
    -- Valid but granted nothing: 403 names the account; once it is deleted, 401.
    err = raises("Forbidden", function() c:get("namespaces", ns) end)
    assert.matches('system:serviceaccount:' .. ns .. ':' .. sa, err.message, 1, true)
    assert.are.equal(0, sh.run({ "kubectl", "--kubeconfig", srv.admin, "-n", ns, "delete", "serviceaccount", sa }).code)
    local deadline = os.time() + 20
    repeat
      local ok, e = pcall(c.get, c, "namespaces", ns)
      assert.is_false(ok)
      local revoked = errors.is(e, "Unauthorized")
      if not revoked then require("myrmex.http").sleep(0.2) end
    until revoked or os.time() > deadline
    raises("Unauthorized", function() c:get("namespaces", ns) end)
    raises("Unreachable", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ token = srv.token }, "ca",
        { ["certificate-authority"] = srv.dir .. "/other-ca.pem" }) })
        :get("namespaces", "default")
    end)
  end)

  it("runs exec credential plugins, caches their output until it expires, and reports failures", function()
    local plugin = K.write(srv.dir .. "/plugin.sh", [[#!/bin/sh
echo run >> "$COUNT_FILE"
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "no exec info" >&2; exit 3;; esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}' "$TOKEN" "$EXPIRES"
]])
    os.execute("chmod +x " .. plugin)
    local count = srv.dir .. "/count"
    local function exec(env)
      local list = { { name = "COUNT_FILE", value = count } }
      for k, v in pairs(env) do list[#list + 1] = { name = k, value = v } end
      return { exec = { apiVersion = "client.authentication.k8s.io/v1", command = "./plugin.sh", env = list } }
    end
    local function runs()
      local f = io.open(count)
      if not f then return 0 end
      local n = select(2, f:read("a"):gsub("run", ""))
      f:close()
      return n
    end
    k8s.kubeconfig.reset_cache()
    local c = k8s.connect({ kubeconfig = srv:kubeconfig(exec({ TOKEN = srv.token,
      EXPIRES = "2999-01-01T00:00:00Z" }), "e1") })
    c:get("namespaces", "default")
    c:get("namespaces", "kube-system")
    assert.are.equal(1, runs())
    k8s.kubeconfig.reset_cache()
    c = k8s.connect({ kubeconfig = srv:kubeconfig(exec({ TOKEN = srv.token, EXPIRES = "2000-01-01T00:00:00Z" }),
      "e2") })
    c:get("namespaces", "default")
    local before = runs()
    c:get("namespaces", "default")
    assert.are.equal(before + 1, runs(), "an expired credential is fetched again")
    local err = raises("Unauthorized", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ exec = { command = "false" } }, "e3") }):get("namespaces", "default")
    end)
    assert.matches("exec plugin false failed %(exit 1%)", err.message)
    local hang = K.write(srv.dir .. "/hang.sh", "#!/bin/sh\nsleep 30\n")
    os.execute("chmod +x " .. hang)
    err = raises("Unauthorized", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ exec = { command = hang } }, "e4"), exec_timeout = 0.5 })
        :get("namespaces", "default")
    end)
    assert.matches("after timeout", err.message)
  end)
end)

-- The real API server has had no basic authentication since 1.19; kubeconfigs still carry
-- username/password, so it is checked against the Python test server.
describe("myrmex.k8s basic auth (tests/k8s/apiserver.py)", function()
  local srv
  setup(function() srv = K.start({ tls = true, basic = "admin:s3cret" }) end)
  teardown(function() srv.stop() end)

  it("sends the kubeconfig's username and password", function()
    k8s.connect({ kubeconfig = srv:kubeconfig({ username = "admin", password = "s3cret" }, "basic") })
      :get("namespaces", "default")
    raises("Unauthorized", function()
      k8s.connect({ kubeconfig = srv:kubeconfig({ username = "admin", password = "nope" }, "basic2") })
        :get("namespaces", "default")
    end)
  end)
end)
