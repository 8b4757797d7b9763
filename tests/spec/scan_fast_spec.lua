-- The C fast path of myrmex.scan (bindings/scan.c: Trivy normalization and the CSV writer)
-- against the Lua readers and writer it stands in for: the same results, CSV bytes and errors
-- on every fixture report and on malformed ones (issue #18).
local scan = require("myrmex.scan")
local json = require("myrmex.json")
local log = require("myrmex.log")
local sh = require("tests.support.sh")

local NOW = "2026-06-01T00:00:00Z"

-- Every scanner report in tests/fixtures.
local FIXTURES = {}
do
  local p = io.popen("find " .. sh.q(sh.fixtures .. "/scanners") .. " " ..
    sh.q(sh.fixtures .. "/sarif") .. " -name '*.json' ! -name 'sarif-schema*' | sort")
  for line in p:lines() do FIXTURES[#FIXTURES + 1] = line end
  p:close()
end

-- Both paths, with the fast path left on afterwards.
local function both(fn)
  scan.fast_path(true)
  local ok_c, c = pcall(fn)
  scan.fast_path(false)
  local ok_l, l = pcall(fn)
  scan.fast_path(true)
  return ok_c, c, ok_l, l
end

-- Deep equality, metatables included (the decoder's array/object markers), with the path of
-- the first difference.
local function same(a, b, path)
  path = path or "result"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a == b or (a ~= a and b ~= b) then
      if math.type(a) ~= math.type(b) then return false, path .. ": number subtypes differ" end
      return true
    end
    return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  if getmetatable(a) ~= getmetatable(b) then return false, path .. ": metatables differ" end
  for k, v in next, a do
    local ok, where = same(v, rawget(b, k), path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false, path .. "." .. tostring(k) .. ": only in Lua's" end
  end
  return true
end

local function err_text(e)
  if type(e) == "table" then return tostring(e.code) .. ": " .. tostring(e.message) end
  return tostring(e)
end

-- Load `source` both ways (warnings quiet) and assert that results or errors are the same.
local function check_load(source, opts)
  local before = log.settings()
  local sink = assert(io.open("/dev/null", "w"))
  log.configure { level = "error", out = sink }
  local ok_c, c, ok_l, l = both(function()
    local o = { now = NOW }
    for k, v in pairs(opts or {}) do o[k] = v end
    return scan.load_report(source, o)
  end)
  log.configure { level = before.level, out = before.out }
  sink:close()
  assert.are.equal(ok_l, ok_c, ok_c and err_text(l) or err_text(c))
  if not ok_c then
    assert.are.equal(err_text(l), err_text(c))
    return nil
  end
  -- A report without CreatedAt is stamped with the time it was read.
  if c.time ~= l.time and c.time:match("^%d+%-%d+%-%d+T") and l.time:match("^%d+%-%d+%-%d+T") then
    c.time = l.time
  end
  local ok, where = same(c, l)
  assert(ok, where)
  return c
end

local COLUMN_SETS = {
  false,
  { "id", "aliases", "cvss_score", "scanner", "references", "cwe", "locations", "cvss_source",
    "pkg_type", "scanner_severity", "published", "modified", "title", "description" },
}

-- CSV of `result` both ways, with each option set, byte for byte.
local function check_csv(result)
  for _, cols in ipairs(COLUMN_SETS) do
    for _, raw in ipairs({ false, true }) do
      for _, bom in ipairs({ false, true }) do
        local opts = { columns = cols or nil, csv_raw = raw, bom = bom }
        local ok_c, c, ok_l, l = both(function() return scan.export(result, "csv", nil, opts) end)
        assert.are.equal(ok_l, ok_c)
        if ok_c then assert(c == l, "CSV differs") else assert.are.equal(err_text(l), err_text(c)) end
      end
    end
  end
end

-- SARIF of `result` both ways, with each option set, byte for byte, warnings included; the
-- C writer must have written at least `min_results` results and `min_rules` rules without
-- options (counted through its calls).
local SARIF_OPTIONS = { false, { dockerfile = "Dockerfile" },
  { dockerfile = "docker/a b:c/Dockerfile\195\169", dockerfile_line = 7 }, { max_results = 1 },
  { max_results = 2, dockerfile = "D", dockerfile_line = 2.0 }, { dockerfile_line = 0 } }

local function check_sarif(result, min_results, min_rules)
  local core = require("myrmex.core.scan")
  local rules, results, written = core.sarif_rules, core.sarif_results, { 0, 0 }
  local function counted(fn, which)
    return function(...)
      local text, next_k = fn(...)
      written[which] = written[which] + (next_k - select(-2, ...))
      return text, next_k
    end
  end
  core.sarif_rules, core.sarif_results = counted(rules, 1), counted(results, 2)
  local before = log.settings()
  for _, opts in ipairs(SARIF_OPTIONS) do
    local logs = {}
    for i, fast in ipairs({ true, false }) do
      scan.fast_path(fast)
      local warned = {}
      local sink = assert(io.open("/dev/null", "w"))
      log.configure { level = "warn", out = sink }
      local remove = log.add_hook(function(rec) warned[#warned + 1] = rec.level .. " " .. rec.msg end)
      logs[i] = { pcall(scan.export, result, "sarif", nil, opts or nil) }
      remove()
      sink:close()
      logs[i][3] = table.concat(warned, "\n")
    end
    scan.fast_path(true)
    log.configure { level = before.level, out = before.out }
    local c, l = logs[1], logs[2]
    assert.are.equal(l[1], c[1], tostring(c[2]) .. " / " .. tostring(l[2]))
    if c[1] then
      if c[2] ~= l[2] then
        local at = 1
        while c[2]:byte(at) == l[2]:byte(at) do at = at + 1 end
        error("SARIF differs at byte " .. at .. ": C ..." .. c[2]:sub(at - 40, at + 40) .. "... Lua ..."
          .. l[2]:sub(at - 40, at + 40))
      end
    else
      assert.are.equal(err_text(l[2]), err_text(c[2]))
    end
    assert.are.equal(l[3], c[3])
    if not opts then
      assert(written[1] >= (min_rules or 0), "the C writer wrote " .. written[1] .. " rules")
      assert(written[2] >= (min_results or 0), "the C writer wrote " .. written[2] .. " results")
    end
  end
  core.sarif_rules, core.sarif_results = rules, results
  return written[2]
end

-- Both readers on `src`, then, when it loads, both CSV and both SARIF writers on the result.
local function check_everything(src)
  local r = check_load(src)
  if r then
    check_csv(r)
    check_sarif(r)
  end
end

describe("scan fast path", function()
  it("finds the fixture reports", function()
    assert.is_true(#FIXTURES >= 12)
  end)

  for _, path in ipairs(FIXTURES) do
    local name = path:sub(#sh.fixtures + 2)
    it("reads " .. name .. " as the Lua reader does, and writes the same CSV and SARIF", function()
      local r = check_load(path)
      check_csv(r)
      -- every result, and the rule of every vulnerability, is written by C
      local items = #r.findings + #(r.misconfigurations or {}) + #(r.secrets or {}) + #(r.licenses or {})
      local ids, rules = {}, 0
      for _, f in ipairs(r.findings) do
        if not ids[f.id] then rules, ids[f.id] = rules + 1, true end
      end
      check_sarif(r, items, rules)
      -- as text, and with a format asked for (a wrong one is the same error)
      local f = assert(io.open(path, "rb"))
      local text = f:read("a")
      f:close()
      check_load(text)
      for _, fmt in ipairs({ "trivy", "grype", "sarif" }) do check_load(path, { format = fmt }) end
      check_load(path, { severity = "CRITICAL,HIGH", ignore_unfixed = true })
    end)
  end

  it("is taken: the C reader returns findings for Trivy and Grype reports, a decoded doc for others", function()
    local core = require("myrmex.core.scan")
    local kind, v = core.read_file(sh.fixtures .. "/scanners/trivy/alpine-310.json")
    assert.are.equal("trivy", kind)
    assert.are.equal(4, #v.findings)
    assert.is_nil(getmetatable(v.findings[1]))
    kind, v = core.read_file(sh.fixtures .. "/scanners/grype/keycloak-rhel91.json")
    assert.are.equal("grype", kind)
    assert.are.equal(6, #v.findings)
    kind, v = core.read_file(sh.fixtures .. "/scanners/scout/webgoat-ubuntu2004.sarif.json")
    assert.are.equal("doc", kind)
    assert.are.equal(require("myrmex.core.json").object_mt, getmetatable(v))
    -- a format asked for that is not the report's: decoded, for the Lua path's error
    kind = core.read_file(sh.fixtures .. "/scanners/grype/keycloak-rhel91.json", "trivy")
    assert.are.equal("doc", kind)
  end)

  -- A report with one of each field, each in turn replaced by JSON of another type.
  local TEMPLATE = [[{"SchemaVersion":2,"CreatedAt":"2026-05-01T00:00:00Z","ArtifactName":$NAME,
  "ArtifactType":$ATYPE,"Trivy":$TRIVY,"Metadata":$META,
  "Results":[{"Target":$TARGET,"Class":$CLASS,"Type":$TYPE,"Packages":$PKGS,
  "Vulnerabilities":[{"VulnerabilityID":$ID,"VendorIDs":$VENDOR,"PkgName":$PKG,"PkgID":$PKGID,
  "PkgIdentifier":$IDENT,"InstalledVersion":$INST,"FixedVersion":$FIXED,"Status":$STATUS,
  "Severity":$SEV,"SeveritySource":$SEVSRC,"CVSS":$CVSS,"Title":$TITLE,"Description":$DESC,
  "References":$REFS,"PrimaryURL":$URL,"CweIDs":$CWE,"PkgPath":$PATH,"Layer":$LAYER,
  "Fingerprint":$FPR,"PublishedDate":$PUB,"LastModifiedDate":$MOD},$EXTRA],
  "Misconfigurations":[{"ID":$MID,"AVDID":"AVD-1","Title":"t","Severity":$SEV,
  "CauseMetadata":$CAUSE,"References":$REFS},$EXTRA],
  "Secrets":[{"RuleID":$ID,"Category":$CAT,"Severity":$SEV,"Title":$TITLE,"StartLine":$LINE,
  "EndLine":$LINE,"Match":$DESC},$EXTRA],
  "Licenses":[{"Name":$ID,"PkgName":$PKG,"FilePath":$PATH,"Category":$CAT,"Severity":$SEV,
  "Link":$URL},$EXTRA]}, $EXTRA]}]]
  local DEFAULTS = {
    NAME = '"img:1"', ATYPE = '"container_image"', TRIVY = '{"Version":"0.60.0"}',
    META = '{"ImageID":"sha256:ab","RepoTags":["img:1"],"RepoDigests":["img@sha256:0123abcdef"],'
      .. '"OS":{"Family":"alpine","Name":"3.10","EOSL":true}}',
    TARGET = '"img:1 (alpine 3.10)"', CLASS = '"os-pkgs"', TYPE = '"alpine"',
    PKGS = '[{"Name":"p","Version":"1","Locations":[{"StartLine":3,"EndLine":4},{"StartLine":9}]}]',
    ID = '"CVE-1"', VENDOR = '["V-1"]', PKG = '"p"', PKGID = '"p@1"', IDENT = '{"PURL":"pkg:apk/p@1"}',
    INST = '"1"', FIXED = '"2"', STATUS = '"fixed"', SEV = '"HIGH"', SEVSRC = '"nvd"',
    CVSS = '{"nvd":{"V3Score":7.5,"V3Vector":"AV:N","V2Score":5,"V2Vector":"AV:L"},'
      .. '"ghsa":{"V40Score":9.1,"V40Vector":"CVSS:4.0"}}',
    TITLE = '"=HYPERLINK(\\"x\\")"', DESC = '"a, \\"b\\"\\nc"', REFS = '["https://a","@b"]',
    URL = '"https://p"', CWE = '["CWE-79"]', PATH = '"lib/p"', LAYER = '{"DiffID":"sha256:d"}',
    FPR = '"fp"', PUB = '"2020-01-01"', MOD = '"2021-01-01"', MID = '"DS001"',
    CAUSE = '{"StartLine":1,"EndLine":2}', CAT = '"AWS"', LINE = "3", EXTRA = '{"VulnerabilityID":"CVE-2","PkgName":"q"}',
  }
  local VARIANTS = { "null", "true", "false", "0", "-0.0", "7", "7.5", "-1", "11", "1e999",
    "-1e999", "3.0", '""', '"x"', '"x\\u0000y"', '"\\u0000"', '"HIGH"', '"OS-PKGS"', '"os-pkgs"',
    '"Jar"', '"affected"', '"-1+2"', '"+x"', '"@x"', '"\\t=x"', '"a\\r"', '[]', '{}', '["a",1,"b"]', '["a","b"]', '[null]', '{"a":"b"}',
    '{"PURL":"pkg:x/y@1","DiffID":"","Digest":"sha256:e","StartLine":2.0,"EndLine":"3"}',
    '[{"Name":"p","Version":"1","Locations":{"StartLine":1}}]',
    '[{"Name":"p","Version":"1","Locations":[[1],{"StartLine":1.5},{"StartLine":5,"EndLine":null}]}]',
    '{"nvd":[],"x\\u0000":{"V2Score":2},"a\\u0000":{"V2Score":2},"b":{"V3Score":"9"}}',
    '{"nvd":{"V3Score":7},"nvd":5,"redhat":{"V3Score":7},"aa":{"V3Score":7},"ab":{"V3Score":7}}',
    '["img@sha256:XYZ"]', '["a@b@sha256:12ab"]', '["img@sha256:"]',
  }

  local function report(over)
    return (TEMPLATE:gsub("%$(%u+)", function(k) return over[k] or DEFAULTS[k] end))
  end

  it("reads the template report the same way", function()
    local r = check_load(report({}))
    assert.are.equal(2, #r.findings)
    check_csv(r)
    -- CVE-1 is a secret's and a license's id too: its rule is made from the last, the license
    check_sarif(r, 4, 1)
  end)

  local keys = {}
  for k in pairs(DEFAULTS) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    it("gives the same result and CSV with every kind of value for " .. k, function()
      for _, v in ipairs(VARIANTS) do
        check_everything(report({ [k] = v }))
      end
    end)
  end

  -- The same for a Grype report: one match with every field, then each in turn replaced.
  local GRYPE = [[{"descriptor":$DESC,"distro":$DISTRO,"source":{"type":$STYPE,"target":$TARGET},
  "matches":[{"vulnerability":{"id":$ID,"severity":$SEV,"namespace":$NS,"dataSource":$URL,
  "description":$TEXT,"urls":$URLS,"fix":$FIX,"cvss":$CVSS},
  "relatedVulnerabilities":$RELATED,
  "artifact":{"name":$NAME,"version":$VER,"type":$ATYPE,"purl":$PURL,"locations":$LOCS}},$EXTRA]}]]
  local GRYPE_DEFAULTS = {
    DESC = '{"name":"grype","version":"0.66.0","timestamp":"2026-05-01T00:00:00Z"}',
    DISTRO = '{"name":"ubuntu","version":"20.04"}', STYPE = '"image"',
    TARGET = '{"userInput":"img:1","imageID":"sha256:ab","tags":["img:1"],'
      .. '"repoDigests":["img@sha256:0123abcd"],"manifestDigest":"sha256:ff"}',
    ID = '"CVE-1"', SEV = '"Negligible"', NS = '"nvd:cpe"', URL = '"https://nvd/CVE-1"',
    TEXT = '"=cmd|\\"x\\""', URLS = '["https://a","https://a","+b"]',
    FIX = '{"versions":["1.2","1.3"],"state":"fixed"}',
    CVSS = '[{"source":"nvd@nist.gov","version":"3.1","vector":"AV:N","metrics":{"baseScore":7.5}},'
      .. '{"source":"secalert@redhat.com","version":2,"vector":"AV:L","metrics":{"baseScore":5}}]',
    RELATED = '[{"id":"GHSA-1","description":"d","urls":["https://a","https://c"],'
      .. '"cvss":[{"source":"github","version":"4.0","metrics":{"baseScore":9.1}}]},{"id":"CVE-1"}]',
    NAME = '"guava"', VER = '"30.1"', ATYPE = '"java-archive"',
    PURL = '"pkg:maven/com.google.guava/guava@30.1?type=jar#x"',
    LOCS = '[{"path":"/app/guava.jar","layerID":"sha256:l1"}]',
    EXTRA = '{"vulnerability":{"id":"CVE-2"},"artifact":{"name":"q","type":"deb"}}',
  }
  local GRYPE_VARIANTS = { "null", "true", "0", "-0.0", "2", "4", "40", "7.5", "11", "1e999", "-1e999",
    '""', '"x\\u0000y"', '"2.0"', '"4"', '"NVD"', '"GitHub"', '"wont-fix"', '"deb"',
    '[]', '{}', '["a",1,"b"]', '[null]', '{"a":"b"}',
    '"pkg:golang/github.com/a/b@v1"', '"pkg:npm/%40scope/x@1"', '"pkg:deb/ubuntu/x@1"',
    '"pkg:maven/g/a"', '"pkg:/x"', '"pkg:x/"', '"pkg:Maven/g%2/a@1@2"', '"pkg:x/a/@1"', '"pkg:x/a@b/c"',
    '"img@sha256:XYZ"', '[{"baseScore":3}]', '[{"metrics":{"baseScore":3},"version":1e999}]',
    '[{"metrics":{"baseScore":3},"source":"a\\u0000nvd"},{"metrics":{"baseScore":3},"source":"b"}]',
    '{"versions":"1","state":"not-fixed"}', '{"versions":[1,"2"]}',
    '[{"id":"X","cvss":{"a":1}},1,[],{"description":"only this"}]',
  }

  for _, k in ipairs((function()
    local ks = {}
    for key in pairs(GRYPE_DEFAULTS) do ks[#ks + 1] = key end
    table.sort(ks)
    return ks
  end)()) do
    it("gives the same Grype result and CSV with every kind of value for " .. k, function()
      for _, v in ipairs(GRYPE_VARIANTS) do
        local text = GRYPE:gsub("%$(%u+)", function(key)
          if key == k then return v end
          return GRYPE_DEFAULTS[key]
        end)
        check_everything(text)
      end
    end)
  end

  it("drops the same Grype entries with the same messages", function()
    local r = check_load('{"descriptor":{},"matches":[1,null,[],{"vulnerability":[]},{"vulnerability":{"id":""}}]}')
    assert.are.same({ "matches[1]: a JSON number, not an object", "matches[2]: a JSON userdata, not an object",
      "matches[3]: no vulnerability with an id string", "matches[4]: no vulnerability with an id string",
      "matches[5]: no vulnerability with an id string" }, r.dropped)
    check_load('{"source":{"target":"plain"},"matches":{"a":1}}')
    check_load('{"source":[],"matches":[],"distro":[]}')
  end)

  it("drops the same entries with the same messages", function()
    for _, text in ipairs({
      '{"SchemaVersion":2,"Results":[1,"x",null,true,[],{"Vulnerabilities":[2,null,{},{"VulnerabilityID":""},[]]}]}',
      '{"SchemaVersion":2,"Results":{"a":1}}', '{"SchemaVersion":2,"ArtifactName":null}',
      '{"SchemaVersion":null,"Results":null}',
      '{"SchemaVersion":2,"Results":[{"Secrets":{"a":1},"Licenses":"x"},{"Secrets":[1,null,[]],"Licenses":[{}]}]}',
      '{"SchemaVersion":2,"Results":[{"Vulnerabilities":{"a":1}}]}',
    }) do
      local r = check_load(text)
      assert.is_table(r.dropped)
    end
    local r = check_load('{"SchemaVersion":2,"Results":[1,{"Vulnerabilities":[{}]}]}')
    assert.are.same({ "Results[1]: a JSON number, not an object",
      "Results[2].Vulnerabilities[1]: no VulnerabilityID string" }, r.dropped)
  end)

  it("keeps the last of duplicate keys, as a decoded table does", function()
    local r = check_load('{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"A",'
      .. '"VulnerabilityID":"B","Severity":"LOW","Severity":"CRITICAL"}]}],"Results":[]}')
    assert.are.equal(0, #r.findings)
    r = check_load('{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"A",'
      .. '"VulnerabilityID":"B","Severity":"LOW","Severity":"CRITICAL"}]}]}')
    assert.are.equal("B", r.findings[1].id)
    assert.are.equal("CRITICAL", r.findings[1].severity)
  end)

  it("keeps U+0000 inside strings, as json.decode does", function()
    local r = check_load('{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"VulnerabilityID":"A\\u0000B",'
      .. '"Title":"=x\\u0000,y"}]}]}')
    assert.are.equal("A\0B", r.findings[1].id)
    check_csv(r)
  end)

  it("raises the same errors for text that is no report", function()
    for _, text in ipairs({ "{", '{"a":1} x', "[1,2]", '"str"', "{\"a\":\"\255\"}",
      string.rep("[", 1001) .. string.rep("]", 1001), '{"SchemaVersion":2}', "\239\187\191{}",
      '{"matches":[],"source":{}}' }) do
      check_load(text)
    end
    for _, text in ipairs({ "{", "[1]", '"x"', "{\"a\":\"\255\"}", "" }) do
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
      check_load(path)
      os.remove(path)
    end
    check_load("/nonexistent/report.json")
  end)

  it("raises the same policy errors (a bad expiry date)", function()
    check_load(report({}), { policy = { ignore = { { id = "CVE-1", expires = "2026-13-45" } } } })
    check_load(report({}), { policy = { fail_on = "HIGH", ignore = { { id = "CVE-1", expires = "2027-01-01" } } } })
  end)

  it("writes the same CSV for findings the Lua writer must handle itself", function()
    local r = check_load(report({}))
    local original = r.findings[1]
    local f
    for _, change in ipairs({
      function() f.found_by = { "trivy", "grype" } end,
      function() f.found_by = false; f.scanner = 5 end,
      function() f.title = 12.5; f.path = true; f.layer = false end,
      function() f.cvss_score = "7.25" end,
      function() f.cvss_score = {} end,
      function() f.references = { "a", {} } end,
      function() f.aliases = "x" end,
      function() f.cwe = { 1, 2.5 } end,
      function() f.locations = setmetatable({}, { __len = function() return 2 end,
        __index = function(_, i) return "l" .. i end }) end,
      function() f.description = setmetatable({}, { __tostring = function() return "+d" end }) end,
      function() f.id = "-1\r" end,
      function() f.title = "-1+2"; f.package = "\tp"; f.path = "\rx" end,
    }) do
      f = {}
      for k, v in pairs(original) do f[k] = v end
      r.findings[1] = f
      change()
      check_csv(r)
    end
    r.findings[3] = "not a finding"
    check_csv(r)
  end)

  it("writes the same SARIF for findings and entries the Lua writer must handle itself", function()
    local r = check_load(report({}))
    local original = r.findings[1]
    local f
    for _, change in ipairs({
      function() f.package = nil; f.installed_version = nil; f.fixed_version = nil end,
      function() f.package = 5 end,
      function() f.package = {} end,
      function() f.installed_version = true end,
      function() f.id = {} end,
      function() f.locations = 7 end,
      function() r.findings[2] = setmetatable({ locations = 7 }, { __index = original }) end,
      function() setmetatable(f, { __index = function(_, k) return k == "title" and "from __index" or nil end }) end,
      function() f.severity = nil end,
      function() f.severity = "SEVERE" end,
      function() f.id = "A\0B" end,
      function() f.title = "bad \255 UTF-8" end,
      function() f.description = "bad \192\128" end,
      function() f.description = "" end,
      function() f.description = "caf\195\169 \226\130\172 \240\159\144\156 \"q\" \\ \t \1 \31 \127 </script>" end,
      function() f.title = "\0" end,
      function() f.primary_url = nil; f.scanner = "grype"; f.references = { "https://r" } end,
      function() f.primary_url = nil; f.scanner = "grype"; f.references = {} end,
      function() f.primary_url = 3 end,
      function() f.path = "a b/(c):d%e\0f\195\169" end,
      function() f.path = nil; f.target = "C:\\x y (z)"; f.class = "os-pkgs" end,
      function() f.class = nil; f.type = "os" end,
      function() f.class = nil; f.type = "jar" end,
      function() f.class = "" end,
      function() f.class = {} end,
      function() f.scanner = "grype"; f.severity_source = nil; f.cvss_source = "ghsa" end,
      function() f.scanner = "grype"; f.cvss = nil; f.cvss_score = 6.25 end,
      function() f.scanner = "grype"; f.cvss = nil; f.cvss_score = 0 end,
      function() f.scanner = "grype"; f.cvss = nil; f.cvss_score = "6" end,
      function() f.cvss = { nvd = { v2_score = 0, v3_score = 0, v3_vector = "", v4_score = 10 } } end,
      function() f.cvss = { nvd = { v3_score = 0 / 0 } } end,
      function() f.cvss = { nvd = { v3_score = 7, v2_vector = "x\0y" } } end,
      function() f.cvss = { nvd = "x" } end,
      function() f.cvss = "x" end,
      function() f.severity_source = 1 end,
      function() f.locations = { "a", "b c", "d:e/f" } end,
      function() f.locations = { "a", 2 } end,
      function() f.locations = { "only" } end,
      function() f.lines = { { start_line = 0, end_line = 0 }, { start_line = 3, end_line = 9 } } end,
      function() f.lines = { { start_line = 1.0, end_line = 2 } } end,
      function() f.lines = { { start_line = 1 } } end,
      function() f.lines = {} end,
      function() f.lines = "x" end,
      function()
        f.locations = setmetatable({}, { __len = function() return 2 end,
          __index = function(_, i) return "l" .. i end })
      end,
    }) do
      f = {}
      for k, v in pairs(original) do f[k] = v end
      r.findings[1] = f
      local second = r.findings[2]
      change()
      check_sarif(r)
      r.findings[2] = second
    end
    r.findings[1] = original
    -- misconfigurations, secrets and licenses with odd values, and a finding of another kind
    r.misconfigurations = { { id = "DS1", severity = "LOW", target = "Dockerfile", start_line = 2,
      end_line = 3, title = "t\0", message = "m" }, { severity = "HIGH", start_line = 2.5 },
      { id = "DS2", status = "PASS" } }
    r.secrets = { { id = "s", severity = "CRITICAL", target = "a:b", start_line = 1, match = "***" } }
    r.licenses = { { name = "GPL", severity = "HIGH", target = "x", package = "p" } }
    check_sarif(r, 1, 1)
  end)

  it("cuts a result's locations at GitHub's limit in both writers", function()
    local r = check_load(report({}))
    local f = r.findings[1]
    assert.are.equal(1000, require("myrmex.scan.export").GITHUB_MAX_LOCATIONS)
    for _, field in ipairs({ "locations", "lines" }) do
      local list = {}
      for i = 1, 1003 do list[i] = field == "lines" and { start_line = i, end_line = i } or ("l" .. i) end
      local saved = f[field]
      f[field] = list
      check_sarif(r)
      local sarif = json.decode(scan.export(r, "sarif"))
      assert.are.equal(1000, #sarif.runs[1].results[1].locations, field)
      f[field] = saved
    end
  end)

  it("writes the same SARIF past GitHub's limit of results, with the same warning", function()
    local findings = {}
    local sev = { "LOW", "CRITICAL", "MEDIUM", "HIGH", "UNKNOWN" }
    for i = 1, 25003 do
      findings[i] = { id = "CVE-" .. (i % 7), severity = sev[i % 5 + 1], package = "p" .. i,
        installed_version = "1", scanner = "trivy", class = "lang-pkgs", target = "t" }
    end
    local warned = {}
    local remove = log.add_hook(function(rec) warned[#warned + 1] = rec.msg end)
    local n = check_sarif({ findings = findings, image = "img:1" }, 25000, 7)
    remove()
    assert.is_true(n >= 25000)
    assert.matches("25003 results are more than the 25000 GitHub accepts", table.concat(warned, "\n"), 1, true)
  end)

  it("reads a scanner's output the same way (scan_image with the stand-in trivy and grype)", function()
    local process = require("myrmex.process")
    local rt = require("myrmex.core.runtime")
    local fake = sh.src .. "/tests/support/fake-scanners/fake-scanner"
    for _, c in ipairs({ { "trivy", "trivy/webgoat-ubuntu2004-jar.json" }, { "grype", "grype/webgoat-ubuntu2004.json" },
      { "trivy", "trivy/secrets-licenses-fs.json" } }) do
      local dir = rt.mkdtemp("/tmp/mx-fast-")
      assert.are.equal(0, process.run { argv = { "ln", "-s", fake, dir .. "/" .. c[1] } }.status)
      sh.write(dir .. "/fake.json", json.encode { report = sh.fixtures .. "/scanners/" .. c[2] })
      local s = scan.new { backend = c[1], path = dir .. "/" .. c[1] }
      -- counted, to see that the output is read by the fast path
      local core = require("myrmex.core.scan")
      local read_text, reads = core.read_text, 0
      core.read_text = function(...)
        reads = reads + 1
        return read_text(...)
      end
      local ok_c, r_c, ok_l, r_l = both(function() return s:scan_image("img:1", { now = NOW }) end)
      core.read_text = read_text
      assert.are.equal(1, reads)
      process.run { argv = { "rm", "-rf", "--", dir } }
      assert.is_true(ok_c, tostring(r_c))
      assert.is_true(ok_l, tostring(r_l))
      if r_c.time ~= r_l.time then r_c.time = r_l.time end
      local ok, where = same(r_c, r_l)
      assert(ok, where)
      assert.is_true(#r_c.findings > 0 or #r_c.secrets > 0)
    end
  end)

  it("is switched with scan.fast_path", function()
    assert.is_true(scan.fast_path(false))
    assert.is_false(scan.fast_path(true))
    assert.has_error(function() scan.fast_path("yes") end, "scan.fast_path: boolean expected, got string")
  end)
end)
