-- SARIF export: validated against the official 2.1.0 schema (python3-jsonschema, formats
-- checked), and compared field by field with
-- Trivy's own SARIF for the same scan.
local scan = require("myrmex.scan")
local json = require("myrmex.json")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"
local SCHEMA = sh.fixtures .. "/sarif/sarif-schema-2.1.0.json"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The official schema is draft-04; tests/support/validate_schema.py checks it with Debian's
-- python3-jsonschema, formats included (a bad URI fails as GitHub's upload would).
local workdir
local function setup()
  if workdir then return end
  workdir = rt.mkdtemp("/tmp/mx-sarif-")
end

local function validate(paths)
  local argv = { "/usr/bin/python3", sh.src .. "/tests/support/validate_schema.py", SCHEMA }
  for _, p in ipairs(paths) do argv[#argv + 1] = p end
  return process.run { argv = argv, timeout = 300 }
end

describe("SARIF export", function()
  setup()

  it("validates the validator: real SARIF passes, a broken log fails", function()
    local res = validate { sh.fixtures .. "/sarif/trivy-alpine-310.sarif.json",
      FIX .. "scout/webgoat-ubuntu2004.sarif.json" }
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    local doc = json.decode(read(sh.fixtures .. "/sarif/trivy-alpine-310.sarif.json"))
    doc.runs[1].results[1].level = "fatal"
    doc.runs[1].results[2].locations[1].physicalLocation.region.startLine = 0
    write(workdir .. "/broken.sarif.json", json.encode(doc))
    res = validate { workdir .. "/broken.sarif.json" }
    assert.are_not.equal(0, res.status)
    assert.matches("invalid", res.stdout .. res.stderr)
    assert.matches("level", res.stdout .. res.stderr)
  end)

  it("validates against the official schema for every fixture", function()
    local paths = {}
    for _, f in ipairs({ "trivy/alpine-310.json", "trivy/debian-buster.json",
      "trivy/webgoat-ubuntu2004-jar.json", "trivy/sl-micro-rancher5.4.json", "trivy/gomod.json",
      "grype/webgoat-ubuntu2004.json", "grype/keycloak-rhel91.json",
      "grype/presenter-image-current-schema.json", "grype/presenter-empty.json",
      "scout/webgoat-ubuntu2004.sarif.json" }) do
      local out = workdir .. "/" .. f:gsub("/", "-") .. ".sarif.json"
      scan.export(scan.load_report(FIX .. f), "sarif", out)
      paths[#paths + 1] = out
    end
    -- odd image names and a Dockerfile location must still give valid URIs
    local r = scan.load_report(FIX .. "trivy/alpine-310.json", { image = "x" })
    r.image = "my registry:5000/app (test) #1"
    scan.export(r, "sarif", workdir .. "/odd.sarif.json")
    scan.export(r, "sarif", workdir .. "/dockerfile.sarif.json", { dockerfile = "build/Dockerfile", dockerfile_line = 3 })
    paths[#paths + 1] = workdir .. "/odd.sarif.json"
    paths[#paths + 1] = workdir .. "/dockerfile.sarif.json"
    local res = validate(paths)
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    local odd = json.decode(read(workdir .. "/odd.sarif.json"))
    assert.are.equal("my%20registry:5000/app%20%28test%29%20%231",
      odd.runs[1].results[1].locations[1].physicalLocation.artifactLocation.uri)
    local df = json.decode(read(workdir .. "/dockerfile.sarif.json"))
    local loc = df.runs[1].results[1].locations[1].physicalLocation
    assert.are.equal("build/Dockerfile", loc.artifactLocation.uri)
    assert.are.equal(3, loc.region.startLine)
  end)

  it("matches Trivy's own SARIF for the same scan, field by field", function()
    local ours = json.decode(scan.export(scan.load_report(FIX .. "trivy/alpine-310.json"), "sarif"))
    local theirs = json.decode(read(sh.fixtures .. "/sarif/trivy-alpine-310.sarif.json"))
    assert.are.equal(theirs.version, ours.version)
    assert.are.equal(theirs["$schema"], ours["$schema"])
    local o, t = ours.runs[1], theirs.runs[1]
    assert.are.equal(t.columnKind, o.columnKind)
    for _, k in ipairs({ "imageName", "imageID" }) do
      assert.are.equal(t.properties[k], o.properties[k], k)
    end
    assert.are.same(t.properties.repoTags, o.properties.repoTags)
    local orules, trules = o.tool.driver.rules, t.tool.driver.rules
    assert.are.equal(#trules, #orules)
    for i, tr in ipairs(trules) do
      local or_ = orules[i]
      for _, path in ipairs({ "id", "name", "shortDescription.text", "fullDescription.text",
        "defaultConfiguration.level", "helpUri", "help.text", "help.markdown",
        "properties.security-severity", "properties.precision", "properties.cvssv2_score",
        "properties.cvssv2_vector", "properties.cvssv3_baseScore", "properties.cvssv3_vector" }) do
        local a, b = tr, or_
        for part in path:gmatch("[^.]+") do a, b = a[part], b[part] end
        assert.are.equal(a, b, "rule " .. tr.id .. " " .. path)
      end
      assert.are.same(tr.properties.tags, or_.properties.tags)
    end
    assert.are.equal(#t.results, #o.results)
    for i, tr in ipairs(t.results) do
      local or_ = o.results[i]
      assert.are.equal(tr.ruleId, or_.ruleId)
      assert.are.equal(tr.ruleIndex, or_.ruleIndex)
      assert.are.equal(tr.level, or_.level)
      assert.are.equal(tr.message.text, or_.message.text)
      local tl, ol = tr.locations[1], or_.locations[1]
      assert.are.same(tl.physicalLocation.artifactLocation, ol.physicalLocation.artifactLocation)
      assert.are.same(tl.physicalLocation.region, ol.physicalLocation.region)
      assert.are.equal(tl.message.text, ol.message.text)
    end
    -- where we differ on purpose: our tool, and fingerprints Trivy does not write
    assert.are.equal("myrmex", o.tool.driver.name)
    assert.matches("trivy dev", o.tool.driver.fullName)
    assert.is_nil(t.results[1].partialFingerprints)
  end)

  it("maps severity to level and CVSS to security-severity like GitHub expects", function()
    local r = scan.load_report(FIX .. "grype/webgoat-ubuntu2004.json")
    local doc = json.decode(scan.export(r, "sarif"))
    local run = doc.runs[1]
    local want = { CRITICAL = "error", HIGH = "error", MEDIUM = "warning", LOW = "note", UNKNOWN = "note" }
    for i, res in ipairs(run.results) do
      local f = r.findings[i]
      assert.are.equal(want[f.severity], res.level)
      local rule = run.tool.driver.rules[res.ruleIndex + 1]
      assert.are.equal(f.id, rule.id)
      local sev = tonumber(rule.properties["security-severity"])
      assert.is_true(sev >= 0 and sev <= 10)
    end
    -- one rule per vulnerability id
    local ids = {}
    for _, f in ipairs(r.findings) do ids[f.id] = true end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.are.equal(n, #run.tool.driver.rules)
    -- no CVSS: the severity's fallback score (gomod's GHSA entries are UNKNOWN)
    local g = json.decode(scan.export(scan.load_report(FIX .. "trivy/gomod.json"), "sarif"))
    for _, rule in ipairs(g.runs[1].tool.driver.rules) do
      if rule.id == "GMS-2022-20" then assert.are.equal("0.0", rule.properties["security-severity"]) end
    end
  end)

  it("gives stable, distinct fingerprints", function()
    local a = json.decode(scan.export(scan.load_report(FIX .. "scout/webgoat-ubuntu2004.sarif.json"), "sarif"))
    local b = json.decode(scan.export(scan.load_report(FIX .. "scout/webgoat-ubuntu2004.sarif.json"), "sarif"))
    local seen = {}
    for i, res in ipairs(a.runs[1].results) do
      local fp = res.partialFingerprints["myrmexVulnerability/v1"]
      assert.are.equal(fp, b.runs[1].results[i].partialFingerprints["myrmexVulnerability/v1"])
      assert.is_nil(seen[fp], fp)
      seen[fp] = true
    end
  end)

  it("cleans up", function()
    process.run { argv = { "rm", "-rf", "--", workdir } }
  end)
end)
