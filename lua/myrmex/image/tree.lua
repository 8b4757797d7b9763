--- The layer arithmetic of myrmex.image: stacks the per-layer entry lists collected while
--- streaming (see myrmex.image.scan) into the image's file system, with dive's efficiency and
--- wasted bytes, per-layer added/changed/removed figures and the largest files and directories.
--- Internal: myrmex.image.analyze is the public face. Memory is a few tables keyed by path.
local scan = require("myrmex.image.scan")

local M = {}

-- Not memoized: a cache of parents costs a table entry per path, as much as it saves.
local function parent(p)
  local i = p:find("/[^/]*$")
  return i and p:sub(1, i - 1) or ""
end

-- The merged file system as the layers are applied. Per path two integers: size[p], and
-- meta[p] = layer << 19 | mode << 3 | kind code (two maps rather than four keep an image of
-- 100k files well under its memory bound). kids[dir] is a set of child paths so that
-- deleting a directory and sizing one never scans every path.
local CODE = { d = 1, f = 2, l = 3, h = 4, o = 5 }
local KIND = { "d", "f", "l", "h", "o" }
local DIR = 1

local function pack(k, layer, mode)
  return layer << 19 | (mode & 0xFFFF) << 3 | CODE[k]
end

--- The parts of a packed meta value: kind ("d", "f", "l", "h", "o"), layer, mode.
---@param meta integer
---@return string kind, integer layer, integer mode
function M.unpack(meta)
  return KIND[meta & 7], meta >> 19, meta >> 3 & 0xFFFF
end

local function new_fs()
  return { size = {}, meta = {}, kids = { [""] = {} } }
end

local function is_dir(fs, p)
  local m = fs.meta[p]
  return m ~= nil and m & 7 == DIR
end

-- Link p under its parent directory par.
local function fs_link(fs, p, par)
  local k = fs.kids[par]
  if not k then
    k = {}
    fs.kids[par] = k
  end
  k[p] = true
end

-- Create the missing directories from par up (implicit in tars that list only files).
local function fs_parents(fs, par, layer, ghost)
  while par ~= "" and not fs.meta[par] do
    local up = parent(par)
    fs.meta[par], fs.size[par] = pack("d", layer, 493), 0
    if ghost and ghost.size[par] then ghost.size[par], ghost.dir[par] = nil, nil end
    fs_link(fs, par, up)
    par = up
  end
end

-- Total size of p and everything below it.
local function fs_subtree(fs, p)
  local total = fs.size[p] or 0
  local k = fs.kids[p]
  if k then
    for c in pairs(k) do total = total + fs_subtree(fs, c) end
  end
  return total
end

-- Remove p and what is below it; each removed non-directory goes to on_gone(path, size, layer).
local function fs_remove(fs, p, on_gone)
  local k = fs.kids[p]
  if k then
    for c in pairs(k) do fs_remove(fs, c, on_gone) end
    fs.kids[p] = nil
  end
  local m = fs.meta[p]
  if m and m & 7 ~= DIR then on_gone(p, fs.size[p], m >> 19) end
  fs.size[p], fs.meta[p] = nil, nil
  local pk = fs.kids[parent(p)]
  if pk then pk[p] = nil end
end

-- Keep the n largest items of list (by field) — a small insertion sort is enough for n ~ 10.
local function keep_top(list, item, field, n)
  if #list >= n and list[#list][field] >= item[field] then return end
  local i = #list + 1
  while i > 1 and list[i - 1][field] < item[field] do i = i - 1 end
  table.insert(list, i, item)
  if #list > n then list[#list] = nil end
end

-- Which paths of one layer have something under them in that layer: the others are the
-- leaves dive visits. An opaque marker makes its directory a node (not a leaf of its parent).
local function layer_parents(ppath)
  local has_kid = {}
  for i = 1, #ppath do
    local par = ppath[i]
    while par ~= "" and not has_kid[par] do
      has_kid[par] = true
      par = parent(par)
    end
  end
  return has_kid
end

-- dive's own view of the stack differs from the file system in two ways, and its whiteout
-- sizes follow its view: it never applies an opaque marker (".wh..wh..opq" entries are
-- dropped), and a file that replaces a directory keeps the directory's children. What the
-- real file system lost that way lives on in `ghost` (size per path, kids per parent, the
-- same shape as fs), so a later whiteout of a directory weighs what dive sees under it. It is
-- empty unless an image has opaque directories or files over directories.
local function ghost_add(g, p, size, dir)
  g.size[p], g.dir[p] = size, dir or nil
  local par = parent(p)
  while true do
    local k = g.kids[par]
    if not k then
      k = {}
      g.kids[par] = k
    end
    if k[p] then break end
    k[p] = true
    if par == "" then break end
    p, par = par, parent(par)
  end
end

-- Move what is below fs path p (not p itself) into the ghost.
local function ghost_take(fs, g, p)
  local k = fs.kids[p]
  if not k then return end
  for c in pairs(k) do
    ghost_add(g, c, fs.size[c], is_dir(fs, c))
    ghost_take(fs, g, c)
  end
