-- myrmex: server-side apply every manifest of DIR and wait for all Deployments (one watch).
-- Usage: [MYRMEX_BENCH_PARALLEL=N] [MYRMEX_BENCH_NO_WAIT=1] [MYRMEX_BENCH_WATCH_FROM=namespace]
--        myrmex bench/k8s/apply.lua KUBECONFIG DIR NAMESPACE
local k8s = require("myrmex.k8s")
local rollout = require("myrmex.k8s.rollout")
local rt = require("myrmex.core.runtime")
local kc, dir, ns = arg[1], arg[2], arg[3]
local c = k8s.connect({ kubeconfig = kc })
local nsobj = c:apply({ apiVersion = "v1", kind = "Namespace", metadata = { name = ns } })
local parts = {}
for _, f in ipairs(rt.listdir(dir)) do
  local h = assert(io.open(dir .. "/" .. f))
  parts[#parts + 1] = h:read("a")
  h:close()
end
-- MYRMEX_BENCH_PARALLEL=N: the Deployments go N at a time (apply_manifest's `parallel`, 8 by
-- default; 1 applies them one by one).
local applied = c:apply_manifest(table.concat(parts, "\n---\n"),
  { parallel = tonumber(os.getenv("MYRMEX_BENCH_PARALLEL") or "") })
-- MYRMEX_BENCH_NO_WAIT=1: the apply alone (bench/k8s/real.sh compares it with curl's floor).
if os.getenv("MYRMEX_BENCH_NO_WAIT") then
  print("applied", #applied)
  return
end
local pending = {}
for _, o in ipairs(applied) do pending[o.metadata.name] = true end
local left = #applied
local timeout = tonumber(os.getenv("MYRMEX_BENCH_TIMEOUT") or "") or 120
-- The wait lists the Deployments, then watches from the list's version. With
-- MYRMEX_BENCH_WATCH_FROM=namespace it lists nothing: the watch starts from the version of the
-- namespace's apply, made before any Deployment's, so every Deployment's apply and later changes
-- come as events (the namespace is new; an old version would get 410 and a list after all).
local from = os.getenv("MYRMEX_BENCH_WATCH_FROM") == "namespace" and nsobj.metadata.resourceVersion or nil
c:watch("deployments", { namespace = ns, timeout = timeout, resource_version = from }, function(ev)
  if pending[ev.object.metadata.name] and rollout.deployment_status(ev.object) then
    pending[ev.object.metadata.name] = nil
    left = left - 1
  end
  return left > 0
end)
print("ready", #applied)
