-- myrmex.log: formats, spans, redaction rules, progress on a terminal and off it.
local sh = require("tests.support.sh")
local json = require("myrmex.json")

local capture = sh.capture_log

describe("myrmex.log", function()
  it("logs a span with engine, op, target, duration and outcome", function()
    local recs = capture(function(log)
      assert.are.equal(42, log.span("docker", "ping", "unix:///x", function(a) return a * 2 end, 21))
      local ok, err = pcall(log.span, "docker", "inspect", "img", function()
        require("myrmex.errors").raise({ code = "NotFound", message = "no such image", engine = "docker" })
      end)
      assert.is_false(ok)
      assert.are.equal("NotFound", err.code)
    end)
    assert.are.equal(2, #recs)
    assert.are.same({ "docker", "ping", "unix:///x", "ok" },
      { recs[1].engine, recs[1].op, recs[1].target, recs[1].outcome })
    assert.are.equal("integer", math.type(recs[1].duration_ms))
    assert.are.equal("NotFound", recs[2].outcome)
  end)

  it("redacts sensitive field names deeply and credential-shaped text", function()
    local recs = capture(function(log)
      log.info("x", { auth = { username = "u", password = "pw-123456" }, api_key = "k-999999",
        url = "https://bob:hunter2@r.example/v2/", header = "Authorization: Bearer abc.def.ghi",
        jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl" })
    end)
    local r = recs[1]
    assert.are.equal("***", r.auth)
    assert.are.equal("***", r.api_key)
    assert.are.equal("https://***:***@r.example/v2/", r.url)
    assert.are.equal("Authorization: ***", r.header)
    assert.are.equal("***", r.jwt)
  end)

  it("prints plain progress lines when not on a terminal", function()
    local recs = capture(function(log)
      local p <close> = log.progress("pull app", { total = 4, every = 0 })
      for _ = 1, 4 do p:add(1) end
    end)
    assert.are.equal("pull app done", recs[#recs].msg)
    assert.are.equal("100%", recs[#recs].progress)
  end)

  it("draws a bar in place on a terminal", function()
    local r = sh.run("script -qec " .. sh.q(sh.bin .. " -e " .. sh.q(
      "local p = require('myrmex.log').progress('build app', {total=10}); p:update(5); p:finish()"))
      .. " /dev/null", { env = { CI = "", GITHUB_ACTIONS = "" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("\r\27[K[============            ]  50% 5/10 build app", 1, true)
      or r.stdout:find("[========================] 100% 10/10 build app", 1, true), r.stdout)
  end)

  it("keeps log lines and the bar on separate rows", function()
    local r = sh.run("script -qec " .. sh.q(sh.bin .. " -e " .. sh.q(
      "local log = require('myrmex.log'); local p = log.progress('push', {total=4}); p:update(1); "
      .. "log.info('between'); p:update(2); p:finish()")) .. " /dev/null", { env = { CI = "", NO_COLOR = "1" } })
    assert.are.equal(0, r.code, r.stderr)
    -- The bar is cleared before the line and drawn again after it.
    assert.truthy(r.stdout:find("1/4 push\r\27%[K%d%d:%d%d:%d%d%.%d+ INFO  between\r?\n\r\27%[K%["), r.stdout)
  end)

  it("honours NO_COLOR on a terminal", function()
    local cmd = sh.bin .. " -e " .. sh.q("require('myrmex.log').warn('careful')")
    local colored = sh.run("script -qec " .. sh.q(cmd) .. " /dev/null", { env = { CI = "", TERM = "xterm" } })
    local plain = sh.run("script -qec " .. sh.q(cmd) .. " /dev/null", { env = { CI = "", TERM = "xterm", NO_COLOR = "1" } })
    assert.truthy(colored.stdout:find("\27[33m", 1, true), colored.stdout)
    assert.falsy(plain.stdout:find("\27[33m", 1, true), plain.stdout)
  end)
end)
