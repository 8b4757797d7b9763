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

  it("streams an engine push: nothing is written to disk on the way, skopeo sees the same digest", function()
    local base = dt.image()
    local script = work .. "/push.lua"
    sh.write(script, ("local c = require('myrmex.registry').connect(%q, { config = false })\n"
      .. "print(c:push_image(%q, 'engine/streamed:1').digest)\n"):format(reg.host, base))
    -- LeakSanitizer cannot run under a tracer: an ASan build is traced without it.
    local r = sh.run({ "strace", "-f", "-qq", "-e", "trace=openat,creat,mkdir,rename", "-o", work .. "/trace",
      sh.bin, script }, { env = { ASAN_OPTIONS = "detect_leaks=0" } })
    assert.are.equal(0, r.code, r.stderr)
    local digest = r.stdout:match("sha256:%x+")
    for line in sh.read(work .. "/trace"):gmatch("[^\n]+") do
      assert.falsy(line:find("O_CREAT", 1, true) or line:find("O_WRONLY", 1, true) or line:find("mkdir(", 1, true)
        or line:find("rename(", 1, true), line)
    end
    local insp = sh.run({ "skopeo", "inspect", "--tls-verify=false", "--raw",
      "docker://" .. reg.host .. "/engine/streamed:1" })
    assert.are.equal(0, insp.code, insp.stderr)
    assert.are.equal(digest, require("myrmex.digest").string(insp.stdout))
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
