--- Image-level registry operations: push from an OCI layout, a docker-archive tar or the
--- local engine; pull into an OCI layout, a docker-archive tar or the engine; copy between
--- registries with blobs streamed straight through; inspect. Installed as methods of
--- myrmex.registry.Client by myrmex.registry. See docs/registry.md.
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local rt = require("myrmex.core.runtime")
-- libarchive (and its dozen libraries) only for what reads or writes a tar: not a layout pull.
local archive = setmetatable({}, { __index = function(t, k)
  local mod = require("myrmex.core.archive")
  setmetatable(t, { __index = mod })
  return mod[k]
end })
local reference = require("myrmex.registry.reference")
local lay = require("myrmex.registry.layers")

local M = {}
local R -- myrmex.registry, set by install
local MEDIA

local function misuse(fname, msg)
  error(("registry.%s: %s"):format(fname, msg), 3)
end

local function fail(code, msg)
  errors.raise({ code = code, engine = "registry", message = msg }, 3)
end

local argcheck = require("myrmex.check")

local function options(fname, opts, allowed)
  return argcheck.options("registry", fname, opts, allowed)
end

local set = argcheck.set

-- Bounded parallelism through the shared scheduler (transfers interleave on one multi handle).
local function parallel(fns, max)
  return require("myrmex.parallel").run(fns, { max = max })
end
M._parallel = parallel

-- Run fn(desc) for each layer descriptor, `max` at once, with one progress indicator for the
-- image that advances as each layer finishes.
local function each_layer(what, descs, max, fn)
  local total = 0
  for _, d in ipairs(descs) do total = total + (tonumber(d.size) or 0) end
  local progress <close> = log.progress(what, { total = total, unit = "bytes" })
  local fns = {}
  for i, desc in ipairs(descs) do
    fns[i] = function()
      fn(desc)
      progress:add(tonumber(desc.size) or 0)
    end
  end
  parallel(fns, max)
end

local function is_index(mt)
  return mt == MEDIA.oci_index or mt == MEDIA.docker_list
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then fail("Engine", "cannot write " .. tostring(err)) end
  local ok, werr = f:write(data)
  f:close()
  if not ok then
    os.remove(tmp)
    fail("Engine", "cannot write " .. path .. ": " .. tostring(werr))
  end
  local moved, merr = os.rename(tmp, path)
  if not moved then fail("Engine", "cannot rename " .. tmp .. ": " .. tostring(merr)) end
end

local function mkdir_p(path)
  if not lay.mkdir_p(path) then fail("Engine", "cannot create directory " .. path) end
end

local function rm_rf(path)
  if path and path:match("^/tmp/") then os.execute("rm -rf '" .. path:gsub("'", "'\\''") .. "'") end
end

local function hex(d) return (d:match("^sha256:(%x+)$")) end

-- ---------------------------------------------------------------------------------------
-- Platforms

--- "os/arch[/variant]" of this machine's default target.
function M.host_platform()
  local p = io.popen("uname -m 2>/dev/null")
  local m = p and p:read("l") or "x86_64"
  if p then p:close() end
  local arch = ({ x86_64 = "amd64", aarch64 = "arm64", armv7l = "arm/v7", i686 = "386" })[m] or m
  return "linux/" .. arch
end

local function platform_string(p)
  if type(p) ~= "table" then return nil end
  local s = tostring(p.os) .. "/" .. tostring(p.architecture)
  if p.variant and p.variant ~= "" then s = s .. "/" .. p.variant end
  return s
end

