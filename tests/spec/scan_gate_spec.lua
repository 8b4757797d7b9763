-- A scan gate that cannot be fooled: each case here is a way a CI gate on myrmex.scan passed
-- (or broke) when it should have failed (issue #18), checked against real fixture reports.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local log = require("myrmex.log")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"
local FAKE = sh.src .. "/tests/support/fake-scanners/fake-scanner"
local NOW = "2026-06-01T00:00:00Z"

-- Log records emitted while fn runs (at debug level, written nowhere).
local function logged(fn)
  local before = log.settings()
  local sink = assert(io.open("/dev/null", "w"))
  log.configure { level = "debug", out = sink }
  local records = {}
  local remove = log.add_hook(function(rec) records[#records + 1] = rec end)
  local ok, err = pcall(fn)
  remove()
  log.configure { level = before.level, out = before.out }
  sink:close()
  assert(ok, tostring(err))
  return records
end

local function fake_dir(names, conf)
  local dir = rt.mkdtemp("/tmp/mx-gate-")
  for _, n in ipairs(names) do
    assert.are.equal(0, process.run { argv = { "ln", "-s", FAKE, dir .. "/" .. n } }.status)
  end
  sh.write(dir .. "/fake.json", json.encode(conf))
  return dir
end

local function argv_log(dir)
  local calls = {}
  for line in (sh.read(dir .. "/argv.log") or ""):gmatch("[^\n]+") do calls[#calls + 1] = json.decode(line) end
  return calls
end

local function cleanup(dir)
  process.run { argv = { "rm", "-rf", "--", dir } }
end

describe("scan gate", function()
  it("keeps a result's verdict when the compliance report is made without a policy", function()
    -- docs/scan.md's opening example: fail_on=MEDIUM on alpine fails, and must still fail
    -- after generate_compliance_report(result)
    local r = scan.load_report(FIX .. "trivy/alpine-310.json", { policy = { fail_on = "MEDIUM" }, now = NOW })
    assert.are.equal(1, scan.exit_status(r))
    local rep = scan.generate_compliance_report(r)
    assert.is_false(rep.passed)
    assert.are.equal(1, scan.exit_status(r))
    assert.matches("fail_on MEDIUM", rep.summary)
    scan.evaluate(r)
    assert.are.equal(1, scan.exit_status(r))
    -- an explicit policy still re-judges
    scan.generate_compliance_report(r, { fail_on = "CRITICAL" })
    assert.are.equal(0, scan.exit_status(r))
  end)

  it("rejects a misspelt severity in load_report instead of dropping findings", function()
    local ok, err = pcall(scan.load_report, FIX .. "trivy/webgoat-ubuntu2004-jar.json", { severity = "CRTICAL,HIGH" })
    assert.is_false(ok)
    assert.matches("scan.load_report: unknown severity 'CRTICAL'", err)
    ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json", { severity = { "HIGH", 3 } })
    assert.is_false(ok)
    assert.matches("scan.load_report: severity%[2%] must be a string", err)
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json", { severity = { "critical", "HIGH" } })
    assert.are.equal(15, #r.findings)
  end)

  it("says which entries of a report it left out, and why", function()
    local text = '{"SchemaVersion":2,"Results":[7,{"Vulnerabilities":[{"VulnerabilityID":"CVE-1"},'
      .. '{"VulnerabilityID":5,"Severity":"CRITICAL"},null]}]}'
    local r
    local records = logged(function() r = scan.load_report(text) end)
    assert.are.equal(1, #r.findings)
    assert.are.equal(3, #r.dropped)
    local debug, warn = {}, {}
    for _, rec in ipairs(records) do
      if rec.level == "debug" and rec.msg:find("Results%[") then debug[#debug + 1] = rec.msg end
      if rec.level == "warn" then warn[#warn + 1] = rec.msg end
    end
    assert.are.same({ "scan: report: Results[1]: a JSON number, not an object",
      "scan: report: Results[2].Vulnerabilities[2]: no VulnerabilityID string",
      "scan: report: Results[2].Vulnerabilities[3]: a JSON userdata, not an object" }, debug)
    assert.are.equal(1, #warn)
    assert.matches("3 entries left out", warn[1])
    local g = scan.load_report('{"matches":[{"vulnerability":{"id":1}},{"vulnerability":{"id":"CVE-2"},"artifact":{}}],"descriptor":{}}')
    assert.are.equal(1, #g.findings)
    assert.are.same({ "matches[1]: no vulnerability with an id string" }, { table.unpack(g.dropped) })
  end)

  it("takes no infinite or out-of-range CVSS score, and names the file a failed export was for", function()
    local text = '{"SchemaVersion":2,"Results":[{"Class":"os-pkgs","Vulnerabilities":[{"VulnerabilityID":"CVE-9",'
      .. '"PkgName":"p","Severity":"HIGH","SeveritySource":"nvd","CVSS":{"nvd":{"V3Score":1e999,"V2Score":-1},'
      .. '"ghsa":{"V3Score":11}}}]}]}'
    local r = scan.load_report(text)
    local f = r.findings[1]
    assert.is_nil(f.cvss_score)
    assert.is_nil(f.cvss.nvd.v3_score)
    assert.is_nil(f.cvss.nvd.v2_score)
    assert.is_nil(f.cvss.ghsa.v3_score)
    local doc = json.decode(scan.export(r, "sarif"))
    assert.are.equal("8.0", doc.runs[1].tool.driver.rules[1].properties["security-severity"])
    -- a value no JSON can hold, put in by a recipe: the error names the file
    r.findings[1].cvss_score = math.huge
    local path = os.tmpname()
    local ok, err = pcall(scan.export, r, "json", path)
    assert.is_false(ok)
    assert.matches(path, tostring(err), 1, true)
    assert.is_nil(io.open(path .. ".part"))
    os.remove(path)
  end)

  it("accepts only expiry dates that exist", function()
    for _, bad in ipairs({ "2026-13-45", "2026-02-29", "2026-04-31", "2026-00-10", "2026-01-01T24:00:00Z",
      "2026-01-01T10:60:00Z" }) do
      local ok, err = pcall(scan.load_report, FIX .. "trivy/alpine-310.json",
        { policy = { ignore = { { id = "CVE-1", reason = "r", expires = bad } } } })
      assert.is_false(ok, bad)
      assert.matches("expires: no such", err)
    end
    local r = scan.load_report(FIX .. "trivy/alpine-310.json", { now = NOW,
      policy = { ignore = { { id = "CVE-2019-1549", reason = "r", expires = "2028-02-29" } } } })
    assert.are.equal(2, #r.ignored)
  end)

  it("keeps the report of a scanner that exits non-zero because of its findings", function()
    local dir = fake_dir({ "trivy", "grype" }, { report = FIX .. "trivy/debian-buster.json", status = 1 })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy", args = { "--exit-code", "1" } }
    local r = s:scan_image("debian:buster")
    assert.are.equal(2, #r.findings)
    assert.are.equal(1, r.scanner_status)
    assert.is_false(r.passed)
    sh.write(dir .. "/fake.json", json.encode { report = FIX .. "grype/keycloak-rhel91.json", status = 2 })
    local g = scan.new { backend = "grype", path = dir .. "/grype", args = { "--fail-on", "low" } }
    assert.are.equal(6, #g:scan_image("keycloak:21").findings)
    -- exiting non-zero with half a report is still a failure
    sh.write(dir .. "/fake.json", json.encode { mode = "truncate", report = FIX .. "trivy/debian-buster.json" })
    cleanup(dir)
    dir = fake_dir({ "trivy" }, { mode = "fail", status = 1, message = "FATAL scan failed" })
    s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local ok, err = pcall(s.scan_image, s, "debian:buster")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    cleanup(dir)
  end)

  it("gives Trivy our timeout instead of its own 5 minutes", function()
    local dir = fake_dir({ "trivy" }, { report = FIX .. "trivy/alpine-310.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy", timeout = 1800 }
    s:scan_image("alpine:3.10")
    s:scan_image("alpine:3.10", { timeout = 12.5 })
    local calls = argv_log(dir)
    assert.are.same({ "--timeout", "1800s" }, { calls[1][6], calls[1][7] })
    assert.are.same({ "--timeout", "13s" }, { calls[2][6], calls[2][7] })
    cleanup(dir)
  end)
end)
