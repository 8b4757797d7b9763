-- Running scanners: fake trivy, grype and docker (scout) executables on a private PATH print
-- the real fixture reports and record the argument vectors they were given.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

local FIX = sh.fixtures .. "/scanners/"
local FAKE = sh.src .. "/tests/support/fake-scanners/fake-scanner"

local write = sh.write

local read = sh.read

-- A directory holding fake scanners under `names`, configured by conf.
local function fake_dir(names, conf)
  local dir = rt.mkdtemp("/tmp/mx-fake-")
  for _, n in ipairs(names) do
    assert.are.equal(0, process.run { argv = { "ln", "-s", FAKE, dir .. "/" .. n } }.status)
  end
  write(dir .. "/fake.json", json.encode(conf))
  return dir
end

local function argv_log(dir)
  local calls = {}
  for line in (read(dir .. "/argv.log") or ""):gmatch("[^\n]+") do calls[#calls + 1] = json.decode(line) end
  return calls
end

local function plain(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  return out
end

local function cleanup(dir)
  process.run { argv = { "rm", "-rf", "--", dir } }
end

describe("scanner back ends", function()
  it("runs trivy with an argument vector and normalizes its JSON", function()
    local dir = fake_dir({ "trivy" }, { report = FIX .. "trivy/alpine-310.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    assert.are.equal("trivy", s.backend)
    local r = s:scan_image("alpine:3.10", { severity = { "HIGH", "medium" }, ignore_unfixed = true,
      platform = "linux/amd64" })
    assert.are.same({ { "trivy", "image", "--format", "json", "--quiet", "--timeout", "900s", "--severity", "HIGH,MEDIUM",
      "--ignore-unfixed", "--platform", "linux/amd64", "--", "alpine:3.10" } }, plain(argv_log(dir)))
    assert.are.equal(4, #r.findings)
    assert.are.equal("alpine:3.10", r.image)
    assert.are.equal("trivy", r.scanner)
    assert.are.equal("warning", r.compliance)
    cleanup(dir)
  end)

  it("hands references with odd characters over as one argument each", function()
    local dir = fake_dir({ "trivy", "grype", "docker" }, { report = FIX .. "trivy/alpine-310.json" })
    local odd = {
      "registry.local:5000/team/app:1.0;rm -rf /",
      "img:$(touch /tmp/mx-scan-pwned)",
      "app:'quoted' \"double\" `tick`",
      "-o=/tmp/mx-scan-pwned",
      "name with spaces@sha256:" .. string.rep("a", 64),
    }
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    for _, ref in ipairs(odd) do s:scan_image(ref) end
    local calls = argv_log(dir)
    for i, ref in ipairs(odd) do
      local c = calls[i]
      assert.are.equal(ref, c[#c])
      assert.are.equal("--", c[#c - 1])
    end
    assert.is_nil(io.open("/tmp/mx-scan-pwned"))
    cleanup(dir)
  end)

  it("builds grype and scout vectors, including saved tarballs", function()
    local dir = fake_dir({ "grype" }, { report = FIX .. "grype/webgoat-ubuntu2004.json" })
    local g = scan.new { backend = "grype", path = dir .. "/grype", args = { "--by-cve" } }
    local r = g:scan_image(nil, { input = "/tmp/saved image.tar", ignore_unfixed = true })
    assert.are.same({ "grype", "-o", "json", "--only-fixed", "--by-cve", "--",
      "docker-archive:/tmp/saved image.tar" }, plain(argv_log(dir)[1]))
    -- ignore_unfixed is applied to the normalized findings too: 164 have a fix
    assert.are.equal(164, #r.findings)
    cleanup(dir)

    dir = fake_dir({ "docker" }, { report = FIX .. "scout/webgoat-ubuntu2004.sarif.json" })
    local sc = scan.new { backend = "scout", path = dir .. "/docker" }
    r = sc:scan_image("webgoat/webgoat:latest", { severity = "CRITICAL,HIGH" })
    local calls = argv_log(dir)
    assert.are.same({ "docker", "scout", "version" }, plain(calls[1]))
    assert.are.same({ "docker", "scout", "cves", "--format", "sarif", "--only-severity",
      "critical,high", "--", "webgoat/webgoat:latest" }, plain(calls[2]))
    assert.are.equal("scout", r.scanner)
    assert.are.equal(43, #r.findings) -- 8 CRITICAL + 35 HIGH
    assert.are.equal("webgoat/webgoat:latest", r.image)
    cleanup(dir)
  end)

  it("quotes the scanner's message when it exits non-zero", function()
    local dir = fake_dir({ "trivy" }, { mode = "fail", status = 2,
      message = "FATAL image scan error: unable to find the specified image \"nope:1\"" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local ok, err = pcall(s.scan_image, s, "nope:1")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.matches("trivy failed %(exit 2%)", err.message)
    assert.matches('unable to find the specified image "nope:1"', err.message)
    assert.are.equal(2, err.details.status)
    cleanup(dir)
  end)

  it("logs the scanner's stderr line by line at debug level", function()
    local log = require("myrmex.log")
    local dir = fake_dir({ "trivy" }, { report = FIX .. "trivy/alpine-310.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local before = log.settings()
    local sink = assert(io.open("/dev/null", "w"))
    log.configure { level = "debug", out = sink }
    local records = {}
    local remove = log.add_hook(function(rec) records[#records + 1] = rec end)
    local ok, err = pcall(s.scan_image, s, "alpine:3.10")
    remove()
    log.configure { level = before.level, out = before.out }
    sink:close()
    assert.is_true(ok, tostring(err))
    local lines, span = {}, nil
    for _, rec in ipairs(records) do
      if rec.msg:match("^trivy: ") then lines[#lines + 1] = rec end
      if rec.fields.op == "scan_image" then span = rec end
    end
    assert.are.equal(1, #lines)
    assert.are.equal("trivy: trivy: 2026-11-28T17:00:00Z INFO scanning", lines[1].msg)
    assert.are.equal("debug", lines[1].level)
    assert.are.equal("scan", lines[1].fields.engine)
    assert.are.equal("alpine:3.10", lines[1].fields.target)
    assert.truthy(span, "a span line for the scan")
    cleanup(dir)
  end)

  it("kills a scanner that hangs, with a Timeout error", function()
    local dir = fake_dir({ "grype" }, { mode = "hang" })
    local s = scan.new { backend = "grype", path = dir .. "/grype", timeout = 1 }
    local t0 = rt.monotonic()
    local ok, err = pcall(s.scan_image, s, "busybox")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Timeout"), tostring(err))
    assert.matches("did not finish within 1s", err.message)
    assert.is_true(rt.monotonic() - t0 < 10)
    local pid = tonumber(read(dir .. "/pid"))
    local stat = read("/proc/" .. pid .. "/stat")
    assert.is_true(stat == nil or stat:match("^%d+ %b() (%a)") == "Z")
    cleanup(dir)
  end)

  it("reports truncated JSON and non-JSON output as Invalid", function()
    local dir = fake_dir({ "trivy" }, { mode = "truncate", report = FIX .. "trivy/webgoat-ubuntu2004-jar.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local ok, err = pcall(s.scan_image, s, "webgoat/webgoat:latest")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("trivy output: not valid JSON: .* at byte %d+", err.message)
    write(dir .. "/fake.json", json.encode { mode = "garbage" })
    ok, err = pcall(s.scan_image, s, "x")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("not valid JSON", err.message)
    write(dir .. "/fake.json", json.encode { mode = "silent" })
    ok, err = pcall(s.scan_image, s, "x")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("trivy printed no report: trivy: .* INFO scanning", err.message)
    cleanup(dir)
  end)

  it("keeps the report when Docker Scout prints a hint after it", function()
    local dir = fake_dir({ "docker" }, { mode = "trailer", report = FIX .. "scout/webgoat-ubuntu2004.sarif.json" })
    local s = scan.new { backend = "scout", path = dir .. "/docker" }
    local r = s:scan_image("app:1")
    assert.are.equal(135, #r.findings)
    cleanup(dir)
  end)

  it("reads 100 MB of output through the pipe, and refuses it past max_output", function()
    local dir = fake_dir({ "trivy" }, { mode = "huge", report = FIX .. "trivy/webgoat-ubuntu2004-jar.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local r = s:scan_image("webgoat/webgoat:latest")
    assert.are.equal(26, #r.findings)
    local capped = scan.new { backend = "trivy", path = dir .. "/trivy", max_output = 10 * 1024 * 1024 }
    local ok, err = pcall(capped.scan_image, capped, "webgoat/webgoat:latest")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.matches("more than 10485760 bytes", err.message)
    cleanup(dir)
  end)

  it("raises NotFound for a scanner that is not there", function()
    local ok, err = pcall(scan.new, { backend = "grype", path = "/nonexistent/grype" })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)

  it("rejects misuse with messages naming the function", function()
    local dir = fake_dir({ "trivy" }, { report = FIX .. "trivy/alpine-310.json" })
    local s = scan.new { backend = "trivy", path = dir .. "/trivy" }
    local cases = {
      { function() scan.new { backend = "clair" } end, "scan.new: unknown backend 'clair'" },
      { function() scan.new { backend = "sarif" } end, "scan.new: unknown backend 'sarif'" },
      { function() scan.new { backend = "trivy", timout = 3 } end, "scan.new: unknown option 'timout'" },
      { function() s:scan_image("x", { ignore_unfixd = true }) end, "unknown option 'ignore_unfixd'" },
      { function() s:scan_image("x", { severity = "SEVERE" }) end, "unknown severity 'SEVERE'" },
      { function() s:scan_image("") end, "ref must be a non%-empty string" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end
    cleanup(dir)
  end)
end)

describe("backend = auto", function()
  -- A child myrmex with PATH set to the fake directory shows which scanner auto picks.
  local function auto_pick(names, conf)
    local dir = fake_dir(names, conf)
    local script = dir .. "/pick.lua"
    write(script, [[
local scan = require("myrmex.scan")
local ok, s = pcall(scan.new)
if not ok then print("error: " .. tostring(s)) return end
local r = s:scan_image("app:1")
print(s.backend .. " " .. #r.findings)
]])
    local res = process.run { argv = { sh.bin, script },
      env = process.environ { PATH = dir, MYRMEX_LUA_PATH = sh.src .. "/lua" } }
    cleanup(dir)
    return (res.stdout:gsub("\n$", "")), res
  end

  it("prefers trivy, then grype, then docker scout", function()
    assert.are.equal("trivy 4", auto_pick({ "trivy", "grype", "docker" },
      { report = FIX .. "trivy/alpine-310.json" }))
    assert.are.equal("grype 2", auto_pick({ "grype", "docker" },
      { report = FIX .. "grype/presenter-image-current-schema.json" }))
    assert.are.equal("scout 135", auto_pick({ "docker" },
      { report = FIX .. "scout/webgoat-ubuntu2004.sarif.json" }))
  end)

  it("skips a docker without the scout plugin, and says when nothing is found", function()
    local out = auto_pick({ "docker" }, { scout = false })
    assert.matches("^error: scan: NotFound: no scanner found on PATH", out)
  end)
end)
