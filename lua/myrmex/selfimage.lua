--- myrmex packs itself: the running binary, the shared libraries the dynamic loader mapped
--- for it (including the ones myrmex opens with dlopen), its Lua half when it runs from disk,
--- and a recipe's folder, into a FROM-scratch OCI image made here (no Dockerfile, no base
--- image), pushed to a registry or loaded into the Docker engine, and reused by digest when
--- nothing changed. `k8s` fan-out runs recipes in it. See docs/k8s.md, "Fan-out".
local archive = require("myrmex.core.archive")
local digest = require("myrmex.digest")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local log = require("myrmex.log")
local rt = require("myrmex.core.runtime")

local M = {}

--- Where things are in the image.
M.BIN = "/usr/local/bin/myrmex"
M.RECIPE_DIR = "/myrmex/recipe"
M.LUA_DIR = "/myrmex/lua"
--- A recipe folder larger than this is refused (it is packed into every run's image).
M.MAX_RECIPE_BYTES = 256 << 20
M.MAX_RECIPE_FILES = 4096

local CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
local LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
local CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
local MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"

local function misuse(fname, msg) error("selfimage." .. fname .. ": " .. msg, 3) end

local function invalid(msg)
  errors.raise({ code = "Invalid", engine = "selfimage", message = msg }, 0)
end

-- Every regular file under `dir` (recursively, symlinks followed, dot-entries skipped), as
-- {rel=, path=, mode=, size=} sorted by path, so the same folder always packs the same way.
local function walk(dir, rel, out, budget)
  local names, err = rt.listdir(dir)
  if not names then invalid("cannot read the recipe folder: " .. tostring(err)) end
  for _, n in ipairs(names) do
    if n:sub(1, 1) ~= "." then
      local p, r = dir .. "/" .. n, rel == "" and n or (rel .. "/" .. n)
      local st = rt.stat(p)
      if st and st.type == "directory" then
        walk(p, r, out, budget)
      elseif st and st.type == "file" then
        budget.files = budget.files + 1
        budget.bytes = budget.bytes + st.size
        if budget.files > M.MAX_RECIPE_FILES or budget.bytes > M.MAX_RECIPE_BYTES then
          invalid(("recipe folder %s is over %d files or %d MiB; fan-out packs all of it into the image: "
            .. "give the recipe a folder of its own"):format(budget.root, M.MAX_RECIPE_FILES, M.MAX_RECIPE_BYTES >> 20))
        end
        out[#out + 1] = { rel = r, path = p, mode = (st.mode & 0x49) ~= 0 and 0x1ed or 0x1a4, size = st.size }
      end
    end
  end
  return out
end

--- What goes into the image for `recipe` (a path): `{files = {{dest=, src=, mode=}}, env =,
--- recipe = path in the image}`. The binary is /proc/self/exe; the libraries are what the
--- loader has mapped after opening every lazily loaded one (myrmex.core.loader), each at the
--- path the loader opened it under, so the loader finds them in the image by the same names.
---@param recipe_path string
---@return {files:{dest:string, src:string, mode:integer}[], env:string[], recipe:string}
function M.contents(recipe_path)
  if type(recipe_path) ~= "string" or recipe_path == "" then misuse("contents", "recipe path must be a string") end
  local real = rt.realpath(recipe_path)
  if not real then invalid("recipe " .. recipe_path .. " not found") end
  local loader = require("myrmex.core.loader")
  loader.load_all()
  local files, seen = {}, {}
  local function add(dest, src, mode)
    if seen[dest] then return end
    seen[dest] = true
    files[#files + 1] = { dest = dest, src = src, mode = mode }
  end
  add(M.BIN, assert(rt.realpath("/proc/self/exe")), 0x1ed)
  for _, p in ipairs(loader.objects()) do add(p, p, 0x1ed) end
  local ca = rt.stat(CA_BUNDLE)
  if ca and ca.type == "file" then add(CA_BUNDLE, CA_BUNDLE, 0x1a4) end
  local dir, base = real:match("^(.*)/([^/]+)$")
  local budget = { files = 0, bytes = 0, root = dir }
  for _, f in ipairs(walk(dir, "", {}, budget)) do add(M.RECIPE_DIR .. "/" .. f.rel, f.path, f.mode) end
  local env = { "PATH=/usr/local/bin", "MYRMEX_PATH=" .. M.RECIPE_DIR, "HOME=/tmp", "TMPDIR=/tmp" }
  -- The Lua half is embedded in the binary; a myrmex running its modules from disk
  -- (MYRMEX_LUA_PATH) takes those files along instead, so the pods run the same code.
  local lua_path = os.getenv("MYRMEX_LUA_PATH")
  if lua_path and lua_path ~= "" then
    local lroot = rt.realpath(lua_path)
    if lroot then
      for _, f in ipairs(walk(lroot, "", {}, { files = 0, bytes = 0, root = lroot })) do
        add(M.LUA_DIR .. "/" .. f.rel, f.path, 0x1a4)
      end
      env[#env + 1] = "MYRMEX_LUA_PATH=" .. M.LUA_DIR
    end
  end
  table.sort(files, function(a, b) return a.dest < b.dest end)
  return { files = files, env = env, recipe = M.RECIPE_DIR .. "/" .. base }
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Write `data` as a blob of the layout; returns its descriptor.
local function put_blob(layout, media_type, data)
  local d = digest.string(data)
  write_file(layout .. "/blobs/sha256/" .. d:sub(8), data)
  return { mediaType = media_type, digest = d, size = #data }
end

--- Build the image as an OCI image layout in `dir` (created): one uncompressed layer holding
--- `contents` (parent directories added, every entry owned by root with mtime 0, so the same
--- inputs always give the same digests), a config whose entrypoint is the binary, and a
--- manifest. Returns `{layout=, digest= (manifest), config_digest=, layer_digest=, size=}`.
---@param contents table from selfimage.contents
---@param dir string
---@return {layout:string, digest:string, config_digest:string, layer_digest:string, size:integer, manifest:string}
function M.build_layout(contents, dir)
  if type(contents) ~= "table" or type(contents.files) ~= "table" then
    misuse("build_layout", "contents table expected")
  end
  if type(dir) ~= "string" then misuse("build_layout", "dir must be a string") end
  for _, d in ipairs({ dir, dir .. "/blobs", dir .. "/blobs/sha256" }) do assert(rt.mkdir(d)) end
  local tmp = dir .. "/blobs/layer.tar"
  local w = archive.writer(tmp, { format = "pax" })
  local dirs = {}
  for _, f in ipairs(contents.files) do
    local parts = {}
    for seg in f.dest:gmatch("[^/]+") do parts[#parts + 1] = seg end
    local acc = ""
    for i = 1, #parts - 1 do
      acc = acc .. (i > 1 and "/" or "") .. parts[i]
      if not dirs[acc] then
        dirs[acc] = true
        w:add({ path = acc .. "/", type = "dir", mode = 0x1ed })
      end
    end
    w:add({ path = f.dest:sub(2), data = { file = f.src }, mode = f.mode })
  end
  w:add({ path = "tmp/", type = "dir", mode = 0x3ff }) -- 01777
  w:close()
  local ld, lsize = digest.file(tmp)
  if not ld then invalid("cannot hash the layer: " .. tostring(lsize)) end
  os.rename(tmp, dir .. "/blobs/sha256/" .. ld:sub(8))
  local config = json.encode({
    architecture = "amd64", os = "linux",
    config = { Entrypoint = json.array({ M.BIN }), Env = json.array(contents.env), WorkingDir = M.RECIPE_DIR,
      Labels = { ["org.opencontainers.image.title"] = "myrmex fan-out runner" } },
    rootfs = { type = "layers", diff_ids = json.array({ ld }) },
  }, { sort_keys = true })
  local cdesc = put_blob(dir, CONFIG_TYPE, config)
  local manifest = json.encode({ schemaVersion = 2, mediaType = MANIFEST_TYPE, config = cdesc,
    layers = json.array({ { mediaType = LAYER_TYPE, digest = ld, size = lsize } }) }, { sort_keys = true })
  local mdesc = put_blob(dir, MANIFEST_TYPE, manifest)
  write_file(dir .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  write_file(dir .. "/index.json", json.encode({ schemaVersion = 2,
    mediaType = "application/vnd.oci.image.index.v1+json",
    manifests = json.array({ mdesc }) }, { sort_keys = true }))
  return { layout = dir, digest = mdesc.digest, config_digest = cdesc.digest, layer_digest = ld, size = lsize,
    manifest = manifest }
end

-- The layout as a tar `docker load` of Docker 20.10 reads: the OCI files plus a manifest.json
-- naming the config and layer blobs by path (what `docker save` of Docker 25 writes).
local function docker_archive(built, tag, path)
  local w = archive.writer(path)
  local cfg, layer = "blobs/sha256/" .. built.config_digest:sub(8), "blobs/sha256/" .. built.layer_digest:sub(8)
  w:add({ path = "manifest.json", data = json.encode(json.array({ { Config = cfg, RepoTags = json.array({ tag }),
    Layers = json.array({ layer }) } })) })
  w:add({ path = cfg, data = { file = built.layout .. "/" .. cfg } })
  w:add({ path = layer, data = { file = built.layout .. "/" .. layer } })
  w:close()
end

local function rmtree(dir)
  local names = rt.listdir(dir)
  for _, n in ipairs(names or {}) do
    local p = dir .. "/" .. n
    local st = rt.stat(p, false)
    if st and st.type == "directory" then rmtree(p) else os.remove(p) end
  end
  os.remove(dir)
end

---@class myrmex.selfimage.EnsureOptions
---@field recipe string the recipe's path (its folder is packed)
---@field push_to? string "host[:port]/repo[:tag]": push there; else load into the Docker engine
---@field registry? table myrmex.registry connect options for push_to
---@field docker? table a myrmex.docker client (default docker.connect())
---@field tag? string the tag in the engine without push_to (default "myrmex-fanout/<recipe>:<digest prefix>")

---@class myrmex.selfimage.Image
---@field image string the reference pods use: "host/repo@sha256:..." or the engine tag
---@field digest string the manifest digest
---@field config_digest string the image id in the engine
---@field reused boolean true when the registry or engine had this digest already
---@field size integer the layer's bytes
---@field seconds number time spent packing, checking and pushing

--- Pack myrmex and the recipe's folder, then make the image available: with `push_to`, pushed
--- to that registry (skipped when the repository has the manifest digest already, the tag
--- moved onto it); without, loaded into the Docker engine (skipped when the engine has the
--- image id, the config digest). The same binary, libraries and recipe files always give
--- the same digest, so a re-run with nothing changed sends nothing.
---@param opts myrmex.selfimage.EnsureOptions
---@return myrmex.selfimage.Image
function M.ensure(opts)
  if type(opts) ~= "table" then misuse("ensure", "options table expected") end
  for k in pairs(opts) do
    if not ({ recipe = true, push_to = true, registry = true, docker = true, tag = true })[k] then
      misuse("ensure", "unknown option '" .. tostring(k) .. "'")
    end
  end
  if type(opts.recipe) ~= "string" then misuse("ensure", "recipe must be a path") end
  local t0 = rt.monotonic()
  local contents = M.contents(opts.recipe)
  local tmp = assert(rt.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/myrmex-selfimage-"))
  local ok, res = pcall(function()
    local built = M.build_layout(contents, tmp .. "/layout")
    local out = { digest = built.digest, config_digest = built.config_digest, size = built.size,
      recipe = contents.recipe, reused = false }
    local plan = require("myrmex.plan")
    if plan.active() then
      -- Plan mode: the digest is known (packing changes nothing), nothing is sent.
      local target = opts.push_to and (opts.push_to:gsub("[:@][^/]*$", "") .. "@" .. built.digest)
        or ("myrmex-fanout/" .. (contents.recipe:match("([^/]+)$"):gsub("%.lua$", ""):lower()) .. ":"
          .. built.config_digest:sub(8, 19))
      plan.record({ engine = opts.push_to and "registry" or "docker",
        op = opts.push_to and "push_image" or "load_image",
        target = target, args = { digest = built.digest, bytes = built.size } })
      out.image = target
    elseif opts.push_to then
      local reference = require("myrmex.registry.reference")
      local r = reference.parse(opts.push_to)
      local registry = require("myrmex.registry")
      local reg = registry.connect(r.registry, opts.registry)
      local repo_ref = r.repository .. ":" .. (r.tag or "latest")
      local head = reg:manifest_head(r.repository .. "@" .. built.digest)
      if head then
        out.reused = true
        local cur = reg:manifest_head(repo_ref)
        if not cur or cur.digest ~= built.digest then reg:put_manifest(repo_ref, built.manifest, MANIFEST_TYPE) end
      else
        reg:push_image(built.layout, repo_ref, { from = "oci" })
      end
      out.image = r.registry .. "/" .. r.repository .. "@" .. built.digest
    else
      local d = opts.docker or require("myrmex.docker").connect()
      local base = (contents.recipe:match("([^/]+)$"):gsub("%.lua$", ""):lower():gsub("[^a-z0-9_.-]", "-"))
      local tag = opts.tag or ("myrmex-fanout/" .. base .. ":" .. built.config_digest:sub(8, 19))
      local have = d:image_exists(built.config_digest)
      if have then
        out.reused = true
        if not d:image_exists(tag) then d:tag_image(built.config_digest, tag) end
      else
        local tar = tmp .. "/image.tar"
        docker_archive(built, tag, tar)
        d:load_image(tar)
      end
      out.image = tag
    end
    return out
  end)
  rmtree(tmp)
  if not ok then error(res, 0) end
  res.seconds = rt.monotonic() - t0
  log.info(res.reused and "runner image reused" or "runner image made", { image = res.image, digest = res.digest,
    bytes = res.size, duration_ms = math.floor(res.seconds * 1000 + 0.5) })
  return res
end

return M
