-- Issue 20: the cluster half of bench/k8s/fanout.sh. 64 items of examples/fan-out/square.lua
-- (sleep = 1) as one Indexed Job, parallelism 8, on the control plane of KUBECONFIG, in a
-- namespace of its own; the runner image packed by myrmex and pushed to REGISTRY (a first
-- push, then reuse). Prints one line per phase.
-- Usage: myrmex bench/k8s/fanout.lua REGISTRY_HOST [ITEMS] [PARALLELISM]
local rt = require("myrmex.core.runtime")
local k8s = require("myrmex.k8s")
local selfimage = require("myrmex.selfimage")
local log = require("myrmex.log")
log.configure({ level = "warn" })

local reg, n, par = arg[1], tonumber(arg[2] or "64"), tonumber(arg[3] or "8")
assert(reg, "usage: bench/k8s/fanout.lua REGISTRY_HOST [ITEMS] [PARALLELISM]")
local recipe = "examples/fan-out/square.lua"
-- A repository of its own, so the first push is a real one (blobs are per repository).
local target = reg .. "/mxb-fanout-" .. rt.getpid() .. "/runner:1"
local items = {}
for i = 1, n do items[i] = { n = i, sleep = 1 } end

local function timed(fn)
  local t0 = rt.monotonic()
  local r = fn()
  return r, rt.monotonic() - t0
end

local img, t_first = timed(function() return selfimage.ensure({ recipe = recipe, push_to = target }) end)
print(("image, first push: %.2f s (%d bytes, reused=%s)"):format(t_first, img.size, tostring(img.reused)))
local img2, t_reuse = timed(function() return selfimage.ensure({ recipe = recipe, push_to = target }) end)
print(("image, unchanged re-run: %.2f s (reused=%s)"):format(t_reuse, tostring(img2.reused)))

local c = k8s.connect()
local ns = "mxb-fanout-" .. rt.getpid()
c:create({ apiVersion = "v1", kind = "Namespace", metadata = { name = ns } })
local ok, err = pcall(function()
  local t0 = rt.monotonic()
  local h <close> = c:fan_out_start({ recipe = recipe, items = items, parallelism = par, push_to = target,
    namespace = ns })
  local t_start = rt.monotonic() - t0
  local t1 = rt.monotonic()
  local res = h:wait()
  local t_wait = rt.monotonic() - t1
  local okn = 0
  for _, r in ipairs(res) do if r.ok then okn = okn + 1 end end
  h:close()
  local total = rt.monotonic() - t0
  print(("cluster: %d items, parallelism %d: %.2f s wall (start incl. image reuse %.2f s, Job to complete and "
    .. "results listed %.2f s); %d ok; overhead per item %.3f s"):format(n, par, total, t_start, t_wait, okn,
    total / n))
end)
c:delete("namespaces", ns)
if not ok then error(err, 0) end
