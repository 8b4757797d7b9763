--- Rollout waits (kubectl's rules) and Jobs for myrmex.k8s.
local errors = require("myrmex.errors")
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
