-- The pieces of BuildKit's build session that need no engine: the gRPC server codec
-- (myrmex.core.grpc) driven by nghttp2-made client bytes is covered against the real engine in
-- spec:docker_build; here, its refusals of a broken peer, the session messages, and the file
-- sync walker's order, filters and data packets (myrmex.core.archive.sync_walk).
local grpc = require("myrmex.core.grpc")
local bk = require("myrmex.core.buildkit")
local archive = require("myrmex.core.archive")
local sh = require("tests.support.sh")

local function tmpdir()
  return sh.run("mktemp -d /tmp/mx-bksession-XXXXXX").stdout:gsub("%s+$", "")
end

local function write(path, text)
  os.execute("mkdir -p " .. sh.q(path:match("^(.*)/")))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The paths in a walker's STAT packets (each a protobuf Packet{stat = Stat{path = 1}}).
local function paths(list)
  local out = {}
  for _, pkt in ipairs(list) do
    -- Packet field 2 (stat), then Stat field 1 (path): decoded through the receiver's view.
    local p = archive.decode_sync_packet(pkt)
    assert.are.equal("stat", p.type)
    local len = pkt:byte(2)
    local stat = pkt:sub(3, 2 + len)
    local plen = stat:byte(2)
    out[#out + 1] = stat:sub(3, 2 + plen)
  end
  return out
end

describe("grpc server", function()
  it("announces its SETTINGS and refuses bytes that are not HTTP/2", function()
    local s <close> = grpc.server()
    local hello = s:output()
    assert.is_true(#hello >= 9)
    assert.are.equal(4, hello:byte(4)) -- a SETTINGS frame
    assert.is_true(s:alive())
    local events, why = s:feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.is_nil(events)
    assert.matches("HTTP/2 from the peer", why)
    s:close()
    assert.has_error(function() s:feed("x") end, "grpc server: already closed")
  end)
end)

describe("buildkit session messages", function()
  it("round-trip by field name, and name what they lack", function()
    local b = bk.encode_message("GetSecretResponse", { data = "\0binary\255" })
    assert.are.same({ data = "\0binary\255" }, bk.decode_message("GetSecretResponse", b))
    assert.are.same({ username = "u", secret = "p" },
      bk.decode_message("CredentialsResponse", bk.encode_message("CredentialsResponse", { username = "u", secret = "p" })))
    assert.are.equal("", bk.encode_message("BytesMessage", {}))
    assert.has_error(function() bk.encode_message("Nope", {}) end)
    assert.has_error(function() bk.encode_message("GetSecretRequest", { ID = "x" }) end,
      "buildkit.encode_message: GetSecretRequest has no field 'ID'")
    local t, why = bk.decode_message("GetSecretRequest", "\255\255")
    assert.is_nil(t)
    assert.matches("not a GetSecretRequest", why)
  end)
end)

describe("archive.sync_walk", function()
  local dir
  before_each(function()
    dir = tmpdir()
    write(dir .. "/a.txt", "a")
    write(dir .. "/a/inner", "i")
    write(dir .. "/b/deep/c.txt", "c")
    write(dir .. "/skip/x", "x")
    write(dir .. "/skip/keep", "k")
    os.execute("ln -s a.txt " .. sh.q(dir .. "/link"))
  end)
  after_each(function() sh.run({ "rm", "-rf", dir }) end)

  it("sends every entry, names sorted and parents first, as the receiver checks", function()
    local w <close> = archive.sync_walk { dir = dir }
    local list = w:next(100)
    assert.are.same({ "a", "a/inner", "a.txt", "b", "b/deep", "b/deep/c.txt", "link", "skip", "skip/keep",
      "skip/x" }, paths(list))
    assert.are.same({}, w:next(100))
  end)

  it("applies exclude patterns with exceptions, and include patterns with their parents", function()
    -- "*.txt" is anchored at the top, as in .dockerignore; "skip" is sent for its exception.
    local w <close> = archive.sync_walk { dir = dir, exclude = { "skip", "!skip/keep", "*.txt" } }
    assert.are.same({ "a", "a/inner", "b", "b/deep", "b/deep/c.txt", "link", "skip", "skip/keep" },
      paths(w:next(100)))
    local only <close> = archive.sync_walk { dir = dir, include = { "b/deep/c.txt" } }
    assert.are.same({ "b", "b/deep", "b/deep/c.txt" }, paths(only:next(100)))
  end)

  it("sends a requested file in DATA packets ending with an empty one; other ids are refused", function()
    write(dir .. "/big", string.rep("x", 100000))
    local w <close> = archive.sync_walk { dir = dir, include = { "big" } }
    assert.are.same({ "big" }, paths(w:next(10)))
    local got, n = {}, 0
    while true do
      local pkt, last = w:read(0)
      local p = archive.decode_sync_packet(pkt)
      assert.are.equal("data", p.type)
      assert.are.equal(0, p.id)
      if last then
        assert.are.equal("", p.data)
        break
      end
      got[#got + 1] = p.data
      n = n + 1
    end
    assert.are.equal(string.rep("x", 100000), table.concat(got))
    assert.is_true(n >= 2)
    local none, why = w:read(5)
    assert.is_nil(none)
    assert.matches("no file with id 5", why)
    w:close()
    assert.has_error(function() w:next() end, "archive.sync_walk: the walker is closed")
  end)

  it("is NotFound for a missing directory", function()
    local ok, err = pcall(archive.sync_walk, { dir = dir .. "/missing" })
    assert.is_false(ok)
    assert.are.equal("NotFound", err.code)
  end)
end)
