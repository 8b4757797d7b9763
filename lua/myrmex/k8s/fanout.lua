--- Fan a recipe out over a cluster: one batch/v1 Job with completionMode Indexed, one
--- completion per item, the items handed over in a ConfigMap and the index by the Job
--- controller (JOB_COMPLETION_INDEX); each pod writes what its recipe returned (or its
--- error) as JSON to its termination message, and the results come back in item order. The
--- same items run on this machine through myrmex.parallel (`run_local`). Installed as
--- `client:fan_out` / `client:fan_out_start` by myrmex.k8s. See docs/k8s.md, "Fan-out".
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local rt = require("myrmex.core.runtime")

local M = {}

--- The termination message limit the kubelet enforces (bytes).
M.MESSAGE_LIMIT = 4096
--- ConfigMaps hold at most 1 MiB; the items must fit in one with room for its metadata.
M.ITEMS_LIMIT = 1000 * 1024
M.ITEMS_DIR = "/etc/myrmex/fanout"
M.ITEMS_FILE = "items.json"
M.CONTAINER = "item"
--- A pod exits with this when retrying its item cannot help (bad params, a result that
--- cannot be sent back): the Job's podFailurePolicy fails the index at once.
M.EXIT_NO_RETRY = 2
local INDEX_ANN = "batch.kubernetes.io/job-completion-index"

local KNOWN = { recipe = true, items = true, parallelism = true, image = true, push_to = true, timeout = true,
  namespace = true, resources = true, retries = true, registry = true, docker = true, name = true,
  labels = true, command = true }

local function bad(msg) error("k8s.fan_out: " .. msg, 4) end

local function dns_label(s)
  s = s:lower():gsub("[^a-z0-9-]", "-"):gsub("^-+", ""):gsub("-+$", "")
  return s ~= "" and s or "recipe"
end

