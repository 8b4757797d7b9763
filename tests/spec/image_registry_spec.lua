-- needs: registry
-- myrmex.image on a registry reference: a docker-archive written here (whiteouts, an
-- overwrite, a gzip layer) is pushed to Debian's docker-registry on loopback, then analyzed
-- through its manifest, config and blobs; the figures must equal the hand computation and
-- the analysis of the tar itself.
local image = require("myrmex.image")
local registry = require("myrmex.registry")
local errors = require("myrmex.errors")
local archive = require("myrmex.core.archive")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local reg, c, work

setup(function()
  reg = R.start({ mode = "plain" })
  c = registry.connect(reg.host, { config = false })
  work = sh.run("mktemp -d /tmp/mx-image-reg-XXXXXX").stdout:gsub("%s+$", "")
end)

teardown(function()
  if reg then reg:stop() end
  if work then sh.run({ "rm", "-rf", work }) end
end)

-- L1: etc/app.conf 1000, bin/tool 5000, var/tmp/junk 20000
-- L2 (gzip): var/tmp/.wh.junk, bin/tool 6000 (overwrite)
-- dive: app.conf 1000/1000/1, bin/tool 11000/5000/2, var/tmp/junk 20000/0/2
--   efficiency = 6000 / 32000, wasted = 31000; hidden = 20000 + 5000
local function write_image(path)
  local function layer(name, entries, compression)
    local w <close> = archive.writer(work .. "/" .. name, { compression = compression })
    for _, e in ipairs(entries) do w:add(e) end
  end
  local function f(p, n) return { path = p, data = ("z"):rep(n) } end
  layer("l1.tar", { f("etc/app.conf", 1000), f("bin/tool", 5000), f("var/tmp/junk", 20000) })
  layer("l2.tar.gz", { f("var/tmp/.wh.junk", 0), f("bin/tool", 6000) }, "gzip")
  local config = json.encode({ architecture = "amd64", os = "linux",
    config = { Cmd = { "/bin/tool" } },
    rootfs = { type = "layers", diff_ids = { "sha256:" .. ("a"):rep(64), "sha256:" .. ("b"):rep(64) } },
    history = { { created_by = "COPY . / # buildkit" }, { created_by = "RUN rm /var/tmp/junk # buildkit" } } })
  local w <close> = archive.writer(path)
  w:add({ path = "l1/layer.tar", data = { file = work .. "/l1.tar" } })
  w:add({ path = "l2/layer.tar.gz", data = { file = work .. "/l2.tar.gz" } })
  w:add({ path = "cfg.json", data = config })
  w:add({ path = "manifest.json", data = json.encode({ { Config = "cfg.json", RepoTags = { "reg:1" },
    Layers = { "l1/layer.tar", "l2/layer.tar.gz" } } }) })
end

describe("image.analyze on a registry", function()
  it("reads manifest, config and blobs and agrees with the tar", function()
    local tar = work .. "/img.tar"
    write_image(tar)
    local ok, err = pcall(function() return c:push_image(tar, "mx/analyzed:1") end)
    assert(ok, tostring(err))
    local a = image.analyze("mx/analyzed:1", { registry = c })
    assert.are.equal(6000 / 32000, a.efficiency)
    assert.are.equal(31000, a.wasted_bytes)
    assert.are.equal(25000, a.hidden_bytes)
    assert.are.equal(32000, a.size)
    assert.are.same({ "COPY . /", "RUN rm /var/tmp/junk" }, { a.layers[1].created_by, a.layers[2].created_by })
    local info = c:inspect("mx/analyzed:1")
    for i, L in ipairs(a.layers) do
      assert.are.equal(info.layers[i].digest, L.digest)
      assert.are.equal(info.layers[i].size, L.compressed_size)
    end
    local t = image.analyze(tar)
    assert.are.equal(t.efficiency, a.efficiency)
    assert.are.equal(t.wasted_bytes, a.wasted_bytes)
    for i = 1, 2 do
      assert.are.same({ t.layers[i].size, t.layers[i].added, t.layers[i].changed, t.layers[i].removed },
        { a.layers[i].size, a.layers[i].added, a.layers[i].changed, a.layers[i].removed })
    end
    assert.are.equal("", sh.run("ls /tmp | grep '^myrmex-blob-' || true").stdout) -- temp blobs removed
  end)

  it("reports progress over the layers' bytes, naming each layer", function()
    local info = c:inspect("mx/analyzed:1")
    local total = info.layers[1].size + info.layers[2].size
    local recs = sh.capture_log(function() image.analyze("mx/analyzed:1", { registry = c }) end)
    local seen = {}
    for _, r in ipairs(recs) do
      if r.msg:match("^analyze ") then seen[#seen + 1] = r end
    end
    assert.are.equal("layer " .. info.layers[1].digest:sub(8, 19) .. " (1/2)", seen[1].current)
    assert.are.equal("analyze mx/analyzed:1 done", seen[#seen].msg)
    local human = require("myrmex.report").human_bytes(total)
    assert.are.equal(human .. "/" .. human, seen[#seen].amount)
  end)

  it("streams layers from the registry and refuses one tampered in its storage", function()
    local img = R.make_layout(work .. "/tamper", { tag = "t", files = { ["x"] = ("A"):rep(5000) } })
    c:push_image(work .. "/tamper", "mx/tamper:t")
    assert.are.equal(#img.layers, #image.analyze("mx/tamper:t", { registry = c }).layers)
    local path = reg:blob_path(img.layers[#img.layers])
    local data = sh.read(path)
    local f = assert(io.open(path, "wb"))
    f:write((data:gsub("AAAA", "AAAB", 1)))
    f:close()
    local ok, err = pcall(image.analyze, "mx/tamper:t", { registry = c })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "DigestMismatch"), tostring(err))
    assert.truthy(tostring(err):find(img.layers[#img.layers], 1, true), tostring(err))
  end)

  it("raises NotFound for a tag the registry does not have", function()
    local ok, err = pcall(image.analyze, "mx/analyzed:nope", { registry = c })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)
end)
