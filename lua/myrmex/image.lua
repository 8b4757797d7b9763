--- Image analysis and optimization: what each layer of an image holds, how much of it is
--- wasted (dive's efficiency and wasted bytes), and concrete suggestions with the bytes each
--- would save; a gate over the figures for CI. Sources: a saved tar (docker-archive or OCI
--- layout), an image of the local engine (through its save stream), or a registry reference
--- (through its blobs). See docs/image.md.
local archive = require("myrmex.core.archive")
local rt = require("myrmex.core.runtime")
local check = require("myrmex.check")
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local scan = require("myrmex.image.scan")
local tree = require("myrmex.image.tree")
local advice = require("myrmex.image.advice")

local M = {}

local function misuse(fname, msg)
  error("image." .. fname .. ": " .. msg, 3)
end

local function invalid(msg)
  errors.raise({ code = "Invalid", engine = "image", message = msg }, 0)
end

local function decode(text, what)
  local ok, doc = pcall(json.decode, text)
  if not ok or type(doc) ~= "table" then invalid(what .. " is not valid JSON") end
  return doc
end

local INSTRUCTIONS = { ADD = true, ARG = true, CMD = true, COPY = true, ENTRYPOINT = true, ENV = true,
  EXPOSE = true, HEALTHCHECK = true, LABEL = true, MAINTAINER = true, ONBUILD = true, RUN = true,
  SHELL = true, STOPSIGNAL = true, USER = true, VOLUME = true, WORKDIR = true }

-- "/bin/sh -c #(nop)  CMD [...]" -> "CMD [...]"; "/bin/sh -c x" -> "RUN x" (classic builder);
-- BuildKit's "RUN /bin/sh -c x # buildkit" -> "RUN x".
local function instruction(created_by)
  if type(created_by) ~= "string" then return nil end
  local s = created_by:gsub("%s*# buildkit$", ""):gsub("^%s+", ""):gsub("%s+$", "")
  local nop = s:match("^/bin/sh %-c #%(nop%)%s*(.*)$")
  if nop then return nop end
  local run = s:match("^/bin/sh %-c (.*)$")
  if run then return "RUN " .. run end
  s = s:gsub("^RUN /bin/sh %-c ", "RUN ")
  local word = s:match("^(%u+) ")
  if word and INSTRUCTIONS[word] then return s end
  -- The classic builder records an exec-form RUN as the bare command.
  return "RUN " .. s
end

-- The instructions that made layers, in order: history entries that are not empty layers.
local function layer_history(config)
  local out = {}
  for _, h in ipairs(type(config.history) == "table" and config.history or {}) do
    if h.empty_layer ~= true then
      out[#out + 1] = { created_by = instruction(h.created_by), created = h.created,
        comment = h.comment }
    end
  end
  return out
end

local function blob_path(d)
  local alg, hex = tostring(d):match("^([%w]+):(%x+)$")
  if not alg then invalid("bad digest " .. tostring(d)) end
  return "blobs/" .. alg .. "/" .. hex
end

local function platform_of(p)
  if type(p) ~= "table" then return nil end
  return (p.os or "?") .. "/" .. (p.architecture or "?") .. (p.variant and ("/" .. p.variant) or "")
end

-- An OCI index: the manifest for `platform` (or the first image manifest), through nested
-- indexes. Attestation manifests (platform unknown/unknown) are skipped.
local function pick_manifest(col, index, platform, depth)
  if depth > 4 then invalid("index.json: indexes nested too deep") end
  local fallback
  for _, m in ipairs(type(index.manifests) == "table" and index.manifests or {}) do
    local plat = platform_of(m.platform)
    local usable = plat ~= "unknown/unknown"
    if usable and (platform == nil or plat == nil or plat == platform
        or plat:sub(1, #platform + 1) == platform .. "/") then
      local text = col.json[scan.resolve(col, blob_path(m.digest))]
      if text then
        local doc = decode(text, "manifest " .. m.digest)
        if type(doc.manifests) == "table" then
          local found = pick_manifest(col, doc, platform, depth + 1)
          if found then return found end
        elseif type(doc.layers) == "table" then
          if plat or platform == nil then return doc end
          fallback = fallback or doc
        end
      end
    end
  end
  return fallback
end

-- Which image of the tar, its config and its layers (paths in the tar) in order.
local function layout(col, opts)
  local mtext = col.json["manifest.json"]
  if mtext then
    local list = decode(mtext, "manifest.json")
    local item = list[1]
    if opts.image then
      item = nil
      for _, it in ipairs(list) do
        for _, t in ipairs(type(it.RepoTags) == "table" and it.RepoTags or {}) do
          if t == opts.image or t == opts.image .. ":latest" then item = it end
        end
      end
      if not item then
        errors.raise({ code = "NotFound", engine = "image",
          message = "no image " .. opts.image .. " in the archive" }, 0)
      end
    end
    if type(item) ~= "table" or type(item.Layers) ~= "table" then invalid("manifest.json lists no image") end
    local ctext = item.Config and col.json[scan.resolve(col, scan.norm(item.Config))]
    local layers = {}
    for i, p in ipairs(item.Layers) do layers[i] = { path = scan.norm(p) } end
    return { config = ctext and decode(ctext, "image config") or {}, layers = layers,
      tags = item.RepoTags }
  end
  local itext = col.json["index.json"]
  if not itext then invalid("not a saved image: neither manifest.json nor index.json") end
  local m = pick_manifest(col, decode(itext, "index.json"), opts.platform, 0)
  if not m then invalid("index.json: no image manifest" .. (opts.platform and (" for " .. opts.platform) or "")) end
  local ctext = m.config and col.json[scan.resolve(col, blob_path(m.config.digest))]
  local layers = {}
  for i, l in ipairs(m.layers) do
    layers[i] = { path = blob_path(l.digest), digest = l.digest, media_type = l.mediaType,
      compressed_size = l.size }
  end
  return { config = ctext and decode(ctext, "image config") or {}, layers = layers }
end

-- Merge the source-specific facts (instruction, digests, sizes) into the stacked layers,
-- derive the facts optimize() needs, and drop the merged file system.
local function finish(recs, meta, config, opts)
  local a = tree.stack(recs, { top = opts.top })
  local hist = layer_history(config)
  local diff_ids = type(config.rootfs) == "table" and config.rootfs.diff_ids or {}
  for i, L in ipairs(a.layers) do
    local m, rec = meta[i], recs[i]
    L.created_by = hist[i] and hist[i].created_by or nil
    L.digest = m.digest or diff_ids[i]
    L.diff_id = diff_ids[i]
    L.blob = m.path
    L.media_type = m.media_type
    L.uncompressed_size = rec.tar_size
    L.compressed_size = m.compressed_size or rec.read_size
  end
  advice.facts(a, recs)
  a.fs, a.hidden = nil, nil
  a.config = { os = config.os, architecture = config.architecture,
    user = type(config.config) == "table" and config.config.User or nil,
    entrypoint = type(config.config) == "table" and config.config.Entrypoint or nil,
    cmd = type(config.config) == "table" and config.config.Cmd or nil }
  return a
end

-- A progress bar over the bytes of the saved tar read so far (unknown total for a source),
-- labelled with the layer being read.
local function analyze_tar(src, opts)
  local r <close> = archive.open(src)
  local label = opts.label or (type(src) == "string" and src or "source")
  local progress <close> = log.progress("analyze " .. label,
    { total = type(src) == "string" and (rt.stat(src) or {}).size or nil, unit = "bytes" })
  local col = scan.saved(r, function(layer) progress:update((select(2, r:bytes())), layer) end)
  local lay = layout(col, opts)
  local recs, meta = {}, {}
  for i, l in ipairs(lay.layers) do
    recs[i] = scan.blob(col, l.path)
    l.compressed_size = l.compressed_size or col.sizes[scan.resolve(col, l.path)]
    meta[i] = l
  end
  local a = finish(recs, meta, lay.config, opts)
  a.tags = lay.tags
  return a
end

-- The engine's save stream is read as it arrives (docker save_source): no temporary file.
local function analyze_engine(ref, opts)
  local d = opts.docker or require("myrmex.docker").connect()
  local info = d:inspect_image(ref)
  local a = analyze_tar(d:save_source(ref), { top = opts.top, label = ref })
  a.id = info.Id
  a.reference = ref
  return a
end

-- Registry: manifest and config first, then each layer blob through a temporary file that
-- is read and removed before the next one is fetched.
local function analyze_registry(rc, ref, opts)
  local insp = rc:inspect(ref, { platform = opts.platform })
  local repo = rc:ref(ref).repository
  local recs, meta, total = {}, {}, 0
  for _, l in ipairs(insp.layers) do total = total + (tonumber(l.size) or 0) end
  local progress <close> = log.progress("analyze " .. ref, { total = total, unit = "bytes" })
  for i, l in ipairs(insp.layers) do
    progress:update(progress.done, ("%s (%d/%d)"):format(scan.label(l.digest), i, #insp.layers))
    -- Streamed: the tar reader pulls the blob as it arrives; what it leaves unread after the
    -- end-of-archive blocks is drained so the transfer finishes and its digest is checked.
    local s <close> = rc:blob_open(repo, l.digest, { source = true })
    local r <close> = archive.open(s:source())
    local ok, rec = pcall(scan.layer, r)
    if not ok then invalid("layer " .. l.digest .. " is not a readable tar: " .. tostring(rec)) end
    while s:read() do end
    recs[i] = rec
    progress:add(tonumber(l.size) or 0)
    meta[i] = { path = l.digest, digest = l.digest, media_type = l.media_type,
      compressed_size = l.size }
  end
  local a = finish(recs, meta, insp.config or {}, opts)
  a.reference, a.id = insp.reference, insp.config_digest
  return a
end

---@class myrmex.image.Layer
---@field index integer 1 = the base layer
---@field created_by string|nil the instruction that made it (from the config history)
---@field digest string|nil
---@field size integer bytes of the files it holds (dive's layer size)
---@field compressed_size integer bytes of the blob as stored
---@field uncompressed_size integer bytes of the layer tar
---@field files integer non-directory entries
---@field added integer
---@field changed integer
---@field removed integer
---@field share number size / image size

---@class myrmex.image.Analysis
---@field layers myrmex.image.Layer[]
---@field size integer
---@field wasted_bytes integer
---@field efficiency number
---@field wasted_share number wasted_bytes / bytes above the base layer

---@class myrmex.image.AnalyzeOptions
---@field docker? table a myrmex.docker client (default: docker.connect())
---@field registry? table a myrmex.registry client: `source` is then a reference on it
---@field platform? string "os/arch" for indexes
---@field image? string which image of a multi-image tar (a RepoTag)
---@field top? integer length of the largest-files/dirs and inefficiency lists (10)

local ANALYZE_OPTS = { docker = "table|userdata", registry = "table|userdata", platform = "string",
  image = "string", top = "integer" }

--- Analyze an image: per-layer figures, dive's efficiency and wasted bytes, the largest files
--- and directories, and the facts optimize() turns into suggestions.
---@param source string|userdata a tar path or source, an engine image, or a registry reference
---@param opts? myrmex.image.AnalyzeOptions
---@return myrmex.image.Analysis
function M.analyze(source, opts)
  opts = check.options("image", "analyze", opts, ANALYZE_OPTS)
  if type(source) ~= "string" and type(source) ~= "userdata" then
    misuse("analyze", "source must be a tar path, a source, an image name or a reference")
  end
  local target = type(source) == "string" and source or "source"
  return log.span("image", "analyze", target, function()
    if opts.registry then return analyze_registry(opts.registry, source, opts) end
    if type(source) == "userdata" then return analyze_tar(source, opts) end
    local f = io.open(source, "rb")
    if f then
      f:close()
      local a = analyze_tar(source, opts)
      a.reference = source
      return a
    end
    return analyze_engine(source, opts)
  end)
end

local OPTIMIZE_OPTS = { large_base = "number", max_layers = "integer" }
for k, v in pairs(ANALYZE_OPTS) do OPTIMIZE_OPTS[k] = v end

--- Suggestions that make the image smaller or safer, largest savings first:
--- `{kind=, message=, bytes=, layer=?, paths=?}`. `subject` is an analysis or anything
--- analyze() accepts (then analyzed with `opts`).
---@param subject myrmex.image.Analysis|string|userdata
---@param opts? myrmex.image.AnalyzeOptions|{large_base?:integer, max_layers?:integer}
---@return table[]
function M.optimize(subject, opts)
  opts = check.options("image", "optimize", opts, OPTIMIZE_OPTS)
  local limits = { large_base = opts.large_base, max_layers = opts.max_layers }
  if type(subject) == "table" then
    if not (subject.layers and subject.facts) then misuse("optimize", "not an analysis") end
    return advice.suggest(subject, limits)
  end
  local aopts = {}
  for k, v in pairs(opts) do
    if ANALYZE_OPTS[k] then aopts[k] = v end
  end
  return advice.suggest(M.analyze(subject, aopts), limits)
end

---@class myrmex.image.Policy
---@field min_efficiency? number dive's lowestEfficiency (0..1)
---@field max_wasted_bytes? integer|string dive's highestWastedBytes ("20MB" accepted)
---@field max_wasted_share? number dive's highestUserWastedPercent (0..1)

local POLICY = { min_efficiency = "number", max_wasted_bytes = "number|string", max_wasted_share = "number" }

--- Judge an analysis against thresholds, as dive's CI mode does. Returns
--- `{pass=, failures={{rule=, limit=, value=, message=}}}`.
---@param a myrmex.image.Analysis
---@param policy myrmex.image.Policy
---@return {pass:boolean, failures:table[]}
function M.check(a, policy)
  if type(a) ~= "table" or type(a.efficiency) ~= "number" then misuse("check", "analysis expected") end
  policy = check.options("image", "check", policy, POLICY)
  return advice.check(a, policy)
end

--- Human-readable byte count ("1.5 MiB").
---@param n integer
---@return string
function M.bytes(n)
  return advice.human(n)
end

return M
