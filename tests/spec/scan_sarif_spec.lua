-- SARIF export: validated against the official 2.1.0 schema (python3-jsonschema, formats
-- checked), and compared field by field with Trivy's own SARIF of the same report: the
-- outputs of `trivy convert --format sarif` committed in tests/fixtures/sarif/trivy-convert/,
-- and, where the test bed's trivy is installed, made again by it at run time.
local scan = require("myrmex.scan")
local json = require("myrmex.json")
local log = require("myrmex.log")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"
local SCHEMA = sh.fixtures .. "/sarif/sarif-schema-2.1.0.json"
local CONVERTED = sh.fixtures .. "/sarif/trivy-convert/"
local TRIVY = "/usr/local/lib/myrmex-test/bin/trivy"
local TRIVY_FIXTURES = { "alpine-310", "debian-buster", "dockerfile", "gomod", "sl-micro-rancher5.4",
  "webgoat-ubuntu2004-jar", "secrets-licenses-fs", "secrets-licenses-image" }

local read, write = sh.read, sh.write

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

local function is_exec(path)
  local st = rt.stat(path)
  return st ~= nil and st.type == "file"
end

-- What we write that Trivy does not is left out of the comparison (tests/support/sarif_diff.lua).
local differences = require("tests.support.sarif_diff").differences

