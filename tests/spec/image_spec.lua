-- needs: docker
-- myrmex.image against the real engine: an image built FROM scratch with busybox whose layers
-- overwrite and delete files (every figure computed by hand below), analyzed through the
-- engine's save stream, the saved tar, and OCI layouts with gzip and zstd layers made by
-- skopeo; dive's efficiency on a hand-built archive with whiteouts, an opaque directory and a
-- deleted directory; suggestions, the CI gate, errors and bounded memory.
local image = require("myrmex.image")
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local archive = require("myrmex.core.archive")
local json = require("myrmex.json")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local function rand(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n)
  f:close()
  return s
end

local function by_kind(list, kind)
  local out = {}
  for _, s in ipairs(list) do
    if s.kind == kind then out[#out + 1] = s end
  end
  return out
end

local B -- size of /bin/busybox
local work, ref, saved

local DOCKERFILE = [[
FROM scratch
COPY busybox /bin/busybox
COPY big.bin small.txt /data/
COPY junk /junk/
RUN ["/bin/busybox", "rm", "-rf", "/data/big.bin", "/junk"]
COPY small2.txt /data/small.txt
COPY Packages /var/lib/apt/lists/deb.debian.org_Packages
COPY tool /bin/tool
RUN ["/bin/busybox", "chmod", "4755", "/bin/tool"]
COPY secrets /app/
]]

setup(function()
  local f = assert(io.open(dt.BUSYBOX, "rb"))
  B = f:seek("end")
  f:close()
  work = dt.context({
    Dockerfile = DOCKERFILE,
    ["big.bin"] = rand(200000), ["small.txt"] = rand(5000), ["small2.txt"] = rand(7000),
    ["junk/x"] = rand(3000), ["junk/y"] = rand(4000), Packages = rand(50000),
    tool = { data = rand(1000), mode = 493 },
    ["secrets/id_rsa"] = rand(300), ["secrets/server.pem"] = rand(400),
  })
  ref = dt.name("img"):lower() .. ":1"
  local r = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label %s -t %s %s"):format(
    sh.q("myrmex.test=" .. dt.run_id), ref, sh.q(work)))
  assert(r.code == 0, r.stderr)
  saved = work .. "/saved.tar"
  assert(dt.cli(("save -o %s %s"):format(sh.q(saved), ref)).code == 0)
end)

teardown(function()
  dt.cleanup()
  if work then sh.run({ "rm", "-rf", work }) end
end)

