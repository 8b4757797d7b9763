-- myrmex.scan over the real Trivy, Grype and Docker Scout reports in tests/fixtures.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local process = require("myrmex.process")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function find(result, id, package, version)
  for _, f in ipairs(result.findings) do
    if f.id == id and (not package or f.package == package) and
      (not version or f.installed_version == version) then
      return f
    end
  end
  error("no finding " .. id .. " " .. tostring(package))
end

local function plain(list)
  local out = {}
  for i, v in ipairs(list or {}) do out[i] = v end
  return out
end

-- The counts the fixtures README gives for each file (negligible counted as LOW,
-- UNSPECIFIED as UNKNOWN).
local EXPECTED = {
  { "trivy/alpine-310.json", "trivy", 4, { MEDIUM = 4 } },
  { "trivy/debian-buster.json", "trivy", 2, { CRITICAL = 1, LOW = 1 } },
  { "trivy/webgoat-ubuntu2004-jar.json", "trivy", 26, { CRITICAL = 8, HIGH = 7, MEDIUM = 6, LOW = 5 } },
  { "trivy/sl-micro-rancher5.4.json", "trivy", 0, {} },
  { "trivy/gomod.json", "trivy", 5, { UNKNOWN = 4, MEDIUM = 1 } },
  { "trivy/dockerfile.json", "trivy", 0, {} },
  { "trivy/secrets-licenses-fs.json", "trivy", 0, {} },
  { "trivy/secrets-licenses-image.json", "trivy", 0, {} },
  { "grype/webgoat-ubuntu2004.json", "grype", 266, { MEDIUM = 147, LOW = 48 + 22, HIGH = 38, CRITICAL = 11 } },
  { "grype/keycloak-rhel91.json", "grype", 6, { LOW = 6 } },
  { "grype/presenter-image-current-schema.json", "grype", 2, { CRITICAL = 1, LOW = 1 } },
  { "grype/presenter-empty.json", "grype", 0, {} },
  { "scout/webgoat-ubuntu2004.sarif.json", "sarif", 135, { MEDIUM = 60, HIGH = 35, LOW = 30, CRITICAL = 8, UNKNOWN = 2 } },
  { "../sarif/trivy-alpine-310.sarif.json", "sarif", 4, { MEDIUM = 4 } },
}

