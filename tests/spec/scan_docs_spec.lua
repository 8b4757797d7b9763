-- Every Lua example of docs/scan.md runs as written: recipes with `myrmex run`, snippets with
-- `myrmex FILE.lua`, in a directory holding what they name (reports/trivy.json, a
-- Dockerfile), with the stand-in scanners of tests/support/fake-scanners first on PATH.
local json = require("myrmex.json")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

local FAKE = sh.src .. "/tests/support/fake-scanners/fake-scanner"

local function blocks(text)
  local out = {}
  for code in text:gmatch("\n```lua\n(.-)\n```") do out[#out + 1] = code end
  return out
end

describe("docs/scan.md", function()
  local doc = assert(sh.read(sh.src .. "/docs/scan.md"))
  local examples = blocks(doc)

  it("has examples", function()
    assert.is_true(#examples >= 8, #examples .. " examples")
  end)

  for i, code in ipairs(examples) do
    it("runs example " .. i .. " as written: " .. (code:match("[^\n]*scan[^\n]*") or code:match("[^\n]+")), function()
      local dir = rt.mkdtemp("/tmp/mx-scandocs-")
      local bin = dir .. "/bin"
      assert.are.equal(0, process.run { argv = { "mkdir", "-p", bin, dir .. "/reports" } }.status)
      for _, n in ipairs({ "trivy", "grype" }) do
        assert.are.equal(0, process.run { argv = { "ln", "-s", FAKE, bin .. "/" .. n } }.status)
      end
      sh.write(bin .. "/fake.json", json.encode { report = sh.fixtures .. "/scanners/trivy/webgoat-ubuntu2004-jar.json" })
      sh.write(dir .. "/reports/trivy.json", sh.read(sh.fixtures .. "/scanners/trivy/webgoat-ubuntu2004-jar.json"))
      sh.write(dir .. "/Dockerfile", "FROM scratch\n")
      local file = dir .. "/example.lua"
      sh.write(file, code .. "\n")
      local argv = { "env", "PATH=" .. bin .. ":/usr/bin:/bin", "MYRMEX_FIXTURES=" .. sh.fixtures, os.getenv("MYRMEX_BIN") }
      local recipe = code:find("^local scan = require%(\"myrmex.scan\"%)\n\nreturn {") ~= nil
      if recipe then
        for _, a in ipairs({ "run", file, "--set", "image=webgoat/webgoat:latest", "--quiet" }) do argv[#argv + 1] = a end
      else
        argv[#argv + 1] = file
      end
      local res = process.run { argv = argv, cwd = dir, timeout = 120 }
      process.run { argv = { "rm", "-rf", "--", dir } }
      if recipe then
        -- the opening example gates: webgoat has CRITICAL findings, so it fails the policy
        assert.are.equal(1, res.status, res.stderr)
        assert.matches("webgoat/webgoat:latest: critical", res.stdout)
      else
        assert.are.equal(0, res.status, res.stdout .. res.stderr)
      end
    end)
  end
end)