end

local function ghost_subtree(g, p)
  local total = g.size[p] or 0
  local k = g.kids[p]
  if k then
    for c in pairs(k) do total = total + ghost_subtree(g, c) end
  end
  return total
end

local function ghost_remove(g, p)
  local k = g.kids[p]
  if k then
    for c in pairs(k) do ghost_remove(g, c) end
    g.kids[p] = nil
  end
  g.size[p], g.dir[p] = nil, nil
  local pk = g.kids[parent(p)]
  if pk then pk[p] = nil end
end

-- dive visits a layer's leaves depth first in name order, whiteouts under their ".wh." name;
-- a whiteout of a path its stack does not have stops that visit (an error it only logs), so
-- the leaves after it in that order are not counted. Returns the set of leaf indexes dive
-- visits before stopping, and the index of the whiteout it stopped at.
local function visited_before_stop(rpath, rkind, leaves, missing)
  local function key(i)
    local p = rpath[i]
    if rkind[i] == "w" then
      local par, base = p:match("^(.*)/([^/]*)$")
      p = par and (par .. "/.wh." .. base) or (".wh." .. p)
    end
    local parts = {}
    for seg in p:gmatch("[^/]+") do parts[#parts + 1] = seg end
    return parts
  end
  local keys = {}
  for _, i in ipairs(leaves) do keys[i] = key(i) end
  table.sort(leaves, function(a, b)
    local ka, kb = keys[a], keys[b]
    for j = 1, math.min(#ka, #kb) do
      if ka[j] ~= kb[j] then return ka[j] < kb[j] end
    end
    return #ka < #kb
  end)
  local keep = {}
  for _, i in ipairs(leaves) do
    if missing[i] then return keep, i end
    keep[i] = true
  end
  return keep, nil
end

--- Stack the layers. `recs` are scan records in layer order (bottom first); `opts.top` is
--- the length of the largest-files, largest-dirs and inefficiency lists (default 10).
---@param recs table[]
---@param opts? {top?:integer}
---@return table analysis without the source-specific fields
function M.stack(recs, opts)
  local top = opts and opts.top or 10
  local fs = new_fs()
  local ghost = { size = {}, dir = {}, kids = {} }
  local phantom = {} -- paths of failed whiteouts dive has an empty entry for
  local ecum, emin, ecnt = {}, {}, {}
  local hidden, hidden_bytes = {}, 0 -- bytes of lower layers no longer visible
  local layers = {}
  for li, rec in ipairs(recs) do
    -- dive's efficiency: every leaf of this layer's tree, against dive's stack below it.
    local rpath, rsize, rkind, rmode, rpar = scan.arrays(rec)
    local n = #rpath
    local has_kid = layer_parents(rpar)
    -- The leaves dive visits, and each whiteout's weight in dive's view of the layers below.
    -- A path listed twice in one tar is one node for dive, with the last entry's size (a
    -- whiteout is a node of its own, under its .wh. name).
    local leaves, wsize, missing, listed, at = {}, {}, nil, nil, {}
    for i = 1, n do
      local p, k = rpath[i], rkind[i]
      if k == "q" then
        -- The marker is dropped, but the directory it names exists in dive's layer tree:
        -- a leaf of size 0 when nothing else of the layer is below or at it.
        if not listed then
          listed = {}
          for j = 1, n do if rkind[j] ~= "q" then listed[rpath[j]] = true end end
        end
        if p ~= "" and not has_kid[p] and not listed[p] then
          listed[p] = true
          leaves[#leaves + 1] = i
        end
      elseif p ~= "" and not has_kid[p] then
        local key = k == "w" and "\0" .. p or p
        local j = at[key]
        if j then
          leaves[j] = i
        else
          leaves[#leaves + 1] = i
          at[key] = #leaves
        end
        if k == "w" then
          local m, gs = fs.meta[p], ghost.size[p]
          if m then
            wsize[i] = m & 7 == DIR and fs_subtree(fs, p) + ghost_subtree(ghost, p) or 0
          elseif gs then
            wsize[i] = ghost.dir[p] and ghost_subtree(ghost, p) or 0
          else
            missing = missing or {}
            missing[i] = true
          end
        end
      end
    end
    local keep, stop
    if missing then
      keep, stop = visited_before_stop(rpath, rkind, leaves, missing)
      -- dive has already made the path's entry, with its "no size yet" minimum of -1, when
      -- the whiteout fails; unless a later layer sizes that path, the -1 stays in the sum.
      if stop and ecum[rpath[stop]] == nil then phantom[rpath[stop]] = true end
    end
    for _, i in ipairs(leaves) do
      local p, k = rpath[i], rkind[i]
      if not keep or keep[i] then
        local s = k == "q" and 0 or wsize[i] or rsize[i]
        -- Most paths are seen once: only repeats get a count and a minimum.
        local c = ecum[p]
        if c == nil then
          ecum[p] = s
        else
          local cnt = ecnt[p]
          if cnt then
            ecnt[p] = cnt + 1
            if s < emin[p] then emin[p] = s end
          else
            ecnt[p], emin[p] = 2, c < s and c or s
          end
          ecum[p] = c + s
        end
      end
    end
    -- Apply: whiteouts and opaque markers act on the layers below, then the entries land.
    local L = { index = li, size = 0, files = 0, added = 0, changed = 0, removed = 0,
      added_bytes = 0, changed_bytes = 0, removed_bytes = 0 }
    local function gone(p, size, from)
      L.removed, L.removed_bytes = L.removed + 1, L.removed_bytes + size
      hidden_bytes = hidden_bytes + size
      hidden[#hidden + 1] = { path = p, size = size, from = from, to = li, how = "removed" }
    end
    for i = 1, n do
      local k, p = rkind[i], rpath[i]
      if k == "w" then
        if fs.meta[p] then fs_remove(fs, p, gone) end
        if ghost.size[p] or ghost.kids[p] then ghost_remove(ghost, p) end
      elseif k == "q" then
        local kids = fs.kids[p]
        if kids then
          ghost_take(fs, ghost, p)
          for c in pairs(kids) do fs_remove(fs, c, gone) end
        end
      end
    end
    for i = 1, n do
      local k, p, s, mode = rkind[i], rpath[i], rsize[i], rmode[i]
      if k ~= "w" and k ~= "q" and p ~= "" then
        L.size = L.size + s
        if k ~= "d" then L.files = L.files + 1 end
        local old = fs.meta[p]
        if old then
          old = old & 7 == DIR and "d" or "-"
          if old == "d" and k ~= "d" then
            local kids = fs.kids[p]
            if kids then
              ghost_take(fs, ghost, p)
              for c in pairs(kids) do fs_remove(fs, c, gone) end
            end
          end
          if k ~= "d" then L.changed, L.changed_bytes = L.changed + 1, L.changed_bytes + s end
          if old ~= "d" then
            hidden_bytes = hidden_bytes + fs.size[p]
            hidden[#hidden + 1] = { path = p, size = fs.size[p], from = fs.meta[p] >> 19, to = li,
              how = "overwritten" }
          end
        else
          if k ~= "d" then L.added, L.added_bytes = L.added + 1, L.added_bytes + s end
          fs_parents(fs, rpar[i], li, ghost)
          fs_link(fs, p, rpar[i])
        end
        -- dive replaces the payload of a node it has and keeps its children.
        if ghost.size[p] then ghost.size[p], ghost.dir[p] = nil, nil end
        fs.meta[p], fs.size[p] = pack(k, li, mode), s
      end
    end
    layers[li] = L
  end

  local total, min_total, wasted, ineff = 0, 0, 0, {}
  for p in pairs(phantom) do
    if ecum[p] == nil then min_total = min_total - 1 end
  end
  for p, c in pairs(ecum) do
    local cnt = ecnt[p]
    total, min_total = total + c, min_total + (cnt and emin[p] or c)
    if cnt then
      wasted = wasted + c
      if #ineff < top or ineff[#ineff].bytes < c then
        keep_top(ineff, { path = p, count = cnt, bytes = c }, "bytes", top)
      end
    end
  end

  local size = 0
  for _, L in ipairs(layers) do size = size + L.size end
  for _, L in ipairs(layers) do L.share = size > 0 and L.size / size or 0 end
  local user = size - (layers[1] and layers[1].size or 0)

  -- The final file system, walked down from the root: largest files, and the size of every
  -- directory with a file below it.
  local largest_files, dir_size, files = {}, {}, 0
  local meta, fsize, kids = fs.meta, fs.size, fs.kids
  local function walk(d)
    local sum, count = 0, 0
    for p in pairs(kids[d]) do
      local m = meta[p]
      if m & 7 ~= DIR then
        local s = fsize[p]
        sum, count, files = sum + s, count + 1, files + 1
        if #largest_files < top or largest_files[#largest_files].size < s then
          keep_top(largest_files, { path = p, size = s, layer = m >> 19 }, "size", top)
        end
      end
      if kids[p] then
        local t, c = walk(p)
        sum, count = sum + t, count + c
      end
    end
    if count > 0 and d ~= "" then dir_size[d] = sum end
    return sum, count
  end
  walk("")
  local largest_dirs = {}
  for p, s in pairs(dir_size) do
    if #largest_dirs < top or largest_dirs[#largest_dirs].size < s then
      keep_top(largest_dirs, { path = p, size = s }, "size", top)
    end
  end

  return {
    layers = layers, size = size, user_size = user,
    wasted_bytes = wasted, efficiency = total == 0 and 1.0 or min_total / total,
    wasted_share = user > 0 and wasted / user or 0.0,
    inefficiencies = ineff, hidden_bytes = hidden_bytes, hidden = hidden,
    files = files, largest_files = largest_files, largest_dirs = largest_dirs,
    fs = fs,
  }
end

return M
