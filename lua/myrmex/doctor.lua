--- `myrmex doctor`: for each engine, whether it is reachable, its version, and where its
--- address came from. Engine modules may export doctor() -> check table; this module asks
--- each one that exists and falls back to plain detection for the others.
local rt = require("myrmex.core.runtime")

local M = {}

local function which(name)
  for dir in (rt.environ().PATH or ""):gmatch("[^:]+") do
    local st = rt.stat(dir .. "/" .. name)
    if st and st.type == "file" and st.mode & 73 ~= 0 then return dir .. "/" .. name end
  end
end
M.which = which

local function engine_check(modname, fallback)
  local ok, mod = pcall(require, modname)
  if ok and type(mod) == "table" and type(mod.doctor) == "function" then
    local ok2, res = pcall(mod.doctor)
    if ok2 then return res end
    return { ok = false, detail = require("myrmex.errors").message(res) }
  end
  return fallback()
end

local function scanners()
  local found = {}
  for _, s in ipairs({ "trivy", "grype" }) do
    local p = which(s)
    if p then found[#found + 1] = s .. " (" .. p .. ")" end
  end
  local docker = which("docker")
  if docker and rt.stat((rt.environ().HOME or "") .. "/.docker/cli-plugins/docker-scout") then
    found[#found + 1] = "docker scout"
  end
  if #found == 0 then
    return { ok = false, optional = true, detail = "no trivy, grype or docker-scout on PATH" }
  end
  return { ok = true, detail = table.concat(found, ", "), source = "PATH" }
end

--- Run every check: {name=, ok=, optional=, detail=, source=}.
---@return table[]
function M.run()
  local checks = {}
  local function add(name, res)
    res.name = name
    checks[#checks + 1] = res
  end
  add("docker", engine_check("myrmex.docker", function()
    return { ok = false, detail = "myrmex.docker is not available" }
  end))
  add("kubernetes", engine_check("myrmex.k8s", function()
    return { ok = false, optional = true, detail = "myrmex.k8s is not available" }
  end))
  add("registry", engine_check("myrmex.registry", function()
    return { ok = false, optional = true, detail = "myrmex.registry is not available" }
  end))
  add("scanners", engine_check("myrmex.scan", scanners))
  return checks
end

return M