local function ours_for(name)
  return json.decode(scan.export(scan.load_report(FIX .. "trivy/" .. name .. ".json"), "sarif"))
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
    for _, f in ipairs({ "trivy/alpine-310.json", "trivy/debian-buster.json", "trivy/dockerfile.json",
      "trivy/webgoat-ubuntu2004-jar.json", "trivy/sl-micro-rancher5.4.json", "trivy/gomod.json",
      "grype/webgoat-ubuntu2004.json", "grype/keycloak-rhel91.json",
      "grype/presenter-image-current-schema.json", "grype/presenter-empty.json",
      "scout/webgoat-ubuntu2004.sarif.json" }) do
      local out = workdir .. "/" .. f:gsub("/", "-") .. ".sarif.json"
      scan.export(scan.load_report(FIX .. f), "sarif", out)
      paths[#paths + 1] = out
    end
    -- odd image names, targets and paths, and a Dockerfile location must still give valid URIs
    local r = scan.load_report(FIX .. "trivy/alpine-310.json", { image = "x" })
    r.image = "my registry:5000/app (test) #1"
    for _, f in ipairs(r.findings) do f.target = r.image end
    r.findings[1].path = "C:\\odd dir\\lib [x] #1.jar"
    local g = scan.load_report(FIX .. "grype/keycloak-rhel91.json")
    g.image = "alpine:3.10"
    for _, f in ipairs(g.findings) do f.path, f.target = nil, nil end
    scan.export(r, "sarif", workdir .. "/odd.sarif.json")
    scan.export(g, "sarif", workdir .. "/scheme.sarif.json")
    scan.export(r, "sarif", workdir .. "/dockerfile.sarif.json", { dockerfile = "build/Dockerfile", dockerfile_line = 3 })
    for _, p in ipairs({ "odd", "scheme", "dockerfile" }) do paths[#paths + 1] = workdir .. "/" .. p .. ".sarif.json" end
    local res = validate(paths)
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    local function uri(doc, i)
      return doc.runs[1].results[i].locations[1].physicalLocation.artifactLocation.uri
    end
    local odd = json.decode(read(workdir .. "/odd.sarif.json"))
    assert.are.equal("C%3A/odd%20dir/lib%20%5Bx%5D%20%231.jar", uri(odd, 1))
    assert.are.equal("my%20registry%3A5000/app", uri(odd, 2))
    -- "alpine:3.10" would be an absolute URI of scheme alpine: it is the repository
    local scheme = json.decode(read(workdir .. "/scheme.sarif.json"))
    assert.are.equal("library/alpine", uri(scheme, 1))
    local df = json.decode(read(workdir .. "/dockerfile.sarif.json"))
    local loc = df.runs[1].results[1].locations[1].physicalLocation
    assert.are.equal("build/Dockerfile", loc.artifactLocation.uri)
    assert.are.equal(3, loc.region.startLine)
  end)

  it("refuses a Dockerfile line SARIF cannot hold", function()
    local r = scan.load_report(FIX .. "trivy/alpine-310.json")
    for _, line in ipairs({ 0, -1, 1.5, "3" }) do
      local ok, err = pcall(scan.export, r, "sarif", nil, { dockerfile = "Dockerfile", dockerfile_line = line })
      assert.is_false(ok, tostring(line))
      assert.matches("scan.export: dockerfile_line must be an integer from 1", err)
    end
    local ok, err = pcall(scan.export, r, "sarif", nil, { dockerfil = "Dockerfile" })
    assert.is_false(ok)
    assert.matches("scan.export: unknown option 'dockerfil'", err)
  end)

  it("matches Trivy's upstream SARIF golden for alpine 3.10, field by field", function()
    local theirs = json.decode(read(sh.fixtures .. "/sarif/trivy-alpine-310.sarif.json"))
    assert.are.same({}, differences(theirs, ours_for("alpine-310")))
  end)

  for _, name in ipairs(TRIVY_FIXTURES) do
    it("matches `trivy convert --format sarif` of " .. name .. ".json, field by field", function()
      local committed = CONVERTED .. name .. ".sarif.json"
      local theirs = json.decode(assert(read(committed), "missing " .. committed))
      local ours = ours_for(name)
      assert.are.same({}, differences(theirs, ours))
      assert.is_true(#theirs.runs[1].results == #ours.runs[1].results)
    end)
  end

  it("matches what the installed trivy converts now, and the committed conversions are its own", function()
    if not is_exec(TRIVY) then
      pending("trivy is not installed at " .. TRIVY .. " (the test bed builds it): compared with the committed conversions only")
      return
    end
    for _, name in ipairs(TRIVY_FIXTURES) do
      local out = workdir .. "/convert-" .. name .. ".sarif.json"
      local res = process.run { argv = { TRIVY, "convert", "--quiet", "--format", "sarif", "--output", out,
        FIX .. "trivy/" .. name .. ".json" }, timeout = 120 }
      assert.are.equal(0, res.status, res.stderr)
      local now = json.decode(read(out))
      assert.are.same({}, differences(now, ours_for(name)), name)
      local committed = json.decode(read(CONVERTED .. name .. ".sarif.json"))
      assert.are.same({}, differences(committed, now), name)
    end
  end)

  it("keeps fingerprints and URIs when only the image's tag changes", function()
    local function fingerprints(image_name, ref)
      local text = read(FIX .. "trivy/webgoat-ubuntu2004-jar.json"):gsub("webgoat/webgoat:latest", image_name)
      local r = scan.load_report(text)
      r.image = ref
      local doc = json.decode(scan.export(r, "sarif"))
      local fps, uris = {}, {}
      for i, res in ipairs(doc.runs[1].results) do
        fps[i] = res.partialFingerprints["myrmexVulnerability/v1"]
        uris[i] = res.locations[1].physicalLocation.artifactLocation.uri
      end
      return fps, uris
    end
    local fa, ua = fingerprints("webgoat/webgoat:latest", "webgoat/webgoat:latest")
    local fb, ub = fingerprints("registry.local:5000/webgoat/webgoat:v2023.8", "registry.local:5000/webgoat/webgoat:v2023.8")
    assert.are.equal(26, #fa)
    assert.are.same(fa, fb)
    assert.are.same(ua, ub)
    assert.are.equal("webgoat/webgoat", ua[1])
  end)

  it("puts a repository scan's results on its lock files, and Scout's on every location", function()
    local g = ours_for("gomod")
    local uris = {}
    for _, res in ipairs(g.runs[1].results) do uris[res.locations[1].physicalLocation.artifactLocation.uri] = true end
    assert.are.same({ ["go.mod"] = true, ["submod/go.mod"] = true, ["submod2/go.mod"] = true }, uris)
    local scout = scan.load_report(FIX .. "scout/webgoat-ubuntu2004.sarif.json")
    local doc = json.decode(scan.export(scout, "sarif"))
    local raw = json.decode(read(FIX .. "scout/webgoat-ubuntu2004.sarif.json"))
    local most = 0
    for i, res in ipairs(doc.runs[1].results) do
      assert.are.equal(#raw.runs[1].results[i].locations, #res.locations)
      for k, l in ipairs(res.locations) do
        assert.are.equal(raw.runs[1].results[i].locations[k].physicalLocation.artifactLocation.uri,
          l.physicalLocation.artifactLocation.uri)
      end
      if #res.locations > most then most = #res.locations end
    end
    assert.are.equal(19, most)
  end)

  it("exports misconfigurations as Trivy does", function()
    local doc = ours_for("dockerfile")
    local run = doc.runs[1]
    assert.are.equal(1, #run.results)
    assert.are.equal("Misconfiguration", run.tool.driver.rules[1].name)
    assert.are.equal("error", run.results[1].level)
    assert.are.equal("Dockerfile", run.results[1].locations[1].physicalLocation.artifactLocation.uri)
    assert.are.equal("8.0", run.tool.driver.rules[1].properties["security-severity"])
  end)

  it("exports secrets and licenses as Trivy does", function()
    local r = scan.load_report(FIX .. "trivy/secrets-licenses-fs.json")
    assert.are.equal(3, #r.secrets)
    assert.are.equal(3, #r.licenses)
    assert.are.equal(0, #r.findings)
    local run = json.decode(scan.export(r, "sarif")).runs[1]
    local ids, names = {}, {}
    for i, res in ipairs(run.results) do ids[i] = res.ruleId end
    for i, rule in ipairs(run.tool.driver.rules) do names[i] = rule.name end
    assert.are.same({ "aws-access-key-id", "aws-secret-access-key", "private-key", "leftpad:GPL-3.0-only",
      ":Apache-2.0", ":GPL-3.0" }, ids)
    assert.are.same({ "Secret", "Secret", "Secret", "License", "License", "License" }, names)
    local key = run.results[3].locations[1].physicalLocation
    assert.are.equal("deploy/id_rsa", key.artifactLocation.uri)
    assert.are.same({ 2, 7 }, { key.region.startLine, key.region.endLine })
    assert.are.equal("AWS_ACCESS_KEY_ID=********************", run.tool.driver.rules[1].fullDescription.text)
    assert.are.equal("Loose%20File%20License%28s%29", run.results[5].locations[1].physicalLocation.artifactLocation.uri)
    -- the JSON export carries them too
    local doc = json.decode(scan.export(r, "json"))
    assert.are.equal("private-key", doc.secrets[3].id)
    assert.are.equal("vendor/leftpad/LICENSE", doc.licenses[3].file_path)
    -- a secret's line and the file of a license tell results apart for GitHub
    assert.are_not.equal(run.results[5].partialFingerprints["myrmexVulnerability/v1"],
      run.results[6].partialFingerprints["myrmexVulnerability/v1"])
  end)

  it("matches the SARIF of a fresh `trivy fs` scan of secrets and licenses (tests/fixtures/trivy-secrets)", function()
    if not is_exec(TRIVY) then
      pending("trivy is not installed at " .. TRIVY .. " (the test bed builds it)")
      return
    end
    -- offline: secret and license scanning need no vulnerability database
    local report, converted = workdir .. "/fresh-secrets.json", workdir .. "/fresh-secrets.sarif.json"
    local res = process.run { argv = { TRIVY, "fs", "--quiet", "--cache-dir", workdir .. "/trivy-cache",
      "--scanners", "secret,license", "--license-full", "--skip-db-update", "--skip-java-db-update",
      "--offline-scan", "--disable-telemetry", "--skip-version-check", "--format", "json",
      "--output", report, sh.fixtures .. "/trivy-secrets" },
      timeout = 300 }
    assert.are.equal(0, res.status, res.stderr)
    res = process.run { argv = { TRIVY, "convert", "--quiet", "--format", "sarif", "--output", converted,
      report }, timeout = 120 }
    assert.are.equal(0, res.status, res.stderr)
    local r = scan.load_report(report)
    assert.are.equal(3, #r.secrets)
    assert.are.equal(3, #r.licenses)
    local ours = json.decode(scan.export(r, "sarif"))
    local theirs = json.decode(read(converted))
    assert.are.same({}, differences(theirs, ours))
    assert.are.equal(6, #ours.runs[1].results)
  end)

  it("takes security-severity from the severity's source, as Trivy does", function()
    -- Debian rates bash's CVE-2019-18276 LOW and scores nothing; NVD's 7.8 is not the source
    local doc = ours_for("debian-buster")
    for _, rule in ipairs(doc.runs[1].tool.driver.rules) do
      if rule.id == "CVE-2019-18276" then
        assert.are.equal("2.0", rule.properties["security-severity"])
        assert.is_nil(rule.properties.cvssv3_baseScore)
      end
    end
    -- no fix: the field is empty, as in Trivy's text, not "none"
    local r = json.decode(scan.export(scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json"), "sarif"))
    local nofix = 0
    for _, res in ipairs(r.runs[1].results) do
      assert.is_nil(res.message.text:find("Fixed Version: none", 1, true))
      if res.message.text:find("Fixed Version: \n", 1, true) then nofix = nofix + 1 end
    end
    assert.are.equal(4, nofix)
  end)

  it("maps severity to level like GitHub expects, one rule per id", function()
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
    local ids, n = {}, 0
    for _, f in ipairs(r.findings) do
      if not ids[f.id] then n = n + 1 end
      ids[f.id] = true
    end
    assert.are.equal(n, #run.tool.driver.rules)
  end)

  it("cuts a run past GitHub's results limit to its worst results, and says so", function()
    local r = scan.load_report(FIX .. "trivy/webgoat-ubuntu2004-jar.json")
    local records = {}
    local remove = log.add_hook(function(rec) records[#records + 1] = rec end)
    local doc = json.decode(scan.export(r, "sarif", nil, { max_results = 10 }))
    remove()
    local run = doc.runs[1]
    assert.are.equal(10, #run.results)
    assert.are.equal(16, run.properties.myrmexOmittedResults)
    for _, res in ipairs(run.results) do assert.are.equal("error", res.level) end -- 8 CRITICAL, then HIGH
    local warned
    for _, rec in ipairs(records) do
      if rec.level == "warn" and rec.msg:find("26 results are more than the 10 GitHub accepts", 1, true) then warned = true end
    end
    assert.is_true(warned)
    assert.are.equal(25000, require("myrmex.scan.export").GITHUB_MAX_RESULTS)
    -- every rule is used by a kept result
    local used = {}
    for _, res in ipairs(run.results) do used[res.ruleIndex + 1] = true end
    for i in ipairs(run.tool.driver.rules) do assert.is_true(used[i]) end
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
