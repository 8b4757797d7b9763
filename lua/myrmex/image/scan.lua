--- Streaming collection for myrmex.image: one pass over a saved image (docker-archive or OCI
--- layout tar), each layer read in place through reader:source(), keeping per-path metadata
--- only. Internal; see myrmex.image.
local archive = require("myrmex.core.archive")
local errors = require("myrmex.errors")

local M = {}

local MAX_JSON = 16 * 1024 * 1024
local OS_RELEASE = { "etc/os-release", "usr/lib/os-release" }

--- An entry's path; a tar entry without one is a broken image, not a Lua error.
local function named(e)
  if type(e.path) ~= "string" then
    errors.raise({ code = "Invalid", engine = "image", message = "image tar: an entry has no path" }, 0)
  end
  return e.path
end

--- A tar path as a key: no leading "./" or "/", no trailing "/"; "" is the root.
---@param p string
---@return string
function M.norm(p)
  local c, z = p:byte(1), p:byte(-1)
  if c ~= 46 and c ~= 47 and z ~= 47 then return p end -- no ".", "/" to strip: the usual case
  p = p:gsub("^%./", ""):gsub("^/+", ""):gsub("/+$", "")
  if p == "." then return "" end
  return p
end

--- Collect one layer tar from an open reader: its entries as a compact path list (the C
--- side keeps them: a path costs its bytes and one small record, see reader:paths in
--- docs/archive.md; M.arrays expands one layer's worth at a time), the uncompressed and
--- compressed stream sizes, and the content of a small os-release file if there is one.
--- `tick`, if given, is called every 256 entries (progress of a long layer).
---@param r userdata archive reader
---@param tick? function
---@return table record {list=, n=, tar_size=, read_size=, os_release=}
function M.layer(r, tick)
  local list, os_release = r:paths({ tick = tick, keep = OS_RELEASE, keep_max = 65536 })
  local rec = { list = list, n = #list, os_release = os_release }
  rec.tar_size, rec.read_size = r:bytes()
  return rec
end

local EMPTY = {}

--- A layer record's entries as parallel arrays path, size, kind, mode, parent (kind "w" is
--- a whiteout of path, "q" an opaque marker of directory path; parent is the path up to its
--- last "/"). Made on demand, so only the layer being worked on is held as Lua values.
---@param rec table a record of M.layer
---@return string[] path, integer[] size, string[] kind, integer[] mode, string[] parent
function M.arrays(rec)
  if not rec.list then return EMPTY, EMPTY, EMPTY, EMPTY, EMPTY end
  return rec.list:arrays()
end

local function looks_json(chunk)
  return chunk:match("^%s*[%[{]") ~= nil
end

-- Resolve a link inside the outer tar (Docker links identical layers to one copy).
local function link_target(p, linkname)
  if linkname:sub(1, 1) == "/" then return M.norm(linkname) end
  local parts = {}
  for seg in ((p:match("^(.*)/") or "") .. "/" .. linkname):gmatch("[^/]+") do
    if seg == ".." then parts[#parts] = nil elseif seg ~= "." then parts[#parts + 1] = seg end
  end
  return table.concat(parts, "/")
end

--- One pass over a saved image. `known` optionally names the paths known to be layers.
--- Returns {blobs = {[path]=record}, json = {[path]=text}, links = {[path]=target},
--- bad = {[path]=error}, sizes = {[path]=bytes}}: layers are keyed by their path in the tar,
--- whatever the order of manifest.json and the layers.
--- `tick`, if given, is called as the reading advances: tick(label) when a layer starts
--- (see M.label), tick() every 256 of its entries and when it ends.
---@param r userdata archive reader over the saved tar
---@param tick? function
---@return table
function M.saved(r, tick)
  local out = { blobs = {}, json = {}, links = {}, bad = {}, sizes = {} }
  for e in r:entries() do
    local p = M.norm(named(e))
    if e.type == "symlink" or e.type == "hardlink" then
      out.links[p] = e.type == "hardlink" and M.norm(e.linkname or "") or link_target(p, e.linkname or "")
    elseif e.type == "file" then
      out.sizes[p] = e.size
      if p:match("%.json$") or p == "repositories" or p == "oci-layout" then
        if p:match("%.json$") then out.json[p] = r:read_all(MAX_JSON) end
      elseif p:match("^blobs/") or p:match("layer%.tar$") or p:match("%.tar%.?%a*$") then
        -- sniff leaves the bytes in place, so the layer is handed over uncopied.
        local head = r:sniff(64)
        if head ~= "" and looks_json(head) and e.size <= MAX_JSON then
          out.json[p] = r:read_all(MAX_JSON)
        elseif head ~= "" then
          if tick then tick(M.label(p)) end
          local ok, rec = pcall(function()
            local inner <close> = archive.open(r:source())
            return M.layer(inner, tick)
          end)
          if ok then out.blobs[p] = rec else out.bad[p] = rec end
          if tick then tick() end
        else
          out.blobs[p] = { n = 0, tar_size = 0, read_size = 0 }
        end
      end
    end
  end
  return out
end

--- A short name for a layer in progress output: "layer " and the first 12 hex digits of
--- its digest when its path holds one ("<hex>/layer.tar", "blobs/sha256/<hex>"), else its path.
---@param p string
---@return string
function M.label(p)
  return "layer " .. (p:match("(" .. ("%x"):rep(12) .. ")%x*") or p)
end

--- Follow links to the stored path.
---@param col table result of M.saved
---@param p string
---@return string
function M.resolve(col, p)
  local seen = 0
  while col.links[p] and seen < 16 do
    p, seen = col.links[p], seen + 1
  end
  return p
end

--- The layer record stored at p, or raise Invalid naming the layer.
function M.blob(col, p)
  local q = M.resolve(col, p)
  local rec = col.blobs[q]
  if rec then return rec end
  local why = col.bad[q]
  local what = why and (" is not a readable tar: " .. tostring(why)) or " is missing from the archive"
  errors.raise({ code = "Invalid", engine = "image", message = "layer " .. p .. what }, 0)
end

return M