-- Check the spec; returns it with defaults and the items' JSON.
local function check(spec)
  if type(spec) ~= "table" then bad("spec table expected, got " .. type(spec)) end
  for k in pairs(spec) do
    if not KNOWN[k] then bad("unknown option '" .. tostring(k) .. "'") end
  end
  if type(spec.recipe) ~= "string" or spec.recipe == "" then bad("recipe must be a path or a recipe name") end
  if type(spec.items) ~= "table" or #spec.items == 0 then bad("items must be a non-empty list of params tables") end
  for k in pairs(spec.items) do
    if math.type(k) ~= "integer" or k < 1 or k > #spec.items then
      bad("items must be a list (key " .. tostring(k) .. ")")
    end
  end
  for i, it in ipairs(spec.items) do
    if type(it) ~= "table" then bad(("items[%d] must be a table of params, got %s"):format(i, type(it))) end
  end
  local p = spec.parallelism or math.min(#spec.items, 8)
  if math.type(p) ~= "integer" or p < 1 then bad("parallelism must be a positive integer") end
  local retries = spec.retries or 0
  if math.type(retries) ~= "integer" or retries < 0 then bad("retries must be a non-negative integer") end
  if spec.timeout ~= nil and (type(spec.timeout) ~= "number" or spec.timeout <= 0) then
    bad("timeout must be a positive number of seconds")
  end
  for _, k in ipairs({ "image", "push_to", "namespace", "name" }) do
    if spec[k] ~= nil and (type(spec[k]) ~= "string" or spec[k] == "") then bad(k .. " must be a non-empty string") end
  end
  if spec.image and spec.push_to then
    bad("image and push_to exclude each other (push_to is where myrmex pushes the image it packs)")
  end
  if spec.resources ~= nil and type(spec.resources) ~= "table" then
    bad("resources must be a table {requests=, limits=}")
  end
  if spec.command ~= nil and type(spec.command) ~= "table" then bad("command must be a list of strings") end
  local ok, text = pcall(json.encode, json.array(spec.items))
  if not ok then bad("items cannot be sent as JSON: " .. tostring(text)) end
  if #text > M.ITEMS_LIMIT then
    bad(("items are %d bytes of JSON; a ConfigMap holds about %d: pass references, not data"):format(#text,
      M.ITEMS_LIMIT))
  end
  return p, retries, text
end

--- The ConfigMap and the Job fan_out creates for `spec` with the runner `image` (the Job's
--- ConfigMap name is `cm_name`, the recipe's path inside the image `recipe_in_image`). With
--- `in_pod_retries`, for a server without backoffLimitPerIndex, each pod retries its item
--- itself and always exits 0, its outcome in the record (see docs/k8s.md, "Fan-out").
---@param spec table as for client:fan_out
---@param image string
---@param recipe_in_image string
---@param cm_name string
---@param in_pod_retries? boolean
---@return table configmap, table job
function M.manifests(spec, image, recipe_in_image, cm_name, in_pod_retries)
  local parallelism, retries, items_json = check(spec)
  local base = dns_label(spec.name or spec.recipe:match("([^/]+)$"):gsub("%.lua$", "")):sub(1, 30):gsub("-+$", "")
  local labels = { ["app.kubernetes.io/managed-by"] = "myrmex", ["myrmex.dev/fan-out"] = base }
  for k, v in pairs(spec.labels or {}) do labels[k] = v end
  local cm = { apiVersion = "v1", kind = "ConfigMap",
    metadata = { name = cm_name, labels = labels }, data = { [M.ITEMS_FILE] = items_json } }
  local command = spec.command or { "/usr/local/bin/myrmex", "-e", "os.exit(require('myrmex.k8s.fanout').pod_main())" }
  local container = {
    name = M.CONTAINER, image = image, command = json.array(command),
    env = json.array({ { name = "MYRMEX_FANOUT_RECIPE", value = recipe_in_image },
      { name = "MYRMEX_FANOUT_ITEMS", value = M.ITEMS_DIR .. "/" .. M.ITEMS_FILE } }),
    volumeMounts = json.array({ { name = "items", mountPath = M.ITEMS_DIR, readOnly = true } }),
    terminationMessagePath = "/dev/termination-log", terminationMessagePolicy = "File",
    imagePullPolicy = "IfNotPresent", resources = spec.resources,
  }
  if in_pod_retries then
    table.insert(container.env, { name = "MYRMEX_FANOUT_RETRIES", value = tostring(retries) })
  end
  local job = { apiVersion = "batch/v1", kind = "Job",
    metadata = { generateName = "myrmex-fan-" .. base .. "-", labels = labels },
    spec = {
      completionMode = "Indexed", completions = #spec.items, parallelism = parallelism,
      -- Each index has its own retry budget, so one failing item neither stops nor starves
      -- the others; an exit that retrying cannot fix fails its index at once.
      backoffLimitPerIndex = retries,
      podFailurePolicy = { rules = json.array({ { action = "FailIndex",
        onExitCodes = { containerName = M.CONTAINER, operator = "In", values = json.array({ M.EXIT_NO_RETRY }) } } }) },
      activeDeadlineSeconds = spec.timeout and math.ceil(spec.timeout) or nil,
      template = { metadata = { labels = labels }, spec = {
        restartPolicy = "Never", containers = json.array({ container }),
        volumes = json.array({ { name = "items", configMap = { name = cm_name } } }) } },
    },
  }
  if in_pod_retries then
    -- No per-index budget on this server: a failing pod would count against the whole Job
    -- and, past backoffLimit, stop every other index. So the pod retries its item, records
    -- the outcome and exits 0; backoffLimit is left for what is not the recipe's (evictions,
    -- lost nodes), job-wide as the server counts it.
    job.spec.backoffLimitPerIndex, job.spec.podFailurePolicy = nil, nil
    job.spec.backoffLimit = math.max(6, retries)
  end
  return cm, job
end

-- ---- results --------------------------------------------------------------------------------

--- "0-2,5" (Job status completedIndexes / failedIndexes) as a set of indexes.
---@param s string|nil
---@return table<integer, boolean>
function M.parse_indexes(s)
  local set = {}
  for part in (s or ""):gmatch("[^,]+") do
    local a, b = part:match("^(%d+)%-(%d+)$")
    if a then
      for i = tonumber(a), tonumber(b) do set[i] = true end
    elseif part:match("^%d+$") then
      set[tonumber(part)] = true
    end
  end
  return set
end

-- Seconds since the epoch of an RFC 3339 UTC time as the API server writes it, or nil.
local epoch = require("myrmex.perf")._rfc3339

local function terminated(pod)
  for _, cs in ipairs(((pod or {}).status or {}).containerStatuses or {}) do
    if cs.name == M.CONTAINER and cs.state and cs.state.terminated then return cs.state.terminated end
  end
  return nil
end

--- Assemble the results of a finished (or stopped) fan-out Job from its status and pods: one
--- `{ok, result, error, pod, index, duration, attempts}` per item, in item order. `index` is
--- the item's place in `items` (the pod's JOB_COMPLETION_INDEX is index - 1). A pod's
--- termination message is the record it wrote; an index the Job counts failed is not ok
--- whatever its pods said, and one with no pod that ended is reported as not run.
---@param n integer the number of items
---@param job table the Job object
---@param pods table[] its pods
---@return table[] results
function M.collect(n, job, pods)
  local st = job.status or {}
  local done, failed = M.parse_indexes(st.completedIndexes), M.parse_indexes(st.failedIndexes)
  local by_index = {}
  for _, p in ipairs(pods) do
    local i = tonumber(((p.metadata or {}).annotations or {})[INDEX_ANN])
    if i then
      by_index[i] = by_index[i] or {}
      table.insert(by_index[i], p)
    end
  end
  local out = {}
  for i = 0, n - 1 do
    local list = by_index[i] or {}
    table.sort(list, function(a, b)
      return (a.metadata.creationTimestamp or "") .. a.metadata.name
        < (b.metadata.creationTimestamp or "") .. b.metadata.name
    end)
    local chosen
    for _, p in ipairs(list) do
      if (p.status or {}).phase == "Succeeded" then chosen = p end
    end
    chosen = chosen or list[#list]
    local t = terminated(chosen)
    local rec
    if t and t.message and t.message ~= "" then
      local ok, v = pcall(json.decode, t.message)
      if ok and type(v) == "table" then
        rec = v
      else
        rec = { ok = false, error = { code = "Invalid", message = "termination message is not a myrmex record: "
          .. t.message:sub(1, 200) } }
      end
    end
    local r = { index = i + 1, pod = chosen and chosen.metadata.name or nil, attempts = #list }
    if rec and math.type(rec.attempts) == "integer" then r.attempts = rec.attempts end
    if done[i] then
      r.ok = not (rec and rec.ok == false)
    else
      r.ok = false
    end
    if rec and rec.result ~= nil and not json.isnull(rec.result) then r.result = rec.result end
    if not r.ok then
      r.error = rec and rec.error
      if not r.error then
        local why
        if t then
          why = ("pod %s exited with code %s (%s)"):format(chosen.metadata.name, tostring(t.exitCode),
            tostring(t.reason))
        elseif chosen then
          why = ("pod %s did not finish (phase %s)"):format(chosen.metadata.name, tostring((chosen.status or {}).phase))
        else
          why = "no pod ran for it"
        end
        r.error = { code = failed[i] and "Engine" or "Interrupted", message = ("item %d: %s"):format(i + 1, why) }
      end
    end
    if rec and type(rec.seconds) == "number" then
      r.duration = rec.seconds
    elseif t then
      local a, b = epoch(t.startedAt), epoch(t.finishedAt)
      r.duration = a and b and (b - a) or nil
    end
    out[#out + 1] = r
  end
  return out
end

-- ---- the handle -----------------------------------------------------------------------------

local Handle = {}
local handle_mt = { __name = "myrmex.k8s.fanout", __index = function(h, k)
  local f = rt.fields(h)
  if Handle[k] then return Handle[k] end
  return f[k]
end }

local function finished_text(set, n)
  local list = {}
  for i = 0, n - 1 do if set[i] then list[#list + 1] = tostring(i + 1) end end
  return (#list > 0 and table.concat(list, ",") or "none") .. (" (%d of %d)"):format(#list, n)
end

-- Delete the Job, its pods and the items ConfigMap; returns the Job's last status (or nil).
local function teardown(f)
  local c, ns = f.client, f.namespace
  local last
  local ok_get, job = pcall(c.get, c, "jobs", f.name, { namespace = ns })
  if ok_get then last = job.status end
  pcall(c.delete, c, "jobs", f.name, { namespace = ns, propagation = "Background" })
  -- The garbage collector would remove the pods after the Job; deleting them here means
  -- none is left running when fan_out returns.
  pcall(c.request, c, "DELETE", "/api/v1/namespaces/" .. ns .. "/pods",
    { query = { labelSelector = "batch.kubernetes.io/controller-uid=" .. f.uid } })
  pcall(c.delete, c, "configmaps", f.cm, { namespace = ns })
  return last
end

--- Wait for the Job to finish and return the results in item order (see fanout.collect).
--- A timeout (the spec's `timeout`) deletes the Job and its pods and raises Timeout naming
--- the items that finished (`details.finished`, 1-based, and `details.results`).
---@return table[] results
function Handle:wait()
  local f = rt.fields(self)
  if f.results then return f.results end
  if f.closed then error("k8s.fan_out: handle is closed", 2) end
  local c, ns = f.client, f.namespace
  local deadline = f.timeout and (f.started + f.timeout)
  local final
  local ok, err = pcall(c.watch, c, "jobs", { namespace = ns, name = f.name,
    timeout = deadline and math.max(0.1, deadline - rt.monotonic()) or nil }, function(ev)
    local obj = ev.object
    if ev.type == "DELETED" then final = obj; return false end
    for _, cond in ipairs((obj.status or {}).conditions or {}) do
      if (cond.type == "Complete" or cond.type == "Failed") and cond.status == "True" then
        -- Failed by the server's own deadline (activeDeadlineSeconds) is our timeout too.
        if cond.reason == "DeadlineExceeded" then return true end
        final = obj
        return false
      end
    end
    return true
  end)
  if not ok then
    if not errors.is(err, "Timeout") then error(err, 0) end
  end
  if not final then
    local last = teardown(f)
    f.closed = true
    local set = M.parse_indexes(last and last.completedIndexes)
    local partial
    if last then
      local pods = {}
      partial = M.collect(f.n, { status = last }, pods)
    end
    errors.raise({ code = "Timeout", engine = "k8s",
      message = ("fan-out job %s/%s timed out after %gs; items finished: %s; "
      .. "job and pods deleted"):format(ns, f.name, f.timeout or 0, finished_text(set, f.n)),
      details = { finished = (function()
        local l = {}
        for i = 0, f.n - 1 do if set[i] then l[#l + 1] = i + 1 end end
        return l
      end)(), results = partial } }, 0)
  end
  local pods = c:list("pods", { namespace = ns, label_selector = "batch.kubernetes.io/controller-uid=" .. f.uid })
  f.results = M.collect(f.n, final, pods)
  f.finished = true
  return f.results
end

--- Delete the Job, its pods and its ConfigMap; when the Job had not finished, log which items
--- had (and add them to the error being raised). Idempotent; `<close>` calls it (so Ctrl-C
--- cleans up).
function Handle:close(err)
  local f = rt.fields(self)
  if f.closed then return end
  f.closed = true
  if f.finished then
    -- The results are in hand: the Job, its pods and the items go.
    teardown(f)
    return
  end
  local last = teardown(f)
  local set = M.parse_indexes(last and last.completedIndexes)
  local text = finished_text(set, f.n)
  log.warn("fan-out stopped: job and pods deleted", { job = f.name, namespace = f.namespace, finished = text })
  if type(err) == "table" then
    err.details = err.details or {}
    err.details.finished = text
  end
end
handle_mt.__close = function(h, err) Handle.close(h, err) end
-- No requests from a finaliser (it may run inside another request): say what was left.
handle_mt.__gc = function(h)
  local f = rt.fields(h)
  if not f.closed then
    log.warn("fan-out handle collected without close: its Job is left in the cluster", { job = f.name,
      namespace = f.namespace })
  end
end

--- Create the ConfigMap and the Job and return a handle (`wait`, `close`, `name`,
--- `namespace`, `image`, `image_reused`, `job`); `local h <close> = c:fan_out_start{...}` deletes the Job
--- when the scope is left before it finished.
function M.start(client, spec)
  check(spec)
  local ns = spec.namespace or client.namespace
  local path = require("myrmex.recipe").find(spec.recipe)
  if not path then bad("no recipe '" .. spec.recipe .. "' (a path, or a name on the recipe path)") end
  local image, recipe_in_image, reused
  if spec.image then
    image = spec.image
    recipe_in_image = spec.recipe:find("/", 1, true) and ("/myrmex/recipe/" .. path:match("([^/]+)$")) or spec.recipe
  else
    local img = require("myrmex.selfimage").ensure({ recipe = path, push_to = spec.push_to,
      registry = spec.registry, docker = spec.docker })
    image, recipe_in_image, reused = img.image, img.recipe, img.reused
  end
  local cm_name = "myrmex-fan-items-" .. rt.getpid() .. "-" .. math.random(0, 0xffffff)
  local cm, job = M.manifests(spec, image, recipe_in_image, cm_name)
  if plan.active() then
    local a = client:create(cm, { namespace = ns })
    local b = client:create(job, { namespace = ns })
    return { planned = true, configmap = a, job = b, manifests = { cm, job }, image = image }
  end
  -- Ask the server first (a dry run stores nothing) whether it keeps backoffLimitPerIndex: one
  -- that drops it (before 1.29, or the feature off) gets the Job whose pods retry themselves.
  local probe = client:create(job, { namespace = ns, dry_run = true })
  local in_pod = probe.spec == nil or probe.spec.backoffLimitPerIndex == nil
  if in_pod then
    log.warn("the server has no backoffLimitPerIndex: each pod retries its own item", { retries = spec.retries or 0 })
    cm, job = M.manifests(spec, image, recipe_in_image, cm_name, true)
  end
  client:create(cm, { namespace = ns })
  local ok, created = pcall(client.create, client, job, { namespace = ns })
  if not ok then
    pcall(client.delete, client, "configmaps", cm_name, { namespace = ns })
    error(created, 0)
  end
  -- The ConfigMap goes with the Job when the garbage collector removes it.
  pcall(client.patch, client, "configmaps", cm_name, { metadata = { ownerReferences = json.array({ {
    apiVersion = "batch/v1", kind = "Job", name = created.metadata.name, uid = created.metadata.uid } }) } },
    { type = "merge", namespace = ns })
  log.info("fan-out job created", { job = created.metadata.name, namespace = ns, items = #spec.items,
    parallelism = created.spec.parallelism, image = image })
  return rt.handle(handle_mt, { client = client, namespace = ns, name = created.metadata.name,
    uid = created.metadata.uid, cm = cm_name, n = #spec.items, timeout = spec.timeout, started = rt.monotonic(),
    image = image, image_reused = reused, job = created, in_pod_retries = in_pod })
end

--- Start and wait: the results in item order; the Job is deleted on error or Ctrl-C.
function M.run(client, spec)
  local started = M.start(client, spec)
  if type(started) == "table" then return started end -- plan mode: what would be created
  local h <close> = started
  return h:wait()
end

-- ---- one item, in the pod or here -----------------------------------------------------------

local function error_record(err)
  if errors.is(err) then
    return { code = err.code, message = type(err.message) == "string" and err.message or errors.message(err),
      engine = err.engine, step = err.step }
  end
  local rmod = require("myrmex.recipe")
  if rmod.is_usage_error(err) then return { code = "Usage", message = tostring(err) } end
  return { code = "Error", message = tostring(err):match("^[^\n]*") }
end

--- Run recipe `path` with `params` (Lua values); returns the record `{ok=, result=|error=,
--- seconds=}` and whether retrying could help.
---@param path string
---@param params table
---@return table record, boolean retryable
function M.run_item(path, params)
  local recipe = require("myrmex.recipe")
  local t0 = rt.monotonic()
  local retryable = true
  local ok, res = xpcall(function()
    local decl = recipe.declaration(path, recipe.load(path))
    if not decl then error(path .. " is not a declared recipe", 0) end
    local p
    local pok, perr = pcall(recipe.resolve_params, decl, params)
    if not pok then retryable = false; error(perr, 0) end
    p = perr
    return decl.run(p, recipe.context(decl))
  end, function(e) return e end)
  local rec = { ok = ok, seconds = rt.monotonic() - t0 }
  if ok then rec.result = res else rec.error = error_record(res) end
  return rec, retryable
end

--- The termination message for `rec`, and whether it had to be replaced: a result that is not
--- JSON, or whose record is over the 4 KiB limit, becomes an Invalid error saying so.
---@param rec table
---@param index integer 1-based
---@return string text, boolean replaced
function M.encode_record(rec, index)
  local ok, text = pcall(json.encode, rec)
  if not ok then
    return json.encode({ ok = false, seconds = rec.seconds, error = { code = "Invalid",
      message = ("item %d: the recipe's result cannot be sent back as JSON: %s"):format(index,
        tostring(text)) } }), true
  end
  if #text > M.MESSAGE_LIMIT then
    return json.encode({ ok = false, seconds = rec.seconds, error = { code = "Invalid",
      message = ("item %d: the recipe's result is %d bytes of JSON, over the %d-byte termination message limit; "
        .. "return a reference (an image digest, an object name) instead of the data"):format(index, #text,
        M.MESSAGE_LIMIT) } }), true
  end
  return text, false
end

--- The pod's entry point (the Job's command): read item JOB_COMPLETION_INDEX from the items
--- file, run the recipe, write the record to the termination message file, and return the
--- exit status: 0 done, 1 the recipe failed (the index may be retried), 2 retrying cannot
--- help (bad params, a result that cannot be sent back: the index fails at once). With
--- MYRMEX_FANOUT_RETRIES=N (a server without backoffLimitPerIndex) it retries the item up to
--- N times itself, puts `attempts` in the record and exits 0.
---@param getenv? fun(name:string):string|nil
---@return integer status
function M.pod_main(getenv)
  getenv = getenv or os.getenv
  local out = getenv("MYRMEX_TERMINATION_LOG") or "/dev/termination-log"
  local function finish(text, status)
    local f = io.open(out, "wb")
    if f then f:write(text); f:close() end
    io.stderr:write(text, "\n")
    return status
  end
  local idx = tonumber(getenv("JOB_COMPLETION_INDEX") or "")
  local items_path = getenv("MYRMEX_FANOUT_ITEMS") or (M.ITEMS_DIR .. "/" .. M.ITEMS_FILE)
  local recipe_path = getenv("MYRMEX_FANOUT_RECIPE")
  -- Set when the server has no backoffLimitPerIndex: retry here, and exit 0 whatever happened
  -- (a failed pod would count against every index); the record says how it went.
  local in_pod = tonumber(getenv("MYRMEX_FANOUT_RETRIES") or "")
  local function status(code) return in_pod and 0 or code end
  local function fail(msg)
    return finish(json.encode({ ok = false, error = { code = "Invalid", message = msg } }), status(M.EXIT_NO_RETRY))
  end
  if not idx or math.type(idx) ~= "integer" or idx < 0 then
    return fail("JOB_COMPLETION_INDEX is not set to an index (is the Job Indexed?)")
  end
  if not recipe_path then return fail("MYRMEX_FANOUT_RECIPE is not set") end
  local ok, items = pcall(json.decode_file, items_path)
  if not ok then return fail("cannot read the items: " .. tostring(items)) end
  if type(items) ~= "table" or type(items[idx + 1]) ~= "table" then
    return fail(("%s has no item %d (index %d)"):format(items_path, idx + 1, idx))
  end
  local rec, retryable = M.run_item(recipe_path, items[idx + 1])
  local attempts = 1
  while in_pod and not rec.ok and retryable and attempts <= in_pod do
    attempts = attempts + 1
    local seconds = rec.seconds
    rec, retryable = M.run_item(recipe_path, items[idx + 1])
    rec.seconds = rec.seconds + seconds
  end
  if in_pod then rec.attempts = attempts end
  local text, replaced = M.encode_record(rec, idx + 1)
  if replaced or (not rec.ok and not retryable) then return finish(text, status(M.EXIT_NO_RETRY)) end
  return finish(text, status(rec.ok and 0 or 1))
end

--- The same items on this machine: each item runs the recipe in a branch of myrmex.parallel,
--- `parallelism` at a time (default 8), and the results have the shape fan_out returns (no
--- `pod`). A failing item does not stop the others.
---@param spec {recipe:string, items:table[], parallelism?:integer}
---@return table[] results
function M.run_local(spec)
  if type(spec) ~= "table" then error("fanout.run_local: spec table expected", 2) end
  for k in pairs(spec) do
    if k ~= "recipe" and k ~= "items" and k ~= "parallelism" then
      error("fanout.run_local: unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  if type(spec.items) ~= "table" or #spec.items == 0 then
    error("fanout.run_local: items must be a non-empty list of params tables", 2)
  end
  for i, it in ipairs(spec.items) do
    if type(it) ~= "table" then
      error(("fanout.run_local: items[%d] must be a table of params, got %s"):format(i, type(it)), 2)
    end
  end
  local path = require("myrmex.recipe").find(spec.recipe or "")
  if not path then error("fanout.run_local: no recipe '" .. tostring(spec.recipe) .. "'", 2) end
  local parallel = require("myrmex.parallel")
  return parallel.map(spec.items, function(item, i)
    local rec = M.run_item(path, item)
    return { ok = rec.ok, result = rec.result, error = rec.error, index = i, duration = rec.seconds, attempts = 1 }
  end, { max = spec.parallelism or 8 })
end

--- One line for a result: "item 3 FAILED 0.01s pod=NAME: Invalid: message" or
--- "item 1 ok 1.00s pod=NAME {"n":1,"square":1}".
---@param r table
---@return string
function M.line(r)
  local where = r.pod and (" pod=" .. r.pod) or ""
  local took = r.duration and ("%.2fs"):format(r.duration) or "-"
  if r.ok then
    local ok, text = pcall(json.encode, r.result == nil and json.null or r.result, { sort_keys = true })
    return ("item %d ok %s%s %s"):format(r.index, took, where, ok and text or "(result not JSON)")
  end
  local e = r.error or {}
  return ("item %d FAILED %s%s: %s: %s"):format(r.index, took, where, tostring(e.code or "Error"),
    tostring(e.message or e))
end

--- `myrmex run RECIPE --items FILE [--on kubernetes] [--parallelism N] [--push-to REF]
--- [--image IMG] [--namespace NS] [--timeout S] [--plan]`: returns the exit status (1 when an
--- item failed).
---@param o table the parsed command line (cli.lua)
---@param force_plan? boolean `myrmex plan`
---@return integer status
function M.cli(o, force_plan)
  local recipe = require("myrmex.recipe")
  local ok, items = pcall(json.decode_file, o.items)
  if not ok then recipe.usage_error("--items %s: %s", o.items, tostring(items)) end
  if type(items) ~= "table" or #items == 0 then
    recipe.usage_error("--items %s: expected a non-empty JSON list of params objects", o.items)
  end
  for i, it in ipairs(items) do
    if type(it) ~= "table" or #it > 0 then
      recipe.usage_error("--items %s: item %d is not an object of params", o.items, i)
    end
  end
  if next(o.sets) then recipe.usage_error("--set and --items do not go together: put the params in the items") end
  -- Check every item's params here when the recipe is on this machine: a typo fails at once,
  -- naming the item, instead of in a pod.
  local path = recipe.find(o.recipe)
  if not path then recipe.usage_error("no recipe '%s' (a path, or a name on the recipe path)", o.recipe) end
  local decl = recipe.declaration(path, recipe.load(path))
  if not decl then recipe.usage_error("%s is not a declared recipe (fan-out passes params)", path) end
  for i, it in ipairs(items) do
    local pok, perr = pcall(recipe.resolve_params, decl, it)
    if not pok then recipe.usage_error("--items %s: item %d: %s", o.items, i, tostring(perr)) end
  end
  local results
  if o.on then
    plan.set_active(force_plan or o.plan or o.dry_run)
    local c = require("myrmex.k8s").connect({ namespace = o.namespace })
    results = c:fan_out({ recipe = path, items = items, parallelism = o.parallelism, image = o.image,
      push_to = o.push_to, namespace = o.namespace, timeout = o.timeout })
    if results.planned then
      io.stdout:write(json.encode(json.array(results.manifests), { indent = true, sort_keys = true }), "\n")
      return 0
    end
  else
    if o.push_to or o.image or o.plan or o.namespace or o.timeout then
      recipe.usage_error("--push-to, --image, --namespace, --timeout and --plan go with --on kubernetes")
    end
    results = M.run_local({ recipe = path, items = items, parallelism = o.parallelism })
  end
  local failed = 0
  for _, r in ipairs(results) do
    io.stdout:write(M.line(r), "\n")
    if not r.ok then failed = failed + 1 end
  end
  if failed > 0 then
    log.error(("%d of %d items failed"):format(failed, #results))
    return 1
  end
  return 0
end

return M
