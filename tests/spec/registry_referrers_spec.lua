-- needs: registry
-- What refers to an image travels with it (docs/registry.md, "Referrers"): client:referrers
-- through the OCI 1.1 API or the tag schema fallback, and copy bringing signatures,
-- attestations and SBOMs along — artifacts with a `subject` made here, then the real thing with
-- the test bed's cosign (a local key, no transparency log) and oras as reference clients,
-- against distribution 2.8 (no referrers API: the fallback tags) and go-containerregistry's
-- registry serving the API (tests/tools/registry, ggcr-registry).
local registry = require("myrmex.registry")
local digest = require("myrmex.digest")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local TOOLS = "/usr/local/lib/myrmex-test/bin"
-- go-containerregistry's registry with the referrers API (tests/tools/registry).
local GGCR = "ggcr-registry"
local EMPTY = "{}"
local EMPTY_DESC = { mediaType = "application/vnd.oci.empty.v1+json", digest = digest.string(EMPTY), size = 2 }

local function have_tool(name)
  return sh.run({ "test", "-x", TOOLS .. "/" .. name }).code == 0
end

local function ok_run(cmd, opts)
  local r = sh.run(cmd, opts)
  assert.are.equal(0, r.code, table.concat(cmd, " ") .. ":\n" .. r.stdout .. r.stderr)
  return r.stdout
end

