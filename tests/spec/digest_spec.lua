-- myrmex.digest against known vectors and the sha256sum tool.
local sh = require("tests.support.sh")
local digest = require("myrmex.digest")

describe("myrmex.digest", function()
  it("matches the FIPS 180 test vectors", function()
    assert.are.equal("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", digest.string("abc"))
    assert.are.equal("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", digest.string(""))
    assert.are.equal("sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
      digest.string("abc", "sha512"))
  end)

  it("streams: many updates equal one", function()
    local h = digest.new("sha256")
    for _ = 1, 1000 do h:update("abc") end
    assert.are.equal(digest.string(string.rep("abc", 1000)), h:final())
    assert.has_error(function() h:update("x") end, "digest: already finalised")
  end)

  it("hashes files like sha256sum", function()
    local path = sh.tmpfile(string.rep("0123456789", 100000))
    local d, size = digest.file(path)
    assert.are.equal(1000000, size)
    assert.are.equal("sha256:" .. sh.run({ "sha256sum", path }).stdout:match("^%x+"), d)
    os.remove(path)
    local none, err = digest.file(path)
    assert.is_nil(none)
    assert.truthy(err:find("No such file", 1, true))
  end)

  it("parses digests strictly", function()
    assert.are.same({ "sha256", string.rep("a", 64) }, { digest.parse("sha256:" .. string.rep("A", 64)) })
    assert.is_nil(digest.parse("sha256:abc"))
    assert.is_nil(digest.parse("md5:" .. string.rep("a", 32)))
  end)

  it("encodes base64 as coreutils does, and the URL-safe variant without padding", function()
    for _, s in ipairs({ "", "f", "fo", "foo", "hello?>", string.rep("\255\0\1", 100) }) do
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "wb"))
      f:write(s)
      f:close()
      local p = assert(io.popen("base64 -w0 " .. tmp))
      local want = p:read("a")
      p:close()
      os.remove(tmp)
      assert.are.equal(want, digest.base64(s))
      assert.are.equal((want:gsub("=", ""):gsub("%+", "-"):gsub("/", "_")), digest.base64(s, "url"))
    end
    assert.has_error(function() digest.base64("x", "hex") end)
  end)

  it("rejects unknown algorithms", function()
    assert.has_error(function() digest.new("md5") end)
  end)
end)