-- The figures of the image above, by hand. dive visits the leaves of each layer's tree:
--   bin/busybox B | data/big.bin 200000 then a whiteout (a file's whiteout weighs 0)
--   data/small.txt 5000 then 7000 | junk/x 3000, junk/y 4000 | junk: whiteout of a directory,
--   weighing what it hid (7000), seen once | apt file 50000 | bin/tool 1000 twice (chmod
--   copies it up) | app/id_rsa 300, app/server.pem 400.
-- Sum of all sizes seen: B + 278700; sum of the smallest size per path: B + 70700.
-- Wasted (paths seen more than once, every copy counted): 200000 + 12000 + 2000.
local function check_hand_figures(a)
  assert.are.equal(9, #a.layers)
  local sizes, removed, changed, added = {}, {}, {}, {}
  for i, L in ipairs(a.layers) do
    sizes[i], removed[i], changed[i], added[i] = L.size, L.removed, L.changed, L.added
  end
  assert.are.same({ B, 205000, 7000, 0, 7000, 50000, 1000, 1000, 700 }, sizes)
  assert.are.same({ 1, 2, 2, 0, 0, 1, 1, 0, 2 }, added)
  assert.are.same({ 0, 0, 0, 0, 1, 0, 0, 1, 0 }, changed)
  assert.are.same({ 0, 0, 0, 3, 0, 0, 0, 0, 0 }, removed)
  assert.are.equal(207000, a.layers[4].removed_bytes)
  assert.are.equal(B + 271700, a.size)
  assert.are.equal(214000, a.wasted_bytes)
  assert.are.equal((B + 70700) / (B + 278700), a.efficiency)
  assert.are.equal(214000 / 271700, a.wasted_share)
  assert.are.equal(207000 + 5000 + 1000, a.hidden_bytes)
  assert.are.equal(6, a.files)
  assert.are.same({ path = "bin/busybox", size = B, layer = 1 }, a.largest_files[1])
  assert.are.same({ path = "bin", size = B + 1000 }, a.largest_dirs[1])
  assert.are.same({ path = "data/big.bin", count = 2, bytes = 200000 }, a.inefficiencies[1])
  assert.are.equal("RUN /bin/busybox rm -rf /data/big.bin /junk", a.layers[4].created_by)
  assert.truthy(a.layers[2].created_by:find("^COPY multi:%x+ in /data/$"), a.layers[2].created_by)
  local share = 0
  for _, L in ipairs(a.layers) do share = share + L.share end
  assert.is_true(math.abs(share - 1) < 1e-9)
end

describe("image.analyze", function()
  it("computes the hand-made figures from a saved tar", function()
    local a = image.analyze(saved)
    check_hand_figures(a)
    assert.are.same({ ref }, a.tags)
    for _, L in ipairs(a.layers) do
      assert.are.equal(L.compressed_size, L.uncompressed_size) -- docker save does not compress
      assert.truthy(L.digest:match("^sha256:%x+$"))
    end
  end)

  it("reports its progress over the tar's bytes, ending done or failed", function()
    local size = #sh.read(saved)
    local recs = sh.capture_log(function() image.analyze(saved) end)
    local first, last
    for _, r in ipairs(recs) do
      if r.msg:match("^analyze ") then first, last = first or r, r end
    end
    -- The first record comes when the first layer starts, and names it.
    assert.matches("^layer " .. ("%x"):rep(12) .. "$", first.current)
    assert.is_nil(last.current)
    assert.are.equal("analyze " .. saved .. " done", last and last.msg)
    assert.are.equal("100%", last.progress)
    local human = require("myrmex.report").human_bytes(size)
    assert.are.equal(human .. "/" .. human, last.amount)
    local bad = work .. "/progress-missing.tar"
    do
      local w <close> = archive.writer(bad)
      w:add({ path = "manifest.json", data = json.encode({ { Config = "c.json", Layers = { "x/layer.tar" } } }) })
    end
    recs = sh.capture_log(function(log)
      assert.is_false(pcall(image.analyze, bad))
      log.info("after")
    end)
    last = nil
    for _, r in ipairs(recs) do
      if r.msg:match("^analyze ") then last = r end
    end
    assert.are.equal("analyze " .. bad .. " failed", last and last.msg)
    assert.are_not.equal("100%", last.progress) -- a failed analysis is not drawn as complete
  end)

  it("draws its bar in place on a terminal, naming the layer being read", function()
    local code = ("require('myrmex.image').analyze(%q)"):format(saved)
    local r = sh.run("script -qec " .. sh.q(sh.bin .. " -e " .. sh.q(code)) .. " /dev/null",
      { env = { CI = "", GITHUB_ACTIONS = "" } })
    assert.are.equal(0, r.code, r.stderr)
    local name = "analyze " .. saved
    -- The first draw: a bar, the bytes read, the name and the first layer's label.
    local a, b = r.stdout:find("\r\27[K[", 1, true)
    assert.truthy(a, r.stdout)
    local line = r.stdout:sub(b + 1):match("^[^\r\n]*")
    assert.truthy(line:find(" " .. name .. " layer ", 1, true), line)
    assert.matches(" layer " .. ("%x"):rep(12) .. "$", line)
    -- The last: a full bar over the tar's size, without a label, ending the line.
    local human = require("myrmex.report").human_bytes(#sh.read(saved))
    local full = "[========================] 100% " .. human .. "/" .. human .. " " .. name
    local c, d = r.stdout:find(full, 1, true)
    assert.truthy(c, r.stdout)
    assert.matches("^\r?\n", r.stdout:sub(d + 1))
  end)

  it("reads the engine's save stream and agrees with the saved tar", function()
    local d = docker.connect()
    local a
    local recs = sh.capture_log(function() a = image.analyze(ref, { docker = d }) end)
    check_hand_figures(a)
    -- The stream's size is not known in advance: progress counts bytes without a total.
    local last
    for _, r in ipairs(recs) do
      if r.msg:match("^analyze ") then last = r end
    end
    assert.are.equal("analyze " .. ref .. " done", last and last.msg)
    assert.is_nil(last.progress)
    assert.are.equal(require("myrmex.report").human_bytes(#sh.read(saved)), last.amount)
    local t = image.analyze(saved)
    assert.are.equal(t.efficiency, a.efficiency)
    assert.are.same(t.layers, a.layers)
    assert.truthy(a.id:match("^sha256:"))
    -- the temporary save is gone
    assert.are.equal("", sh.run("ls /tmp | grep '^myrmex-save-' || true").stdout)
  end)

  for _, fmt in ipairs({ "gzip", "zstd" }) do
    it("reads an OCI layout with " .. fmt .. " layers (skopeo) the same way", function()
      local oci = work .. "/oci-" .. fmt .. ".tar"
      local r = sh.run({ "skopeo", "copy", "--dest-compress", "--dest-compress-format", fmt,
        "docker-archive:" .. saved, "oci-archive:" .. oci .. ":" .. ref })
      assert(r.code == 0, r.stderr)
      local a = image.analyze(oci)
      check_hand_figures(a)
      local packed, unpacked = 0, 0
      for _, L in ipairs(a.layers) do
        assert.are.equal("application/vnd.oci.image.layer.v1.tar+" .. fmt, L.media_type)
        packed, unpacked = packed + L.compressed_size, unpacked + L.uncompressed_size
      end
      assert.is_true(packed < unpacked)
      assert.is_true(a.layers[1].compressed_size < B) -- busybox compresses
    end)
  end
end)

-- A docker-archive written by hand with manifest.json first, a gzip layer and a layer that
-- is a symlink to another (Docker stores identical layers once).
--   L1: a/ a/f1 100, a/f2 200, e/ (empty), b/ b/g 50, d/ d/x 10, d/y 20
--   L2 (gzip): a/.wh.f1, d/.wh..wh..opq, d/z 5, e/, a/f2 250
--   L3: .wh.b (a directory: weighs b/g 50), c 40
--   L4: the same tar as L1
-- dive, path by path (cumulative / smallest / times seen):
--   a/f1 100+0+100=200/0/3  a/f2 200+250+200=650/200/3  e 0/0/3  b/g 100/50/2  d/x 20/10/2
--   d/y 40/20/2  d/z 5/5/1  b 50/50/1  c 40/40/1
--   efficiency = 375 / 1105; wasted = 200+650+0+100+20+40 = 1010
local function hand_archive(path, opts)
  opts = opts or {}
  local dir = path .. ".d"
  os.execute("mkdir -p " .. sh.q(dir))
  local function layer(name, entries, compression)
    local w <close> = archive.writer(dir .. "/" .. name, { compression = compression })
    for _, e in ipairs(entries) do w:add(e) end
  end
  local function file(p, n, mode) return { path = p, data = ("x"):rep(n), mode = mode } end
  local function d(p, mode) return { path = p, type = "dir", mode = mode } end
  layer("l1.tar", opts.l1 or { d("a"), file("a/f1", 100), file("a/f2", 200), d("e"), d("b"),
    file("b/g", 50), d("d"), file("d/x", 10), file("d/y", 20) })
  layer("l2.tar.gz", opts.l2 or { file("a/.wh.f1", 0), file("d/.wh..wh..opq", 0), file("d/z", 5), d("e"),
    file("a/f2", 250) }, opts.l2_compression or "gzip")
  layer("l3.tar", opts.l3 or { file(".wh.b", 0), file("c", 40) })
  local config = json.encode({ architecture = "amd64", os = "linux",
    rootfs = { type = "layers", diff_ids = { "sha256:" .. ("1"):rep(64), "sha256:" .. ("2"):rep(64),
      "sha256:" .. ("3"):rep(64), "sha256:" .. ("1"):rep(64) } },
    history = { { created_by = "/bin/sh -c #(nop) ADD file:x in / " },
      { created_by = "/bin/sh -c #(nop)  ENV A=1", empty_layer = true },
      { created_by = "RUN /bin/sh -c make # buildkit" }, { created_by = "COPY c / # buildkit" },
      { created_by = "/bin/sh -c cp -a /x /" } } })
  local layers = { "l1/layer.tar", "l2/layer.tar.gz", "l3/layer.tar", "l4/layer.tar" }
  if opts.no_l4 then layers[4] = nil end
  local manifest = json.encode({ { Config = "cfg.json", RepoTags = { "hand:1" }, Layers = layers } })
  local w <close> = archive.writer(path)
  w:add({ path = "manifest.json", data = manifest })
  w:add({ path = "cfg.json", data = config })
  w:add({ path = "l1/layer.tar", data = { file = dir .. "/l1.tar" } })
  w:add({ path = "l2/layer.tar.gz", data = { file = dir .. "/l2.tar.gz" } })
  w:add({ path = "l3/layer.tar", data = { file = dir .. "/l3.tar" } })
  if not opts.no_l4 then w:add({ path = "l4/layer.tar", type = "symlink", linkname = "../l1/layer.tar" }) end
end

describe("dive's efficiency", function()
  it("matches a hand-computed case with whiteouts, an opaque directory and a deleted directory", function()
    local p = work .. "/hand.tar"
    hand_archive(p)
    local a = image.analyze(p)
    assert.are.equal(375 / 1105, a.efficiency)
    assert.are.equal(1010, a.wasted_bytes)
    assert.are.equal(1010 / 675, a.wasted_share)
    assert.are.equal(1055, a.size)
    -- what later layers hid: a/f1 100, d/x+d/y 30 (opaque), a/f2 200 then 250, b/g 50
    assert.are.equal(630, a.hidden_bytes)
    local L = a.layers
    assert.are.same({ 5, 0, 0 }, { L[1].added, L[1].changed, L[1].removed })
    assert.are.same({ 1, 1, 3, 130 }, { L[2].added, L[2].changed, L[2].removed, L[2].removed_bytes })
    assert.are.same({ 1, 0, 1, 50 }, { L[3].added, L[3].changed, L[3].removed, L[3].removed_bytes })
    assert.are.same({ 4, 1, 0 }, { L[4].added, L[4].changed, L[4].removed })
    assert.are.equal(7, a.files)
    assert.are.same({ path = "a/f2", count = 3, bytes = 650 }, a.inefficiencies[1])
    assert.are.same({ path = "a", size = 300 }, a.largest_dirs[1])
    assert.are.same({ "ADD file:x in /", "RUN make", "COPY c /", "RUN cp -a /x /" },
      { L[1].created_by, L[2].created_by, L[3].created_by, L[4].created_by })
    assert.is_true(L[2].compressed_size < L[2].uncompressed_size)
    assert.are.equal(L[1].compressed_size, L[4].compressed_size)
  end)

  it("gives 1.0 to an image without repeated paths and 0 wasted bytes", function()
    local p = work .. "/clean.tar"
    hand_archive(p, { l2 = { { path = "x", data = "12345" } }, l3 = { { path = "y", data = "1" } },
      no_l4 = true })
    local a = image.analyze(p)
    assert.are.equal(3, #a.layers)
    assert.are.equal(0, a.wasted_bytes)
    assert.are.equal(1.0, a.efficiency)
    assert.are.equal(0, a.hidden_bytes)
    assert.are.same({}, a.inefficiencies)
  end)
end)

describe("image.optimize", function()
  it("names each waste with the bytes it would save, largest first", function()
    local s = image.optimize(saved)
    for i = 2, #s do assert.is_true(s[i - 1].bytes >= s[i].bytes) end
    local del = by_kind(s, "deleted-later")
    assert.are.equal(2, #del)
    assert.are.same({ 200000, 2, { "data/big.bin" } }, { del[1].bytes, del[1].layer, del[1].paths })
    assert.are.equal(7000, del[2].bytes)
    local over = by_kind(s, "overwritten")
    assert.are.same({ 5000, 1000 }, { over[1].bytes, over[2].bytes })
    local cache = by_kind(s, "package-cache")
    assert.are.same({ 50000, 6 }, { cache[1].bytes, cache[1].layer })
    assert.truthy(cache[1].message:find("apt lists", 1, true))
    local sec = by_kind(s, "secret")
    table.sort(sec, function(x, y) return x.paths[1] < y.paths[1] end)
    assert.are.same({ { "app/id_rsa" }, { "app/server.pem" } }, { sec[1].paths, sec[2].paths })
    assert.are.same({ "bin/tool" }, by_kind(s, "setuid")[1].paths)
    assert.are.equal(213000, by_kind(s, "squash")[1].bytes)
    assert.are.equal(0, #by_kind(s, "toolchain"))
  end)

  it("finds toolchains, caches, loose permissions, a deleted secret and a large base", function()
    local p = work .. "/opt.tar"
    local big = work .. "/base.img"
    assert(os.execute(("dd if=/dev/zero of=%s bs=1M count=0 seek=100 2>/dev/null"):format(sh.q(big))))
    local function f(path, n, mode) return { path = path, data = ("x"):rep(n), mode = mode } end
    hand_archive(p, {
      l1 = { { path = "usr/lib/os-release", data = 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\n' },
        { path = "usr/lib/base.img", data = { file = big } }, f(".env", 30),
        { path = "tmp", type = "dir", mode = 1023 }, { path = "shared", type = "dir", mode = 511 },
        f("etc/ssl/certs/ca.pem", 500), f("srv/open.txt", 10, 438) },
      l2 = { f(".wh..env", 0), f("usr/lib/gcc/x86_64-linux-gnu/12/cc1", 3000), f("usr/bin/gcc-12", 300),
        f("var/cache/apk/APKINDEX.tar.gz", 700), f("root/.cache/pip/http/a", 900) },
      l3 = { f("usr/local/bin/app", 10) }, no_l4 = true,
    })
    os.remove(big)
    local a = image.analyze(p)
    local s = image.optimize(a, { max_layers = 2 })
    local tool = by_kind(s, "toolchain")[1]
    assert.are.same({ 3300, 2 }, { tool.bytes, tool.layer })
    local caches = {}
    for _, c in ipairs(by_kind(s, "package-cache")) do caches[c.message:match("^(%a+ cache)")] = c.bytes end
    assert.are.same({ ["apk cache"] = 700, ["pip cache"] = 900 }, caches)
    local ww = by_kind(s, "world-writable")[1]
    assert.are.same({ "shared", "srv/open.txt" }, ww.paths) -- tmp has the sticky bit
    local sec = by_kind(s, "secret")
    assert.are.equal(1, #sec) -- the CA bundle's .pem is public
    assert.are.same({ ".env" }, sec[1].paths)
    assert.truthy(sec[1].message:find("deleted later, still in that layer", 1, true))
    local base = by_kind(s, "base-image")[1]
    assert.truthy(base.message:find("Debian GNU/Linux 12", 1, true), base.message)
    assert.truthy(base.message:find("debian:bookworm-slim", 1, true), base.message)
    assert.are.equal(a.layers[1].size - 74 * 1048576, base.bytes)
    assert.are.equal(1, #by_kind(s, "squash"))
    assert.are.equal(0, #by_kind(image.optimize(a), "squash")) -- 3 layers are not many
  end)
end)

describe("image.check", function()
  it("passes and fails on dive's three thresholds", function()
    local a = image.analyze(saved)
    assert.is_true(image.check(a, { min_efficiency = 0.9 }).pass)
    local r = image.check(a, { min_efficiency = 0.95, max_wasted_bytes = "200KB", max_wasted_share = 0.5 })
    assert.is_false(r.pass)
    local rules = {}
    for _, f in ipairs(r.failures) do rules[#rules + 1] = f.rule end
    assert.are.same({ "min_efficiency", "max_wasted_bytes", "max_wasted_share" }, rules)
    assert.are.equal(200000, r.failures[2].limit)
    assert.is_true(image.check(a, { max_wasted_bytes = "1MiB" }).pass)
    -- no policy: dive's defaults (efficiency 0.9, wasted share 0.1) — the share fails
    local def = image.check(a, {})
    assert.are.same({ false, "max_wasted_share" }, { def.pass, def.failures[1].rule })
  end)
end)

describe("image errors", function()
  it("raises NotFound for an image the engine does not have", function()
    local err = raised(image.analyze, "myrmex-test/no-such-image:404")
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)

  it("raises Invalid for a tar that is not an image and for a missing layer", function()
    local p = work .. "/plain.tar"
    do
      local w <close> = archive.writer(p)
      w:add({ path = "hello.txt", data = "hi" })
    end
    local err = raised(image.analyze, p)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    local q = work .. "/missing.tar"
    do
      local w <close> = archive.writer(q)
      w:add({ path = "manifest.json", data = json.encode({ { Config = "c.json", Layers = { "x/layer.tar" } } }) })
    end
    err = raised(image.analyze, q)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.truthy(tostring(err):find("x/layer.tar is missing", 1, true))
  end)

  it("raises a string naming the function on misuse", function()
    assert.has_error(function() image.analyze(42) end,
      "image.analyze: source must be a tar path, a source, an image name or a reference")
    assert.has_error(function() image.analyze(saved, { topp = 3 }) end, "image.analyze: option topp: unknown key")
    assert.has_error(function() image.analyze(saved, { top = "3" }) end,
      "image.analyze: option top: integer expected, got string")
    assert.has_error(function() image.analyze(saved, 3) end, "image.analyze: options table expected, got number")
    assert.has_error(function() image.optimize(saved, { max_layers = 1.5 }) end,
      "image.optimize: option max_layers: integer expected, got float")
    assert.has_error(function() image.check({ efficiency = 1 }, { min_efficency = 0.9 }) end,
      "image.check: option min_efficency: unknown key")
    assert.has_error(function() image.check({}, {}) end, "image.check: analysis expected")
  end)

  it("refuses to read a layer source after the outer reader moved on", function()
    local r <close> = archive.open(saved)
    local src
    for e in r:entries() do
      if e.path:match("layer%.tar$") and not src then src = r:source() end
    end
    local ok, err = pcall(function()
      local inner <close> = archive.open(src)
      for _ in inner:entries() do end
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("entry behind this source is gone", 1, true), tostring(err))
  end)
end)

describe("reader:sniff and reader:source", function()
  it("leave sniffed bytes in place for read_all, digest and an inner reader", function()
    local p = work .. "/sniff.tar"
    local inner = work .. "/inner.tar"
    local big = rand(300000)
    do
      local w <close> = archive.writer(inner)
      w:add({ path = "a.bin", data = big })
    end
    do
      local w <close> = archive.writer(p)
      w:add({ path = "one.txt", data = big })
      w:add({ path = "two.txt", data = big })
      w:add({ path = "in.tar", data = { file = inner } })
      w:add({ path = "empty", data = "" })
      w:add({ path = "three.txt", data = "abc" })
    end
    local r <close> = archive.open(p)
    local seen = {}
    for e in r:entries() do
      if e.path == "one.txt" then
        assert.are.equal(big:sub(1, 64), r:sniff(64))
        assert.are.equal(big:sub(1, 10), r:sniff(10)) -- sniffing twice sees the same bytes
        seen[1] = r:read_all(1 << 20) == big
      elseif e.path == "two.txt" then
        r:sniff()
        local d = r:digest()
        seen[2] = d == require("myrmex.digest").string(big)
      elseif e.path == "in.tar" then
        assert.are.equal("a.bin", r:sniff(5))
        local ir <close> = archive.open(r:source())
        for ie in ir:entries() do seen[3] = ie.path == "a.bin" and ir:read_all(1 << 20) == big end
      elseif e.path == "empty" then
        seen[4] = r:sniff() == "" and r:read() == nil
      else
        assert.are.equal("abc", r:read())
        assert.has_error(function() r:sniff() end, "reader:sniff: the entry's data is already being read")
        seen[5] = true
      end
    end
    assert.are.same({ true, true, true, true, true }, seen)
  end)
end)

describe("image memory", function()
  it("stays flat on a 128 MiB layer: only metadata is kept", function()
    local p = work .. "/huge.tar"
    local big = work .. "/huge.bin"
    assert(os.execute(("head -c 134217728 /dev/urandom > %s"):format(sh.q(big))))
    hand_archive(p, { l2 = { { path = "huge.bin", data = { file = big } } }, l2_compression = "none",
      l3 = { { path = "z", data = "z" } } })
    os.remove(big)
    collectgarbage()
    local before = dt.peak_rss_kib()
    local a = image.analyze(p)
    local after = dt.peak_rss_kib()
    assert.are.equal(134217728, a.layers[2].size)
    assert.is_true(after - before < 16 * 1024, ("peak RSS grew by %d KiB"):format(after - before))
  end)
end)
