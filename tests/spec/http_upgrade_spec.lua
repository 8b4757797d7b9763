-- Upgraded (hijacked) connections through the shared transport: a local server answers 101
-- and echoes upper-cased what it reads until our side ends its direction.
local sh = require("tests.support.sh")
local server = require("tests.support.server")
local http = require("myrmex.http")
local errors = require("myrmex.errors")

local HTTPD = "python3 " .. sh.src .. "/tests/support/httpd.py"

describe("http upgrade", function()
  local srv, base
  setup(function()
    srv = server.start(HTTPD)
    base = "http://127.0.0.1:" .. srv.port
  end)
  teardown(function() srv.stop() end)

  it("writes to the upgraded connection, reads the peer's stream, and ends our direction", function()
    local s <close> = http.open { method = "POST", url = base .. "/upgrade", upgrade = "tcp" }
    assert.are.equal(101, s.status)
    assert.are.equal("tcp", s.headers.upgrade)
    s:send("hello ")
    s:send("world")
    s:close_write()
    assert.are.equal("HELLO WORLDEND", s:read_all())
  end)

  it("moves 48 MiB each way with the reply drained while the writer waits", function()
    local s <close> = http.open { method = "POST", url = base .. "/upgrade", upgrade = true }
    local piece = ("abcdefghijklmnop"):rep(4096) -- 64 KiB
    local got, waits = {}, 0
    local function drain()
      waits = waits + 1
      while true do
        local c = s:read_nowait()
        if not c then break end
        got[#got + 1] = c
      end
    end
    for _ = 1, 768 do s:send(piece, drain) end
    s:close_write()
    for c in s.read, s do got[#got + 1] = c end
    local all = table.concat(got)
    assert.are.equal(768 * #piece + 3, #all)
    assert.is_true(all:sub(1, #piece) == piece:upper())
    assert.are.equal("END", all:sub(-3))
    assert.is_true(waits > 0, "the server never made the writer wait (socket buffers of 48 MiB?)")
  end)

  it("refuses send on a plain stream and on a refused upgrade, and after the peer closed", function()
    local plain <close> = http.open { url = base .. "/bytes?n=10" }
    assert.has_error(function() plain:send("x") end, "send: the transfer was not started with upgrade = true")
    local refused <close> = http.open { method = "POST", url = base .. "/upgrade?proto=other", upgrade = "tcp" }
    assert.are.equal(400, refused.status)
    assert.has_error(function() refused:send("x") end, "send: the peer answered 400, not a switch of protocols")
    local s <close> = http.open { method = "POST", url = base .. "/upgrade", upgrade = "tcp" }
    s:close_write()
    assert.are.equal("END", s:read_all())
    local ok, err = pcall(s.send, s, "late")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Unreachable"), tostring(err))
  end)
end)
