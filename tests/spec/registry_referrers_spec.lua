-- needs: registry
-- What refers to an image travels with it (docs/registry.md, "Referrers"): client:referrers
-- through the OCI 1.1 API or the tag schema fallback, and copy bringing signatures,
-- attestations and SBOMs along — artifacts with a `subject` made here, then the real thing with
-- the test bed's cosign (a local key, no transparency log) and oras as reference clients,
-- against distribution 2.8 (no referrers API: the fallback tags) and, when the test bed has
-- one, a registry serving the API (crane's).
local registry = require("myrmex.registry")
local digest = require("myrmex.digest")
local json = require("myrmex.json")
local R = require("tests.support.registry")
local sh = require("tests.support.sh")

local TOOLS = "/usr/local/lib/myrmex-test/bin"
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

    local function cosign(args)
      local cmd = { TOOLS .. "/cosign" }
      for _, a in ipairs(args) do cmd[#cmd + 1] = a end
      return ok_run(cmd, { env = { COSIGN_PASSWORD = "", COSIGN_YES = "true", HOME = work, TUF_ROOT = work .. "/tuf" },
        cwd = work })
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
      local r = sh.run(cat({ TOOLS .. "/cosign", "verify", "--key", work .. "/cosign.pub",
        "--insecure-ignore-tlog=true" }, INSECURE, { dst.host .. "/unsigned/app@" .. img.digest }),
        { env = { HOME = work, TUF_ROOT = work .. "/tuf" } })
      assert.are_not.equal(0, r.code)
    end)

    it("the same between registries serving the referrers API, when the test bed has one", function()
      if not need("cosign", "oras", "crane") then return end
      local servers = {}
      for i = 1, 2 do
        local port = R.free_port()
        local pid = ok_run({ "sh", "-c", ("%s registry serve --address 127.0.0.1:%d >%s 2>&1 & echo $!"):format(
          TOOLS .. "/crane", port, work .. "/crane" .. i .. ".log") }):gsub("%s+$", "")
        servers[i] = { host = "127.0.0.1:" .. port, pid = pid }
      end
      local ok, err = pcall(function()
        for _, s in ipairs(servers) do
          for _ = 1, 100 do
            if sh.run({ "curl", "-sf", "http://" .. s.host .. "/v2/" }).code == 0 then break end
            os.execute("sleep 0.05")
          end
        end
        local fc = registry.connect(servers[1].host, { config = false })
        fc:push_image(work .. "/img", "api/app:v1")
        if not fc:_referrers_api("api/app", img.digest) then
          -- crane 0.22's `registry serve` does not serve GET /v2/<name>/referrers/<digest>.
          return "no API"
        end
        local ref = servers[1].host .. "/api/app@" .. img.digest
        sign_and_attest(ref)
        attach_sbom(ref)
        registry.copy(servers[1].host .. "/api/app:v1", servers[2].host .. "/mirror/app:v1", { config = false })
        verify(servers[2].host .. "/mirror/app@" .. img.digest)
        local _, fallback = registry.connect(servers[2].host, { config = false }):referrers("mirror/app:v1")
        assert.is_false(fallback)
      end)
      for _, s in ipairs(servers) do os.execute("kill " .. s.pid .. " 2>/dev/null") end
      assert(ok, err)
      if err == "no API" then pending("no registry in the test bed serves the referrers API (crane's does not)") end
    end)
  end)
end)
