--- Field-by-field comparison of a SARIF log Trivy wrote with ours, for the scan specs: every
--- difference as "path: theirs ~= ours", save what docs/scan.md lists as our additions (our
--- driver, fingerprints, our run properties).
local json = require("myrmex.json")

local M = {}

local OURS = { ["runs.1.tool.driver.name"] = true, ["runs.1.tool.driver.fullName"] = true,
  ["runs.1.tool.driver.version"] = true, ["runs.1.tool.driver.informationUri"] = true,
  ["runs.1.properties.scanners"] = true, ["runs.1.properties.compliance"] = true }

---@param theirs table decoded SARIF by Trivy
---@param ours table decoded SARIF by scan.export
---@return string[]
function M.differences(theirs, ours)
  local out = {}
  local function walk(a, b, path)
    if OURS[path] or path:match("^runs%.1%.results%.%d+%.partialFingerprints$") then return end
    if path == "runs.1.originalUriBaseIds.ROOTPATH.uri" then
      -- the scanned directory; `trivy convert` puts the converted file's path there instead
      if not (type(a) == "string" and type(b) == "string" and a:match("^file:///.*/$") and b:match("^file:///.*/$")) then
        out[#out + 1] = path .. ": " .. tostring(a) .. " ~= " .. tostring(b)
      end
      return
    end
    if json.isnull(a) then a = nil end
    if json.isnull(b) then b = nil end
    -- Trivy writes run properties for images only; ours always carry our own keys
    if path == "runs.1.properties" and a == nil then a = {} end
    if type(a) == "table" and type(b) == "table" then
      local keys = {}
      for k in pairs(a) do keys[k] = true end
      for k in pairs(b) do keys[k] = true end
      for k in pairs(keys) do walk(a[k], b[k], (path == "" and "" or path .. ".") .. tostring(k)) end
    elseif a ~= b and not (type(a) == "table" and next(a) == nil and b == nil) then
      out[#out + 1] = path .. ": " .. tostring(a):sub(1, 60) .. " ~= " .. tostring(b):sub(1, 60)
    end
  end
  walk(theirs, ours, "")
  return out
end

return M
