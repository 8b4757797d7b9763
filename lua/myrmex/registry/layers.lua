--- Layer compression for pushes, copies and pulls: the formats and their media types, a
--- layer stream turned from one format into another on the way (C: myrmex.core.compress,
--- both digests in the same pass), and the cache of what an uncompressed layer compressed to,
--- so a second push of the same layer is a HEAD instead of a compression. See
--- docs/registry.md, "Compression".
local json = require("myrmex.json")
local rt = require("myrmex.core.runtime")

local M = {}

local OCI = "application/vnd.oci.image.layer.v1.tar"
local OCI_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
local DOCKER = "application/vnd.docker.image.rootfs.diff.tar"

local FORMAT_OF = {
  [OCI] = "none", [OCI .. "+gzip"] = "gzip", [OCI .. "+zstd"] = "zstd",
  [OCI_ND] = "none", [OCI_ND .. "+gzip"] = "gzip", [OCI_ND .. "+zstd"] = "zstd",
  [DOCKER] = "none", [DOCKER .. ".gzip"] = "gzip", [DOCKER .. ".zstd"] = "zstd",
  ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"] = "gzip",
}

--- Where the cache of compressed layers lives: `$XDG_CACHE_HOME/myrmex/layers` (else
--- `~/.cache/...`); `false` turns it off.
---@type string|false|nil
M.cache_dir = nil

local core
local function compress()
  core = core or require("myrmex.core.compress")
  return core
end

--- The compression a layer media type names ("gzip", "zstd", "none"), or nil when the blob is
--- not a tar layer (an artifact's blob, a config).
---@param media_type string|nil
---@return "gzip"|"zstd"|"none"|nil
function M.format_of(media_type)
  return FORMAT_OF[media_type]
end

--- The format a blob's first bytes show.
---@param first string|nil
---@return "gzip"|"zstd"|"none"
function M.sniff(first)
  return compress().detect(first or "")
end

--- The media type of a layer in `fmt`, keeping the family (OCI, Docker, non-distributable)
--- of `like` when given. Docker's family has no zstd type: such a layer gets the OCI one.
---@param fmt "gzip"|"zstd"|"none"
---@param like? string the media type the layer had
---@return string
function M.media(fmt, like)
  local base = OCI
  if like and like:sub(1, #OCI_ND) == OCI_ND then base = OCI_ND end
  if like and like:sub(1, #DOCKER) == DOCKER and fmt ~= "zstd" then
    return fmt == "gzip" and DOCKER .. ".gzip" or DOCKER
  end
  return fmt == "none" and base or (base .. "+" .. fmt)
end

--- Check a `compression` option: nil, "gzip", "zstd" or "none".
---@param fname string the API function, for the message
---@param v any
---@return string|nil
function M.check(fname, v)
  if v ~= nil and v ~= "gzip" and v ~= "zstd" and v ~= "none" then
    error(("registry.%s: compression must be \"gzip\", \"zstd\" or \"none\", got %s"):format(fname, tostring(v)), 3)
  end
  return v
end

--- Wrap `src` (a source) so that it yields the layer in format `want` instead of `have`.
--- Returns the new source and a function that, once the source has been read to its end,
--- gives `{digest=, size=, diff_id=, source_digest=}` of the layer as it came out (and the
--- digest of what was read), or nil and the reason.
---@param src userdata a source
---@param have "gzip"|"zstd"|"none"
---@param want "gzip"|"zstd"|"none"
---@param opts? {level?:integer}
---@return userdata source, fun():(table|nil, string|nil)
function M.transcode(src, have, want, opts)
  local c = compress()
  local dec, enc
  if have ~= "none" then src, dec = c.decoder(src) end
  if want ~= "none" then src, enc = c.encoder(src, { format = want, level = opts and opts.level }) end
  return src, function()
    local r, err = (enc or dec):result()
    if not r then return nil, err end
    -- source_digest: the digest of the bytes read from `src`, as it came.
    local source_digest = r.diff_id
    if dec then
      local dres = dec:result()
      source_digest = dres and dres.digest
    end
    if enc then return { digest = r.digest, size = r.size, diff_id = r.diff_id, source_digest = source_digest } end
    return { digest = r.diff_id, size = r.raw_size, diff_id = r.diff_id, source_digest = source_digest }
  end
end

local function cache_root()
  if M.cache_dir == false then return nil end
  if M.cache_dir then return M.cache_dir end
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.cache"
  end
  return base .. "/myrmex/layers"
end

local function cache_file(fmt, level, diff_id)
  local root = cache_root()
  local hex = type(diff_id) == "string" and diff_id:match("^sha256:(%x+)$")
  if not root or not hex then return nil end
  return root .. "/" .. fmt .. (level and ("-" .. level) or ""), hex
end

--- What the layer with uncompressed digest `diff_id` compressed to before, in `fmt` at
--- `level`: `{digest=, size=}`, or nil. A hint only: the caller asks the registry.
---@param fmt string
---@param level integer|nil
---@param diff_id string
---@return {digest:string, size:integer}|nil
function M.cache_get(fmt, level, diff_id)
  local dir, hex = cache_file(fmt, level, diff_id)
  if not dir then return nil end
  local f = io.open(dir .. "/" .. hex, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local ok, doc = pcall(json.decode, text)
  if ok and type(doc) == "table" and type(doc.digest) == "string" and math.type(doc.size) == "integer" then
    return { digest = doc.digest, size = doc.size }
  end
  return nil
end

--- `mkdir -p` without a shell (a process spawned per push or pull was a fixed cost of each):
--- every missing directory of `path`, absolute or relative. True when it exists afterwards.
---@param path string
---@return boolean
function M.mkdir_p(path)
  if rt.stat(path) then return true end
  local at = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    at = at .. "/" .. part
    if not rt.stat(at) and not rt.mkdir(at) then return false end
  end
  return rt.stat(path) ~= nil
end

--- Remember what a layer compressed to (best effort: an unwritable cache is no error).
---@param fmt string
---@param level integer|nil
---@param diff_id string
---@param digest string
---@param size integer
function M.cache_put(fmt, level, diff_id, digest, size)
  local dir, hex = cache_file(fmt, level, diff_id)
  if not dir then return end
  if not M.mkdir_p(dir) then return end
  local tmp = dir .. "/." .. hex .. ".tmp"
  local f = io.open(tmp, "wb")
  if not f then return end
  f:write(json.encode({ digest = digest, size = size }))
  f:close()
  os.rename(tmp, dir .. "/" .. hex)
end

return M