-- An artifact manifest (OCI 1.1: artifactType, empty config, one blob) whose subject is `subject`.
local function put_artifact(c, repo, artifact_type, content, subject)
  c:upload(repo, EMPTY_DESC.digest, EMPTY, 2)
  local blob_digest = digest.string(content)
  c:upload(repo, blob_digest, content, #content)
  local body = json.encode({ schemaVersion = 2, mediaType = registry.media.oci_manifest, artifactType = artifact_type,
    config = EMPTY_DESC, layers = json.array({ { mediaType = artifact_type, digest = blob_digest, size = #content } }),
    subject = subject, annotations = { ["org.example.kind"] = artifact_type } }, { sort_keys = true })
  local d = c:put_manifest(repo .. "@" .. digest.string(body), body)
  return { mediaType = registry.media.oci_manifest, digest = d, size = #body, artifactType = artifact_type,
    annotations = { ["org.example.kind"] = artifact_type } }
end

-- What an OCI 1.1 client does on a registry without the API: index tagged sha256-<hex>.
local function put_fallback(c, repo, subject_digest, descs)
  local body = json.encode({ schemaVersion = 2, mediaType = registry.media.oci_index,
    manifests = json.array(descs) }, { sort_keys = true })
  c:put_manifest(repo .. ":" .. registry.fallback_tag(subject_digest), body)
end

-- A ggcr-registry on a free loopback port, answering /v2/ before this returns; :stop() ends it.
local function start_ggcr()
  local port = R.free_port()
  local host = "127.0.0.1:" .. port
  local pid = ok_run({ "sh", "-c", ("%s -addr %s >/dev/null 2>&1 & echo $!"):format(TOOLS .. "/" .. GGCR, host) })
    :gsub("%s+$", "")
  for _ = 1, 200 do
    if sh.run({ "curl", "-sf", "http://" .. host .. "/v2/" }).code == 0 then break end
    os.execute("sleep 0.05")
  end
  return { host = host, stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end }
end

describe("registry referrers", function()
  local src, dst, sc, dc, work, img

  setup(function()
    src = R.start({ mode = "plain" })
    dst = R.start({ mode = "plain" })
    sc = registry.connect(src.host, { config = false })
    dc = registry.connect(dst.host, { config = false })
    work = R.tmpdir()
    img = R.make_layout(work .. "/img", { tag = "v1" })
    sc:push_image(work .. "/img", "ref/app:v1")
  end)

  teardown(function()
    if src then src:stop() end
    if dst then dst:stop() end
    if work then os.execute("rm -rf " .. sh.q(work)) end
  end)

  it("lists referrers from the tag schema fallback where the registry has no API, filtered by type", function()
    local subject = { mediaType = registry.media.oci_manifest, digest = img.digest, size = #img.manifest }
    local sbom = put_artifact(sc, "ref/app", "application/spdx+json", '{"spdxVersion":"SPDX-2.3"}', subject)
    local vex = put_artifact(sc, "ref/app", "application/openvex+json", '{"statements":[]}', subject)
    put_fallback(sc, "ref/app", img.digest, { sbom, vex })
    local list, fallback = sc:referrers("ref/app:v1")
    assert.is_true(fallback)
    assert.are.equal(2, #list)
    local only, _ = sc:referrers("ref/app@" .. img.digest, { artifact_type = "application/openvex+json" })
    assert.are.equal(1, #only)
    assert.are.equal(vex.digest, only[1].digest)
    -- Nothing refers to the SBOM yet: an empty list, not an error.
    assert.are.same({}, (sc:referrers("ref/app@" .. sbom.digest)))
    local ok, err = pcall(sc.referrers, sc, "ref/app:v1", { artifactType = "x" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("registry.referrers", 1, true), tostring(err))
    assert.truthy(tostring(err):find("artifactType", 1, true), tostring(err))
  end)

  it("copies the referrers graph with the image and writes the destination's fallback index", function()
    local subject = { mediaType = registry.media.oci_manifest, digest = img.digest, size = #img.manifest }
    local sbom = put_artifact(sc, "ref/graph", "application/spdx+json", '{"spdxVersion":"SPDX-2.3","n":1}', subject)
    -- A signature of the SBOM: a referrer of a referrer.
    local sig = put_artifact(sc, "ref/graph", "application/vnd.dev.cosign.artifact.sig.v1+json", "sig-bytes",
      { mediaType = sbom.mediaType, digest = sbom.digest, size = sbom.size })
    sc:push_image(work .. "/img", "ref/graph:v1")
    put_fallback(sc, "ref/graph", img.digest, { sbom })
    put_fallback(sc, "ref/graph", sbom.digest, { sig })
    -- cosign's tag scheme (no subject): sha256-<hex>.sig
    local cosign_sig = put_artifact(sc, "ref/graph", "application/vnd.dev.cosign.simplesigning.v1+json", "simple", nil)
    local cbody = sc:manifest("ref/graph@" .. cosign_sig.digest)
    sc:put_manifest("ref/graph:" .. registry.fallback_tag(img.digest) .. ".sig", cbody.body)

    local d, stats = registry.copy(src.host .. "/ref/graph:v1", dst.host .. "/copied/graph:v1", { config = false })
    assert.are.equal(img.digest, d)
    assert.are.equal(3, stats.referrers)
    local list, fallback = dc:referrers("copied/graph:v1")
    assert.is_true(fallback)
    assert.are.equal(1, #list)
    assert.are.equal(sbom.digest, list[1].digest)
    assert.are.equal("application/spdx+json", list[1].artifactType)
    assert.are.equal(sbom.digest, dc:manifest("copied/graph@" .. sbom.digest).digest)
    local of_sbom = dc:referrers("copied/graph@" .. sbom.digest)
    assert.are.equal(1, #of_sbom)
    assert.are.equal(sig.digest, of_sbom[1].digest)
    assert.are.equal(cosign_sig.digest, dc:digest("copied/graph:" .. registry.fallback_tag(img.digest) .. ".sig"))
    -- The artifact's blobs came too.
    local m = dc:manifest("copied/graph@" .. sbom.digest).manifest
    assert.are.equal('{"spdxVersion":"SPDX-2.3","n":1}', dc:blob("copied/graph", m.layers[1].digest))
    -- Copied again: the fallback index is not duplicated.
    registry.copy(src.host .. "/ref/graph:v1", dst.host .. "/copied/graph:v1", { config = false })
    assert.are.equal(1, #dc:referrers("copied/graph:v1"))
    -- referrers = false copies the image alone.
    local _, st2 = registry.copy(src.host .. "/ref/graph:v1", dst.host .. "/alone/graph:v1",
      { config = false, referrers = false })
    assert.are.equal(0, st2.referrers)
    assert.are.same({}, (dc:referrers("alone/graph:v1")))
    assert.is_nil(dc:manifest_head("alone/graph:" .. registry.fallback_tag(img.digest) .. ".sig"))
  end)

  describe("with the test bed's cosign and oras", function()
    local function need(...)
      for _, t in ipairs({ ... }) do
        if not have_tool(t) then
          pending(TOOLS .. "/" .. t .. " is not built yet (.ci/install-test-tools)")
          return false
        end
      end
      return true
    end

    -- cosign verify fetches Sigstore's trusted root from its TUF CDN unless given one: an
    -- empty root of our own keeps it on loopback (a --key signature needs no Sigstore root).
    local function trusted_root()
      local path = work .. "/trusted_root.json"
      sh.write(path, '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}')
      return path
    end

    local function cosign_env(extra, args)
      local cmd = { TOOLS .. "/cosign" }
      for _, a in ipairs(args) do cmd[#cmd + 1] = a end
      if args[1] == "verify" or args[1] == "verify-attestation" then
        table.insert(cmd, 3, "--trusted-root")
        table.insert(cmd, 4, trusted_root())
      end
      local env = { COSIGN_PASSWORD = "", COSIGN_YES = "true", HOME = work, TUF_ROOT = work .. "/tuf" }
      for k, v in pairs(extra) do env[k] = v end
      return ok_run(cmd, { env = env, cwd = work })
    end

    local function cosign(args)
      return cosign_env({}, args)
    end

    local function oras(args)
      local cmd = { TOOLS .. "/oras" }
      for _, a in ipairs(args) do cmd[#cmd + 1] = a end
      return ok_run(cmd, { env = { HOME = work }, cwd = work })
    end

    local function cat(...)
      local out = {}
      for _, list in ipairs({ ... }) do
        for _, a in ipairs(list) do out[#out + 1] = a end
      end
      return out
    end

    local INSECURE = { "--allow-insecure-registry", "--allow-http-registry" }

    -- oras discover's referrers of `ref` (the key is "referrers" in oras 1.2+, "manifests" before).
    local function discover(ref, artifact_type)
      local found = json.decode(oras({ "discover", "--format", "json", "--plain-http", "--artifact-type",
        artifact_type, ref }))
      return found.referrers or found.manifests or {}
    end

    local function attach_sbom(ref)
      sh.write(work .. "/sbom.spdx.json", '{"spdxVersion":"SPDX-2.3","name":"myrmex-test"}')
      oras({ "attach", "--plain-http", "--artifact-type", "application/spdx+json", ref,
        "sbom.spdx.json:application/spdx+json" })
    end

    local function sign_and_attest(ref)
      if not sh.read(work .. "/cosign.key") then cosign({ "generate-key-pair" }) end
      cosign(cat({ "sign", "--key", work .. "/cosign.key", "--tlog-upload=false" }, INSECURE, { ref }))
      sh.write(work .. "/predicate.json", '{"buildType":"myrmex-test"}')
      cosign(cat({ "attest", "--key", work .. "/cosign.key", "--tlog-upload=false", "--type", "custom",
        "--predicate", work .. "/predicate.json" }, INSECURE, { ref }))
    end

    local function verify(ref)
      cosign(cat({ "verify", "--key", work .. "/cosign.pub", "--insecure-ignore-tlog=true" }, INSECURE, { ref }))
      cosign(cat({ "verify-attestation", "--key", work .. "/cosign.pub", "--insecure-ignore-tlog=true", "--type",
        "custom" }, INSECURE, { ref }))
    end

    it("an SBOM attached by oras (fallback tag on distribution 2.8) is discovered on the copy", function()
      if not need("oras") then return end
      sc:push_image(work .. "/img", "oras/app:v1")
      attach_sbom(src.host .. "/oras/app@" .. img.digest)
      assert.are.equal(1, #discover(src.host .. "/oras/app@" .. img.digest, "application/spdx+json"))
      local d, stats = registry.copy(src.host .. "/oras/app:v1", dst.host .. "/oras-mirror/app:v1", { config = false })
      assert.are.equal(img.digest, d)
      assert.are.equal(1, stats.referrers)
      local list = discover(dst.host .. "/oras-mirror/app@" .. img.digest, "application/spdx+json")
      assert.are.equal(1, #list, json.encode(list))
      assert.are.equal(1, #dc:referrers("oras-mirror/app:v1", { artifact_type = "application/spdx+json" }))
      -- The SBOM's content came along: oras pulls it from the copy.
      os.execute("mkdir -p " .. sh.q(work .. "/pulled-sbom"))
      ok_run({ TOOLS .. "/oras", "pull", "--plain-http", "-o", work .. "/pulled-sbom",
        dst.host .. "/oras-mirror/app@" .. list[1].digest }, { env = { HOME = work } })
      assert.are.equal('{"spdxVersion":"SPDX-2.3","name":"myrmex-test"}', sh.read(work .. "/pulled-sbom/sbom.spdx.json"))
    end)

    it("cosign verify and verify-attestation succeed on the copy (cosign's .sig/.att tags)", function()
      if not need("cosign", "oras") then return end
      sc:push_image(work .. "/img", "signed/app:v1")
      local ref = src.host .. "/signed/app@" .. img.digest
      sign_and_attest(ref)
      attach_sbom(ref)
      local d, stats = registry.copy(src.host .. "/signed/app:v1", dst.host .. "/mirror/app:v1", { config = false })
      assert.are.equal(img.digest, d)
      assert.truthy(stats.referrers >= 3, "referrers copied: " .. stats.referrers)
      verify(dst.host .. "/mirror/app@" .. img.digest)
      assert.are.equal(1, #discover(dst.host .. "/mirror/app@" .. img.digest, "application/spdx+json"))
      -- A copy without referrers has no signature: cosign verify fails there.
      registry.copy(src.host .. "/signed/app:v1", dst.host .. "/unsigned/app:v1", { config = false, referrers = false })
      local r = sh.run(cat({ TOOLS .. "/cosign", "verify", "--trusted-root", trusted_root(), "--key",
        work .. "/cosign.pub", "--insecure-ignore-tlog=true" }, INSECURE, { dst.host .. "/unsigned/app@" .. img.digest }),
        { env = { HOME = work, TUF_ROOT = work .. "/tuf" } })
      assert.are_not.equal(0, r.code)
    end)

    it("between registries serving the referrers API, and from one to distribution 2.8", function()
      if not need("cosign", "oras", GGCR) then return end
      local a, b = start_ggcr(), start_ggcr()
      local ok, err = pcall(function()
        local ac = registry.connect(a.host, { config = false })
        ac:push_image(work .. "/img", "api/app:v1")
        local ref = a.host .. "/api/app@" .. img.digest
        sign_and_attest(ref)
        -- cosign 2.6 keeps its .sig/.att tags even where the API is served; asked for OCI 1.1
        -- (experimental) it pushes the signature as a referrer instead: both are copied.
        cosign_env({ COSIGN_EXPERIMENTAL = "1" }, cat({ "sign", "--key", work .. "/cosign.key", "--tlog-upload=false",
          "--registry-referrers-mode=oci-1-1" }, INSECURE, { ref }))
        attach_sbom(ref)
        -- oras saw the API (OCI-Subject): no fallback index was written on the source.
        assert.is_nil(ac:manifest_head("api/app:" .. registry.fallback_tag(img.digest)))
        local listed, fallback = ac:referrers("api/app:v1")
        assert.is_false(fallback)
        assert.are.equal(2, #listed, json.encode(listed)) -- the SBOM and the OCI 1.1 signature
        for _, target in ipairs({ b.host .. "/mirror/app:v1", dst.host .. "/from-api/app:v1" }) do
          local d, stats = registry.copy(a.host .. "/api/app:v1", target, { config = false })
          assert.are.equal(img.digest, d)
          assert.truthy(stats.referrers >= 4, target .. ": referrers copied: " .. stats.referrers)
          local at = target:gsub(":v1$", "@" .. img.digest)
          verify(at)
          cosign(cat({ "verify", "--key", work .. "/cosign.pub", "--insecure-ignore-tlog=true", "--experimental-oci11" },
            INSECURE, { at }))
          assert.are.equal(1, #discover(at, "application/spdx+json"))
        end
        local bc = registry.connect(b.host, { config = false })
        local on_b, fb = bc:referrers("mirror/app:v1")
        assert.is_false(fb)
        assert.are.equal(2, #on_b)
        -- Where the destination serves the API, no fallback index is written there.
        assert.is_nil(bc:manifest_head("mirror/app:" .. registry.fallback_tag(img.digest)))
        local on_dist, fd = dc:referrers("from-api/app:v1")
        assert.is_true(fd)
        assert.are.equal(2, #on_dist)
      end)
      a:stop()
      b:stop()
      assert(ok, err)
    end)
  end)

  describe("on a registry serving the referrers API (the test bed's ggcr-registry)", function()
    local api, ac

    setup(function()
      if have_tool(GGCR) then
        api = start_ggcr()
        ac = registry.connect(api.host, { config = false })
        ac:push_image(work .. "/img", "api/list:v1")
      end
    end)

    teardown(function()
      if api then api:stop() end
    end)

    it("client:referrers asks the API, filtered there, and does not read a fallback tag", function()
      if not api then return pending(TOOLS .. "/" .. GGCR .. " is not built yet (.ci/install-test-tools)") end
      local subject = { mediaType = registry.media.oci_manifest, digest = img.digest, size = #img.manifest }
      local sbom = put_artifact(ac, "api/list", "application/spdx+json", '{"spdxVersion":"SPDX-2.3","api":1}', subject)
      local vex = put_artifact(ac, "api/list", "application/openvex+json", '{"statements":[1]}', subject)
      -- A stale fallback index naming something else: the API's answer wins.
      local other = put_artifact(ac, "api/list", "text/plain", "stale", nil)
      put_fallback(ac, "api/list", img.digest, { other })
      local list, fallback = ac:referrers("api/list:v1")
      assert.is_false(fallback)
      local got = {}
      for _, d in ipairs(list) do got[d.digest] = d.artifactType end
      assert.are.same({ [sbom.digest] = "application/spdx+json", [vex.digest] = "application/openvex+json" }, got)
      local only = ac:referrers("api/list:v1", { artifact_type = "application/openvex+json" })
      assert.are.equal(1, #only)
      assert.are.equal(vex.digest, only[1].digest)
      assert.are.same({}, (ac:referrers("api/list@" .. sbom.digest)))
    end)

    it("copy to a registry serving the API writes no fallback index; to distribution 2.8 it does", function()
      if not api then return pending(TOOLS .. "/" .. GGCR .. " is not built yet (.ci/install-test-tools)") end
      local subject = { mediaType = registry.media.oci_manifest, digest = img.digest, size = #img.manifest }
      ac:push_image(work .. "/img", "api/copy:v1")
      local sbom = put_artifact(ac, "api/copy", "application/spdx+json", '{"spdxVersion":"SPDX-2.3","copy":1}', subject)
      local other = start_ggcr()
      local ok, err = pcall(function()
        local oc = registry.connect(other.host, { config = false })
        local _, stats = registry.copy(api.host .. "/api/copy:v1", other.host .. "/copied/app:v1", { config = false })
        assert.are.equal(1, stats.referrers)
        local list, fallback = oc:referrers("copied/app:v1")
        assert.is_false(fallback)
        assert.are.equal(1, #list)
        assert.are.equal(sbom.digest, list[1].digest)
        assert.is_nil(oc:manifest_head("copied/app:" .. registry.fallback_tag(img.digest)))
        registry.copy(api.host .. "/api/copy:v1", dst.host .. "/api-copied/app:v1", { config = false })
        local dl, dfb = dc:referrers("api-copied/app:v1")
        assert.is_true(dfb)
        assert.are.equal(1, #dl)
        assert.are.equal(sbom.digest, dl[1].digest)
      end)
      other:stop()
      assert(ok, err)
    end)
  end)
end)
