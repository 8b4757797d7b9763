-- The transport against a server that breaks HTTP and TLS on purpose (tests/support/faults.py,
-- loopback only): every fault ends in a clean myrmex error object within its time limit, with
-- no hang, no crash and memory bounded however much the server sends.
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local rt = require("myrmex.core.runtime")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

local MIB = 1024 -- peak_rss_kib() counts KiB

local srv, pki, base, tls_garbage, tls_silent, tls_expired

setup(function()
  pki = rt.mkdtemp("/tmp/mx-faults-XXXXXX")
  srv = server.start("exec python3 " .. sh.q(sh.src .. "/tests/support/faults.py") .. " " .. sh.q(pki), 60)
  local f = assert(io.open(srv.log))
  local ports = { f:read("a"):match("READY (%d+) (%d+) (%d+) (%d+)") }
  f:close()
  base = "http://127.0.0.1:" .. ports[1]
  tls_garbage = "https://127.0.0.1:" .. ports[2] .. "/"
  tls_silent = "https://127.0.0.1:" .. ports[3] .. "/"
  tls_expired = "https://127.0.0.1:" .. ports[4] .. "/ok"
end)

teardown(function()
  if srv then srv.stop() end
  if pki then sh.run({ "rm", "-rf", pki }) end
end)

-- The request fails with an error object of `code`, in less than `limit` seconds.
local function fails(code, t, limit, needle)
  local t0 = rt.monotonic()
  local ok, err = pcall(http.request, t)
  local took = rt.monotonic() - t0
  assert.is_false(ok, "the request succeeded")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. errors.message(err))
  if needle then assert.truthy(tostring(err):lower():find(needle, 1, true), tostring(err)) end
  assert.is_true(took < limit, ("took %.1f s, limit %d s"):format(took, limit))
  return err, took
end

-- Runs fn and checks that the process's peak resident memory grew by less than `mib`.
local function bounded(mib, fn)
  -- ASan's quarantine keeps freed blocks for a while, so the bound holds only outside it; the
  -- sanitizer pass still checks that the calls end as they should.
  if server.sanitized() then return fn() end
  collectgarbage()
  local before = server.peak_rss_kib()
  fn()
  local grew = (server.peak_rss_kib() - before) / MIB
  assert.is_true(grew < mib, ("peak memory grew by %.0f MiB (bound %d MiB)"):format(grew, mib))
end

describe("transport faults", function()
  it("a connection reset mid-body is Unreachable", function()
    fails("Unreachable", { url = base .. "/reset-mid-body", timeout = 20 }, 10)
  end)

  it("a chunked body cut inside a chunk is Unreachable", function()
    fails("Unreachable", { url = base .. "/truncated-chunked", timeout = 20 }, 10)
  end)

  it("a chunk size that is not hex is a clean error", function()
    local _, err = pcall(http.request, { url = base .. "/bad-chunk-size", timeout = 20 })
    assert.is_true(errors.is(err), "no error object: " .. tostring(err))
  end)

  it("a Content-Length longer than the body, then close, is Unreachable", function()
    fails("Unreachable", { url = base .. "/long-length-close", timeout = 20 }, 10)
  end)

  it("a Content-Length longer than the body, then silence, times out", function()
    fails("Timeout", { url = base .. "/long-length-stall", timeout = 2 }, 6)
    -- curl checks the speed once a second: 2 s of silence is noticed between 2 and 4 s, and a
    -- loaded sanitizer build needs the margin.
    fails("Timeout", { url = base .. "/long-length-stall", low_speed_time = 2 }, 12)
  end)

  it("a Content-Length shorter than the body gives that many bytes and no forged response", function()
    local res = http.request({ url = base .. "/short-length", timeout = 20 })
    assert.are.equal(200, res.status)
    assert.are.equal("0123456789", res.body)
    -- The 40 bytes after the body look like a response; the next request must not read them.
    local nxt = http.request({ url = base .. "/ok", timeout = 20 })
    assert.are.equal("ok", nxt.body)
  end)

  it("an 8 MiB header line is a clean error with bounded memory", function()
    bounded(64, function()
      local _, err = pcall(http.request, { url = base .. "/huge-header", timeout = 30 })
      assert.is_true(errors.is(err), "no error object: " .. tostring(err))
      assert.is_false(errors.is(err, "Timeout"), "gave up only at the timeout: " .. tostring(err))
    end)
  end)

  it("headers without end are a clean error with bounded memory", function()
    bounded(64, function()
      local _, err = pcall(http.request, { url = base .. "/many-headers", timeout = 30 })
      assert.is_true(errors.is(err), "no error object: " .. tostring(err))
      assert.is_false(errors.is(err, "Timeout"), "gave up only at the timeout: " .. tostring(err))
    end)
  end)

  it("headers trickling a byte a second end at the timeout or the low-speed limit", function()
    fails("Timeout", { url = base .. "/slow-headers", timeout = 2 }, 6)
    fails("Timeout", { url = base .. "/slow-headers", low_speed_time = 3 }, 9)
  end)

  it("a body trickling forever ends at the timeout or the low-speed limit", function()
    fails("Timeout", { url = base .. "/slow-body", timeout = 3 }, 7)
    fails("Timeout", { url = base .. "/slow-body", low_speed_time = 3 }, 9)
  end)

  it("an endless body stops at max_body, and streams with flat memory", function()
    bounded(64, function()
      fails("Invalid", { url = base .. "/endless-body", max_body = 8 * 1024 * 1024, timeout = 60 }, 30)
      local s <close> = http.open({ url = base .. "/endless-body", timeout = 120 })
      local n = 0
      while n < 256 * 1024 * 1024 do n = n + #assert(s:read()) end
    end)
  end)

  it("TLS garbage after the ClientHello is Unreachable", function()
    fails("Unreachable", { url = tls_garbage, timeout = 20, tls = { ca = pki .. "/ca.pem" } }, 10, "tls")
  end)

  it("a TLS server that never answers the ClientHello ends at the connect timeout", function()
    fails("Timeout", { url = tls_silent, connect_timeout = 2, tls = { ca = pki .. "/ca.pem" } }, 6)
  end)

  it("an expired certificate is refused", function()
    fails("Unreachable", { url = tls_expired, timeout = 20, tls = { ca = pki .. "/ca.pem" } }, 10,
      "expired")
  end)

  it("still works after all that", function()
    assert.are.equal("ok", http.request({ url = base .. "/ok", timeout = 10 }).body)
  end)
end)