local function pick_platform(index, wanted, what)
  local fallback
  for _, m in ipairs(index.manifests or {}) do
    local ps = platform_string(m.platform)
    if ps == wanted then return m end
    -- "linux/arm" matches "linux/arm/v7" when nothing matches exactly.
    if ps and wanted:match("^[^/]+/[^/]+$") and ps:sub(1, #wanted + 1) == wanted .. "/" then
      fallback = fallback or m
    end
  end
  if fallback then return fallback end
  fail("NotFound", ("%s: no manifest for platform %s"):format(what, wanted))
end

-- ---------------------------------------------------------------------------------------
-- Inspect

--- Resolve `ref` to one image manifest (an index resolved by platform) and its config.
local function resolve(client, r, platform)
  local top = client:manifest(r)
  local m = top
  if is_index(top.media_type) then
    local child = pick_platform(top.manifest, platform or M.host_platform(), tostring(r))
    m = client:manifest(r:with({ digest = child.digest }))
  end
  return top, m
end

local function sum_layers(manifest)
  local total = 0
  for _, l in ipairs(manifest.layers or {}) do total = total + (tonumber(l.size) or 0) end
  return total
end

--- Config, layers, sizes, created, labels and platforms of an image.
---@param ref string|myrmex.registry.Reference
---@param opts? {platform?:string}
---@return table
local function inspect(client, ref, opts)
  opts = options("inspect", opts, set { "platform" })
  local r = client:ref(ref)
  return log.span("registry", "inspect", tostring(r), function()
    local top, m = resolve(client, r, opts.platform)
    local cfg_desc = m.manifest.config or {}
    local cfg = {}
    if cfg_desc.digest then
      local body = client:blob(r.repository, cfg_desc.digest, { max = R.max_manifest_size })
      local ok, doc = pcall(json.decode, body)
      cfg = ok and type(doc) == "table" and doc or {}
    end
    local layers = {}
    for i, l in ipairs(m.manifest.layers or {}) do
      layers[i] = { digest = l.digest, size = l.size, media_type = l.mediaType }
    end
    local platforms = {}
    if is_index(top.media_type) then
      for _, c in ipairs(top.manifest.manifests or {}) do
        platforms[#platforms + 1] = platform_string(c.platform)
      end
    else
      platforms[1] = (cfg.os or "?") .. "/" .. (cfg.architecture or "?") .. (cfg.variant and ("/" .. cfg.variant) or "")
    end
    local c = type(cfg.config) == "table" and cfg.config or {}
    return {
      reference = tostring(r), digest = top.digest, media_type = top.media_type,
      manifest_digest = m.digest, manifest = m.manifest, config_digest = cfg_desc.digest, config = cfg,
      layers = layers, size = sum_layers(m.manifest) + (tonumber(cfg_desc.size) or 0),
      created = cfg.created, labels = type(c.Labels) == "table" and c.Labels or {},
      architecture = cfg.architecture, os = cfg.os, platforms = platforms,
    }
  end)
end

-- ---------------------------------------------------------------------------------------
-- Copy registry to registry

local function layer_list(manifest)
  local list = {}
  if manifest.config and manifest.config.digest then list[#list + 1] = manifest.config end
  for _, l in ipairs(manifest.layers or {}) do list[#list + 1] = l end
  return list
end

-- The digest a stream's transfer computed, once it has ended (nil before).
local function stream_digest(s)
  local x = s:transfer()
  if not x or not x:done() then return nil end
  local res = x:result()
  return res and res.digest
end

-- One blob from src to dst: skipped when present, mounted on the same registry, otherwise
-- streamed from the source response into the destination request (no temp file).
local function copy_blob(src, srepo, dst, drepo, desc, stats)
  local d = desc.digest
  if dst:blob_exists(drepo, d) then
    stats.skipped = stats.skipped + 1
    return
  end
  if src.host == dst.host and src.scheme == dst.scheme then
    if dst:mount(drepo, d, srepo) then
      stats.mounted = stats.mounted + 1
      return
    end
  end
  local t0 = rt.monotonic()
  -- Hashed on the way, not checked by the transport: the destination verifies the digest
  -- before it commits the blob, and a mismatch is then reported with both digests.
  local s <close> = src:blob_open(srepo, d, { _hash = true })
  local ok, err = pcall(dst.upload, dst, drepo, d, s, tonumber(desc.size))
  if not ok then
    local actual = stream_digest(s)
    if actual and actual ~= d then
      errors.raise({ code = "DigestMismatch", engine = "registry", details = { expected = d, actual = actual },
        message = ("copy %s/%s@%s: the source sent %s, expected %s"):format(src.host, srepo, d, actual, d) })
    end
    error(err, 0)
  end
  stats.copied = stats.copied + 1
  stats.bytes = stats.bytes + (tonumber(desc.size) or 0)
  log.info("registry: layer copied", { digest = d, size = desc.size,
    duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
end

-- A layer from src to dst in another compression: the source response is decompressed and/or
-- compressed on its way into the destination upload. The source's digest is checked before
-- the destination commits the blob. Returns the new descriptor.
local function convert_blob(src, srepo, dst, drepo, desc, target, level, stats)
  local fmt = lay.format_of(desc.mediaType)
  local cached = fmt == "none" and lay.cache_get(target, level, desc.digest)
  local out = {}
  for k, v in pairs(desc) do out[k] = v end
  out.mediaType = lay.media(target, desc.mediaType)
  if cached and dst:blob_exists(drepo, cached.digest) then
    out.digest, out.size = cached.digest, cached.size
    stats.skipped = stats.skipped + 1
    return out
  end
  local t0 = rt.monotonic()
  local s <close> = src:blob_open(srepo, desc.digest, { source = true, _hash = true })
  local conv, result = lay.transcode(s:source(), fmt, target, { level = level })
  local res
  dst:upload_source(drepo, conv, nil, function(sent)
    local err
    res, err = result()
    if not res then fail("Engine", ("copy %s@%s: converting to %s: %s"):format(srepo, desc.digest, target, err)) end
    if res.source_digest ~= desc.digest then
      errors.raise({ code = "DigestMismatch", engine = "registry",
        details = { expected = desc.digest, actual = res.source_digest },
        message = ("copy %s/%s@%s: the source sent %s, expected %s"):format(src.host, srepo, desc.digest,
          res.source_digest, desc.digest) })
    end
    if sent ~= res.digest then
      fail("DigestMismatch", ("copy %s@%s: sent %s, converted to %s"):format(srepo, desc.digest, sent, res.digest))
    end
  end)
  if fmt == "none" then lay.cache_put(target, level, desc.digest, res.digest, res.size) end
  out.digest, out.size = res.digest, res.size
  stats.copied = stats.copied + 1
  stats.bytes = stats.bytes + res.size
  log.info("registry: layer copied", { digest = out.digest, from = desc.digest, compression = target,
    size = res.size, duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
  return out
end

-- A manifest's bytes with some layers replaced (`replaced[i]` for layer i). A Docker
-- manifest that now holds a zstd layer becomes an OCI one (Docker's types have no zstd).
local function rewrite_manifest(doc, replaced)
  local out = {}
  for k, v in pairs(doc) do out[k] = v end
  local list, zstd = {}, false
  for i, l in ipairs(doc.layers or {}) do
    list[i] = replaced[i] or l
    if lay.format_of(list[i].mediaType) == "zstd" then zstd = true end
  end
  out.layers = json.array(list)
  if zstd and out.mediaType == MEDIA.docker_manifest then
    out.mediaType = MEDIA.oci_manifest
    local cfg = {}
    for k, v in pairs(out.config or {}) do cfg[k] = v end
    cfg.mediaType = MEDIA.oci_config
    out.config = cfg
    for i, l in ipairs(list) do
      local f = lay.format_of(l.mediaType)
      if f then
        local c = {}
        for k, v in pairs(l) do c[k] = v end
        c.mediaType = lay.media(f)
        list[i] = c
      end
    end
  end
  local body = json.encode(out, { sort_keys = true })
  return body, out.mediaType or MEDIA.oci_manifest, require("myrmex.digest").string(body)
end

-- Copy the blobs of one image manifest (converted when `want` asks for another compression)
-- and return the manifest to put: body, media type, digest (the source's when unchanged).
local function copy_image(src, sr, dst, dr, m, stats, want, level)
  local replaced, changed = {}, false
  local index_of = {}
  for i, l in ipairs(m.manifest.layers or {}) do index_of[l] = i end
  each_layer("copy " .. tostring(dr), layer_list(m.manifest), dst.parallel, function(desc)
    local fmt = lay.format_of(desc.mediaType)
    if want and fmt and fmt ~= want and index_of[desc] then
      replaced[index_of[desc]] = convert_blob(src, sr.repository, dst, dr.repository, desc, want, level, stats)
      changed = true
    else
      copy_blob(src, sr.repository, dst, dr.repository, desc, stats)
    end
  end)
  if not changed then return m.body, m.media_type, m.digest end
  return rewrite_manifest(m.manifest, replaced)
end

local function platform_wanted(p, list)
  local ps = platform_string(p)
  for _, w in ipairs(list) do
    if ps == w or (ps and w:match("^[^/]+/[^/]+$") and ps:sub(1, #w + 1) == w .. "/") then return w end
  end
  return nil
end

-- The manifests whose `subject` is one of `digests`, copied to dst with their blobs and their
-- own referrers (a signature of an SBOM), bytes kept; cosign's `sha256-<hex>.sig/.att/.sbom`
-- tags come along. Where dst lacks the referrers API its fallback index is updated.
local function copy_referrers(src, sr, dst, dr, digests, stats, seen)
  local function copy_manifest_as_is(s_ref, d_ref)
    local m = src:manifest(s_ref)
    if is_index(m.media_type) then
      for _, child in ipairs(m.manifest.manifests or {}) do
        local cm = src:manifest(sr:with({ tag = false, digest = child.digest }))
        if not is_index(cm.media_type) then copy_image(src, sr, dst, dr, cm, stats) end
        dst:put_manifest(dr:with({ tag = false, digest = cm.digest }), cm.body, cm.media_type)
      end
    else
      copy_image(src, sr, dst, dr, m, stats)
    end
    dst:put_manifest(d_ref, m.body, m.media_type)
    return m
  end
  for _, d in ipairs(digests) do
    if not seen[d] then
      seen[d] = true
      local list = src:referrers(sr:with({ tag = false, digest = d }))
      local added = {}
      for _, desc in ipairs(list) do
        if not seen[desc.digest] then
          local at = { tag = false, digest = desc.digest }
          copy_manifest_as_is(sr:with(at), dr:with(at))
          stats.referrers = stats.referrers + 1
          added[#added + 1] = desc
          log.info("registry: referrer copied", { subject = d, digest = desc.digest,
            artifact_type = desc.artifactType })
          copy_referrers(src, sr, dst, dr, { desc.digest }, stats, seen)
        end
      end
      if #added > 0 and not dst:_referrers_api(dr.repository, d) then
        -- The tag schema: the index tagged sha256-<hex> on dst gets the new descriptors.
        local tag_ref = dr:with({ tag = R.fallback_tag(d), digest = false })
        local ok, cur = pcall(dst.manifest, dst, tag_ref)
        if not ok and not errors.is(cur, "NotFound") then error(cur, 0) end
        local entries, have = {}, {}
        for _, e in ipairs(ok and cur.manifest.manifests or {}) do
          entries[#entries + 1], have[e.digest] = e, true
        end
        for _, e in ipairs(added) do
          if not have[e.digest] then entries[#entries + 1], have[e.digest] = e, true end
        end
        local body = json.encode({ schemaVersion = 2, mediaType = MEDIA.oci_index, manifests = json.array(entries) },
          { sort_keys = true })
        dst:put_manifest(tag_ref, body, MEDIA.oci_index)
      end
      -- cosign without OCI 1.1: signatures, attestations and SBOMs under tags named for d.
      for _, suffix in ipairs({ ".sig", ".att", ".sbom" }) do
        local tag = R.fallback_tag(d) .. suffix
        local h = src:manifest_head(sr:with({ tag = tag, digest = false }))
        if h then
          local m = copy_manifest_as_is(sr:with({ tag = tag, digest = false }), dr:with({ tag = tag, digest = false }))
          stats.referrers = stats.referrers + 1
          log.info("registry: cosign tag copied", { tag = tag, digest = m.digest })
          copy_referrers(src, sr, dst, dr, { m.digest }, stats, seen)
        end
      end
    end
  end
end

--- Copy the image `sr` on `src` to `dr` on `dst` (clients). Returns the pushed digest.
function M.copy_between(src, sr, dst, dr, opts)
  opts = opts or {}
  local stats = { copied = 0, mounted = 0, skipped = 0, bytes = 0, referrers = 0 }
  local top = src:manifest(sr)
  if plan.active() then
    plan.record({ engine = "registry", op = "copy", target = tostring(dr), args = { from = tostring(sr) } })
    return top.digest, stats
  end
  local want, level = opts.compression, opts.compression_level
  local function target_of(d) return dr.tag and dr or dr:with({ digest = d }) end
  -- Digests copied unchanged: what refers to them still applies, so their referrers follow.
  local kept = {}
  local out_digest
  if is_index(top.media_type) and (opts.all_platforms or opts.platforms) then
    local entries, changed, matched = {}, false, {}
    for _, child in ipairs(top.manifest.manifests or {}) do
      local w = opts.platforms and platform_wanted(child.platform, opts.platforms)
      if w then matched[w] = true end
      -- A platform left out changes the index; with all of them kept it is copied as it is.
      if opts.platforms and not w then changed = true end
      if not opts.platforms or w then
        local cm = src:manifest(sr:with({ digest = child.digest }))
        local body, mt, d = cm.body, cm.media_type, cm.digest
        if not is_index(cm.media_type) then body, mt, d = copy_image(src, sr, dst, dr, cm, stats, want, level) end
        dst:put_manifest(dr:with({ tag = false, digest = d }), body, mt)
        if d == cm.digest then kept[#kept + 1] = d else changed = true end
        local e = {}
        for k, v in pairs(child) do e[k] = v end
        e.digest, e.size, e.mediaType = d, #body, mt
        entries[#entries + 1] = e
      end
    end
    for _, w in ipairs(opts.platforms or {}) do
      if not matched[w] then fail("NotFound", ("%s: no manifest for platform %s"):format(tostring(sr), w)) end
    end
    local body = top.body
    if changed then
      -- The index lists just what was copied, as it was copied.
      local idx = {}
      for k, v in pairs(top.manifest) do idx[k] = v end
      idx.manifests = json.array(entries)
      body = json.encode(idx, { sort_keys = true })
    end
    out_digest = require("myrmex.digest").string(body)
    dst:put_manifest(target_of(out_digest), body, top.media_type)
    if out_digest == top.digest then kept[#kept + 1] = out_digest end
  else
    local m = top
    if is_index(top.media_type) then
      local child = pick_platform(top.manifest, opts.platform or M.host_platform(), tostring(sr))
      m = src:manifest(sr:with({ digest = child.digest }))
    end
    local body, mt, d = copy_image(src, sr, dst, dr, m, stats, want, level)
    dst:put_manifest(target_of(d), body, mt)
    if d == m.digest then kept[#kept + 1] = d end
    out_digest = d
  end
  if opts.referrers ~= false then
    copy_referrers(src, sr, dst, dr, kept, stats, {})
  end
  return out_digest, stats
end

local function connection(opts, which)
  local o = {}
  for k, v in pairs(opts[which] or {}) do o[k] = v end
  for _, k in ipairs { "username", "password", "token", "ca", "insecure", "plain_http", "config", "parallel" } do
    if o[k] == nil and opts[k] ~= nil then o[k] = opts[k] end
  end
  return o
end

M.COPY_OPTIONS = { "platform", "all_platforms", "platforms", "referrers", "compression", "compression_level" }

-- The copy options of `opts`, checked.
local function copy_options(fname, opts)
  lay.check(fname, opts.compression)
  if opts.platforms ~= nil then
    if type(opts.platforms) ~= "table" or #opts.platforms == 0 then
      misuse(fname, "platforms must be a non-empty list such as {\"linux/amd64\"}")
    end
    for i, p in ipairs(opts.platforms) do
      if type(p) ~= "string" or not p:match("^[%w._-]+/[%w._-]+") then
        misuse(fname, ("platforms[%d] must be \"os/arch[/variant]\", got %s"):format(i, tostring(p)))
      end
    end
  end
  local o = {}
  for _, k in ipairs(M.COPY_OPTIONS) do o[k] = opts[k] end
  return o
end
M._copy_options = copy_options

--- registry.copy(src_ref, dst_ref, opts): full references; opts.src / opts.dst hold
--- connect options for each side (shared ones may be given at the top level);
--- opts.platform, opts.all_platforms, opts.platforms choose what of an index is copied;
--- opts.referrers (default true) brings what refers to the image; opts.compression converts.
function M.copy(reg, src, dst, opts)
  if type(src) ~= "string" or type(dst) ~= "string" then
    misuse("copy", "source and destination references expected")
  end
  opts = options("copy", opts, set { "src", "dst", "platform", "all_platforms", "platforms", "referrers",
    "compression", "compression_level", "username", "password", "token", "ca", "insecure", "plain_http",
    "config", "parallel" })
  local copts = copy_options("copy", opts)
  local sr, dr = reference.parse(src), reference.parse(dst)
  return log.span("registry", "copy", tostring(sr) .. " -> " .. tostring(dr), function()
    local sc = reg.connect(sr.registry, connection(opts, "src"))
    local dc = sr.registry == dr.registry and not opts.dst and sc or reg.connect(dr.registry, connection(opts, "dst"))
    return M.copy_between(sc, sr, dc, dr, copts)
  end)
end

-- ---------------------------------------------------------------------------------------
-- Pull

-- A layer downloaded in another compression into the layout: the response is converted on
-- its way into a file beside blobs/sha256, moved under its new digest once the source's
-- digest has been checked. Returns the new descriptor.
local function fetch_converted(client, repo, desc, dir, want, level)
  local fmt = lay.format_of(desc.mediaType)
  local s <close> = client:blob_open(repo, desc.digest, { source = true, _hash = true })
  local conv, result = lay.transcode(s:source(), fmt, want, { level = level })
  local tmp = dir .. "/blobs/sha256/." .. hex(desc.digest) .. "." .. want .. ".tmp"
  local f, ferr = io.open(tmp, "wb")
  if not f then fail("Engine", "cannot write " .. tostring(ferr)) end
  local ok, err = pcall(function()
    while true do
      local b = conv:read(1 << 20)
      if not b then break end
      assert(f:write(b))
    end
  end)
  f:close()
  local res, rerr = result()
  if not ok or not res or res.source_digest ~= desc.digest then
    os.remove(tmp)
    if res and res.source_digest ~= desc.digest then
      errors.raise({ code = "DigestMismatch", engine = "registry",
        details = { expected = desc.digest, actual = res.source_digest },
        message = ("blob %s@%s: content is %s, expected %s")
          :format(repo, desc.digest, res.source_digest, desc.digest) })
    end
    if not ok then error(err, 0) end
    fail("Engine", ("pull %s@%s: converting to %s: %s"):format(repo, desc.digest, want, tostring(rerr)))
  end
  local moved, merr = os.rename(tmp, dir .. "/blobs/sha256/" .. hex(res.digest))
  if not moved then fail("Engine", "cannot rename " .. tmp .. ": " .. tostring(merr)) end
  local out = {}
  for k, v in pairs(desc) do out[k] = v end
  out.mediaType, out.digest, out.size = lay.media(want, desc.mediaType), res.digest, res.size
  return out
end

-- Download the config and layers of one manifest into blobs/sha256 of a layout directory.
-- A blob already there is used when its digest checks out, else fetched again. With `want`
-- set, tar layers in another compression are converted; returns the replaced layers by
-- index (empty when none).
local function fetch_blobs(client, repo, manifest, dir, stats, want, level)
  local index_of, replaced = {}, {}
  for i, l in ipairs(manifest.layers or {}) do index_of[l] = i end
  each_layer("pull " .. repo, layer_list(manifest), client.parallel, function(desc)
    local fmt = lay.format_of(desc.mediaType)
    local t0 = rt.monotonic()
    if want and fmt and fmt ~= want and index_of[desc] then
      replaced[index_of[desc]] = fetch_converted(client, repo, desc, dir, want, level)
    else
      local path = dir .. "/blobs/sha256/" .. hex(desc.digest)
      local st = rt.stat(path)
      if st and st.size == tonumber(desc.size) then
        local have = require("myrmex.digest").file(path)
        if have == desc.digest then return end
        log.warn("registry: blob in the layout does not match its digest, fetched again",
          { path = path, digest = desc.digest, actual = have })
      end
      client:blob(repo, desc.digest, { to = path })
    end
    stats.bytes = stats.bytes + (tonumber(desc.size) or 0)
    stats.layers = stats.layers + 1
    log.info("registry: layer pulled", { digest = desc.digest, size = desc.size,
      duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
  end)
  return replaced
end

-- One image manifest into the layout (its blobs, converted when asked, then its bytes);
-- returns the manifest as stored ({body, media_type, digest, size, manifest}).
local function pull_manifest(client, repo, m, dir, stats, want, level)
  local replaced = fetch_blobs(client, repo, m.manifest, dir, stats, want, level)
  if next(replaced) then
    local body, mt, d = rewrite_manifest(m.manifest, replaced)
    m = { body = body, media_type = mt, digest = d, size = #body, manifest = json.decode(body) }
  end
  write_file(dir .. "/blobs/sha256/" .. hex(m.digest), m.body)
  return m
end

-- index.json of a layout with `entry` added: an entry with the same ref name is replaced,
-- the others are kept (as skopeo does).
local function add_to_index(dir, entry)
  local path = dir .. "/index.json"
  local text = read_file(path)
  local index = { schemaVersion = 2, mediaType = MEDIA.oci_index, manifests = {} }
  if text then
    local ok, doc = pcall(json.decode, text)
    if not ok or type(doc) ~= "table" or (doc.manifests ~= nil and type(doc.manifests) ~= "table") then
      fail("Invalid", path .. ": not an OCI index")
    end
    index = doc
  end
  local name = entry.annotations["org.opencontainers.image.ref.name"]
  local list = {}
  for _, e in ipairs(index.manifests or {}) do
    local ann = type(e) == "table" and type(e.annotations) == "table" and e.annotations or {}
    local en = ann["org.opencontainers.image.ref.name"]
    if en ~= name then list[#list + 1] = e end
  end
  list[#list + 1] = entry
  index.manifests = json.array(list)
  index.schemaVersion = index.schemaVersion or 2
  write_file(path, json.encode(index, { sort_keys = true }))
end

-- Pull into an OCI image layout directory; returns {digest=, manifest=, config_digest=}.
local function pull_layout(client, r, dir, opts, stats)
  mkdir_p(dir .. "/blobs/sha256")
  local want, level = opts.compression, opts.compression_level
  local top = client:manifest(r)
  local chosen = top
  if is_index(top.media_type) then
    if opts.all_platforms then
      local entries, changed = {}, false
      for _, child in ipairs(top.manifest.manifests or {}) do
        local cm = client:manifest(r:with({ digest = child.digest }))
        if not is_index(cm.media_type) then
          cm = pull_manifest(client, r.repository, cm, dir, stats, want, level)
        else
          write_file(dir .. "/blobs/sha256/" .. hex(cm.digest), cm.body)
        end
        local e = {}
        for k, v in pairs(child) do e[k] = v end
        if cm.digest ~= child.digest then
          e.digest, e.size, e.mediaType, changed = cm.digest, cm.size, cm.media_type, true
        end
        entries[#entries + 1] = e
      end
      if changed then
        local idx = {}
        for k, v in pairs(top.manifest) do idx[k] = v end
        idx.manifests = json.array(entries)
        local body = json.encode(idx, { sort_keys = true })
        chosen = { body = body, media_type = top.media_type, digest = require("myrmex.digest").string(body),
          size = #body, manifest = idx }
      end
      write_file(dir .. "/blobs/sha256/" .. hex(chosen.digest), chosen.body)
    else
      local child = pick_platform(top.manifest, opts.platform or M.host_platform(), tostring(r))
      chosen = pull_manifest(client, r.repository, client:manifest(r:with({ digest = child.digest })), dir, stats,
        want, level)
    end
  else
    chosen = pull_manifest(client, r.repository, top, dir, stats, want, level)
  end
  write_file(dir .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  add_to_index(dir, { mediaType = chosen.media_type, digest = chosen.digest, size = chosen.size,
    annotations = { ["org.opencontainers.image.ref.name"] = r.tag or r.digest,
      ["io.containerd.image.name"] = tostring(r) } })
  return chosen
end

-- A docker-archive tar (Docker 25+ layout: OCI layout plus manifest.json) from a layout dir.
-- Pulled by digest, the image gets no tag (RepoTags stays empty).
local function write_docker_archive(dir, chosen, r, path)
  local m = chosen.manifest
  local list = {}
  for i, l in ipairs(m.layers or {}) do list[i] = "blobs/sha256/" .. hex(l.digest) end
  local tags = {}
  if r.tag then
    tags[1] = (r.registry == reference.default_registry and r.repository:gsub("^library/", "") or
      (r.registry .. "/" .. r.repository)) .. ":" .. r.tag
  end
  local docker_manifest = json.encode(json.array({ {
    Config = "blobs/sha256/" .. hex(m.config.digest), RepoTags = json.array(tags),
    Layers = json.array(list) } }))
  local w <close> = archive.writer(path, { format = "pax" })
  w:add({ path = "blobs", type = "dir", mode = 493 })
  w:add({ path = "blobs/sha256", type = "dir", mode = 493 })
  local seen = {}
  local function add_blob(d)
    if seen[d] then return end
    seen[d] = true
    local p = dir .. "/blobs/sha256/" .. hex(d)
    w:add({ path = "blobs/sha256/" .. hex(d), data = { file = p }, mode = 420 })
  end
  add_blob(chosen.digest)
  for _, desc in ipairs(layer_list(m)) do add_blob(desc.digest) end
  w:add({ path = "oci-layout", data = read_file(dir .. "/oci-layout"), mode = 420 })
  w:add({ path = "index.json", data = read_file(dir .. "/index.json"), mode = 420 })
  w:add({ path = "manifest.json", data = docker_manifest, mode = 420 })
  w:close()
end

local function docker_client(opts)
  return opts.docker or require("myrmex.docker").connect()
end

--- Pull an image: into an OCI layout directory (format "oci", the default), a docker-archive
--- tar ("docker-archive"), or the local engine ("engine", through load).
local function pull_image(client, ref, opts)
  opts = options("pull_image", opts, set { "to", "format", "platform", "all_platforms", "docker", "compression",
    "compression_level" })
  lay.check("pull_image", opts.compression)
  local format = opts.format or "oci"
  if format ~= "oci" and format ~= "docker-archive" and format ~= "engine" then
    misuse("pull_image", "format must be \"oci\", \"docker-archive\" or \"engine\"")
  end
  if format ~= "engine" and type(opts.to) ~= "string" then misuse("pull_image", "to=PATH is required") end
  if format ~= "oci" and opts.all_platforms then misuse("pull_image", "all_platforms needs format \"oci\"") end
  local r = client:ref(ref)
  if plan.active() then
    return plan.record({ engine = "registry", op = "pull_image", target = tostring(r),
      args = { to = opts.to, format = format } })
  end
  return log.span("registry", "pull_image", tostring(r), function()
    local stats = { bytes = 0, layers = 0 }
    local t0 = rt.monotonic()
    if format == "oci" then
      local chosen = pull_layout(client, r, opts.to, opts, stats)
      stats.digest, stats.seconds = chosen.digest, rt.monotonic() - t0
      return stats
    end
    local tmp = rt.mkdtemp("/tmp/myrmex-pull.XXXXXX")
    local ok, err = pcall(function()
      local chosen = pull_layout(client, r, tmp, opts, stats)
      stats.digest = chosen.digest
      local out = format == "engine" and (tmp .. ".tar") or opts.to
      write_docker_archive(tmp, chosen, r, out)
      if format == "engine" then
        stats.loaded = docker_client(opts):load_image(out)
        os.remove(out)
      end
    end)
    rm_rf(tmp)
    if format == "engine" then os.remove(tmp .. ".tar") end
    if not ok then error(err, 0) end
    stats.seconds = rt.monotonic() - t0
    return stats
  end)
end

-- ---------------------------------------------------------------------------------------
-- Push

-- Push one layer file of a layout in another compression: read, converted and uploaded in
-- one pass (retried from the file when the upload is dropped). Returns the new descriptor.
local function push_converted(client, repo, path, desc, want, level, stats)
  local fmt = lay.format_of(desc.mediaType)
  local out = {}
  for k, v in pairs(desc) do out[k] = v end
  out.mediaType = lay.media(want, desc.mediaType)
  local cached = fmt == "none" and lay.cache_get(want, level, desc.digest)
  if cached and client:blob_exists(repo, cached.digest) then
    out.digest, out.size = cached.digest, cached.size
    stats.skipped = stats.skipped + 1
    return out
  end
  local res
  client:_retrying(function()
    local conv, result = lay.transcode(require("myrmex.core.source").from_file(path), fmt, want, { level = level })
    client:upload_source(repo, conv, nil, function(sent)
      local err
      res, err = result()
      if not res then fail("Engine", ("layout blob %s: converting to %s: %s"):format(path, want, tostring(err))) end
      if res.source_digest ~= desc.digest then
        errors.raise({ code = "DigestMismatch", engine = "registry",
          details = { expected = desc.digest, actual = res.source_digest },
          message = ("layout blob %s: content is %s, expected %s"):format(path, res.source_digest, desc.digest) })
      end
      if sent ~= res.digest then
        fail("DigestMismatch", ("layout blob %s: sent %s, converted to %s"):format(path, sent, res.digest))
      end
    end)
  end)
  if fmt == "none" then lay.cache_put(want, level, desc.digest, res.digest, res.size) end
  out.digest, out.size = res.digest, res.size
  stats.layers, stats.bytes = stats.layers + 1, stats.bytes + res.size
  return out
end

-- Push one image manifest from a layout directory: blobs in parallel, then the manifest is
-- returned for the caller to put: its bytes as stored, or rewritten when `want` converted
-- layers (body, media type, digest; nil digest when unchanged).
local function push_layout_manifest(client, repo, dir, mbody, stats, want, level)
  local ok, m = pcall(json.decode, mbody)
  if not ok or type(m) ~= "table" then fail("Invalid", "layout manifest is not JSON") end
  local index_of, replaced = {}, {}
  for i, l in ipairs(m.layers or {}) do index_of[l] = i end
  each_layer("push " .. repo, layer_list(m), client.parallel, function(desc)
    local path = dir .. "/blobs/sha256/" .. hex(desc.digest)
    if not rt.stat(path) then fail("NotFound", "layout " .. dir .. " lacks blob " .. desc.digest) end
    local t0 = rt.monotonic()
    local fmt = lay.format_of(desc.mediaType)
    if want and fmt and fmt ~= want and index_of[desc] then
      local out = push_converted(client, repo, path, desc, want, level, stats)
      replaced[index_of[desc]] = out
      log.info("registry: layer pushed", { digest = out.digest, from = desc.digest, size = out.size,
        compression = want, duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
      return
    end
    local _, uploaded = client:_retrying(function()
      return client:upload(repo, desc.digest, { file = path }, tonumber(desc.size))
    end)
    if uploaded then
      stats.layers, stats.bytes = stats.layers + 1, stats.bytes + (tonumber(desc.size) or 0)
      log.info("registry: layer pushed", { digest = desc.digest, size = desc.size,
        duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
    else
      stats.skipped = stats.skipped + 1
    end
  end)
  if next(replaced) then return rewrite_manifest(m, replaced) end
  return mbody, nil, nil
end

-- Push from an OCI image layout directory. `name` picks an index entry by ref.name. The
-- manifests are pushed as stored unless `compression` asks for layers to be converted.
local function push_layout(client, dir, r, opts, stats)
  local want, level = opts.compression, opts.compression_level
  local idx_text = read_file(dir .. "/index.json")
  if not idx_text then fail("NotFound", dir .. ": no index.json (not an OCI layout)") end
  local okj, index = pcall(json.decode, idx_text)
  if not okj or type(index) ~= "table" then fail("Invalid", dir .. "/index.json: not JSON") end
  local entries = index.manifests or {}
  local entry = entries[1]
  if opts.name then
    entry = nil
    for _, e in ipairs(entries) do
      if (e.annotations or {})["org.opencontainers.image.ref.name"] == opts.name then entry = e end
    end
    if not entry then fail("NotFound", dir .. ": no image named " .. opts.name) end
  elseif #entries ~= 1 then
    fail("Invalid", dir .. ": the layout holds " .. #entries .. " images; give name=")
  end
  local mpath = dir .. "/blobs/sha256/" .. hex(entry.digest)
  local body = read_file(mpath) or fail("NotFound", "layout " .. dir .. " lacks " .. entry.digest)
  local function push_child(cbody, media)
    local nbody, nmt = push_layout_manifest(client, r.repository, dir, cbody, stats, want, level)
    return nbody, nmt or media
  end
  if is_index(entry.mediaType) then
    local sub = json.decode(body)
    if opts.all_platforms == false then
      local child = pick_platform(sub, opts.platform or M.host_platform(), dir)
      local cbody, cmt = push_child(read_file(dir .. "/blobs/sha256/" .. hex(child.digest)), child.mediaType)
      return client:put_manifest(r, cbody, cmt)
    end
    local list, changed = {}, false
    for _, child in ipairs(sub.manifests or {}) do
      local cbody = read_file(dir .. "/blobs/sha256/" .. hex(child.digest))
      local e = child
      if cbody then
        local nbody, nmt = push_child(cbody, child.mediaType)
        local d = client:put_manifest(r:with({ tag = false, digest = require("myrmex.digest").string(nbody) }),
          nbody, nmt)
        if d ~= child.digest then
          e = {}
          for k, v in pairs(child) do e[k] = v end
          e.digest, e.size, e.mediaType, changed = d, #nbody, nmt, true
        end
      end
      list[#list + 1] = e
    end
    if changed then
      local idx = {}
      for k, v in pairs(sub) do idx[k] = v end
      idx.manifests = json.array(list)
      body = json.encode(idx, { sort_keys = true })
    end
    return client:put_manifest(r, body, entry.mediaType)
  end
  local nbody, nmt = push_child(body, entry.mediaType)
  return client:put_manifest(r, nbody, nmt)
end

-- Walk a tar once: fn(entry, reader) for each regular file whose path is in `want`.
local function scan_tar(path, want, fn)
  local r <close> = archive.open(path)
  for e in r:entries() do
    local p = e.path:gsub("^%./", "")
    if e.type == "file" and (want == nil or want[p]) then fn(p, e, r) end
  end
end

-- The image of a docker-archive manifest.json list: the one tagged `name` (the last such), or
-- the first when no name is given; nil when there is none.
local function image_of(list, name)
  if type(list) ~= "table" then return nil end
  if not name then return list[1] end
  local found
  for _, it in ipairs(list) do
    for _, t in ipairs(it.RepoTags or {}) do
      if t == name then found = it end
    end
  end
  return found
end

-- Push from a docker-archive tar (docker save, either format): metadata first, then each
-- layer streamed from the tar as a chunked upload, in parallel readers of the same file.
local function push_archive(client, path, r, opts, stats)
  local docker_manifest
  scan_tar(path, { ["manifest.json"] = true }, function(_, _, rd) docker_manifest = rd:read_all(4 * 1024 * 1024) end)
  if not docker_manifest then fail("Invalid", path .. ": no manifest.json (not a docker-archive)") end
  local item = image_of(json.decode(docker_manifest), opts.name)
  if not item and opts.name then fail("NotFound", path .. ": no image tagged " .. opts.name) end
  if type(item) ~= "table" or not item.Config then fail("Invalid", path .. ": manifest.json has no image") end
  local want = { [item.Config] = "config" }
  for _, l in ipairs(item.Layers or {}) do want[l] = "layer" end
  local info = {}
  local config
  -- Sizes, compression and (for the legacy format) digests of the layers.
  scan_tar(path, want, function(p, e, rd)
    if want[p] == "config" then
      config = rd:read_all(R.max_manifest_size)
      return
    end
    local named = p:match("^blobs/sha256/(%x+)$")
    local first = rd:read()
    local d = named and ("sha256:" .. named)
    if not d then
      local h = require("myrmex.digest").new("sha256")
      if first then h:update(first) end
      while true do
        local c = rd:read()
        if not c then break end
        h:update(c)
      end
      d = h:final()
    end
    info[p] = { digest = d, size = e.size, media = lay.media(lay.sniff(first)) }
  end)
  if not config then fail("Invalid", path .. ": config " .. item.Config .. " missing") end
  local digest = require("myrmex.digest")
  local cfg_digest = digest.string(config)
  local manifest = { schemaVersion = 2, mediaType = MEDIA.oci_manifest,
    config = { mediaType = MEDIA.oci_config, digest = cfg_digest, size = #config }, layers = {} }
  local descs = {}
  for i, l in ipairs(item.Layers or {}) do
    local li = info[l] or fail("Invalid", path .. ": layer " .. l .. " missing")
    descs[i] = { digest = li.digest, size = li.size, entry = l, media = li.media, index = i }
  end
  -- Plain tar layers are compressed on the way (gzip unless asked otherwise); compressed
  -- ones are sent as they are unless a compression is asked for.
  local level = opts.compression_level
  each_layer("push " .. r.repository, descs, client.parallel, function(desc)
    local fmt = lay.format_of(desc.media)
    local target = opts.compression or (fmt == "none" and "gzip" or fmt)
    local out = { mediaType = lay.media(target), digest = desc.digest, size = desc.size }
    manifest.layers[desc.index] = out
    local t0 = rt.monotonic()
    if target == fmt then
      if client:blob_exists(r.repository, desc.digest) then
        stats.skipped = stats.skipped + 1
        return
      end
      -- The entry's data goes to the request as a source: no copy through Lua, flat memory.
      -- A dropped upload is started again from a fresh reader of the tar.
      client:_retrying(function()
        scan_tar(path, { [desc.entry] = true }, function(_, _, rd)
          client:upload(r.repository, desc.digest, rd:source(), desc.size)
        end)
      end)
    else
      local cached = fmt == "none" and lay.cache_get(target, level, desc.digest)
      if cached and client:blob_exists(r.repository, cached.digest) then
        out.digest, out.size = cached.digest, cached.size
        stats.skipped = stats.skipped + 1
        return
      end
      local res
      client:_retrying(function()
        scan_tar(path, { [desc.entry] = true }, function(_, _, rd)
          local src, result = lay.transcode(rd:source(), fmt, target, { level = level })
          local got = client:upload_source(r.repository, src, nil)
          local err
          res, err = result()
          if not res then
            fail("Engine", ("%s: compressing %s: %s"):format(path, desc.entry, tostring(err)))
          end
          if res.digest ~= got then
            fail("DigestMismatch", ("%s: %s was sent as %s, compressed to %s")
              :format(path, desc.entry, got, res.digest))
          end
        end)
      end)
      if fmt == "none" and res.diff_id ~= desc.digest then
        fail("DigestMismatch", ("%s: %s has digest %s, expected %s"):format(path, desc.entry, res.diff_id, desc.digest))
      end
      if fmt == "none" then lay.cache_put(target, level, res.diff_id, res.digest, res.size) end
      out.digest, out.size = res.digest, res.size
    end
    stats.layers, stats.bytes = stats.layers + 1, stats.bytes + out.size
    log.info("registry: layer pushed", { digest = out.digest, size = out.size, compression = target,
      duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
  end)
  client:upload(r.repository, cfg_digest, config, #config)
  manifest.layers = json.array(manifest.layers)
  return client:put_manifest(r, json.encode(manifest, { sort_keys = true }), MEDIA.oci_manifest)
end

local function looks_json(first)
  return first ~= nil and first:match("^%s*[{%[]") ~= nil
end

-- Which diff id a legacy save entry `<v1id>/layer.tar` holds, from the v1 `json` files read
-- so far (each directory's `json` comes before its `layer.tar`): the root has no parent and
-- the top layer's json carries the image "config", so a layer's depth is known when the
-- parent chain down to the root, or the chain from the top down to it, has been seen.
local function legacy_diff_id(v1, id, diff_ids)
  local n, depth, cur = #diff_ids, 0, id
  while v1[cur] and v1[cur].parent do
    cur, depth = v1[cur].parent, depth + 1
    if depth > n then return nil end
  end
  if v1[cur] then return diff_ids[depth + 1] end
  for top, meta in pairs(v1) do
    if meta.top then
      local k = 0
      cur = top
      while cur and cur ~= id and k < n do cur, k = v1[cur] and v1[cur].parent, k + 1 end
      if cur == id then return diff_ids[n - k] end
    end
  end
  return nil
end

-- The error of a layer upload fed by the save stream, saying which side failed: the engine's
-- stream (the transport reports a failed source as "request body: ...") or the registry.
local function layer_failure(err, what, path, ref)
  local msg = type(err) == "table" and err.message or errors.message(err)
  local src_err = msg:match("request body: (.-) %(http") or msg:match("request body: (.*)$")
  if src_err then
    fail("Unreachable", ("%s broke while layer %s was uploaded to %s: %s"):format(what, path, ref, src_err))
  end
  fail(type(err) == "table" and err.code or "Engine",
    ("%s: upload of layer %s to %s failed: %s"):format(what, path, ref, msg))
end

-- Push from the local engine in one pass over its save stream (docker save_source): each
-- layer is uploaded as its tar entry goes by (one streamed PATCH, hashed on the way),
-- small JSON files are kept, and the manifest is built and put last, once manifest.json has
-- been read (dockerd writes it at the end). No temporary file, no layer byte through Lua.
local function push_engine(client, src, r, opts, stats)
  local d = docker_client(opts)
  local info = d:inspect_image(src)
  local diff_ids = type(info.RootFS) == "table" and info.RootFS.Layers or {}
  -- The save stream's layers are plain tar: compressed on the way unless asked not to.
  local want, level = opts.compression or "gzip", opts.compression_level
  -- Layers the registry has, in the form this push sends them: a HEAD of each diff id (the
  -- blob digest of an uncompressed layer), or of what the layer compressed to last time.
  local have = {}
  for _, id in ipairs(diff_ids) do
    if want == "none" then
      if client:blob_exists(r.repository, id) then have[id] = { digest = id } end
    else
      local c = lay.cache_get(want, level, id)
      if c and client:blob_exists(r.repository, c.digest) then have[id] = c end
    end
  end
  local what = "engine save of " .. src
  local progress <close> = log.progress("push " .. r.repository, { total = #diff_ids, unit = "layers" })
  local small, layers_of, v1 = {}, {}, {}
  local rd <close> = archive.open(d:save_source(src))
  local function layer(p, e, first)
    local t0 = rt.monotonic()
    local named = p:match("^blobs/sha256/(%x+)$")
    local v1id = p:match("^(%x+)/layer%.tar$")
    -- The digest the entry must have: its name (OCI save) or its place in the v1 chain.
    local known = named and ("sha256:" .. named) or (v1id and legacy_diff_id(v1, v1id, diff_ids))
    local fmt = lay.sniff(first)
    -- A layer the engine already holds compressed is sent as it is unless asked otherwise.
    local target = (opts.compression == nil and fmt ~= "none") and fmt or want
    local l, pushed
    pushed = true
    if known and fmt == "none" and have[known] then
      pushed = false
      l = { digest = have[known].digest, size = have[known].size or e.size, media = lay.media(target),
        diff_id = known }
      stats.skipped = stats.skipped + 1
      log.info("registry: layer exists, skipped", { digest = l.digest, size = l.size })
    elseif target == fmt then
      local ok, got = pcall(client.upload_source, client, r.repository, rd:source(), e.size)
      if not ok then layer_failure(got, what, p, tostring(r)) end
      if known and got ~= known then
        fail("DigestMismatch", ("%s: layer %s has digest %s, expected %s"):format(what, p, got, known))
      end
      l = { digest = got, size = e.size, media = lay.media(fmt), diff_id = fmt == "none" and got or nil }
    else
      -- Compressed as it goes by: both digests come from the same pass over the entry.
      local enc, result = lay.transcode(rd:source(), fmt, target, { level = level })
      local ok, got = pcall(client.upload_source, client, r.repository, enc, nil)
      if not ok then layer_failure(got, what, p, tostring(r)) end
      local res, err = result()
      if not res then fail("Engine", ("%s: compressing layer %s: %s"):format(what, p, tostring(err))) end
      if res.digest ~= got then
        fail("DigestMismatch", ("%s: layer %s was sent as %s, compressed to %s"):format(what, p, got, res.digest))
      end
      if known and fmt == "none" and res.diff_id ~= known then
        fail("DigestMismatch", ("%s: layer %s has digest %s, expected %s"):format(what, p, res.diff_id, known))
      end
      l = { digest = res.digest, size = res.size, media = lay.media(target), diff_id = res.diff_id }
      if fmt == "none" then lay.cache_put(target, level, res.diff_id, res.digest, res.size) end
    end
    if pushed then
      stats.layers, stats.bytes = stats.layers + 1, stats.bytes + l.size
      log.info("registry: layer pushed", { digest = l.digest, size = l.size, compression = target,
        duration_ms = math.floor((rt.monotonic() - t0) * 1000) })
    end
    progress:add(1)
    layers_of[p] = l
  end
  local cur -- the entry being read, for an error from the stream itself
  local ok, err = pcall(function()
    for e in rd:entries() do
      local p = e.path:gsub("^%./", "")
      cur = p
      if e.type == "file" then
        local dir = p:match("^(%x+)/json$")
        if p:match("%.json$") or p == "repositories" or p == "oci-layout" or dir then
          small[p] = rd:read_all(R.max_manifest_size)
          if dir then
            local okj, meta = pcall(json.decode, small[p])
            if okj and type(meta) == "table" then
              v1[dir] = { parent = meta.parent, top = meta.config ~= nil }
            end
          end
        elseif p:match("^blobs/sha256/%x+$") or p:match("layer%.tar$") then
          local first = rd:sniff(64) -- the bytes stay in place for what reads the entry next
          if looks_json(first) and e.size <= R.max_manifest_size then
            small[p] = rd:read_all(R.max_manifest_size)
          else
            layer(p, e, first)
          end
        end
      end
    end
  end)
  if not ok then
    local msg = type(err) == "table" and tostring(err.message or errors.message(err)) or nil
    if not msg or msg:find(what, 1, true) or errors.is(err, "DigestMismatch") then error(err, 0) end
    -- A failure reading the tar itself: the stream broke or ended early, or is not a tar.
    -- Where it broke depends on how the engine's bytes were chunked: between two layer
    -- uploads, or while the reader looked ahead into a layer.
    if errors.is(err, "Unreachable") then
      fail("Unreachable", ("%s broke while reading %s: %s"):format(what, cur or "its first entry", msg))
    end
    fail(err.code or "Engine", what .. ": " .. msg)
  end
  local item = image_of(small["manifest.json"] and json.decode(small["manifest.json"]), opts.name)
  if type(item) ~= "table" or not item.Config then fail("Invalid", what .. ": no image in manifest.json") end
  local config = small[item.Config] or fail("Invalid", what .. ": config " .. item.Config .. " missing")
  local manifest = { schemaVersion = 2, mediaType = MEDIA.oci_manifest, layers = {} }
  for i, path in ipairs(item.Layers or {}) do
    local l = layers_of[path] or fail("Invalid", what .. ": layer " .. path .. " missing")
    manifest.layers[i] = { mediaType = l.media, digest = l.digest or diff_ids[i], size = l.size }
    -- A layer's uncompressed digest is its diff id: a wrong guess above would show here,
    -- before anything points at the image.
    if l.diff_id and diff_ids[i] and l.diff_id ~= diff_ids[i] then
      fail("Invalid", ("%s: layer %d is %s, the image says %s"):format(what, i, l.diff_id, diff_ids[i]))
    end
  end
  local cfg_digest = client:upload(r.repository, require("myrmex.digest").string(config), config, #config)
  manifest.config = { mediaType = MEDIA.oci_config, digest = cfg_digest, size = #config }
  manifest.layers = json.array(manifest.layers)
  return client:put_manifest(r, json.encode(manifest, { sort_keys = true }), MEDIA.oci_manifest)
end

--- Push an image to `ref` on this registry. `src` is an OCI layout directory, a
--- docker-archive tar, or the name of an image in the local engine (saved, then pushed).
local function push_image(client, src, ref, opts)
  if type(src) ~= "string" or src == "" then misuse("push_image", "source must be a string") end
  opts = options("push_image", opts, set { "from", "name", "platform", "all_platforms", "docker", "compression",
    "compression_level" })
  lay.check("push_image", opts.compression)
  local r = client:ref(ref)
  local from = opts.from
  if not from then
    local st = rt.stat(src)
    if st and st.type == "directory" then from = "oci"
    elseif st and st.type == "file" then from = "docker-archive"
    else from = "engine" end
  end
  if plan.active() then
    return plan.record({ engine = "registry", op = "push_image", target = tostring(r),
      args = { source = src, from = from } })
  end
  return log.span("registry", "push_image", tostring(r), function()
    local stats = { layers = 0, skipped = 0, bytes = 0 }
    local t0 = rt.monotonic()
    if from == "oci" then
      stats.digest = push_layout(client, src, r, opts, stats)
    elseif from == "docker-archive" then
      stats.digest = push_archive(client, src, r, opts, stats)
    elseif from == "engine" then
      stats.digest = push_engine(client, src, r, opts, stats)
    else
      misuse("push_image", "from must be \"oci\", \"docker-archive\" or \"engine\"")
    end
    stats.seconds = rt.monotonic() - t0
    return stats
  end)
end

--- Add the image-level methods to the client class.
function M.install(reg, Client)
  R, MEDIA = reg, reg.media
  ---@param ref string
  ---@param opts? {platform?:string}
  function Client:inspect(ref, opts) return inspect(self, ref, opts) end
  ---@param ref string
  ---@param opts {to?:string, format?:string, platform?:string, all_platforms?:boolean, docker?:table}
  function Client:pull_image(ref, opts) return pull_image(self, ref, opts) end
  ---@param src string
  ---@param ref string
  ---@param opts? {from?:string, name?:string, platform?:string, all_platforms?:boolean, docker?:table}
  function Client:push_image(src, ref, opts) return push_image(self, src, ref, opts) end
  --- Copy an image from this registry to another client's registry (or this one).
  ---@param ref string
  ---@param dst myrmex.registry.Client
  ---@param dst_ref string
  ---@param opts? {platform?:string, all_platforms?:boolean, platforms?:string[], referrers?:boolean,
  ---  compression?:string, compression_level?:integer}
  function Client:copy_to(ref, dst, dst_ref, opts)
    opts = options("copy_to", opts, set(M.COPY_OPTIONS))
    return M.copy_between(self, self:ref(ref), dst, dst:ref(dst_ref), copy_options("copy_to", opts))
  end
end

return M
