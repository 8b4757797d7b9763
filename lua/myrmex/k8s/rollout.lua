--- Rollout waits (kubectl's rules) and Jobs for myrmex.k8s.
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local builders = require("myrmex.k8s.builders")
local log = require("myrmex.log")

local M = {}

local function cond(obj, ctype)
  for _, c in ipairs((obj.status or {}).conditions or {}) do
    if c.type == ctype then return c end
  end
end

--- kubectl's DeploymentStatusViewer: returns done, message; raises when the deadline passed.
function M.deployment_status(d)
  local name, st, spec = d.metadata.name, d.status or {}, d.spec or {}
  if (d.metadata.generation or 0) > (st.observedGeneration or 0) then
    return false, "waiting for deployment spec update to be observed"
  end
  local p = cond(d, "Progressing")
  if p and p.reason == "ProgressDeadlineExceeded" then
    errors.raise({ code = "Engine", engine = "k8s", message = 'deployment "' .. name
      .. '" exceeded its progress deadline ('
      .. tostring(p.message) .. ")", details = { condition = p } }, 0)
  end
  local want, updated = spec.replicas or 1, st.updatedReplicas or 0
  if updated < want then
    return false, string.format("%d out of %d new replicas have been updated", updated, want)
  end
  if (st.replicas or 0) > updated then
    return false, string.format("%d old replicas are pending termination", st.replicas - updated)
  end
  if (st.availableReplicas or 0) < updated then
    return false, string.format("%d of %d updated replicas are available", st.availableReplicas or 0, updated)
  end
  return true, "successfully rolled out"
end

--- Complete or Failed conditions of a Job.
function M.job_status(j)
  local failed = cond(j, "Failed")
  if failed and failed.status == "True" then
    errors.raise({ code = "Engine", engine = "k8s", message = 'job "' .. j.metadata.name .. '" failed: '
      .. tostring(failed.reason) .. ": " .. tostring(failed.message), details = { condition = failed } }, 0)
  end
  local c = cond(j, "Complete")
  if c and c.status == "True" then return true, "complete" end
  return false, string.format("%d active, %d succeeded, %d failed", (j.status or {}).active or 0,
    (j.status or {}).succeeded or 0, (j.status or {}).failed or 0)
end

local KINDS = { deployment = "deployment", deployments = "deployment", deploy = "deployment", Deployment = "deployment",
  job = "job", jobs = "job", Job = "job" }

function M.wait(client, kind, name, opts)
  local which = KINDS[kind]
  if not which then error("k8s.rollout_wait: kind must be deployment or job, got " .. tostring(kind), 3) end
  if type(name) ~= "string" then error("k8s.rollout_wait: name must be a string", 3) end
  local check = which == "deployment" and M.deployment_status or M.job_status
  local plural = which == "deployment" and "deployments" or "jobs"
  local timeout = opts.timeout or 300
  local last, final = "no status seen yet", nil
  local progress
  client:get(plural, name, { namespace = opts.namespace })
  local ok, err = pcall(client.watch, client, plural, { namespace = opts.namespace, name = name, timeout = timeout },
    function(ev)
      if ev.type == "DELETED" then
        errors.raise({ code = "NotFound", engine = "k8s", message = which .. ' "' .. name
          .. '" was deleted while waiting' }, 0)
      end
      local done, msg = check(ev.object)
      last = msg
      if which == "deployment" then
        -- A bar (terminal) or periodic lines (CI) of available replicas while the rollout goes.
        local want = (ev.object.spec or {}).replicas or 1
        progress = progress or log.progress("rollout deployment/" .. name, { total = want })
        progress.total = want
        progress:update(math.min((ev.object.status or {}).availableReplicas or 0, want))
      end
      if done then final = ev.object return false end
    end)
  if progress then
    if not ok then progress.total = nil end -- a failed rollout is not drawn as complete
    progress:finish(ok and "done" or "failed")
  end
  if not ok then
    if errors.is(err, "Timeout") then
      errors.raise({ code = "Timeout", engine = "k8s", message = which .. ' "' .. name .. '" not ready after '
        .. timeout .. "s: " .. last }, 0)
    end
    error(err, 0)
  end
  return final
end

-- ---- undo (kubectl rollout undo's rules) --------------------------------------------------

local REV = "deployment.kubernetes.io/revision"
-- Annotations that stay the Deployment's own when a ReplicaSet's are copied back onto it.
local SKIP = { ["kubectl.kubernetes.io/last-applied-configuration"] = true, [REV] = true,
  ["deployment.kubernetes.io/revision-history"] = true, ["deployment.kubernetes.io/desired-replicas"] = true,
  ["deployment.kubernetes.io/max-replicas"] = true, ["deprecated.deployment.rollback.to"] = true }

local function selector_text(sel)
  local parts = {}
  for k, v in pairs((sel or {}).matchLabels or {}) do parts[#parts + 1] = k .. "=" .. v end
  table.sort(parts)
  return table.concat(parts, ",")
end

-- The ReplicaSets the Deployment controls, by revision number.
local function history(client, d, ns)
  local by_rev = {}
  local sets = client:list("replicasets", { namespace = ns, label_selector = selector_text(d.spec.selector) })
  for _, rs in ipairs(sets) do
    for _, ref in ipairs(rs.metadata.ownerReferences or {}) do
      if ref.controller and ref.uid == d.metadata.uid then
        local rev = tonumber((rs.metadata.annotations or {})[REV])
        if rev then by_rev[rev] = rs end
      end
    end
  end
  return by_rev
end

local function without_hash(tmpl)
  local t = json.decode(json.encode(tmpl))
  if t.metadata and t.metadata.labels then t.metadata.labels["pod-template-hash"] = nil end
  return t
end

local function undo_error(code, name, msg)
  errors.raise({ code = code, engine = "k8s", message = 'deployment "' .. name .. '": ' .. msg }, 0)
end

--- Roll a Deployment back to the pod template of an earlier revision (the previous one by
--- default), as `kubectl rollout undo` does: one JSON patch of the template and annotations.
function M.undo(client, name, opts)
  local ns = opts.namespace or client.namespace
  local d = client:get("deployments", name, { namespace = ns })
  if (d.spec or {}).paused then
    undo_error("Invalid", name, "cannot roll back a paused deployment; resume it first")
  end
  local by_rev, revs = history(client, d, ns), {}
  for r in pairs(by_rev) do revs[#revs + 1] = r end
  table.sort(revs)
  local want = opts.to_revision
  if want == nil or want == 0 then
    if #revs < 2 then undo_error("NotFound", name, "no rollout history found to roll back to") end
    want = revs[#revs - 1]
  end
  local rs = by_rev[want]
  if not rs then undo_error("NotFound", name, "revision " .. tostring(want) .. " not found in its history") end
  local tmpl = without_hash(rs.spec.template)
  if json.encode(tmpl, { sort_keys = true }) == json.encode(without_hash(d.spec.template), { sort_keys = true }) then
    log.info("rollback skipped: the template already matches", { deployment = name, revision = want })
    return { deployment = d, revision = want, skipped = true }
  end
  local anns = {}
  for k, v in pairs(d.metadata.annotations or {}) do
    if SKIP[k] then anns[k] = v end
  end
  for k, v in pairs(rs.metadata.annotations or {}) do
    if not SKIP[k] then anns[k] = v end
  end
  local patched = client:patch("deployments", name, {
    { op = "replace", path = "/spec/template", value = tmpl },
    { op = "replace", path = "/metadata/annotations", value = anns },
  }, { type = "json", namespace = ns })
  return { deployment = patched, revision = want, skipped = false }
end

--- Create a Job from `spec` (see k8s.job), wait for it, collect pods' exit codes and logs.
function M.run_job(client, spec)
  if type(spec) ~= "table" then error("k8s.run_job: spec table expected", 3) end
  local obj = builders.job(spec)
  local job = client:create(obj, { namespace = spec.namespace })
  if job.planned then return job end
  local name = job.metadata.name
  local ok, err = pcall(M.wait, client, "job", name, { namespace = spec.namespace, timeout = spec.timeout or 600 })
  if not ok and not (errors.is(err, "Engine") and err.details and err.details.condition) then error(err, 0) end
  local result = { name = name, succeeded = ok, job = client:get("jobs", name, { namespace = spec.namespace }),
    pods = {} }
  if not ok then result.reason = err.message end
  local pods = client:list("pods", { namespace = spec.namespace,
    label_selector = "batch.kubernetes.io/controller-uid=" .. job.metadata.uid })
  for _, p in ipairs(pods) do
    local code
    for _, cs in ipairs((p.status or {}).containerStatuses or {}) do
      local t = cs.state and cs.state.terminated
      if t then code = t.exitCode end
    end
    result.pods[#result.pods + 1] = { name = p.metadata.name, exit_code = code, phase = (p.status or {}).phase,
      log = client:logs(p.metadata.name, { namespace = spec.namespace }) }
  end
  return result
end

return M
