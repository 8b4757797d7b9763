-- needs: docker registry
-- myrmex.registry with the local engine and the docker CLI: an image myrmex pushes from the
-- engine is pulled by `docker pull` and runs; an image `docker push` sent is pulled by myrmex
-- into the engine and runs; a layout myrmex pushes is pulled by dockerd too.
local registry = require("myrmex.registry")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function docker(args)
  local r = dt.cli(args)
  assert.are.equal(0, r.code, "docker " .. args .. ": " .. r.stderr)
  return r.stdout
end

describe("registry with the Docker engine", function()
  local reg, c, work
  local refs = {}

  setup(function()
    reg = R.start({ mode = "plain" })
    c = registry.connect(reg.host, { config = false })
    work = R.tmpdir()
  end)

  teardown(function()
    for _, r in ipairs(refs) do dt.cli("rmi -f " .. sh.q(r) .. " >/dev/null 2>&1") end
    dt.cleanup()
    if reg then reg:stop() end
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  local function track(ref)
    refs[#refs + 1] = ref
    return ref
  end

  it("pushes an engine image that docker pulls and runs", function()
    local base = dt.image()
    local res = c:push_image(base, "engine/busybox:1")
    assert.truthy(res.digest:match("^sha256:%x+$"))
    local ref = track(reg.host .. "/engine/busybox:1")
    dt.cli("rmi -f " .. sh.q(ref) .. " >/dev/null 2>&1")
    docker("pull -q " .. sh.q(ref))
    local out = docker("run --rm --network none " .. sh.q(ref) .. " echo pushed-by-myrmex")
    assert.are.equal("pushed-by-myrmex\n", out)
    -- The engine sees the same image: same config digest (image ID) as the source.
    local src_id = docker("image inspect -f '{{.Id}}' " .. sh.q(base)):gsub("%s+$", "")
    local info = c:inspect("engine/busybox:1")
    assert.are.equal(src_id, info.config_digest)
    local repo_digests = docker("image inspect -f '{{json .RepoDigests}}' " .. sh.q(ref))
    assert.truthy(repo_digests:find(res.digest, 1, true), repo_digests)
  end)

  it("streams an engine push: nothing is written to disk, skopeo and docker pull the same digests", function()
    local base = dt.image()
    local script = work .. "/push.lua"
    local tmp = work .. "/tmpdir"
    os.execute("mkdir -p " .. sh.q(tmp))
    sh.write(script, ("local c = require('myrmex.registry').connect(%q, { config = false })\n"
      .. "print(c:push_image(%q, 'engine/streamed:1', { compression = 'none' }).digest)\n"):format(reg.host, base))
    -- LeakSanitizer cannot run under a tracer: an ASan build is traced without it.
    local r = sh.run({ "strace", "-f", "-qq", "-e", "trace=openat,creat,mkdir,rename", "-o", work .. "/trace",
      sh.bin, script }, { env = { ASAN_OPTIONS = "detect_leaks=0", TMPDIR = tmp } })
    assert.are.equal(0, r.code, r.stderr)
    local digest = r.stdout:match("sha256:%x+")
    for line in sh.read(work .. "/trace"):gmatch("[^\n]+") do
      assert.falsy(line:find("O_CREAT", 1, true) or line:find("O_WRONLY", 1, true) or line:find("mkdir(", 1, true)
        or line:find("rename(", 1, true), line)
    end
    assert.are.equal("", sh.run({ "ls", "-A", tmp }).stdout)
    local insp = sh.run({ "skopeo", "inspect", "--tls-verify=false", "--raw",
      "docker://" .. reg.host .. "/engine/streamed:1" })
    assert.are.equal(0, insp.code, insp.stderr)
    assert.are.equal(digest, require("myrmex.digest").string(insp.stdout))
    -- skopeo copies it out bit for bit: the layers are the engine's diff ids.
    local diff_ids = json.decode(docker("image inspect -f '{{json .RootFS.Layers}}' " .. sh.q(base)))
    local cp = sh.run({ "skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-oci-accept-uncompressed-layers",
      "docker://" .. reg.host .. "/engine/streamed:1", "oci:" .. work .. "/sk:1" })
    assert.are.equal(0, cp.code, cp.stderr)
    local m = json.decode(sh.read(work .. "/sk/blobs/sha256/" .. digest:sub(8)))
    for i, l in ipairs(m.layers) do
      assert.are.equal(diff_ids[i], l.digest)
      assert.are.equal(l.digest, (require("myrmex.digest").file(work .. "/sk/blobs/sha256/" .. l.digest:sub(8))))
    end
    assert.are.equal(#diff_ids, #m.layers)
    -- docker pulls the same manifest digest.
    local ref = track(reg.host .. "/engine/streamed:1")
    docker("pull -q " .. sh.q(ref))
    assert.truthy(docker("image inspect -f '{{json .RepoDigests}}' " .. sh.q(ref)):find(digest, 1, true))
  end)

  it("streams a gzip engine push too: the only files written are the layer cache's", function()
    local base = dt.image()
    local script = work .. "/push-gz.lua"
    local tmp, cache = work .. "/tmpdir-gz", work .. "/cache-gz"
    os.execute("mkdir -p " .. sh.q(tmp))
    sh.write(script, ("local c = require('myrmex.registry').connect(%q, { config = false })\n"
      .. "print(c:push_image(%q, 'engine/streamed-gz:1').digest)\n"):format(reg.host, base))
    local r = sh.run({ "strace", "-f", "-qq", "-e", "trace=openat,creat,mkdir,rename", "-o", work .. "/trace-gz",
      sh.bin, script }, { env = { ASAN_OPTIONS = "detect_leaks=0", TMPDIR = tmp, XDG_CACHE_HOME = cache } })
    assert.are.equal(0, r.code, r.stderr)
    local writes = 0
    for line in sh.read(work .. "/trace-gz"):gmatch("[^\n]+") do
      local failed = line:find("= -1", 1, true)
      if not failed and (line:find("O_CREAT", 1, true) or line:find("O_WRONLY", 1, true)
          or line:find("mkdir(", 1, true) or line:find("rename(", 1, true)) then
        assert.truthy(line:find(cache, 1, true), line)
        writes = writes + 1
      end
    end
    assert.truthy(writes > 0)
    assert.are.equal("", sh.run({ "ls", "-A", tmp }).stdout)
    local m = json.decode(c:manifest("engine/streamed-gz:1").body)
    assert.are.equal(registry.media.oci_layer_gzip, m.layers[1].mediaType)
  end)

  it("skips the layers the registry has, from the diff ids, and the image still runs", function()
    local base = dt.image()
    c:push_image(base, "engine/derived:base", { compression = "none" })
    local dir = dt.context({ Dockerfile = "FROM " .. base .. "\nRUN echo " .. dt.run_id .. " > /derived\n" })
    local name = track("mxt-derived-" .. dt.run_id .. ":1")
    local b = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label %s -t %s %s"):format(
      sh.q(dt.label_filter), sh.q(name), sh.q(dir)))
    os.execute("rm -rf " .. sh.q(dir))
    assert.are.equal(0, b.code, b.stderr)
    local res = c:push_image(name, "engine/derived:1", { compression = "none" })
    -- The root layer is always recognised; the other base layer when its place in the chain is
    -- known by the time its entry passes. The new layer is always uploaded.
    assert.truthy(res.skipped >= 1, "skipped " .. res.skipped)
    assert.truthy(res.layers >= 1)
    assert.are.equal(3, res.skipped + res.layers)
    local diff_ids = json.decode(docker("image inspect -f '{{json .RootFS.Layers}}' " .. sh.q(name)))
    local m = json.decode(c:manifest("engine/derived:1").body)
    for i, l in ipairs(m.layers) do assert.are.equal(diff_ids[i], l.digest) end
    local ref = track(reg.host .. "/engine/derived:1")
    docker("pull -q " .. sh.q(ref))
    assert.are.equal(dt.run_id .. "\n", docker("run --rm --network none " .. sh.q(ref) .. " cat /derived"))
  end)

  it("fails cleanly when the engine's save stream breaks mid-layer: the error says so, no tag", function()
    local proxy = dt.proxy({ cut_save_after = 500000 })
    local d = require("myrmex.docker").connect({ host = proxy.host })
    local ok, err = pcall(c.push_image, c, dt.image(), "engine/broken:1", { docker = d })
    proxy.stop()
    assert.is_false(ok)
    assert.are.equal("Unreachable", err.code, tostring(err))
    local msg = tostring(err)
    assert.truthy(msg:find("engine save of " .. dt.image(), 1, true), msg)
    assert.truthy(msg:find("layer.tar", 1, true), msg)
    assert.is_nil(c:manifest_head("engine/broken:1"))
    local tags_ok, tags = pcall(c.tags, c, "engine/broken")
    assert.truthy(not tags_ok or #tags == 0)
  end)

  it("pushes an OCI layout (FROM scratch busybox) that docker pulls and runs", function()
    local img = R.make_layout(work .. "/img", { tag = "v1" })
    c:push_image(work .. "/img", "layout/busybox:v1")
    local ref = track(reg.host .. "/layout/busybox:v1")
    docker("pull -q " .. sh.q(ref))
    assert.are.equal("hello from myrmex\n", docker("run --rm --network none " .. sh.q(ref)))
    local repo_digests = docker("image inspect -f '{{json .RepoDigests}}' " .. sh.q(ref))
    assert.truthy(repo_digests:find(img.digest, 1, true), repo_digests)
  end)

  it("pulls what docker pushed into the engine, and it runs", function()
    local base = dt.image()
    local ref = track(reg.host .. "/docker/pushed:1")
    docker("tag " .. sh.q(base) .. " " .. sh.q(ref))
    docker("push -q " .. sh.q(ref))
    local pushed = c:digest("docker/pushed:1")
    docker("rmi " .. sh.q(ref))
    local local_ref = track(reg.host .. "/docker/pushed:1")
    local res = c:pull_image("docker/pushed:1", { format = "engine" })
    assert.are.equal(pushed, res.digest)
    assert.truthy(#res.loaded >= 1)
    assert.are.equal("pulled-by-myrmex\n",
      docker("run --rm --network none " .. sh.q(local_ref) .. " echo pulled-by-myrmex"))
    -- The layers docker pushed (gzip-compressed by docker) arrive bit for bit.
    local dir = work .. "/from-docker"
    c:pull_image("docker/pushed:1", { to = dir })
    local m = json.decode(c:manifest("docker/pushed:1").body)
    for _, l in ipairs(m.layers) do
      local d, size = require("myrmex.digest").file(dir .. "/blobs/sha256/" .. l.digest:sub(8))
      assert.are.equal(l.digest, d)
      assert.are.equal(l.size, size)
    end
  end)
end)