describe("scan.load_report", function()
  for _, e in ipairs(EXPECTED) do
    it("parses " .. e[1] .. " with the README's counts", function()
      local r = scan.load_report(FIX .. e[1])
      assert.are.equal(e[2], r.format)
      assert.are.equal(e[3], #r.findings)
      for _, sev in ipairs(scan.SEVERITIES) do
        assert.are.equal(e[4][sev] or 0, r.counts[sev], sev)
      end
    end)
  end

  it("normalizes a Trivy OS package finding as read by hand", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    assert.are.equal("testdata/fixtures/images/alpine-310.tar.gz", r.image)
    assert.are.equal("dev", r.scanner_version)
    assert.are.equal("2021-08-25T12:20:30.000000005Z", r.time)
    assert.is_true(r.os.eosl)
    local f = find(r, "CVE-2019-1549", "libcrypto1.1")
    assert.are.equal("os", f.type)
    assert.are.equal("alpine", f.pkg_type)
    assert.are.equal("pkg:apk/alpine/libcrypto1.1@1.1.1c-r0?arch=x86_64&distro=3.10.2", f.purl)
    assert.are.equal("1.1.1c-r0", f.installed_version)
    assert.are.equal("1.1.1d-r0", f.fixed_version)
    assert.are.equal("fixed", f.fix_state)
    assert.are.equal("MEDIUM", f.severity)
    assert.are.equal(5.3, f.cvss_score)
    assert.are.equal("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", f.cvss_vector)
    assert.are.equal("nvd", f.cvss_source)
    assert.are.equal(5, f.cvss.nvd.v2_score)
    assert.are.equal(4.8, f.cvss.redhat.v3_score)
    assert.are.equal("openssl: information disclosure in fork()", f.title)
    assert.matches("^OpenSSL 1.1.1 introduced a rewritten random number generator", f.description)
    assert.are.equal(20, #f.references)
    assert.are.equal("https://access.redhat.com/security/cve/CVE-2019-1549", f.references[1])
    assert.are.equal("testdata/fixtures/images/alpine-310.tar.gz (alpine 3.10.2)", f.target)
    assert.are.equal("sha256:03901b4a2ea88eeaad62dbe59b072b28b6efa00491962b8741081c5df50c65e0", f.layer)
    assert.are.equal("trivy", f.scanner)
  end)

  it("normalizes Trivy language packages, missing fixes and UNKNOWN severities", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    assert.is_nil(r.scanner_version) -- older schema without the Trivy key
    local f = find(r, "CVE-2022-42003")
    assert.are.equal("com.fasterxml.jackson.core:jackson-databind", f.package)
    assert.are.equal("maven", f.type)
    assert.are.equal("jar", f.pkg_type)
    assert.are.equal("home/webgoat/webgoat.jar/BOOT-INF/lib/jackson-databind-2.13.3.jar", f.path)
    assert.are.equal("2.12.7.1, 2.13.4.1", f.fixed_version)
    assert.are.equal("HIGH", f.severity)
    assert.are.equal(7.5, f.cvss_score)
    assert.are.equal(4, #(function()
      local n = {}
      for _, x in ipairs(r.findings) do if not x.fixed_version then n[#n + 1] = x end end
      return n
    end)())

    local d = scan.load_report(FIX .. "trivy/debian-buster.json")
    local bash = find(d, "CVE-2019-18276", "bash")
    assert.is_nil(bash.fixed_version)
    assert.are.equal("not_fixed", bash.fix_state)
    -- the scanner's severity (Debian says LOW) stays; the CVSS is still NVD's 7.8
    assert.are.equal("LOW", bash.severity)
    assert.are.equal("debian", bash.severity_source)
    assert.are.equal(7.8, bash.cvss_score)

    local g = scan.load_report(FIX .. "trivy/gomod.json")
    local gms = find(g, "GMS-2022-20")
    assert.are.equal("UNKNOWN", gms.severity)
    assert.is_nil(gms.cvss_score)
    assert.are.equal("golang", gms.type)
    assert.are.equal("v2.8.0", gms.fixed_version)

    local m = scan.load_report(FIX .. "trivy/dockerfile.json")
    assert.are.equal(1, #m.misconfigurations)
    assert.are.equal("DS-0002", m.misconfigurations[1].id)
    assert.are.equal("HIGH", m.misconfigurations[1].severity)
  end)

  it("normalizes Grype matches, related records and negligible severities", function()
    local r = scan.load_report(FIX .. "grype/presenter-image-current-schema.json")
    local f = find(r, "CVE-1999-0001")
    assert.are.equal("package-1", f.package)
    assert.are.equal("os", f.type)
    assert.are.equal("rpm", f.pkg_type)
    assert.is_nil(f.purl) -- "" in the report
    assert.are.equal("1.1.1", f.installed_version)
    assert.are.equal("1.2.1, 2.1.3, 3.4.0", f.fixed_version)
    assert.are.equal("LOW", f.severity)
    assert.are.equal(8.2, f.cvss_score)
    assert.are.equal("nvd", f.cvss_source)
    assert.are.equal("/foo/bar/somefile-1.txt", f.path)

    local w = scan.load_report(FIX .. "grype/webgoat-ubuntu2004.json")
    assert.are.equal("webgoat/webgoat:latest", w.image)
    assert.are.equal("sha256:2775102b8186df1656f8a69cfb7a6bf6c77b43a25fa0accd6d44e6ae04c8d3b7", w.digest)
    assert.are.equal("0.66.0", w.scanner_version)
    local b = find(w, "CVE-2022-47696", "binutils")
    assert.are.equal("MEDIUM", b.severity) -- Grype's own severity, not the NVD record's High
    assert.are.equal(7.8, b.cvss_score)  -- from the related NVD record
    assert.are.equal("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", b.cvss_vector)
    assert.matches("^An issue was discovered Binutils objdump", b.description)
    local n = find(w, "CVE-2018-20657", "binutils")
    assert.are.equal("LOW", n.severity)
    assert.are.equal("Negligible", n.scanner_severity)
    local kinds = {}
    for _, x in ipairs(w.findings) do kinds[x.type] = (kinds[x.type] or 0) + 1 end
    assert.are.same({ os = 180, maven = 85, binary = 1 }, kinds)
    local jackson = find(w, "CVE-2022-42003", "com.fasterxml.jackson.core:jackson-databind")
    assert.are.equal("maven", jackson.type)

    local k = scan.load_report(FIX .. "grype/keycloak-rhel91.json")
    local nss = find(k, "CVE-2020-12413", "nss")
    assert.are.equal("wont_fix", nss.fix_state)
    assert.is_nil(nss.fixed_version)
    assert.are.equal(5.9, nss.cvss_score)
  end)

  it("normalizes Docker Scout SARIF results, one package per result", function()
    local r = scan.load_report(FIX .. "scout/webgoat-ubuntu2004.sarif.json")
    assert.are.equal("scout", r.scanner)
    assert.are.equal("0.24.1", r.scanner_version)
    local a = find(r, "CVE-2022-1471", "org.yaml:snakeyaml", "1.30")
    local b = find(r, "CVE-2022-1471", "org.yaml:snakeyaml", "1.28")
    assert.are.equal("/home/webgoat/webgoat.jar:BOOT-INF/lib/snakeyaml-1.30.jar", a.path)
    assert.matches("snakeyaml%-1.28.jar$", b.path)
    assert.are.equal("pkg:maven/org.yaml/snakeyaml@1.28", b.purl)
    assert.are.equal("2.0", a.fixed_version)
    assert.are.equal("HIGH", a.severity)
    assert.are.equal(8.3, a.cvss_score)
    assert.are.equal("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:L", a.cvss_vector)
    assert.are.equal("maven", a.type)
    local u = find(r, "GMS-2022-9109")
    assert.are.equal("UNKNOWN", u.severity)
    assert.are.equal("UNSPECIFIED", u.scanner_severity)
    assert.is_nil(u.fixed_version)
    assert.are.equal("OWASP Top Ten 2017 Category A9 - Using Components with Known Vulnerabilities", u.title)
    local g = find(r, "CVE-2020-8908")
    assert.are.equal("LOW", g.severity)
    assert.are.equal(3.3, g.cvss_score)
    assert.are.equal("com.google.guava:guava", g.package)
    assert.are.equal("30.1-jre", g.installed_version)
    assert.are.equal("https://scout.docker.com/v/CVE-2020-8908", g.references[1])
  end)

  it("reads Trivy's SARIF as the same findings as Trivy's JSON", function()
    local j = scan.load_report(FIX .. "trivy/alpine-310.json")
    local s = scan.load_report(sh.fixtures .. "/sarif/trivy-alpine-310.sarif.json")
    assert.are.equal("trivy", s.scanner)
    assert.are.equal(#j.findings, #s.findings)
    for i, f in ipairs(j.findings) do
      local g = s.findings[i]
      for _, k in ipairs({ "id", "package", "installed_version", "fixed_version", "severity", "title" }) do
        assert.are.equal(f[k], g[k], k)
      end
      assert.are.equal(f.cvss_score, g.cvss_score)
    end
  end)

  it("accepts report text, a UTF-8 BOM and UTF-16 with BOM (PowerShell redirects)", function()
    local text = read(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    assert.are.equal(26, #scan.load_report(text).findings)
    assert.are.equal(26, #scan.load_report("\239\187\191" .. text).findings)
    -- UTF-16LE with CRLF, as `trivy ... > report.json` writes it in Windows PowerShell
    local res = process.run { argv = { "python3", "-c",
      "import sys; d=sys.stdin.buffer.read().decode('utf-8').replace('\\n','\\r\\n'); sys.stdout.buffer.write(b'\\xff\\xfe'+d.encode('utf-16-le'))" },
      stdin = text }
    assert.are.equal(0, res.status)
    local r = scan.load_report(res.stdout)
    assert.are.equal(26, #r.findings)
    assert.are.equal(8, r.counts.CRITICAL)
    local res_be = process.run { argv = { "python3", "-c",
      "import sys; d=sys.stdin.buffer.read().decode('utf-8'); sys.stdout.buffer.write(d.encode('utf-16'))" },
      stdin = '{"SchemaVersion":2,"ArtifactName":"caf\195\169 \240\159\144\156","Results":[]}' }
    assert.are.equal("caf\195\169 \240\159\144\156", scan.load_report(res_be.stdout).image)
  end)

  it("fails clearly on unreadable, malformed and unknown input", function()
    local ok, err = pcall(scan.load_report, "/nonexistent/report.json")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("neither report text nor a readable file: /nonexistent/report.json: No such file", err.message)
    assert.are.equal("/nonexistent/report.json", err.details.path)
    -- empty text and multi-line junk are bad reports, not file names
    for _, junk in ipairs({ "", "not\na report", "x\0y" }) do
      ok, err = pcall(scan.load_report, junk)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "Invalid"), tostring(err))
      assert.matches("report: not valid JSON", err.message)
    end
    ok, err = pcall(scan.load_report, "/tmp")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("/tmp is a directory", err.message)
    ok, err = pcall(scan.load_report, '{"SchemaVersion": 2, "Results": [')
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("not valid JSON", err.message)
    ok, err = pcall(scan.load_report, '{"hello": "world"}')
    assert.is_false(ok)
    assert.matches("unrecognized report format", err.message)
    ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json", { format = "grype" })
    assert.is_false(ok)
    assert.matches("does not look like a grype report", err.message)
    ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json", { formt = "grype" })
    assert.is_false(ok)
    assert.matches("scan.load_report: unknown option 'formt'", err)
  end)

  it("survives reports with fields of the wrong JSON type", function()
    -- each: report text, findings expected (nil: must be rejected as Invalid)
    local cases = {
      { '{"SchemaVersion":2,"Results":"x"}', 0 },
      { '{"SchemaVersion":2,"Results":[7,{"Vulnerabilities":[1,null,{"PkgName":"no id"}]}]}', 0 },
      { '{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","CVSS":{"nvd":3,"x":{"V3Score":"9.8"}},'
        .. '"References":["a",2,{}],"Layer":"l","PkgIdentifier":5,"Severity":7}]}]}', 1 },
      { '{"matches":[1,{"vulnerability":{"id":"CVE-2","cvss":[{"metrics":{"baseScore":"9"}},5],"fix":{"versions":[1,"2.0"]}},'
        .. '"artifact":{"locations":"x","purl":7},"relatedVulnerabilities":[{"id":3},"x"]}],"descriptor":[]}', 1 },
      { '{"matches":{"a":1},"descriptor":{}}', 0 },
      { '{"version":"2.1.0","runs":[5,{"tool":{"driver":{"rules":[1,{"id":"R"}]}},"results":[{"message":5,"ruleId":"R",'
        .. '"ruleIndex":"a","locations":[1,{"physicalLocation":{"artifactLocation":{"uri":3}}}]},{"ruleIndex":9}]}]}', 1 },
      { '{"version":"2.1.0","runs":"x"}', nil },
      { '[1,2]', nil },
    }
    for i, c in ipairs(cases) do
      local ok, r = pcall(scan.load_report, c[1])
      if c[2] then
        assert.is_true(ok, "case " .. i .. ": " .. tostring(r))
        assert.are.equal(c[2], #r.findings, "case " .. i)
        -- and what came out exports
        for _, fmt in ipairs({ "json", "csv", "sarif" }) do assert.is_string(scan.export(r, fmt)) end
      else
        assert.is_true(errors.is(r, "Invalid"), "case " .. i .. ": " .. tostring(r))
      end
    end
    local odd = scan.load_report(cases[3][1])
    assert.are.same({ "a" }, plain(odd.findings[1].references))
    assert.are.equal("UNKNOWN", odd.findings[1].severity)
    assert.is_nil(odd.findings[1].cvss_score)
    local g = scan.load_report(cases[4][1])
    assert.are.equal("2.0", g.findings[1].fixed_version)
    assert.are.same({}, plain(g.findings[1].aliases))
  end)

  it("filters by severity and fix like the scanners' own flags", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json",
      { severity = "CRITICAL,HIGH", ignore_unfixed = true })
    for _, f in ipairs(r.findings) do
      assert.is_truthy(f.fixed_version)
      assert.is_truthy(f.severity == "CRITICAL" or f.severity == "HIGH")
    end
    assert.are.equal(0, r.counts.MEDIUM)
  end)
end)

describe("policy and compliance", function()
  local NOW = "2026-06-01T00:00:00Z"

  it("derives the default levels from the worst severity", function()
    local cases = {
      { "trivy/webgoat-ubuntu2004-jar.json", "critical", false },
      { "grype/keycloak-rhel91.json", "compliant", true },
      { "trivy/alpine-310.json", "warning", true },
      { "trivy/sl-micro-rancher5.4.json", "compliant", true },
    }
    for _, c in ipairs(cases) do
      local r = scan.load_report(FIX .. c[1])
      assert.are.equal(c[2], r.compliance, c[1])
      assert.are.equal(c[3], r.passed, c[1])
    end
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    local ok = scan.evaluate(r, { fail_on = "CRITICAL", ignore = {
      { severity = "CRITICAL", reason = "accepted for the demo" } } }, NOW)
    assert.are.equal(r, ok)
    assert.are.equal("non_compliant", r.compliance) -- HIGH remains
    assert.is_true(r.passed)
    assert.are.equal(8, #r.ignored)
  end)

  it("applies ignore rules by id, package, purl and severity until they expire", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    scan.evaluate(r, { ignore = {
      { id = "CVE-2019-1549", package = "libssl1.1", reason = "not reachable", expires = "2026-12-31" },
      { purl = "pkg:apk/alpine/libcrypto1.1*", reason = "vendor backport", expires = "2026-01-31" },
    } }, NOW)
    -- the first rule hides one finding; the second expired in January and is reported
    assert.are.equal(1, #r.ignored)
    assert.are.same({ id = "CVE-2019-1549", package = "libssl1.1", severity = "MEDIUM",
      reason = "not reachable", rule = 1 }, r.ignored[1])
    assert.are.equal(1, #r.expired_ignores)
    assert.are.equal("vendor backport", r.expired_ignores[1].reason)
    assert.are.equal(3, r.effective_counts.MEDIUM)
    assert.are.equal(4, r.counts.MEDIUM) -- counts stay the scanner's
    -- before it expired, the purl rule hid both libcrypto findings
    scan.evaluate(r, { ignore = {
      { purl = "pkg:apk/alpine/libcrypto1.1*", reason = "vendor backport", expires = "2026-01-31" },
    } }, "2026-01-31T23:00:00Z")
    assert.are.equal(2, #r.ignored)
    assert.are.equal(0, #r.expired_ignores)
  end)

  it("matches ignore rules against aliases", function()
    local r = scan.load_report(FIX .. "grype/keycloak-rhel91.json")
    r.findings[1].aliases = { "GHSA-test-alias" }
    scan.evaluate(r, { ignore = { { id = "GHSA-test-alias", reason = "same as CVE" } } }, NOW)
    assert.are.equal(1, #r.ignored)
  end)

  it("fails on max counts and honours only_fixed", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    scan.evaluate(r, { fail_on = "CRITICAL", max = { MEDIUM = 3 } }, NOW)
    assert.is_false(r.passed)
    assert.are.equal("non_compliant", r.compliance)
    assert.are.same({ "4 MEDIUM findings, at most 3 allowed" }, plain(r.violations))
    scan.evaluate(r, { fail_on = "CRITICAL", max = { MEDIUM = 4 } }, NOW)
    assert.is_true(r.passed)
    assert.are.equal("warning", r.compliance)

    local d = scan.load_report(FIX .. "trivy/debian-buster.json")
    scan.evaluate(d, { only_fixed = true, fail_on = "LOW" }, NOW)
    assert.are.equal(1, d.effective_counts.CRITICAL)
    assert.are.equal(0, d.effective_counts.LOW) -- bash has no fix
    assert.are.same({ "1 CRITICAL finding (fail_on LOW)" }, plain(d.violations))
  end)

  it("lets a policy move the level thresholds", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    scan.evaluate(r, { levels = { warning = "HIGH" } }, NOW)
    assert.are.equal("compliant", r.compliance)
    scan.evaluate(r, { levels = { non_compliant = "MEDIUM" } }, NOW)
    assert.are.equal("non_compliant", r.compliance)
  end)

  it("rejects malformed policies", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    local cases = {
      { { fail_on = "SEVERE" }, "unknown severity SEVERE" },
      { { ignore = { { id = "CVE-1" } } }, "needs a reason" },
      { { ignore = { { reason = "x" } } }, "needs id, package, purl, path, path_glob or severity" },
      { { ignore = { { id = "CVE-1", reason = "x", expires = "next week" } } }, "expected YYYY%-MM%-DD" },
      { { ignore = { { id = "CVE-1", reason = "x", expiry = "2026-01-01" } } }, "unknown key 'expiry'" },
      { { fail_ob = "HIGH" }, "unknown key 'fail_ob'" },
      { { max = { HIGH = -1 } }, "non%-negative integer" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(scan.evaluate, r, c[1], NOW)
      assert.is_false(ok)
      assert.matches("scan.policy: .*" .. c[2], err)
    end
  end)

  it("writes a compliance report with deciding findings and recommendations", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    local rep = scan.generate_compliance_report(r, { ignore = {
      { id = "CVE-2023-2976", reason = "guava temp dirs unused", expires = "2020-01-01" } } }, NOW)
    assert.are.equal("critical", rep.level)
    assert.is_false(rep.passed)
    assert.are.equal(8, #rep.deciding)
    for _, f in ipairs(rep.deciding) do assert.are.equal("CRITICAL", f.severity) end
    assert.matches("^webgoat/webgoat:latest: critical %(8 CRITICAL, 7 HIGH, 6 MEDIUM, 5 LOW%) by trivy; fails the policy", rep.summary)
    assert.matches("1 expired ignore rule no longer applied", rep.summary)
    local by_pkg = {}
    for _, rec in ipairs(rep.recommendations) do by_pkg[(rec.package or "") .. "/" .. rec.action] = rec end
    local jackson = by_pkg["com.fasterxml.jackson.core:jackson-databind/upgrade"]
    assert.are.equal("2.13.3", jackson.from)
    assert.are.equal("2.13.4.1", jackson.to) -- the fix on the installed 2.13 line
    assert.are.same({ "CVE-2022-42003", "CVE-2022-42004" }, jackson.ids)
    assert.are.equal("upgrade com.fasterxml.jackson.core:jackson-databind from 2.13.3 to 2.13.4.1 (HIGH: CVE-2022-42003, CVE-2022-42004)",
      jackson.text)
    assert.are.equal("upgrade", rep.recommendations[1].action)
    assert.are.equal("CRITICAL", rep.recommendations[1].severity)
    assert.truthy(by_pkg["binutils/no_fix"])
    assert.truthy(by_pkg["/rebuild"])
    assert.matches("rebuild on a newer base image", by_pkg["/rebuild"].text)

    local eosl = scan.generate_compliance_report(scan.load_report(FIX .. "trivy/alpine-310.json"), nil, NOW)
    local rebuild
    for _, rec in ipairs(eosl.recommendations) do if rec.action == "rebuild" then rebuild = rec end end
    assert.are.equal("rebuild on a supported base image: alpine 3.10.2 is end-of-life and gets no more fixes",
      rebuild.text)
  end)

  it("gives a recipe the exit status of the policy", function()
    local recipe = os.tmpname() .. ".lua"
    local f = assert(io.open(recipe, "w"))
    f:write([[
local scan = require("myrmex.scan")
return {
  description = "gate on a scan report",
  params = { report = { type = "string", required = true } },
  run = function(p)
    return scan.exit_status(scan.load_report(p.report, { policy = { fail_on = "HIGH" } }))
  end,
}
]])
    f:close()
    local failing = sh.myrmex({ "run", recipe, "--set", "report=" .. FIX .. "trivy/debian-buster.json" })
    local passing = sh.myrmex({ "run", recipe, "--set", "report=" .. FIX .. "trivy/alpine-310.json" })
    os.remove(recipe)
    assert.are.equal(1, failing.code)
    assert.are.equal(0, passing.code)
  end)
end)

describe("merge and diff", function()
  local trivy = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
  local grype = scan.load_report(FIX .. "grype/webgoat-ubuntu2004.json")
  local scout = scan.load_report(FIX .. "scout/webgoat-ubuntu2004.sarif.json")

  local function key(f) return f.id .. "|" .. f.package .. "|" .. (f.installed_version or "") end

  it("merges back ends without duplicates and keeps who found what", function()
    local m = scan.merge(trivy, grype, scout)
    assert.are.equal("trivy+grype+scout", m.scanner)
    local seen, want, by_alias = {}, {}, {}
    for _, f in ipairs(m.findings) do
      assert.is_nil(seen[key(f)], key(f))
      seen[key(f)] = f
      for _, a in ipairs(f.aliases) do by_alias[a .. "|" .. f.package .. "|" .. (f.installed_version or "")] = f end
    end
    for _, r in ipairs({ trivy, grype, scout }) do
      for _, f in ipairs(r.findings) do want[key(f)] = true end
    end
    -- every input finding is there, under its own id or as an alias of the one it merged into
    local n, via_alias = 0, 0
    for k in pairs(want) do
      assert.truthy(seen[k] or by_alias[k], k)
      if seen[k] then n = n + 1 else via_alias = via_alias + 1 end
    end
    assert.are.equal(n, #m.findings)
    assert.is_true(via_alias > 0)
    local j = seen["CVE-2022-42003|com.fasterxml.jackson.core:jackson-databind|2.13.3"]
    assert.are.same({ "trivy", "grype", "scout" }, j.found_by)
    assert.are.equal("deep wrapper array nesting wrt UNWRAP_SINGLE_VALUE_ARRAYS", j.title) -- Trivy's, first
    -- merging merged results keeps who found what
    local again = scan.merge(scan.merge(trivy, grype), scout)
    assert.are.equal(#m.findings, #again.findings)
    local j2
    for _, f in ipairs(again.findings) do
      if key(f) == "CVE-2022-42003|com.fasterxml.jackson.core:jackson-databind|2.13.3" then j2 = f end
    end
    assert.are.same({ "trivy", "grype", "scout" }, j2.found_by)
    local total = 0
    for _, c in pairs(m.counts) do total = total + c end
    assert.are.equal(#m.findings, total)
    assert.are.equal("critical", m.compliance)
  end)

  it("keeps the misconfigurations, secrets and licenses of every result, each once", function()
    local sl = scan.load_report(FIX .. "trivy/secrets-licenses-fs.json")
    assert.is_true(#sl.secrets > 0 and #sl.licenses > 0)
    -- the results with them come second: the first result's lists alone would lose them
    local m = scan.merge(grype, sl, sl)
    assert.are.equal(#sl.secrets, #m.secrets)
    assert.are.equal(#sl.licenses, #m.licenses)
    assert.are.equal(sl.secrets[1].id, m.secrets[1].id)
    local withconf = scan.merge(grype, trivy)
    assert.are.equal(#(trivy.misconfigurations or {}), #withconf.misconfigurations)
  end)

  it("diffs a new scan against the deployed one", function()
    local deployed = trivy
    local new = { findings = {} }
    for _, f in ipairs(trivy.findings) do
      -- the new image upgraded jackson-databind; one new finding appeared
      if f.package ~= "com.fasterxml.jackson.core:jackson-databind" then new.findings[#new.findings + 1] = f end
    end
    new.findings[#new.findings + 1] = { id = "CVE-2099-0001", package = "libnew", severity = "HIGH",
      installed_version = "1.0" }
    local d = scan.diff(deployed, new)
    assert.are.equal(1, #d.introduced)
    assert.are.equal("CVE-2099-0001", d.introduced[1].id)
    assert.are.equal(2, #d.fixed)
    assert.are.equal(24, #d.unchanged)
    assert.are.equal(1, d.counts.introduced.HIGH)
    assert.are.equal(2, d.counts.fixed.HIGH)
    -- against another scanner's view of the same image, nothing of Trivy's is new
    local g = scan.diff(grype, trivy)
    assert.are.equal(0, #g.introduced)
    assert.are.equal(26, #g.unchanged)
  end)
end)

describe("export", function()
  it("writes the normalized model as JSON that reads back", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    local text = scan.export(r, "json")
    local back = json.decode(text)
    assert.are.equal(4, #back.findings)
    assert.are.equal("CVE-2019-1549", back.findings[1].id)
    assert.are.equal(5.3, back.findings[1].cvss_score)
    assert.are.equal(4, back.counts.MEDIUM)
    assert.are.equal("warning", back.compliance)
    assert.matches("\"aliases\":%s*%[%]", text)
    local path = os.tmpname()
    assert.are.equal(path, scan.export(r, "json", path))
    assert.are.equal(text, read(path))
    os.remove(path)
  end)

  it("streams SARIF and CSV to a file, and leaves no file when writing fails", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    local path = os.tmpname()
    for _, fmt in ipairs({ "sarif", "csv" }) do
      assert.are.equal(path, scan.export(r, fmt, path))
      assert.are.equal(scan.export(r, fmt), read(path))
    end
    assert.are.equal(4, #json.decode(scan.export(r, "sarif")).runs[1].results)
    os.remove(path)
    r.findings[3].package = "bad\255"
    local ok, err = pcall(scan.export, r, "sarif", path)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("not valid UTF-8", 1, true), tostring(err))
    assert.is_nil(io.open(path))
    assert.is_nil(io.open(path .. ".part"))
  end)

  it("writes RFC 4180 CSV that a CSV parser reads back as the model", function()
    local r = scan.load_report(FIX .. "grype/webgoat-ubuntu2004.json")
    r.findings[1].title = 'He said "hi", then\r\nleft; 100% sure\n'
    r.findings[2].title = ",,"
    local text = scan.export(r, "csv")
    assert.are.equal("id,aliases,severity,", text:sub(1, 20))
    assert.truthy(text:find("\r\n", 1, true))
    local res = process.run { argv = { "python3", "-c", [[
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'), strict=True))
json.dump(rows, sys.stdout)
]], (function() local p = os.tmpname(); scan.export(r, "csv", p); return p end)() } }
    assert.are.equal(0, res.status, res.stderr)
    local rows = json.decode(res.stdout)
    assert.are.equal(#r.findings, #rows)
    for i, f in ipairs(r.findings) do
      local row = rows[i]
      assert.are.equal(f.id, row.id)
      assert.are.equal(table.concat(f.aliases, " "), row.aliases)
      assert.are.equal(f.severity, row.severity)
      assert.are.equal(f.cvss_score and string.format("%.1f", f.cvss_score) or "", row.cvss_score)
      assert.are.equal(f.cvss_vector or "", row.cvss_vector)
      assert.are.equal(f.package, row.package)
      assert.are.equal(f.installed_version or "", row.installed_version)
      assert.are.equal(f.fixed_version or "", row.fixed_version)
      assert.are.equal(f.purl or "", row.purl)
      assert.are.equal(f.title or "", row.title)
      assert.are.equal(f.path or "", row.path)
      assert.are.equal(table.concat(f.references, " "), row.references)
    end
    assert.are.equal('He said "hi", then\r\nleft; 100% sure\n', rows[1].title)
  end)

  it("rejects unknown formats", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    local ok, err = pcall(scan.export, r, "xml")
    assert.is_false(ok)
    assert.matches("scan.export: unknown format 'xml'", err)
  end)
end)
