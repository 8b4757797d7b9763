-- needs: docker
-- The real Trivy and Grype of the test bed (/usr/local/lib/myrmex-test/bin) scanning images built here
-- FROM scratch, offline, against a vulnerability database built here by trivy-db's own
-- `build` from the made-up advisories in tests/fixtures/trivy-db (a vuln-list tree: Alpine
-- secdb, NVD API records, Go vulndb OSV). Each image carries what they match: an Alpine
-- package database listing zlib 1.3.1-r0, and a Go binary (the test bed's trivy-db, built
-- against golang.org/x/text < 0.99.0). The argument vectors, exit codes, stderr, timeouts and
-- reports are those of the real program. The database reaches trivy both ways Trivy knows:
-- placed in its cache (--skip-db-update), and pushed by oras to a loopback docker-registry as
-- Trivy's OCI DB artifact, which trivy downloads itself (--db-repository). Grype reads a v6 database that
-- tests/support/grype_db.py writes (the same zlib advisories) and `grype db import` takes in.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local BIN = "/usr/local/lib/myrmex-test/bin/"
local TRIVY, TRIVY_DB, GRYPE = BIN .. "trivy", BIN .. "trivy-db", BIN .. "grype"
local ORAS = BIN .. "oras"
local GO_BINARY = TRIVY_DB -- any Go binary of the test bed: its buildinfo lists golang.org/x/text

local function installed(path)
  local st = rt.stat(path)
  return st ~= nil and st.type == "file"
end

local APK_INSTALLED = table.concat({
  "C:Q1mZ3gWOPmZVCrq6V8fWkZp5Xc1cU=",
  "P:zlib",
  "V:1.3.1-r0",
  "A:x86_64",
  "S:53762",
  "I:110592",
  "T:A compression/decompression Library",
  "U:https://zlib.net/",
  "L:Zlib",
  "o:zlib",
  "m:Natanael Copa <ncopa@alpinelinux.org>",
  "t:1705000000",
  "c:0000000000000000000000000000000000000000",
  "F:lib",
  "R:libz.so.1.3.1",
  "",
  "",
}, "\n")

local OS_RELEASE = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'

