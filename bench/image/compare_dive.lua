-- Check that image.analyze of a saved tar gives dive's --json figures for it: efficiency,
-- wasted bytes, image size and every inefficient path (count and bytes). Raises on the first
-- difference; prints one line when everything matches.
-- usage: myrmex bench/image/compare_dive.lua IMAGE.tar DIVE.json
local image = require("myrmex.image")
local json = require("myrmex.json")

local f = assert(io.open(arg[2], "r"))
local d = json.decode(f:read("a"))
f:close()
local a = image.analyze(arg[1], { top = 1000000 })

local function same(what, theirs, ours)
  if theirs ~= ours then
    error(("%s: dive %s, myrmex %s"):format(what, tostring(theirs), tostring(ours)), 0)
  end
end

same("layers", #d.layer, #a.layers)
same("size", d.image.sizeBytes, a.size)
same("wasted bytes", d.image.inefficientBytes, a.wasted_bytes)
same("efficiency", d.image.efficiencyScore, a.efficiency)
local theirs = {}
for _, r in ipairs(d.image.fileReference or {}) do theirs[(r.file:gsub("^/", ""))] = r end
local n = 0
for _, r in ipairs(a.inefficiencies) do
  local t = theirs[r.path]
  if not t then error("inefficient path " .. r.path .. ": not in dive's list", 0) end
  same(r.path .. " count", t.count, r.count)
  same(r.path .. " bytes", t.sizeBytes, r.bytes)
  n = n + 1
end
same("inefficient paths", #(d.image.fileReference or {}), n)
print(("same as dive: %d layers, efficiency %.17g, wasted %d bytes, %d inefficient paths"):format(#a.layers,
  a.efficiency, a.wasted_bytes, n))
