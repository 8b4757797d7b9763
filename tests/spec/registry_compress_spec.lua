-- needs: docker registry
-- Compressed layers (docs/registry.md, "Compression"): myrmex.core.compress checked against
-- the reference gzip and zstd decoders; engine, docker-archive and layout pushes compressed,
-- pulled back by docker and skopeo; copies and pulls converting between gzip, zstd and plain;
-- the diff-id cache turning a second push into HEADs.
local registry = require("myrmex.registry")
local compress = require("myrmex.core.compress")
local source = require("myrmex.core.source")
local digest = require("myrmex.digest")
local json = require("myrmex.json")
local layers = require("myrmex.registry.layers")
local R = require("tests.support.registry")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function drain(src)
  local parts = {}
  while true do
    local b = src:read(1 << 20)
    if not b then break end
    parts[#parts + 1] = b
  end
  return table.concat(parts)
end

local function ok_run(cmd)
  local r = sh.run(cmd)
  assert.are.equal(0, r.code, table.concat(cmd, " ") .. ": " .. r.stderr)
  return r.stdout
end

-- Compressible bytes of realistic shape: a tar of this machine's /usr/share/perl5 (or doc).
local function sample_tar(path)
  for _, d in ipairs({ "share/perl5", "share/doc", "share/man" }) do
    if sh.run({ "test", "-d", "/usr/" .. d }).code == 0 then
      ok_run({ "sh", "-c", ("(tar cf %s -C /usr %s 2>/dev/null || true); head -c 6000000 %s > %s.cut && mv %s.cut %s")
        :format(sh.q(path), d, sh.q(path), sh.q(path), sh.q(path), sh.q(path)) })
      return path
    end
  end
  error("no directory to tar")
end

describe("myrmex.core.compress", function()
  local work, tar

  setup(function()
    work = R.tmpdir()
    tar = sample_tar(work .. "/sample.tar")
  end)

  teardown(function()
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  for _, fmt in ipairs({ "gzip", "zstd" }) do
    it("encodes " .. fmt .. " that the reference decoder reads back, with both digests from one pass", function()
      local raw = sh.read(tar)
      local src, job = compress.encoder(source.from_file(tar), { format = fmt, block_size = 65536 })
      assert.is_nil(job:result())
      local out = drain(src)
      local res = assert(job:result())
      assert.are.equal(digest.string(out), res.digest)
      assert.are.equal(#out, res.size)
      assert.are.equal(digest.string(raw), res.diff_id)
      assert.are.equal(#raw, res.raw_size)
      assert.truthy(res.size < res.raw_size / 2, "compressed to " .. res.size .. " of " .. res.raw_size)
      sh.write(work .. "/out." .. fmt, out)
      local back = ok_run({ "sh", "-c", (fmt == "gzip" and "gzip -dc %s" or "zstd -qdc %s"):format(
        sh.q(work .. "/out." .. fmt)) })
      assert.are.equal(digest.string(raw), digest.string(back))
      -- Same bytes whatever the number of threads: the digest of a re-push does not change.
      local one, j1 = compress.encoder(source.from_file(tar), { format = fmt, block_size = 65536, threads = 1 })
      drain(one)
      assert.are.equal(res.digest, j1:result().digest)
    end)
  end

  it("gzip: each block is a gzip member of its own, in order; gzip -t and Python's zlib accept the whole", function()
    local raw = sh.read(tar)
    local src, job = compress.encoder(source.from_file(tar), { format = "gzip", block_size = 65536 })
    local out = drain(src)
    sh.write(work .. "/blocks.gz", out)
    ok_run({ "gzip", "-t", work .. "/blocks.gz" })
    -- The blocks are independent: the stream is the blocks compressed one by one, concatenated.
    local parts, blocks = {}, 0
    for at = 1, #raw, 65536 do
      parts[#parts + 1] = drain((compress.encoder(source.from_string(raw:sub(at, at + 65535)), { format = "gzip" })))
      blocks = blocks + 1
    end
    assert.truthy(blocks > 2, "the sample is " .. #raw .. " bytes")
    assert.are.equal(digest.string(table.concat(parts)), job:result().digest)
    -- A reader that stops at the first member would lose data: count them as RFC 1952 does.
    local count = ok_run({ "python3", "-c", [[
import sys, zlib
data, n = open(sys.argv[1], "rb").read(), 0
while data:
    d = zlib.decompressobj(31); d.decompress(data); data = d.unused_data; n += 1
print(n)]], work .. "/blocks.gz" })
    assert.are.equal(tostring(blocks), count:match("%d+"))
  end)

  it("gzip: reads ahead of what it hands out, at most threads + 2 blocks", function()
    local big = work .. "/big"
    local raw = sh.read(tar)
    sh.write(big, raw:rep(math.ceil((8 << 20) / #raw)))
    local block, threads = 65536, 2
    local src, job = compress.encoder(source.from_file(big), { format = "gzip", block_size = block, threads = threads })
    -- Where the encoder's file descriptor on `big` stands: what it has read so far.
    local pid = io.open("/proc/self/stat"):read("n")
    local function read_so_far()
      for line in io.popen(("for f in /proc/%d/fd/*; do echo \"$f $(readlink $f)\"; done"):format(pid)):lines() do
        local fd, target = line:match("/fd/(%d+) (.*)$")
        if target == big then return tonumber(io.open(("/proc/%d/fdinfo/%s"):format(pid, fd)):read("a"):match("pos:%s*(%d+)")) end
      end
    end
    assert.are.equal(0, read_so_far())
    local first = src:read(1)
    assert.are.equal("\31", first)
    local pos = read_so_far()
    assert.truthy(pos > block, "read " .. pos .. " bytes before handing out the first block")
    assert.truthy(pos <= (threads + 2) * block, "read " .. pos .. " bytes ahead: more than threads + 2 blocks")
    local back = compress.decoder(source.from_string(first .. drain(src)))
    assert.are.equal(digest.file(big), digest.string(drain(back)))
    assert.are.equal(digest.file(big), job:result().diff_id)
  end)

  it("encodes empty and tiny inputs", function()
    for _, text in ipairs({ "", "x", string.rep("ab", 40000) }) do
      for _, fmt in ipairs({ "gzip", "zstd" }) do
        local src, job = compress.encoder(source.from_string(text), { format = fmt })
        local out = drain(src)
        local dec, djob = compress.decoder(source.from_string(out))
        assert.are.equal(text, drain(dec))
        assert.are.equal(fmt, djob:result().format)
        assert.are.equal(digest.string(text), job:result().diff_id)
      end
    end
  end)

  it("decodes concatenated gzip members and passes plain bytes through", function()
    sh.write(work .. "/a", "first part\n")
    sh.write(work .. "/b", "second part\n")
    ok_run({ "sh", "-c", ("gzip -c %s > %s; gzip -c %s >> %s"):format(sh.q(work .. "/a"), sh.q(work .. "/ab.gz"),
      sh.q(work .. "/b"), sh.q(work .. "/ab.gz")) })
    local dec, job = compress.decoder(source.from_file(work .. "/ab.gz"))
    assert.are.equal("first part\nsecond part\n", drain(dec))
    local res = job:result()
    assert.are.equal(digest.file(work .. "/ab.gz"), res.digest)
    assert.are.equal(digest.string("first part\nsecond part\n"), res.diff_id)
    local plain, pj = compress.decoder(source.from_string("not compressed"))
    assert.are.equal("not compressed", drain(plain))
    assert.are.equal("none", pj:result().format)
  end)

  it("fails on truncated and corrupt streams, naming the format", function()
    local src = compress.encoder(source.from_file(tar), { format = "gzip" })
    local out = drain(src)
    for _, bad in ipairs({ out:sub(1, #out // 2), out:sub(1, 20) .. string.rep("\0", 200) .. out:sub(221) }) do
      local dec, job = compress.decoder(source.from_string(bad))
      local ok, err = pcall(drain, dec)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("gzip", 1, true), tostring(err))
      assert.is_nil(job:result())
    end
    local zs = drain((compress.encoder(source.from_string(string.rep("z", 100000)), { format = "zstd" })))
    local ok, err = pcall(drain, (compress.decoder(source.from_string(zs:sub(1, #zs - 5)))))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("zstd", 1, true), tostring(err))
  end)

  it("an encoder closed part-way stops its workers and frees its blocks (no result)", function()
    for _ = 1, 5 do
      local src, job = compress.encoder(source.from_file(tar), { format = "gzip", block_size = 65536 })
      assert.truthy(src:read(1000))
      src:close()
      assert.is_nil(job:result())
      local zs, zj = compress.encoder(source.from_file(tar), { format = "zstd" })
      assert.truthy(zs:read(1000))
      zs = nil -- luacheck: ignore
      collectgarbage()
      assert.is_nil(zj:result())
    end
    collectgarbage()
    -- Still usable afterwards: the pool's queue holds nothing of the closed streams.
    local src, job = compress.encoder(source.from_string(string.rep("after ", 10000)), { format = "gzip" })
    local dec = compress.decoder(source.from_string(drain(src)))
    assert.are.equal(string.rep("after ", 10000), drain(dec))
    assert.truthy(job:result())
  end)

  it("raises for misuse with the function's name", function()
    local ok, err = pcall(compress.encoder, source.from_string("x"), { format = "brotli" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("compress.encoder: format must be", 1, true), tostring(err))
    ok, err = pcall(compress.encoder, source.from_string("x"), { format = "gzip", level = 13 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("level must be an integer from 1 to 12", 1, true), tostring(err))
    assert.are.equal("gzip", compress.detect("\31\139\8"))
    assert.are.equal("zstd", compress.detect("\40\181\47\253"))
    assert.are.equal("none", compress.detect("ustar"))
  end)
end)

describe("registry: compressed pushes, copies and pulls", function()
  local reg, reg2, c, work, base
  local refs = {}

  setup(function()
    reg = R.start({ mode = "plain" })
    reg2 = R.start({ mode = "plain" })
    c = registry.connect(reg.host, { config = false })
    work = R.tmpdir()
    layers.cache_dir = work .. "/cache"
    base = dt.image()
  end)

  teardown(function()
    layers.cache_dir = nil
    for _, r in ipairs(refs) do dt.cli("rmi -f " .. sh.q(r) .. " >/dev/null 2>&1") end
    if reg then reg:stop() end
    if reg2 then reg2:stop() end
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  local function docker_runs(ref)
    refs[#refs + 1] = ref
    dt.cli("rmi -f " .. sh.q(ref) .. " >/dev/null 2>&1")
    local p = dt.cli("pull -q " .. sh.q(ref))
    assert.are.equal(0, p.code, p.stderr)
    local r = dt.cli("run --rm --network none " .. sh.q(ref) .. " echo compressed-ok")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("compressed-ok\n", r.stdout)
  end

  -- skopeo copies the image out, checking every blob digest and the diff ids of the layers.
  local function skopeo_reads(host, ref)
    local dir = work .. "/sk-" .. ref:gsub("[^%w]", "-")
    ok_run({ "skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" .. host .. "/" .. ref, "oci:" .. dir .. ":x" })
    return dir
  end

  local function diff_ids_of(image)
    return json.decode(dt.cli("image inspect -f '{{json .RootFS.Layers}}' " .. sh.q(image)).stdout)
  end

  it("pushes from the engine gzipped by default; docker pulls and runs it, skopeo verifies it", function()
    local res = c:push_image(base, "cz/engine:gzip")
    local m = json.decode(c:manifest("cz/engine:gzip").body)
    local diff_ids = diff_ids_of(base)
    assert.are.equal(#diff_ids, #m.layers)
    local raw_total = 0
    for i, l in ipairs(m.layers) do
      assert.are.equal(registry.media.oci_layer_gzip, l.mediaType)
      assert.are_not.equal(diff_ids[i], l.digest)
      -- The blob the registry holds decompresses to the diff id the config names.
      local blob = c:blob("cz/engine", l.digest)
      assert.are.equal(l.size, #blob)
      local dec = compress.decoder(source.from_string(blob))
      local plain = drain(dec)
      raw_total = raw_total + #plain
      assert.are.equal(diff_ids[i], digest.string(plain))
    end
    assert.are.equal(res.bytes, m.layers[1].size + m.layers[2].size)
    assert.truthy(res.bytes < raw_total * 0.7, res.bytes .. " of " .. raw_total)
    -- The busybox layer (about 2 MB) is several gzip members (1 MiB blocks): the readers below
    -- must take every member, and the diff ids they see are the engine's.
    local largest = m.layers[1].size > m.layers[2].size and m.layers[1] or m.layers[2]
    sh.write(work .. "/largest.gz", c:blob("cz/engine", largest.digest))
    local members = ok_run({ "python3", "-c", [[
import sys, zlib
data, n = open(sys.argv[1], "rb").read(), 0
while data:
    d = zlib.decompressobj(31); d.decompress(data); data = d.unused_data; n += 1
print(n)]], work .. "/largest.gz" })
    assert.truthy(tonumber(members:match("%d+")) >= 2, "gzip members: " .. members)
    docker_runs(reg.host .. "/cz/engine:gzip")
    assert.are.same(diff_ids, diff_ids_of(reg.host .. "/cz/engine:gzip"))
    skopeo_reads(reg.host, "cz/engine:gzip")
  end)

  it("crane validate --remote passes the gzip pushes (every layer's digest and diff id)", function()
    local crane = "/usr/local/lib/myrmex-test/bin/crane"
    if sh.run({ "test", "-x", crane }).code ~= 0 then return pending(crane .. " is not built yet") end
    c:push_image(base, "cz/crane:gzip")
    local out = ok_run({ crane, "validate", "--insecure", "--remote", reg.host .. "/cz/crane:gzip" })
    assert.truthy(out:find("PASS", 1, true), out)
    -- and crane pulls it into a tarball that docker loads (crane has no zstd: gzip only here)
    ok_run({ crane, "pull", "--insecure", reg.host .. "/cz/crane:gzip", work .. "/crane.tar" })
    local loaded = dt.cli("load -q -i " .. sh.q(work .. "/crane.tar"))
    assert.are.equal(0, loaded.code, loaded.stderr)
    refs[#refs + 1] = reg.host .. "/cz/crane:gzip"
    local r = dt.cli("run --rm --network none " .. sh.q(reg.host .. "/cz/crane:gzip") .. " echo crane-ok")
    assert.are.equal("crane-ok\n", r.stdout, r.stderr)
  end)

  it("pushes zstd from the engine; docker pulls and runs it, skopeo verifies it", function()
    c:push_image(base, "cz/engine:zstd", { compression = "zstd" })
    local m = json.decode(c:manifest("cz/engine:zstd").body)
    for _, l in ipairs(m.layers) do assert.are.equal(registry.media.oci_layer .. "+zstd", l.mediaType) end
    local blob = c:blob("cz/engine", m.layers[1].digest)
    sh.write(work .. "/l.zst", blob)
    local plain = ok_run({ "zstd", "-qdc", work .. "/l.zst" })
    assert.are.equal(diff_ids_of(base)[1], digest.string(plain))
    docker_runs(reg.host .. "/cz/engine:zstd")
    skopeo_reads(reg.host, "cz/engine:zstd")
  end)

  it("a second gzip push of the same image is a HEAD per layer (the diff-id cache)", function()
    c:push_image(base, "cz/again:1")
    local res = c:push_image(base, "cz/again:2")
    assert.are.equal(0, res.layers)
    assert.are.equal(#diff_ids_of(base), res.skipped)
    assert.are.equal(c:digest("cz/again:1"), res.digest)
  end)

  it("pushes a docker-archive gzipped by default, the config unchanged", function()
    local tar = work .. "/saved.tar"
    ok_run({ "docker", "save", "-o", tar, base })
    layers.cache_dir = false -- compressed here, not found in the cache of the engine push
    local res = c:push_image(tar, "cz/archive:1")
    layers.cache_dir = work .. "/cache"
    local info = c:inspect("cz/archive:1")
    assert.are.equal(res.digest, info.digest)
    for _, l in ipairs(info.layers) do assert.are.equal(registry.media.oci_layer_gzip, l.media_type) end
    -- Same layers, same bytes as the engine push: the compression is deterministic.
    assert.are.equal(c:digest("cz/engine:gzip"), res.digest)
    local id = dt.cli("image inspect -f '{{.Id}}' " .. sh.q(base)).stdout:gsub("%s+$", "")
    assert.are.equal(id, info.config_digest)
    skopeo_reads(reg.host, "cz/archive:1")
  end)

  it("pushes an OCI layout as stored unless asked, and converts its layers when asked", function()
    local img = R.make_layout(work .. "/img", { tag = "v1" })
    assert.are.equal(img.digest, c:push_image(work .. "/img", "cz/layout:stored").digest)
    local res = c:push_image(work .. "/img", "cz/layout:zstd", { compression = "zstd" })
    assert.are_not.equal(img.digest, res.digest)
    local m = json.decode(c:manifest("cz/layout:zstd").body)
    assert.are.equal(registry.media.oci_layer .. "+zstd", m.layers[1].mediaType)
    assert.are.equal(img.config_digest, m.config.digest)
    skopeo_reads(reg.host, "cz/layout:zstd")
  end)

  it("copies converting gzip -> zstd -> none and back to the same digests", function()
    local gz = c:digest("cz/engine:gzip")
    local none_push = c:push_image(base, "cz/engine:none", { compression = "none" }).digest
    local zd = registry.copy(reg.host .. "/cz/engine:gzip", reg2.host .. "/cv/app:zstd",
      { config = false, compression = "zstd" })
    assert.are.equal(c:digest("cz/engine:zstd"), zd)
    local nd = registry.copy(reg2.host .. "/cv/app:zstd", reg2.host .. "/cv/app:none",
      { config = false, compression = "none" })
    assert.are.equal(none_push, nd)
    local gd, stats = registry.copy(reg2.host .. "/cv/app:none", reg.host .. "/cv/back:gzip",
      { config = false, compression = "gzip" })
    assert.are.equal(gz, gd)
    assert.truthy(stats.copied + stats.skipped >= 2)
    -- Without compression the layers travel as they are: same manifest digest.
    assert.are.equal(zd, (registry.copy(reg2.host .. "/cv/app:zstd", reg.host .. "/cv/keep:1", { config = false })))
    docker_runs(reg2.host .. "/cv/app:zstd")
  end)

  it("pulls converting compressed layers to plain tar, the layout's digests checked", function()
    local dir = work .. "/pulled-plain"
    local res = c:pull_image("cz/engine:gzip", { to = dir, compression = "none" })
    local m = json.decode(sh.read(dir .. "/blobs/sha256/" .. res.digest:sub(8)))
    local diff_ids = diff_ids_of(base)
    for i, l in ipairs(m.layers) do
      assert.are.equal(registry.media.oci_layer, l.mediaType)
      assert.are.equal(diff_ids[i], l.digest)
      assert.are.equal(l.digest, (digest.file(dir .. "/blobs/sha256/" .. l.digest:sub(8))))
    end
    ok_run({ "skopeo", "inspect", "oci:" .. dir .. ":gzip" })
  end)

  it("raises for a compression it does not know, naming the function", function()
    local ok, err = pcall(c.push_image, c, base, "cz/bad:1", { compression = "lz4" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("registry.push_image: compression must be", 1, true), tostring(err))
    ok, err = pcall(registry.copy, reg.host .. "/a:1", reg.host .. "/b:1", { compression = "bz2" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("registry.copy: compression must be", 1, true), tostring(err))
  end)
end)