describe("the real trivy", function()
  local ready = installed(TRIVY) and installed(TRIVY_DB)
  local work, cache, image, offline

  setup(function()
    if not ready then return end
    work = rt.mkdtemp("/tmp/mx-trivy-real-")
    cache = work .. "/cache"
    -- the database, from our advisories, by trivy-db's own builder
    local res = process.run { argv = { TRIVY_DB, "build", "--cache-dir", sh.fixtures .. "/trivy-db",
      "--output-dir", cache .. "/db", "--only-update", "alpine", "--only-update", "nvd",
      "--only-update", "govulndb" }, timeout = 300 }
    assert(res.status == 0, "trivy-db build failed: " .. res.stderr)
    local ctx = dt.tmpdir {
      ["etc/alpine-release"] = "3.19.1\n",
      ["etc/os-release"] = OS_RELEASE,
      ["lib/apk/db/installed"] = APK_INSTALLED,
      Dockerfile = "FROM scratch\nCOPY etc /etc\nCOPY lib /lib\nCOPY textapp /usr/local/bin/textapp\n",
    }
    assert(os.execute(("cp %s %s/textapp"):format(sh.q(GO_BINARY), sh.q(ctx))))
    image = "myrmex-test/scan-real-" .. dt.run_id .. ":1"
    local b = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label %s -t %s %s"):format(
      sh.q(dt.label_filter), sh.q(image), sh.q(ctx)))
    sh.run({ "rm", "-rf", ctx })
    assert(b.code == 0, "building the scan image failed: " .. b.stderr)
    offline = { "--cache-dir", cache, "--skip-db-update", "--skip-java-db-update", "--offline-scan",
      "--skip-version-check", "--disable-telemetry", "--scanners", "vuln", "--image-src", "docker" }
  end)

  teardown(function()
    if not ready then return end
    dt.cleanup()
    process.run { argv = { "rm", "-rf", "--", work } }
  end)

  local function need()
    if not ready then
      pending("trivy or trivy-db is not installed in " .. BIN .. " (.ci/install-test-tools builds them)")
      return false
    end
    return true
  end

  local function by_id(r)
    local out = {}
    for _, f in ipairs(r.findings) do out[f.id] = f end
    return out
  end

  it("scans a locally built image offline and finds what our advisories say", function()
    if not need() then return end
    local s = scan.new { backend = "trivy", path = TRIVY, args = offline, timeout = 300 }
    local r = s:scan_image(image)
    assert.are.equal(0, r.scanner_status)
    assert.are.equal("trivy", r.scanner)
    assert.matches("^0%.74", r.scanner_version)
    assert.are.equal("alpine", r.os.family)
    local f = by_id(r)
    assert.are.equal(3, #r.findings)
    local zlib = f["CVE-2099-1001"]
    assert.are.equal("zlib", zlib.package)
    assert.are.equal("os", zlib.type)
    assert.are.equal("1.3.1-r0", zlib.installed_version)
    assert.are.equal("1.3.1-r1", zlib.fixed_version)
    assert.are.equal("HIGH", zlib.severity)
    assert.are.equal(7.5, zlib.cvss_score)
    assert.are.equal("nvd", zlib.severity_source)
    assert.are.equal("LOW", f["CVE-2099-1002"].severity)
    local go = f["CVE-2099-2001"]
    assert.are.equal("golang.org/x/text", go.package)
    assert.are.equal("golang", go.type)
    assert.are.equal("0.99.0", go.fixed_version)
    assert.are.equal("CRITICAL", go.severity)
    assert.are.equal("usr/local/bin/textapp", go.target)
    assert.is_false(r.passed)
    assert.are.equal("critical", r.compliance)
  end)

  it("downloads the database from a local registry, as Trivy's OCI DB artifact (--db-repository)", function()
    if not need() then return end
    if not installed(ORAS) then
      pending("oras is not installed in " .. BIN)
      return
    end
    -- the artifact as Trivy publishes it: one layer, db.tar.gz (trivy.db and metadata.json)
    -- of Trivy's layer media type, named by its title annotation, and Trivy's config type
    local art = work .. "/artifact"
    assert.are.equal(0, sh.run({ "mkdir", "-p", art }).code)
    assert.are.equal(0, sh.run({ "tar", "-czf", art .. "/db.tar.gz", "-C", cache .. "/db", "trivy.db",
      "metadata.json" }).code)
    sh.write(art .. "/config.json", "{}")
    local reg = require("tests.support.registry").start()
    local ok, err = pcall(function()
      local repo = reg.host .. "/myrmex-test/trivy-db"
      local push = process.run { argv = { ORAS, "push", "--plain-http", repo .. ":2",
        "--config", "config.json:application/vnd.aquasec.trivy.config.v1+json",
        "db.tar.gz:application/vnd.aquasec.trivy.db.layer.v1.tar+gzip" }, cwd = art, timeout = 120 }
      assert.are.equal(0, push.status, push.stderr)
      -- a cache without a database: trivy must fetch it (the tag :2, its schema, it adds itself)
      local fresh = work .. "/fresh-cache"
      local args = { "--cache-dir", fresh, "--db-repository", repo, "--skip-java-db-update",
        "--offline-scan", "--skip-version-check", "--disable-telemetry", "--scanners", "vuln", "--image-src", "docker" }
      local s = scan.new { backend = "trivy", path = TRIVY, args = args, timeout = 300 }
      local r = s:scan_image(image)
      assert.are.equal(0, r.scanner_status)
      assert.are.equal(3, #r.findings)
      assert.are.equal("HIGH", by_id(r)["CVE-2099-1001"].severity)
      assert.is_not_nil(rt.stat(fresh .. "/db/trivy.db"))
      -- trivy asked the registry for the tag and then for the layer's blob
      local function trivy_gets()
        local gets = {}
        for line in reg:log():gmatch("[^\n]+") do
          if line:find("http.request.method=GET", 1, true) and not line:find("useragent=oras", 1, true) then
            gets[#gets + 1] = line:match('http%.request%.uri="?([^"%s]+)')
          end
        end
        return gets
      end
      local gets = trivy_gets()
      local text = table.concat(gets, " ")
      assert.matches("/v2/myrmex%-test/trivy%-db/manifests/2", text)
      assert.matches("/v2/myrmex%-test/trivy%-db/blobs/sha256:", text)
      -- a second scan takes the downloaded database: it is fresh (its NextUpdate is ahead)
      local again = s:scan_image(image)
      assert.are.equal(3, #again.findings)
      assert.are.equal(#gets, #trivy_gets())
    end)
    reg:stop()
    assert(ok, tostring(err))
  end)

  it("keeps the report when trivy exits 1 for its findings (--exit-code 1)", function()
    if not need() then return end
    local args = { "--exit-code", "1" }
    for _, a in ipairs(offline) do args[#args + 1] = a end
    local s = scan.new { backend = "trivy", path = TRIVY, args = args, timeout = 300 }
    local r = s:scan_image(image, { severity = "CRITICAL" })
    assert.are.equal(1, r.scanner_status)
    assert.are.equal(1, #r.findings)
    assert.are.equal("CVE-2099-2001", r.findings[1].id)
    -- nothing at MEDIUM: trivy exits 0 and the result is empty
    local medium = s:scan_image(image, { severity = "MEDIUM" })
    assert.are.equal(0, medium.scanner_status)
    assert.are.equal(0, #medium.findings)
    assert.is_true(medium.passed)
  end)

  it("scans a saved tarball with --input", function()
    if not need() then return end
    local tar = work .. "/image.tar"
    assert.are.equal(0, sh.run(("docker save -o %s %s"):format(sh.q(tar), sh.q(image))).code)
    local args = {}
    for i = 1, #offline - 2 do args[i] = offline[i] end -- no --image-src for a tarball
    local s = scan.new { backend = "trivy", path = TRIVY, args = args, timeout = 300 }
    local r = s:scan_image(nil, { input = tar })
    assert.are.equal(3, #r.findings)
    assert.are.equal(tar, r.image)
  end)

  it("writes the SARIF trivy writes for the same scan", function()
    if not need() then return end
    local out = work .. "/trivy.sarif.json"
    local argv = { TRIVY, "image", "--quiet", "--format", "sarif", "--output", out }
    for _, a in ipairs(offline) do argv[#argv + 1] = a end
    argv[#argv + 1] = "--"
    argv[#argv + 1] = image
    local res = process.run { argv = argv, timeout = 300 }
    assert.are.equal(0, res.status, res.stderr)
    local theirs = json.decode(sh.read(out))
    local s = scan.new { backend = "trivy", path = TRIVY, args = offline, timeout = 300 }
    local ours = json.decode(scan.export(s:scan_image(image), "sarif"))
    assert.are.equal(3, #theirs.runs[1].results)
    assert.are.same({}, require("tests.support.sarif_diff").differences(theirs, ours))
  end)

  it("quotes trivy's own error when it cannot scan, with its exit status", function()
    if not need() then return end
    local s = scan.new { backend = "trivy", path = TRIVY, args = offline, timeout = 300 }
    local ok, err = pcall(s.scan_image, s, "myrmex-test/absent-" .. dt.run_id .. ":1")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.are.equal(1, err.details.status)
    assert.matches("trivy failed %(exit 1%)", err.message)
    assert.matches("absent%-" .. dt.run_id, err.message)
  end)

  it("kills trivy when it outlives the timeout (an engine that never answers)", function()
    if not need() then return end
    -- a Docker socket that accepts and never replies: trivy waits on it until killed
    local sock = work .. "/silent.sock"
    local server = io.popen(("python3 -c %s %s & echo $!"):format(sh.q([[
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
]]), sh.q(sock)))
    local pid = tonumber(server:read("l"))
    server:close()
    for _ = 1, 100 do
      if rt.stat(sock) then break end
      os.execute("sleep 0.05")
    end
    local args = {}
    for _, a in ipairs(offline) do args[#args + 1] = a end
    args[#args + 1] = "--docker-host"
    args[#args + 1] = "unix://" .. sock
    local s = scan.new { backend = "trivy", path = TRIVY, args = args, timeout = 2 }
    local ok, err = pcall(s.scan_image, s, "myrmex-test/any:1")
    os.execute("kill " .. math.tointeger(pid))
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Timeout") or errors.is(err, "Engine"), tostring(err))
    if errors.is(err, "Engine") then
      -- trivy's own --timeout 2s fired first: it says so
      assert.matches("deadline exceeded", err.message)
    else
      assert.matches("trivy did not finish within 2s", err.message)
    end
  end)
end)

describe("the real grype", function()
  local ready = installed(GRYPE)
  local work, image, config

  setup(function()
    if not ready then return end
    work = rt.mkdtemp("/tmp/mx-grype-real-")
    local res = process.run { argv = { "python3", sh.src .. "/tests/support/grype_db.py", work .. "/vulnerability.db" } }
    assert(res.status == 0, res.stderr)
    -- offline: no update check, no database download, a database older than grype likes is fine
    config = work .. "/grype.yaml"
    sh.write(config, "check-for-app-update: false\ndb:\n  cache-dir: " .. work .. "/cache\n"
      .. "  auto-update: false\n  validate-age: false\n  require-update-check: false\n")
    res = process.run { argv = { GRYPE, "--config", config, "db", "import", work .. "/vulnerability.db" }, timeout = 300 }
    assert(res.status == 0, "grype db import failed: " .. res.stderr)
    local ctx = dt.tmpdir {
      ["etc/alpine-release"] = "3.19.1\n",
      ["etc/os-release"] = OS_RELEASE,
      ["lib/apk/db/installed"] = APK_INSTALLED,
      Dockerfile = "FROM scratch\nCOPY etc /etc\nCOPY lib /lib\n",
    }
    image = "myrmex-test/scan-grype-" .. dt.run_id .. ":1"
    local b = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label %s -t %s %s"):format(
      sh.q(dt.label_filter), sh.q(image), sh.q(ctx)))
    sh.run({ "rm", "-rf", ctx })
    assert(b.code == 0, "building the scan image failed: " .. b.stderr)
  end)

  teardown(function()
    if not ready then return end
    dt.cleanup()
    process.run { argv = { "rm", "-rf", "--", work } }
  end)

  it("scans a locally built image offline with a database we made", function()
    if not ready then
      pending("grype is not installed in " .. BIN .. " (.ci/install-test-tools builds it)")
      return
    end
    local s = scan.new { backend = "grype", path = GRYPE, args = { "--config", config }, timeout = 300 }
    local r = s:scan_image("docker:" .. image)
    assert.are.equal(0, r.scanner_status)
    assert.are.equal("grype", r.scanner)
    assert.are.equal(2, #r.findings)
    local f = {}
    for _, x in ipairs(r.findings) do f[x.id] = x end
    assert.are.equal("zlib", f["CVE-2099-1001"].package)
    assert.are.equal("1.3.1-r0", f["CVE-2099-1001"].installed_version)
    assert.are.equal("1.3.1-r1", f["CVE-2099-1001"].fixed_version)
    assert.are.equal("HIGH", f["CVE-2099-1001"].severity)
    assert.are.equal("LOW", f["CVE-2099-1002"].severity)
    assert.are.equal("os", f["CVE-2099-1002"].type)
    assert.is_false(r.passed)
    -- --fail-on high: grype exits non-zero after its report, which is kept
    local g = scan.new { backend = "grype", path = GRYPE, args = { "--config", config, "--fail-on", "high" }, timeout = 300 }
    local failing = g:scan_image("docker:" .. image)
    assert.are_not.equal(0, failing.scanner_status)
    assert.are.equal(2, #failing.findings)
    -- --only-fixed from ignore_unfixed, severity applied to the normalized findings
    local low = s:scan_image("docker:" .. image, { severity = "LOW", ignore_unfixed = true })
    assert.are.equal(1, #low.findings)
    assert.are.equal("CVE-2099-1002", low.findings[1].id)
    -- grype's own error for an image that is not there, with its status
    local ok, err = pcall(s.scan_image, s, "docker:myrmex-test/absent-" .. dt.run_id .. ":1")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.matches("grype failed %(exit 1%)", err.message)
  end)
end)
