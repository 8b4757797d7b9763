-- needs: docker
-- myrmex.image checked against dive itself (the test bed's /usr/local/lib/myrmex-test/bin/dive):
-- images built here FROM scratch with busybox, whose layers delete files and a directory,
-- overwrite files, make an opaque directory (a directory removed and made again in one RUN),
-- hard-link a file and change only a file's mode. For each, image.analyze must give exactly
-- dive's --json efficiency, wasted bytes, image size and per-path inefficiencies, and
-- image.check must pass or fail as `dive --ci` does on the same thresholds.
local image = require("myrmex.image")
local json = require("myrmex.json")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local DIVE = os.getenv("MYRMEX_DIVE") or "/usr/local/lib/myrmex-test/bin/dive"
local f = io.open(DIVE, "r")
local have_dive = f ~= nil
if f then f:close() end

local function rand(n)
  local r = assert(io.open("/dev/urandom", "rb"))
  local s = r:read(n)
  r:close()
  return s
end

local BB = "/bin/busybox"
local function run(script)
  return 'RUN ["' .. BB .. '", "sh", "-c", "' .. script:gsub("%f[%w]([%l]+)%f[^%w]", {
    rm = BB .. " rm", mkdir = BB .. " mkdir", ln = BB .. " ln", chmod = BB .. " chmod", cp = BB .. " cp",
    echo = BB .. " echo", dd = BB .. " dd", mv = BB .. " mv", touch = BB .. " touch" }) .. '"]'
end

-- name -> Dockerfile (the context holds busybox and the files of FILES)
local IMAGES = {
  churn = table.concat({
    "FROM scratch",
    "COPY busybox /bin/busybox",
    "COPY a.bin b.bin c.bin /data/",
    "COPY tree /tree/",
    run("rm /data/a.bin && rm -rf /tree/sub"), -- a deleted file and a deleted directory
    "COPY b2.bin /data/b.bin", -- an overwrite with another size
    -- Removed and made again: an opaque directory on overlay2, whiteouts of each entry on
    -- fuse-overlayfs and vfs. The "opaque" image below has the marker whatever the driver.
    run("rm -rf /tree && mkdir /tree && echo fresh > /tree/new.txt"),
    -- Hard links: within one layer (a link entry), and to a file of a lower layer.
    run("dd if=/dev/zero of=/data/z.bin bs=1000 count=5 && ln /data/z.bin /data/z.link && ln /data/c.bin /data/c.link"),
    run("chmod 600 /data/b.bin"), -- a mode change only
    "COPY c.bin /data/c.bin", -- the same bytes again
  }, "\n") .. "\n",
  clean = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY a.bin /data/\n",
  waste = table.concat({
    "FROM scratch",
    "COPY busybox /bin/busybox",
    "COPY big.bin /data/",
    run("rm /data/big.bin"),
    "COPY big.bin /data/again.bin",
    run("chmod 640 /data/again.bin"),
  }, "\n") .. "\n",
}
local ORDER = { "churn", "clean", "waste", "opaque" }

-- The storage driver decides whether `docker build` writes opaque markers, so this image is
-- made as a docker-archive by hand and loaded: layer 2 makes o/d opaque (hiding f1 and
-- sub/f2 of layer 1), layer 3 has a file and a hard link to it, layer 4 changes only the
-- mode of that file, layer 5 deletes the opaque directory, layer 6 puts a file where the
-- directory r/dir was, layer 7 deletes r, and layer 8 deletes a path that never existed
-- between two files and lists one of them twice.
local OPAQUE_LAYERS = {
  { ["bin/busybox"] = "busybox", ["o/d/f1"] = 3000, ["o/d/sub/f2"] = 2000, ["o/keep"] = 1000,
    ["r/dir/a"] = 700, ["r/dir/b"] = 300 },
  { ["o/d/.wh..wh..opq"] = 0, ["o/d/new"] = 1500 },
  { ["h/one"] = 5000, ["h/two"] = "link:h/one" },
  { ["h/one"] = { 5000, "600" } },
  { ["o/.wh.d"] = 0 },
  { ["r/dir"] = 400 },
  { [".wh.r"] = 0 },
  { ["-pre"] = 50, [".wh.nothere"] = 0, ["zz"] = 100 },
}

-- With `append`, layer 8's tar lists -pre a second time, with 70 bytes: the engine refuses
-- such a layer ("duplicates of file paths not supported"), so that archive is only read
-- as a file, by dive and by image.analyze.
local OPAQUE_APPEND = { [8] = { "-pre", 70 } }

--- Write the docker-archive dir/<name>.tar of OPAQUE_LAYERS, tagged ref; returns its path.
local function opaque_archive(dir, name, ref, append)
  dir = dir .. "/" .. name
  assert(os.execute("mkdir -p " .. sh.q(dir)))
  local diff_ids, layer_files, history = {}, {}, {}
  for i, files in ipairs(OPAQUE_LAYERS) do
    local root = dir .. "/opaque-l" .. i
    local links = {}
    assert(os.execute("mkdir -p " .. sh.q(root)))
    for path, what in pairs(files) do
      local full = root .. "/" .. path
      assert(os.execute("mkdir -p " .. sh.q(full:match("^(.*)/"))))
      if what == "busybox" then
        assert(os.execute(("cp %s %s"):format(BB, sh.q(full))))
      elseif type(what) == "string" then
        links[#links + 1] = { path, what:match("^link:(.+)$") }
      else
        local size, mode = what, nil
        if type(what) == "table" then size, mode = what[1], what[2] end
        local fh = assert(io.open(full, "wb"))
        fh:write(rand(size))
        fh:close()
        if mode then assert(os.execute(("chmod %s %s"):format(mode, sh.q(full)))) end
      end
    end
    for _, l in ipairs(links) do
      assert(os.execute(("cd %s && ln %s %s"):format(sh.q(root), sh.q(l[2]), sh.q(l[1]))))
    end
    local tarname = "layer" .. i .. ".tar"
    local r = sh.run(("tar --sort=name --owner=0 --group=0 --numeric-owner -cf %s/%s -C %s ."):format(
      sh.q(dir), tarname, sh.q(root)))
    assert(r.code == 0, r.stderr)
    if append and OPAQUE_APPEND[i] then
      -- The same path again at the end of the tar, with other bytes.
      local again = dir .. "/again-l" .. i
      assert(os.execute("mkdir -p " .. sh.q(again)))
      local extra, size = table.unpack(OPAQUE_APPEND[i])
      local fa = assert(io.open(again .. "/" .. extra, "wb"))
      fa:write(rand(size))
      fa:close()
      r = sh.run(("tar --owner=0 --group=0 --numeric-owner -rf %s/%s -C %s ./%s"):format(sh.q(dir), tarname,
        sh.q(again), extra))
      assert(r.code == 0, r.stderr)
    end
    local sum = sh.run(("sha256sum %s/%s"):format(sh.q(dir), tarname)).stdout:match("^(%x+)")
    diff_ids[i] = "sha256:" .. sum
    layer_files[i] = tarname
    history[i] = { created_by = "layer " .. i }
  end
  local config = json.encode({ architecture = "amd64", os = "linux",
    config = { Labels = { ["myrmex.test"] = dt.run_id } },
    rootfs = { type = "layers", diff_ids = json.array(diff_ids) }, history = json.array(history) })
  local fh = assert(io.open(dir .. "/config.json", "w"))
  fh:write(config)
  fh:close()
  fh = assert(io.open(dir .. "/manifest.json", "w"))
  fh:write(json.encode(json.array({ { Config = "config.json", RepoTags = json.array({ ref }),
    Layers = json.array(layer_files) } })))
  fh:close()
  local files = { "manifest.json", "config.json" }
  for _, lf in ipairs(layer_files) do files[#files + 1] = lf end
  local r = sh.run(("cd %s && tar -cf %s.tar %s"):format(sh.q(dir), name, table.concat(files, " ")))
  assert(r.code == 0, r.stderr)
  return dir .. "/" .. name .. ".tar"
end

local function load_opaque(dir, ref)
  local r = sh.run("docker load -q -i " .. sh.q(opaque_archive(dir, "opaque", ref, false)))
  assert(r.code == 0, r.stderr)
end

local refs, work = {}, nil

local function dive(args, cwd)
  local cmd = { DIVE }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  local q = {}
  for _, a in ipairs(cmd) do q[#q + 1] = sh.q(a) end
  return sh.run("cd " .. sh.q(cwd) .. " && " .. table.concat(q, " "))
end

local function dive_json(ref)
  local out = work .. "/" .. ref:gsub("[^%w]", "_") .. ".json"
  local r = dive({ "--source", "docker", ref, "--json", out }, work)
  assert(r.code == 0, "dive failed: " .. r.stdout .. r.stderr)
  local fh = assert(io.open(out, "r"))
  local doc = json.decode(fh:read("a"))
  fh:close()
  return doc
end

setup(function()
  work = dt.context({
    ["a.bin"] = rand(30000), ["b.bin"] = rand(12000), ["b2.bin"] = rand(17000), ["c.bin"] = rand(9000),
    ["tree/x"] = rand(2000), ["tree/sub/y"] = rand(3000), ["tree/sub/deeper/z"] = rand(4000),
    ["big.bin"] = rand(400000),
  })
  for _, name in ipairs(ORDER) do
    if name == "opaque" then
      refs[name] = dt.name("dive-opaque"):lower() .. ":1"
      load_opaque(work, refs[name])
      goto continue
    end
    local fh = assert(io.open(work .. "/Dockerfile." .. name, "w"))
    fh:write(IMAGES[name])
    fh:close()
    local ref = dt.name("dive-" .. name):lower() .. ":1"
    local r = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label %s -f %s -t %s %s"):format(
      sh.q(dt.label_filter), sh.q(work .. "/Dockerfile." .. name), ref, sh.q(work)))
    assert(r.code == 0, r.stderr)
    refs[name] = ref
    ::continue::
  end
end)

teardown(function()
  dt.cleanup()
  if work then sh.run({ "rm", "-rf", work }) end
end)

local function normalize(path) return (path:gsub("^/", "")) end

describe("image.analyze follows dive's view of the stack", function()
  -- The opaque image by hand, as dive reads it. Leaves: bin/busybox B, o/d/f1 3000,
  -- o/d/sub/f2 2000, o/keep 1000, r/dir/a 700, r/dir/b 300 | o/d/new 1500 | h/one 5000,
  -- h/two 0 (a link) | h/one 5000 again | o/d: dive drops the opaque marker, so it weighs
  -- f1 + sub/f2 + new = 6500 (the file system would say 1500) | r/dir 400 | r: dive kept
  -- a and b under the file r/dir, so 400 + 700 + 300 = 1400 | -pre 50, then the whiteout of
  -- "nothere", which dive's stack lacks: its visit of the layer stops there, so zz (after it
  -- by name) is not counted.
  -- Sum B + 26850, smallest per path B + 21850 (h/one is seen twice, 5000 each time), less 1:
  -- dive made an entry for "nothere" with its "no size yet" minimum of -1 before the
  -- whiteout failed, and no later layer sizes that path. The same archive with -pre listed
  -- twice in layer 8 (50, then 70 bytes): one node of 70 for dive, so 20 more on each side.
  it("weighs whiteouts in dive's view of the stack, and stops where dive's visit stops", function()
    local fh = assert(io.open(BB, "rb"))
    local B = fh:seek("end")
    fh:close()
    local a = image.analyze(refs.opaque, { top = 1000 })
    assert.are.equal(8, #a.layers)
    assert.are.equal((B + 21849) / (B + 26850), a.efficiency)
    assert.are.equal(10000, a.wasted_bytes)
    assert.are.same({ { path = "h/one", count = 2, bytes = 10000 } }, a.inefficiencies)
    -- The file system itself is the real one: f1 and sub/f2 went with the opaque layer, h/one
    -- was overwritten, o/d/new deleted, a and b replaced by the file r/dir, r/dir deleted.
    assert.are.equal(3000 + 2000 + 5000 + 1500 + 1000 + 400, a.hidden_bytes)
    assert.are.equal(6, a.files) -- bin/busybox, h/one, h/two, o/keep, -pre, zz
    local dup = image.analyze(opaque_archive(work, "dup", "dup:1", true), { top = 1000 })
    assert.are.equal((B + 21869) / (B + 26870), dup.efficiency)
    assert.are.same({ { path = "h/one", count = 2, bytes = 10000 } }, dup.inefficiencies)
  end)
end)

describe("image.analyze against dive --json", function()
  for _, name in ipairs(ORDER) do
    it("gives dive's efficiency, wasted bytes, size and inefficient paths: " .. name, function()
      if not have_dive then
        pending("dive is not built yet (" .. DIVE .. ")")
        return
      end
      local d = dive_json(refs[name])
      local a = image.analyze(refs[name], { top = 1000 })
      assert.are.equal(#d.layer, #a.layers)
      assert.are.equal(d.image.sizeBytes, a.size)
      assert.are.equal(d.image.inefficientBytes, a.wasted_bytes)
      -- dive writes the float64 it computed; both divide the same two sums.
      assert.are.equal(d.image.efficiencyScore, a.efficiency)
      local theirs, ours = {}, {}
      for _, r in ipairs(d.image.fileReference or {}) do
        theirs[#theirs + 1] = ("%s %d %d"):format(normalize(r.file), r.count, r.sizeBytes)
      end
      for _, r in ipairs(a.inefficiencies) do
        ours[#ours + 1] = ("%s %d %d"):format(normalize(r.path), r.count, r.bytes)
      end
      table.sort(theirs)
      table.sort(ours)
      assert.are.same(theirs, ours)
      for i, L in ipairs(d.layer) do assert.are.equal(L.sizeBytes, a.layers[i].size, "layer " .. i) end
      if name ~= "clean" then assert.is_true(#ours > 0, "the image has inefficiencies") end
    end)
  end
end)

describe("image.analyze of a saved tar against dive --source docker-archive", function()
  it("gives dive's figures for an archive that lists a path twice in one layer", function()
    if not have_dive then
      pending("dive is not built yet (" .. DIVE .. ")")
      return
    end
    local path = opaque_archive(work, "dup-dive", "dup:1", true)
    local r = dive({ "--source", "docker-archive", path, "--json", work .. "/dup.json" }, work)
    assert(r.code == 0, "dive failed: " .. r.stdout .. r.stderr)
    local fh = assert(io.open(work .. "/dup.json", "r"))
    local d = json.decode(fh:read("a"))
    fh:close()
    local a = image.analyze(path, { top = 1000 })
    assert.are.equal(d.image.sizeBytes, a.size)
    assert.are.equal(d.image.inefficientBytes, a.wasted_bytes)
    assert.are.equal(d.image.efficiencyScore, a.efficiency)
    assert.are.equal(#d.image.fileReference, #a.inefficiencies)
    for i, L in ipairs(d.layer) do assert.are.equal(L.sizeBytes, a.layers[i].size, "layer " .. i) end
  end)
end)

describe("image.check against dive --ci", function()
  -- {min_efficiency, max_wasted_bytes, max_wasted_share}: around each image's figures, so
  -- each threshold decides both ways somewhere.
  local POLICIES = {
    { 0.9, 20000000, 0.1 }, -- dive's defaults but for the bytes
    { 0.5, 1000, 0.9 },
    { 0.99, 100000000, 0.99 },
    { 0.1, 100000000, 0.05 },
  }
  for _, name in ipairs(ORDER) do
    it("passes and fails as dive --ci does: " .. name, function()
      if not have_dive then
        pending("dive is not built yet (" .. DIVE .. ")")
        return
      end
      local a = image.analyze(refs[name])
      local verdicts = {}
      for _, p in ipairs(POLICIES) do
        local r = dive({ "--ci", "--source", "docker", refs[name], "--lowestEfficiency", tostring(p[1]),
          "--highestWastedBytes", tostring(p[2]), "--highestUserWastedPercent", tostring(p[3]) }, work)
        assert(r.code == 0 or r.code == 1, "dive --ci: " .. r.stdout .. r.stderr)
        local ours = image.check(a, { min_efficiency = p[1], max_wasted_bytes = p[2], max_wasted_share = p[3] })
        verdicts[#verdicts + 1] = (r.code == 0 and "PASS" or "FAIL") .. " " .. (ours.pass and "PASS" or "FAIL")
        assert.are.equal(r.code == 0, ours.pass, ("policy %s/%s/%s: dive says %s\n%s"):format(
          p[1], p[2], p[3], r.code == 0 and "pass" or "fail", r.stdout))
      end
      if name == "waste" then assert.are.equal("FAIL FAIL", verdicts[1]) end
      if name == "clean" then assert.are.equal("PASS PASS", verdicts[1]) end
    end)
  end
end)
