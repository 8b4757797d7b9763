--- Facts and suggestions for myrmex.image.optimize, and the CI gate of myrmex.image.check.
--- Internal; see docs/image.md.
local scan = require("myrmex.image.scan")
local tree = require("myrmex.image.tree")

local M = {}

--- "1.5 MiB" style sizes.
---@param n integer
---@return string
function M.human(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i, v = 1, n
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  if i == 1 then return ("%d B"):format(n) end
  return ("%.1f %s"):format(v, units[i])
end

-- Package manager caches: Lua patterns over paths of the final file system.
local CACHES = {
  { name = "apt lists", patterns = { "^var/lib/apt/lists/" },
    fix = "rm -rf /var/lib/apt/lists/* in the RUN that runs apt-get" },
  { name = "apt archives", patterns = { "^var/cache/apt/" },
    fix = "apt-get clean (or a cache mount) in the RUN that installs" },
  { name = "apk cache", patterns = { "^var/cache/apk/" }, fix = "apk add --no-cache" },
  { name = "dnf/yum cache", patterns = { "^var/cache/dnf/", "^var/cache/yum/" },
    fix = "dnf clean all in the RUN that installs" },
  { name = "pip cache", patterns = { "%.cache/pip/" }, fix = "pip install --no-cache-dir" },
  { name = "npm cache", patterns = { "^root/%.npm/", "/%.npm/_cacache/" },
    fix = "npm ci && npm cache clean --force in one RUN, or a cache mount" },
  { name = "yarn cache", patterns = { "%.cache/yarn/" }, fix = "yarn cache clean in the same RUN" },
  { name = "go build cache", patterns = { "%.cache/go%-build/" },
    fix = "build in a separate stage, or use a cache mount" },
}

-- Build toolchains: a tool counts when one of its `probe` paths is present; then every path
-- matching its patterns is attributed to it.
local TOOLCHAINS = {
  { name = "gcc", probe = { "^usr/bin/gcc", "^usr/bin/[%w_%-]*%-gcc", "^usr/libexec/gcc/", "^usr/lib/gcc/.*/cc1" },
    patterns = { "^usr/lib/gcc/", "^usr/libexec/gcc/", "^usr/bin/[%w_%-]*gcc[%w_%-.]*$",
      "^usr/bin/[%w_%-]*g%+%+[%w_%-.]*$", "^usr/bin/[%w_%-]*cpp[%w_%-.]*$" } },
  { name = "clang/llvm", probe = { "^usr/bin/clang", "^usr/lib/llvm" },
    patterns = { "^usr/lib/llvm", "^usr/bin/clang", "^usr/lib/clang/" } },
  { name = "go", probe = { "^usr/local/go/bin/go$", "^usr/lib/go[%w.%-]*/bin/go$" },
    patterns = { "^usr/local/go/", "^usr/lib/go[%w.%-]*/" } },
  { name = "rust", probe = { "%.rustup/", "/bin/rustc$" }, patterns = { "%.rustup/", "%.cargo/registry/" } },
  { name = "jdk", probe = { "^usr/lib/jvm/[^/]*/bin/javac$", "^opt/java/.*/bin/javac$" },
    patterns = { "^usr/lib/jvm/", "^opt/java/" } },
  { name = "binutils/make", probe = { "^usr/bin/ld$", "^usr/bin/ld%.bfd$", "^usr/bin/make$" },
    patterns = { "^usr/bin/ld[%w.]*$", "^usr/bin/as$", "^usr/bin/make$", "^usr/lib/x86_64%-linux%-gnu/libbfd",
      "^usr/bin/[%w_]*%-linux%-gnu%-[%w.]+$" } },
  { name = "headers", probe = { "^usr/include/" }, patterns = { "^usr/include/" } },
}

-- Names that usually hold secrets; certificate stores are public material.
local SECRET_NAMES = { [".env"] = true, id_rsa = true, id_dsa = true, id_ecdsa = true, id_ed25519 = true,
  [".npmrc"] = true, [".pypirc"] = true, [".git-credentials"] = true, [".netrc"] = true,
  ["credentials.json"] = true, [".htpasswd"] = true }
local SECRET_EXT = { pem = true, key = true, p12 = true, pfx = true, jks = true, keystore = true }
local PUBLIC_STORES = { "^etc/ssl/certs/", "^usr/share/ca%-certificates/", "^etc/pki/", "^usr/lib/ssl/certs/",
  "^usr/local/share/ca%-certificates/", "^etc/ca%-certificates/", "python[%d.]*/site%-packages/certifi/",
  "^usr/share/doc/" }

local function any(p, patterns)
  for _, pat in ipairs(patterns) do
    if p:find(pat) then return true end
  end
  return false
end

-- Cheap first looks, so the pattern lists only run on paths that may match.
local function maybe_cache(p)
  return p:find("cache", 1, true) or p:find("apt/lists", 1, true) or p:find(".npm", 1, true)
end

local function maybe_tool(p)
  local top = p:sub(1, 4)
  return top == "usr/" or top == "opt/" or p:find("/.rustup/", 1, true) or p:find("/bin/rustc", 1, true)
end

-- `base` is p's last component (the caller has it from the parent path, cheaper than a match).
local function secret_like(p, base)
  local ext = base:match("%.([%w]+)$")
  if not (SECRET_NAMES[base] or (ext and SECRET_EXT[ext:lower()]) or base:sub(1, 5) == ".env."
      or base:sub(1, 3) == "id_" or base == "credentials" or base == "config.json") then
    return false
  end
  local hit = SECRET_NAMES[base] or (base:match("^%.env%.") and not base:match("example") and not base:match("sample"))
    or (ext and SECRET_EXT[ext:lower()]) or p:find("%.aws/credentials$") or p:find("%.docker/config%.json$")
    or p:find("%.ssh/id_[%w]+$") and not base:match("%.pub$")
  return hit and not any(p, PUBLIC_STORES)
end

local function add_to(t, k, bytes, layer, path, cap)
  local e = t[k]
  if not e then
    e = { bytes = 0, files = 0, layers = {}, paths = {} }
    t[k] = e
  end
  e.bytes, e.files = e.bytes + bytes, e.files + 1
  e.layers[layer] = (e.layers[layer] or 0) + bytes
  if #e.paths < cap then e.paths[#e.paths + 1] = path end
end

local function main_layer(layers)
  local best, bb = nil, -1
  for li, b in pairs(layers) do
    if b > bb then best, bb = li, b end
  end
  return best
end

local function parse_os_release(text)
  local t = {}
  for k, v in (text or ""):gmatch("([%w_]+)=\"?([^\"\n]*)\"?") do t[k] = v end
  return t
end

--- Derive the facts suggestions are made of, from the stacked analysis (its merged file
--- system and hidden-file list) and the layer records. Stores them in a.facts.
---@param a table
---@param recs table[]
function M.facts(a, recs)
  local fs = a.fs
  local caches, tools, perms, secrets = {}, {}, { setuid = {}, setgid = {}, world_writable = {} }, {}
  local present = {}
  local unpack = tree.unpack
  for p, meta in pairs(fs.meta) do
    local k, li, mode = unpack(meta)
    local size = fs.size[p] or 0
    if k ~= "d" then
      if maybe_cache(p) then
        for _, c in ipairs(CACHES) do
          if any(p, c.patterns) then
            add_to(caches, c.name, size, li, p, 5)
            break
          end
        end
      end
      if maybe_tool(p) then
        for _, t in ipairs(TOOLCHAINS) do
          if not present[t.name] and any(p, t.probe) then present[t.name] = true end
        end
      end
    end
    if k ~= "l" then
      if mode & 2048 ~= 0 and k ~= "d" then perms.setuid[#perms.setuid + 1] = p end
      if mode & 1024 ~= 0 and k ~= "d" then perms.setgid[#perms.setgid + 1] = p end
      if mode & 2 ~= 0 and not (k == "d" and mode & 512 ~= 0) then
        perms.world_writable[#perms.world_writable + 1] = p
      end
    end
  end
  for p, meta in pairs(next(present) and fs.meta or {}) do
    local k, li = unpack(meta)
    if k ~= "d" and maybe_tool(p) then
      for _, t in ipairs(TOOLCHAINS) do
        if present[t.name] and any(p, t.patterns) then
          add_to(tools, t.name, fs.size[p] or 0, li, p, 5)
          break
        end
      end
    end
  end
  for _, list in pairs(perms) do table.sort(list) end
  local os_release
  for li, rec in ipairs(recs) do
    if rec.os_release then os_release = rec.os_release end
    local path, size, kind, _, par = scan.arrays(rec)
    for i = 1, #path do
      local p = path[i]
      if kind[i] == "f" and secret_like(p, par[i] == "" and p or p:sub(#par[i] + 2)) then
        local meta = fs.meta[p]
        secrets[#secrets + 1] = { path = p, layer = li, size = size[i],
          present = meta ~= nil and meta >> 19 == li }
      end
    end
  end
  -- Files hidden by later layers, grouped by (layer that wrote, layer that hid, how).
  local groups, gindex = {}, {}
  for _, h in ipairs(a.hidden) do
    local key = h.from .. ":" .. h.to .. ":" .. h.how
    local g = gindex[key]
    if not g then
      g = { from = h.from, to = h.to, how = h.how, bytes = 0, files = 0, paths = {} }
      gindex[key] = g
      groups[#groups + 1] = g
    end
    g.bytes, g.files = g.bytes + h.size, g.files + 1
    if #g.paths < 5 then g.paths[#g.paths + 1] = h.path end
  end
  table.sort(groups, function(x, y) return x.bytes > y.bytes end)
  local small = 0
  for _, L in ipairs(a.layers) do
    if L.size < 1048576 then small = small + 1 end
  end
  a.facts = { caches = caches, toolchains = tools, permissions = perms, secrets = secrets,
    hidden = groups, small_layers = small, os = parse_os_release(os_release) }
end

-- Rough sizes of smaller bases, for the base-image suggestion (uncompressed, amd64).
local SMALLER_BASE = {
  debian = { name = "debian:bookworm-slim (or gcr.io/distroless/base-debian12 for a static app)", size = 74 * 1048576 },
  ubuntu = { name = "debian:bookworm-slim or a distroless base", size = 74 * 1048576 },
  centos = { name = "a ubi-minimal or debian:bookworm-slim base", size = 92 * 1048576 },
  fedora = { name = "a ubi-minimal or fedora-minimal base", size = 92 * 1048576 },
  default = { name = "alpine:3.20 (or distroless / scratch for a static binary)", size = 8 * 1048576 },
}

local function instr(a, li)
  local L = a.layers[li]
  local c = L and L.created_by
  if not c or c == "" then return "layer " .. li end
  if #c > 60 then c = c:sub(1, 57) .. "..." end
  return ("layer %d (%s)"):format(li, c)
end

--- The suggestions for an analysis, largest savings first.
---@param a table analysis with facts
---@return table[]
function M.suggest(a, opts)
  opts = opts or {}
  local f, out, H = a.facts, {}, M.human
  local function add(s) out[#out + 1] = s end
  for _, g in ipairs(f.hidden) do
    if g.bytes > 0 then
      if g.how == "removed" then
        add({ kind = "deleted-later", bytes = g.bytes, layer = g.from, paths = g.paths,
          message = ("%d files (%s) written in %s are deleted in %s: remove them in the same RUN that creates them")
            :format(g.files, H(g.bytes), instr(a, g.from), instr(a, g.to)) })
      else
        add({ kind = "overwritten", bytes = g.bytes, layer = g.from, paths = g.paths,
          message = ("%d files (%s) written in %s are replaced in %s: write them once")
            :format(g.files, H(g.bytes), instr(a, g.from), instr(a, g.to)) })
      end
    end
  end
  for _, c in ipairs(CACHES) do
    local e = f.caches[c.name]
    if e and e.bytes > 0 then
      local li = main_layer(e.layers)
      add({ kind = "package-cache", bytes = e.bytes, layer = li, paths = e.paths,
        message = ("%s left in the image: %s in %d files, mostly from %s; %s")
          :format(c.name, H(e.bytes), e.files, instr(a, li), c.fix) })
    end
  end
  for name, e in pairs(f.toolchains) do
    if e.bytes > 0 then
      add({ kind = "toolchain", bytes = e.bytes, layer = main_layer(e.layers), paths = e.paths,
        message = ("build toolchain in the final image (%s: %s in %d files): "
          .. "use a multi-stage build and copy only the output")
          :format(name, H(e.bytes), e.files) })
    end
  end
  local max_layers = opts.max_layers or 20
  if #a.layers > max_layers or f.small_layers >= 5 then
    add({ kind = "squash", bytes = a.hidden_bytes,
      message = ("%d layers, %d of them under 1 MiB: merge consecutive RUN/COPY steps "
        .. "(squashing also drops %s of hidden files)")
        :format(#a.layers, f.small_layers, H(a.hidden_bytes)) })
  end
  local base = a.layers[1]
  if base and base.size > (opts.large_base or 50 * 1048576) then
    local id = (f.os.ID or ""):lower()
    local alt = SMALLER_BASE[id] or SMALLER_BASE.default
    if id == "alpine" then alt = nil end
    if alt and base.size > alt.size then
      add({ kind = "base-image", bytes = base.size - alt.size, layer = 1,
        message = ("the base layer is %s (%s): a smaller base such as %s is about %s")
          :format(H(base.size), f.os.PRETTY_NAME or (id ~= "" and id or "unknown OS"), alt.name, H(alt.size)) })
    end
  end
  local p = f.permissions
  if #p.setuid + #p.setgid > 0 then
    local list = {}
    for _, x in ipairs(p.setuid) do list[#list + 1] = x end
    for _, x in ipairs(p.setgid) do list[#list + 1] = x end
    add({ kind = "setuid", bytes = 0, paths = list,
      message = ("%d setuid/setgid files (%s): drop the bit (chmod u-s,g-s) unless required")
        :format(#list, table.concat(list, ", ", 1, math.min(#list, 5))) })
  end
  if #p.world_writable > 0 then
    add({ kind = "world-writable", bytes = 0, paths = p.world_writable,
      message = ("%d world-writable paths without the sticky bit (%s): chmod o-w")
        :format(#p.world_writable, table.concat(p.world_writable, ", ", 1, math.min(#p.world_writable, 5))) })
  end
  for _, s in ipairs(f.secrets) do
    add({ kind = "secret", bytes = 0, layer = s.layer, paths = { s.path },
      message = ("%s looks like a secret and is stored in %s%s: keep it out of the build context or use a secret mount")
        :format(s.path, instr(a, s.layer), s.present and "" or " (deleted later, still in that layer)") })
  end
  local order = { ["deleted-later"] = 1, overwritten = 2, ["package-cache"] = 3, toolchain = 4,
    ["base-image"] = 5, squash = 6, secret = 7, setuid = 8, ["world-writable"] = 9 }
  table.sort(out, function(x, y)
    if x.bytes ~= y.bytes then return x.bytes > y.bytes end
    return order[x.kind] < order[y.kind]
  end)
  return out
end

-- "20MB", "1.5 GiB", 1024 -> bytes (dive accepts the SI and IEC forms).
local function parse_bytes(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then error("image.check: max_wasted_bytes must be a number or a size string", 4) end
  local n, unit = v:match("^%s*([%d.]+)%s*(%a*)%s*$")
  local mult = { [""] = 1, b = 1, kb = 1e3, mb = 1e6, gb = 1e9, tb = 1e12, k = 1e3, m = 1e6, g = 1e9,
    kib = 1024, mib = 1024 ^ 2, gib = 1024 ^ 3, tib = 1024 ^ 4 }
  local m = unit and mult[unit:lower()]
  if not n or not m then error("image.check: bad size " .. v, 4) end
  return tonumber(n) * m
end

--- Judge an analysis; an empty policy means dive's defaults (efficiency >= 0.9, wasted share
--- <= 0.1).
function M.check(a, policy)
  if next(policy) == nil then policy = { min_efficiency = 0.9, max_wasted_share = 0.1 } end
  local failures = {}
  local function fail(rule, limit, value, msg)
    failures[#failures + 1] = { rule = rule, limit = limit, value = value, message = msg }
  end
  if policy.min_efficiency and a.efficiency < policy.min_efficiency then
    fail("min_efficiency", policy.min_efficiency, a.efficiency,
      ("efficiency %.4f is below %.4f"):format(a.efficiency, policy.min_efficiency))
  end
  if policy.max_wasted_bytes then
    local limit = parse_bytes(policy.max_wasted_bytes)
    if a.wasted_bytes > limit then
      fail("max_wasted_bytes", limit, a.wasted_bytes,
        ("wasted %s is above %s"):format(M.human(a.wasted_bytes), M.human(math.floor(limit))))
    end
  end
  if policy.max_wasted_share and a.wasted_share > policy.max_wasted_share then
    fail("max_wasted_share", policy.max_wasted_share, a.wasted_share,
      ("wasted share %.4f is above %.4f"):format(a.wasted_share, policy.max_wasted_share))
  end
  return { pass = #failures == 0, failures = failures }
end

return M
