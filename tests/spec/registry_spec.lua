-- needs: registry
-- myrmex.registry against Debian's docker-registry on loopback (plain HTTP): the API, blobs
-- streamed and verified, chunked uploads surviving a registry crash, mounts, copies, and
-- cross-checks with skopeo in both directions.
local registry = require("myrmex.registry")
local errors = require("myrmex.errors")
local digest = require("myrmex.digest")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function raises(code, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected a " .. code .. " error")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. errors.message(err))
  return err
end

local function skopeo(args)
  local cmd = { "skopeo" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  local r = sh.run(cmd)
  assert.are.equal(0, r.code, "skopeo " .. table.concat(args, " ") .. ": " .. r.stderr)
  return r.stdout
end

describe("registry (plain HTTP registry)", function()
  local reg, c, work, img

  setup(function()
    reg = R.start({ mode = "plain" })
    work = R.tmpdir()
    img = R.make_layout(work .. "/img", { tag = "v1", files = { ["etc/motd"] = "hi\n" } })
    c = registry.connect(reg.host, { config = false })
  end)

  teardown(function()
    if reg then reg:stop() end
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  it("pings a loopback registry over plain HTTP", function()
    assert.is_true(c:ping())
    assert.are.equal("http", c.scheme)
  end)

  it("asks a loopback registry plain HTTP first: no TLS handshake (and CA bundle parse) to find it", function()
    -- A plain server that writes the first byte of every connection: 0x16 opens a TLS hello.
    local log, port = work .. "/first-bytes", R.free_port()
    local py = ([[
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(8); print("ready", flush=True)
for _ in range(8):
    c, _ = s.accept(); b = c.recv(4096)
    open(%q, "a").write("%%02x\n" %% b[0] if b else "eof\n")
    if b.startswith(b"GET"):
        c.sendall(b"HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\n"
                  b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    c.close()
]]):format(port, log)
    sh.write(work .. "/plain.py", py)
    local pid = sh.run({ "sh", "-c", ("python3 %s >%s 2>&1 & echo $!"):format(sh.q(work .. "/plain.py"),
      sh.q(work .. "/plain.out")) }).stdout:gsub("%s+$", "")
    for _ = 1, 100 do
      if (read(work .. "/plain.out") or ""):find("ready", 1, true) then break end
      os.execute("sleep 0.05")
    end
    local pc = registry.connect("127.0.0.1:" .. port, { config = false })
    local ok, err = pcall(pc.ping, pc)
    os.execute("kill " .. pid .. " 2>/dev/null")
    assert(ok, err)
    assert.are.equal("http", pc.scheme)
    -- Every connection began "GET" (0x47): the probe's and the ping's; none a TLS hello.
    assert.truthy(read(log):match("^47\n[47\n]*$"), read(log))
  end)

  it("pushes an OCI layout and reads it back: tags, digest, manifest bytes, inspect", function()
    local res = c:push_image(work .. "/img", "app/one:v1")
    assert.are.equal(img.digest, res.digest)
    assert.are.equal(3, res.layers) -- two layers and the config
    assert.are.same({ "v1" }, c:tags("app/one"))
    assert.are.equal(img.digest, c:digest("app/one:v1"))
    local m = c:manifest("app/one:v1")
    assert.are.equal(img.manifest, m.body)
    assert.are.equal(registry.media.oci_manifest, m.media_type)
    local h = c:manifest_head("app/one@" .. img.digest)
    assert.are.equal(img.digest, h.digest)
    local info = c:inspect("app/one:v1")
    assert.are.equal("linux/amd64", info.platforms[1])
    assert.are.equal("yes", info.labels["org.example.test"])
    assert.are.equal("2026-01-02T03:04:05Z", info.created)
    assert.are.equal(#info.layers, 2)
    local total = #img.config
    for _, l in ipairs(info.layers) do total = total + l.size end
    assert.are.equal(total, info.size)
  end)

  it("skips blobs the repository already has", function()
    local res = c:push_image(work .. "/img", "app/one:v1-again")
    assert.are.equal(0, res.layers)
    assert.are.equal(3, res.skipped)
  end)

  it("pages through tags and the catalog with n, last and the Link header", function()
    for i = 1, 5 do c:tag("app/one:v1", "p" .. i) end
    local all = c:tags("app/one")
    table.sort(all)
    assert.are.same({ "p1", "p2", "p3", "p4", "p5", "v1", "v1-again" }, all)
    assert.are.same({ "p1", "p2" }, c:tags("app/one", { n = 2 }))
    assert.are.same({ "p3", "p4" }, c:tags("app/one", { n = 2, last = "p2" }))
    for i = 1, 3 do c:push_image(work .. "/img", "cat/r" .. i .. ":x") end
    local page = c:catalog({ n = 2 })
    assert.are.equal(2, #page)
    local cat = c:catalog()
    assert.is_true(#cat >= 4)
    -- One repository per request: the client must follow the Link header to the end.
    local paged = c:catalog({ page_size = 1 })
    assert.are.same(cat, paged)
    local res = require("myrmex.http").request({ method = "GET", url = "http://" .. reg.host .. "/v2/_catalog?n=1" })
    assert.truthy(res.headers["link"])
    assert.are.same({ cat[2] }, c:catalog({ n = 1, last = cat[1] }))
  end)

  it("negotiates Docker schema 2 manifests, manifest lists and OCI indexes", function()
    local cfg = img.config
    local d2 = json.encode({ schemaVersion = 2, mediaType = registry.media.docker_manifest,
      config = { mediaType = registry.media.docker_config, digest = img.config_digest, size = #cfg },
      layers = json.array({ { mediaType = "application/vnd.docker.image.rootfs.diff.tar",
        digest = img.layers[1], size = c:blob_exists("app/one", img.layers[1]) } }) })
    local dd = c:put_manifest("app/one:docker", d2)
    local got = c:manifest("app/one:docker")
    assert.are.equal(registry.media.docker_manifest, got.media_type)
    assert.are.equal(dd, got.digest)
    assert.are.equal(d2, got.body)
    for _, kind in ipairs({ registry.media.docker_list, registry.media.oci_index }) do
      local list = json.encode({ schemaVersion = 2, mediaType = kind, manifests = json.array({
        { mediaType = registry.media.docker_manifest, digest = dd, size = #d2,
          platform = { os = "linux", architecture = "amd64" } },
        { mediaType = registry.media.oci_manifest, digest = img.digest, size = #img.manifest,
          platform = { os = "linux", architecture = "arm64" } } }) })
      local ld = c:put_manifest("app/one:multi", list, kind)
      local m = c:manifest("app/one:multi")
      assert.are.equal(kind, m.media_type)
      assert.are.equal(ld, m.digest)
      local info = c:inspect("app/one:multi", { platform = "linux/arm64" })
      assert.are.equal(img.digest, info.manifest_digest)
      assert.are.same({ "linux/amd64", "linux/arm64" }, info.platforms)
    end
  end)

  it("checks a reference's digest against the bytes", function()
    raises("NotFound", function() c:manifest("app/one@sha256:" .. ("0"):rep(64)) end)
    raises("NotFound", function() c:manifest("app/one:nope") end)
    assert.is_nil(c:manifest_head("app/one:nope"))
  end)

  it("streams blobs to a file, a consumer or a string, sha256 checked", function()
    local out = work .. "/blob.out"
    local size = c:blob("app/one", img.layers[1], { to = out })
    assert.are.equal(read(work .. "/img/blobs/sha256/" .. img.layers[1]:sub(8)), read(out))
    assert.are.equal(size, #read(out))
    local parts = {}
    c:blob("app/one", img.layers[2], { on_data = function(s) parts[#parts + 1] = s end })
    assert.are.equal(img.layers[2], digest.string(table.concat(parts)))
    assert.are.equal(img.config, c:blob("app/one", img.config_digest))
    assert.is_nil(c:blob_exists("app/one", "sha256:" .. ("1"):rep(64)))
  end)

  it("refuses a blob tampered in the registry's storage and leaves no file", function()
    local tag_img = R.make_layout(work .. "/tamper", { tag = "t", files = { ["x"] = ("A"):rep(5000) } })
    c:push_image(work .. "/tamper", "app/tamper:t")
    local victim = tag_img.layers[2]
    local path = reg:blob_path(victim)
    local data = read(path)
    local f = assert(io.open(path, "wb"))
    f:write((data:gsub("AAAA", "AAAB", 1)))
    f:close()
    local out = work .. "/tampered.out"
    local err = raises("DigestMismatch", function() c:blob("app/tamper", victim, { to = out }) end)
    assert.truthy(tostring(err):find(victim, 1, true))
    assert.is_nil(io.open(out, "rb"))
    local dir = work .. "/tamper-pull"
    raises("DigestMismatch", function() c:pull_image("app/tamper:t", { to = dir }) end)
    assert.is_nil(io.open(dir .. "/blobs/sha256/" .. victim:sub(8), "rb"))
    assert.is_nil(io.open(dir .. "/index.json", "rb"))
    -- A manifest tampered on disk no longer matches Docker-Content-Digest (from the tag link).
    local mpath = reg:blob_path(tag_img.digest)
    local mbytes = read(mpath)
    f = assert(io.open(mpath, "wb"))
    f:write((mbytes:gsub('"schemaVersion":2', '"schemaVersion": 2', 1)))
    f:close()
    err = raises("DigestMismatch", function() c:manifest("app/tamper:t") end)
    assert.truthy(tostring(err):find(tag_img.digest, 1, true))
  end)

  it("rejects a manifest that references a missing blob, creating no tag", function()
    local m = json.encode({ schemaVersion = 2, mediaType = registry.media.oci_manifest,
      config = { mediaType = registry.media.oci_config, digest = img.config_digest, size = #img.config },
      layers = json.array({ { mediaType = registry.media.oci_layer, digest = "sha256:" .. ("2"):rep(64), size = 10 } }) })
    local err = raises("NotFound", function() c:put_manifest("app/one:broken", m) end)
    assert.are.equal("MANIFEST_BLOB_UNKNOWN", err.details.errors[1].code)
    assert.is_nil(c:manifest_head("app/one:broken"))
  end)

  it("uploads in chunks (PATCH with Content-Range), mounts across repositories", function()
    local data = ("0123456789abcdef"):rep(700000) -- 11.2 MB
    local pos = 0
    local cc = registry.connect(reg.host, { config = false, chunk_size = 3 * 1024 * 1024 })
    local d = cc:upload_chunked("app/chunks", function(n)
      if pos >= #data then return nil end
      local s = data:sub(pos + 1, pos + n)
      pos = pos + #s
      return s
    end)
    assert.are.equal(digest.string(data), d)
    assert.are.equal(#data, cc:blob_exists("app/chunks", d))
    assert.is_true(cc:mount("app/mounted", d, "app/chunks"))
    assert.are.equal(#data, cc:blob_exists("app/mounted", d))
    -- A wrong expected digest aborts the upload before it is committed.
    pos = 0
    raises("DigestMismatch", function()
      cc:upload_chunked("app/chunks2", function(n)
        if pos >= 1000 then return nil end
        pos = pos + 1000
        return ("z"):rep(1000)
      end, "sha256:" .. ("3"):rep(64))
    end)
    assert.is_nil(cc:blob_exists("app/chunks2", digest.string(("z"):rep(1000))))
  end)

  it("resumes a chunked upload when the registry is killed and restarted mid-upload", function()
    local cc = registry.connect(reg.host, { config = false, chunk_size = 1024 * 1024 })
    local chunks, calls = 6, 0
    local h = digest.new("sha256")
    local ok, res = pcall(cc.upload_chunked, cc, "app/crash", function(n)
      calls = calls + 1
      if calls == 3 then
        reg:kill()
        reg:restart_later(1.5)
      end
      if calls > chunks then return nil end
      local s = string.char(64 + calls):rep(n)
      h:update(s)
      return s
    end)
    reg.pid = reg.pid -- the restarted process is the helper's to stop
    os.execute("sleep 0.5")
    assert.is_true(ok, ok or errors.message(res))
    local d = h:final()
    assert.are.equal(d, res)
    assert.are.equal(chunks * 1024 * 1024, cc:blob_exists("app/crash", d))
    local out = work .. "/crash.out"
    cc:blob("app/crash", d, { to = out })
  end)

  it("finishes a push when the registry is killed between layers and comes back", function()
    local big = R.make_layout(work .. "/restart", { tag = "r", random = { 8 * 1024 * 1024 } })
    local cc = registry.connect(reg.host, { config = false, parallel = 1 })
    local retried = 0
    local remove = require("myrmex.log").add_hook(function(rec)
      if rec.msg == "registry: layer pushed" and reg.pid and retried == 0 then
        reg:kill()
        reg:restart_later(1)
      elseif rec.msg:find("retrying", 1, true) then
        retried = retried + 1
      end
    end)
    local ok, res = pcall(cc.push_image, cc, work .. "/restart", "app/restart:r")
    remove()
    assert(ok, ok or errors.message(res))
    assert.is_true(retried > 0)
    assert.are.equal(big.digest, cc:digest("app/restart:r"))
    local dir = work .. "/restart-pull"
    cc:pull_image("app/restart:r", { to = dir })
    for _, d in ipairs(big.layers) do
      assert.are.equal(read(work .. "/restart/blobs/sha256/" .. d:sub(8)), read(dir .. "/blobs/sha256/" .. d:sub(8)))
    end
  end)

  it("fails cleanly when the registry stays down, and no tag points at the image", function()
    local big = R.make_layout(work .. "/down", { tag = "d", random = { 3 * 1024 * 1024 } })
    local cc = registry.connect(reg.host, { config = false })
    reg:kill()
    local saved = registry.upload_retries
    registry.upload_retries = 2
    local ok, err = pcall(cc.push_image, cc, work .. "/down", "app/down:d")
    registry.upload_retries = saved
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Unreachable"), errors.message(err))
    reg:start_process()
    assert.is_nil(cc:manifest_head("app/down:d"))
    assert.is_truthy(big.digest)
  end)

  it("copies within a registry by mounting, and between registries streaming", function()
    local other = R.start({ mode = "plain" })
    local ok, err = pcall(function()
      local d, stats = registry.copy(reg.host .. "/app/one:v1", reg.host .. "/copies/one:c1", { config = false })
      assert.are.equal(img.digest, d)
      assert.are.equal(2 + 1, stats.mounted)
      local d2, stats2 = registry.copy(reg.host .. "/app/one:v1", other.host .. "/far/one:c2", { config = false })
      assert.are.equal(img.digest, d2)
      assert.are.equal(3, stats2.copied)
      local oc = registry.connect(other.host, { config = false })
      assert.are.equal(img.manifest, oc:manifest("far/one:c2").body)
      -- An index copies one platform by default, all of them when asked.
      local d3 = registry.copy(reg.host .. "/app/one:multi", other.host .. "/far/multi:all",
        { config = false, all_platforms = true })
      assert.are.equal(c:digest("app/one:multi"), d3)
      local d4 = registry.copy(reg.host .. "/app/one:multi", other.host .. "/far/multi:arm",
        { config = false, platform = "linux/arm64" })
      assert.are.equal(img.digest, d4)
    end)
    other:stop()
    assert(ok, err)
  end)

  it("pulls into an OCI layout and a docker-archive that skopeo reads", function()
    local dir = work .. "/pulled"
    local res = c:pull_image("app/one:v1", { to = dir })
    assert.are.equal(img.digest, res.digest)
    for _, d in ipairs(img.layers) do
      assert.are.equal(read(work .. "/img/blobs/sha256/" .. d:sub(8)), read(dir .. "/blobs/sha256/" .. d:sub(8)))
    end
    local listed = json.decode(skopeo({ "inspect", "--raw", "oci:" .. dir .. ":v1" }))
    assert.are.equal(img.config_digest, listed.config.digest)
    local tar = work .. "/pulled.tar"
    c:pull_image("app/one:v1", { to = tar, format = "docker-archive" })
    local out = json.decode(skopeo({ "inspect", "docker-archive:" .. tar }))
    assert.are.equal(#img.layers, #out.Layers)
    assert.are.equal("yes", out.Labels["org.example.test"])
    -- An index pulled with all_platforms keeps the index and every child manifest.
    local all = work .. "/pulled-all"
    local multi = c:manifest("app/one:multi")
    assert.are.equal(multi.digest, c:pull_image("app/one:multi", { to = all, all_platforms = true }).digest)
    local index = json.decode(read(all .. "/index.json"))
    assert.are.equal(multi.digest, index.manifests[1].digest)
    for _, child in ipairs(multi.manifest.manifests) do
      assert.are.equal(child.digest, digest.string(read(all .. "/blobs/sha256/" .. child.digest:sub(8))))
    end
    -- ... and pushes back from that tar, giving the same layers (uncompressed when asked;
    -- the default, gzip, is spec:registry_compress's).
    local pushed = c:push_image(tar, "app/from-tar:1", { compression = "none" })
    local info = c:inspect("app/from-tar:1")
    assert.are.equal(img.layers[1], info.layers[1].digest)
    assert.are.equal(img.config_digest, info.config_digest)
    assert.truthy(pushed.digest)
  end)

  it("pushes a classic docker-archive (<id>/layer.tar, <id>.json config) with digests computed", function()
    local archive = require("myrmex.core.archive")
    local tar = work .. "/classic.tar"
    local layer_path = work .. "/img/blobs/sha256/" .. img.layers[1]:sub(8)
    local w = archive.writer(tar, { format = "pax" })
    w:add({ path = "0123abcd/", type = "dir", mode = 493 })
    w:add({ path = "0123abcd/layer.tar", data = { file = layer_path }, mode = 420 })
    w:add({ path = "0123abcd/VERSION", data = "1.0", mode = 420 })
    w:add({ path = img.config_digest:sub(8) .. ".json", data = img.config, mode = 420 })
    w:add({ path = "manifest.json", mode = 420, data = json.encode(json.array({ {
      Config = img.config_digest:sub(8) .. ".json", RepoTags = json.array({ "classic/app:1" }),
      Layers = json.array({ "0123abcd/layer.tar" }) } })) })
    w:close()
    local res = c:push_image(tar, "classic/app:1", { name = "classic/app:1", compression = "none" })
    local info = c:inspect("classic/app:1")
    assert.are.equal(img.layers[1], info.layers[1].digest)
    assert.are.equal(registry.media.oci_layer, info.layers[1].media_type)
    assert.are.equal(img.config_digest, info.config_digest)
    assert.are.equal(res.digest, info.digest)
    local sk = json.decode(skopeo({ "inspect", "--tls-verify=false", "docker://" .. reg.host .. "/classic/app:1" }))
    assert.are.same({ img.layers[1] }, sk.Layers)
  end)

  it("is copied by skopeo with identical digests, and pulls what skopeo pushed bit for bit", function()
    local src = "docker://" .. reg.host .. "/app/one:v1"
    skopeo({ "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
      src, "docker://" .. reg.host .. "/skopeo/copy:1" })
    assert.are.equal(img.digest, c:digest("skopeo/copy:1"))
    local sk = json.decode(skopeo({ "inspect", "--tls-verify=false", "docker://" .. reg.host .. "/app/one:v1" }))
    assert.are.equal(img.digest, sk.Digest)
    -- skopeo pushes its own image (gzip-compressed by skopeo), myrmex pulls it.
    local mine = R.make_layout(work .. "/sk-src", { tag = "s", files = { ["a/b"] = "skopeo was here" } })
    skopeo({ "copy", "--dest-tls-verify=false", "--dest-compress", "oci:" .. work .. "/sk-src:s",
      "docker://" .. reg.host .. "/skopeo/pushed:s" })
    local skd = json.decode(skopeo({ "inspect", "--tls-verify=false", "docker://" .. reg.host .. "/skopeo/pushed:s" })).Digest
    local dir = work .. "/sk-pulled"
    local res = c:pull_image("skopeo/pushed:s", { to = dir })
    assert.are.equal(skd, res.digest)
    local raw = skopeo({ "inspect", "--raw", "--tls-verify=false", "docker://" .. reg.host .. "/skopeo/pushed:s" })
    assert.are.equal(raw, read(dir .. "/blobs/sha256/" .. skd:sub(8)))
    local m = json.decode(raw)
    for _, l in ipairs(m.layers) do
      local blob = read(dir .. "/blobs/sha256/" .. l.digest:sub(8))
      assert.are.equal(l.digest, digest.string(blob))
      assert.are.equal(l.size, #blob)
    end
    assert.truthy(mine.digest)
  end)

  it("raises Invalid for bad references and misuse names the function", function()
    for _, bad in ipairs({ "", "UPPER/case", "a//b", "repo:-tag", "repo@sha256:abc", "a b" }) do
      raises("Invalid", function() c:manifest(bad) end)
    end
    raises("Invalid", function() c:manifest("other.example:5000/x:1") end)
    local ok, err = pcall(c.tags, c, 42)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("registry.tags", 1, true))
    ok, err = pcall(registry.connect, reg.host, { pasword = "x" })
    assert.truthy(tostring(err):find("pasword", 1, true))
  end)

  it("records instead of writing in plan mode", function()
    local plan = require("myrmex.plan")
    plan.set_active(true)
    local ok, res = pcall(c.push_image, c, work .. "/img", "app/planned:1")
    plan.set_active(false)
    assert(ok, res)
    assert.is_true(res.planned)
    assert.is_nil(c:manifest_head("app/planned:1"))
  end)

  it("copies of a tampered blob raise DigestMismatch with both digests, and put no tag", function()
    local t = R.make_layout(work .. "/ctamper", { tag = "t", files = { ["y"] = ("B"):rep(6000) } })
    c:push_image(work .. "/ctamper", "app/ctamper:t")
    local victim = t.layers[2]
    local path = reg:blob_path(victim)
    local data = read(path)
    local bad = data:gsub("BBBB", "BBBC", 1)
    local f = assert(io.open(path, "wb"))
    f:write(bad)
    f:close()
    local other = R.start({ mode = "plain" })
    local ok, err = pcall(function()
      local oc = registry.connect(other.host, { config = false })
      for _, opts in ipairs({ { config = false }, { config = false, compression = "gzip" } }) do
        local e = raises("DigestMismatch", function()
          registry.copy(reg.host .. "/app/ctamper:t", other.host .. "/far/ctamper:t", opts)
        end)
        local msg = tostring(e)
        assert.truthy(msg:find("expected " .. victim, 1, true), msg)
        assert.truthy(msg:find(digest.string(bad), 1, true), msg)
        assert.are.equal(victim, e.details.expected)
        assert.are.equal(digest.string(bad), e.details.actual)
        assert.is_nil(oc:manifest_head("far/ctamper:t"))
        assert.is_nil(oc:blob_exists("far/ctamper", victim))
      end
    end)
    other:stop()
    f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    assert(ok, err)
  end)

  it("pulls add to an OCI layout's index.json, replacing only the entry with the same name", function()
    local dir = work .. "/shared-layout"
    c:push_image(work .. "/img", "app/two:v2")
    c:pull_image("app/one:v1", { to = dir })
    c:pull_image("app/two:v2", { to = dir })
    local index = json.decode(read(dir .. "/index.json"))
    assert.are.equal(2, #index.manifests)
    c:pull_image("app/one:v1", { to = dir })
    index = json.decode(read(dir .. "/index.json"))
    local names = {}
    for _, e in ipairs(index.manifests) do names[#names + 1] = e.annotations["org.opencontainers.image.ref.name"] end
    table.sort(names)
    assert.are.same({ "v1", "v2" }, names)
    -- skopeo reads both images out of the one layout.
    for _, n in ipairs(names) do
      assert.are.equal(img.config_digest, json.decode(skopeo({ "inspect", "--raw", "oci:" .. dir .. ":" .. n })).config.digest)
    end
  end)

  it("checks blobs already in a layout: a corrupted one of the same size is fetched again", function()
    local dir = work .. "/verify-layout"
    c:pull_image("app/one:v1", { to = dir })
    local victim = dir .. "/blobs/sha256/" .. img.layers[1]:sub(8)
    local good = read(victim)
    local f = assert(io.open(victim, "wb"))
    f:write(("\0"):rep(#good))
    f:close()
    local lines = sh.capture_log(function() c:pull_image("app/one:v1", { to = dir }) end)
    assert.are.equal(img.layers[1], (digest.file(victim)))
    local warned = false
    for _, rec in ipairs(lines) do
      if tostring(rec.msg):find("does not match its digest", 1, true) then warned = true end
    end
    assert.is_true(warned)
  end)

  it("pulls by digest into a docker-archive without inventing a tag", function()
    local tar = work .. "/by-digest.tar"
    c:pull_image("app/one@" .. img.digest, { to = tar, format = "docker-archive" })
    local archive = require("myrmex.core.archive")
    local rd <close> = archive.open(tar)
    local manifest
    for e in rd:entries() do
      if e.path == "manifest.json" then manifest = json.decode(rd:read_all(1 << 20)) end
    end
    assert.are.same({}, manifest[1].RepoTags)
    local out = json.decode(skopeo({ "inspect", "docker-archive:" .. tar }))
    assert.are.equal(#img.layers, #out.Layers)
    -- By tag, the tag is kept.
    c:pull_image("app/one:v1", { to = tar, format = "docker-archive" })
    rd:close()
    local rd2 <close> = archive.open(tar)
    for e in rd2:entries() do
      if e.path == "manifest.json" then manifest = json.decode(rd2:read_all(1 << 20)) end
    end
    assert.are.same({ reg.host .. "/app/one:v1" }, manifest[1].RepoTags)
  end)

  it("copies a chosen subset of an index's platforms and rewrites the index to match", function()
    local other = R.start({ mode = "plain" })
    local ok, err = pcall(function()
      local oc = registry.connect(other.host, { config = false })
      local d = registry.copy(reg.host .. "/app/one:multi", other.host .. "/far/subset:1",
        { config = false, platforms = { "linux/arm64" } })
      local m = oc:manifest("far/subset:1")
      assert.are.equal(d, m.digest)
      assert.are_not.equal(c:digest("app/one:multi"), d)
      assert.are.equal(1, #m.manifest.manifests)
      assert.are.equal(img.digest, m.manifest.manifests[1].digest)
      assert.are.equal(img.manifest, oc:manifest("far/subset@" .. img.digest).body)
      -- Both platforms asked for: the index is copied as it is.
      assert.are.equal(c:digest("app/one:multi"), (registry.copy(reg.host .. "/app/one:multi",
        other.host .. "/far/subset:2", { config = false, platforms = { "linux/amd64", "linux/arm64" } })))
      raises("NotFound", function()
        registry.copy(reg.host .. "/app/one:multi", other.host .. "/far/subset:3",
          { config = false, platforms = { "linux/s390x" } })
      end)
      local okm, msg = pcall(registry.copy, reg.host .. "/app/one:multi", other.host .. "/x:1", { platforms = "linux" })
      assert.is_false(okm)
      assert.truthy(tostring(msg):find("registry.copy: platforms must be", 1, true), tostring(msg))
    end)
    other:stop()
    assert(ok, err)
  end)

  it("deletes a manifest by tag (resolved to its digest)", function()
    c:push_image(work .. "/img", "app/del:1")
    local d = c:delete("app/del:1")
    assert.are.equal(img.digest, d)
    assert.is_nil(c:manifest_head("app/del@" .. d))
  end)
end)
