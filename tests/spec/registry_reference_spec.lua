-- Image references: the distribution grammar with Docker's normalisation, table-driven, and
-- the loopback rule that allows plain HTTP. Expected values follow `docker pull` behaviour.
local reference = require("myrmex.registry.reference")
local errors = require("myrmex.errors")

local D64 = ("0123456789abcdef"):rep(4)

local VALID = {
  -- input, canonical, registry, repository, tag, digest
  { "busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest" },
  { "busybox:1.36.1", "docker.io/library/busybox:1.36.1", "docker.io", "library/busybox", "1.36.1" },
  { "user/app", "docker.io/user/app:latest", "docker.io", "user/app", "latest" },
  { "index.docker.io/user/app:v2", "docker.io/user/app:v2", "docker.io", "user/app", "v2" },
  { "docker.io/library/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest" },
  { "localhost/app", "localhost/app:latest", "localhost", "app", "latest" },
  { "localhost:5000/a/b/c:t_1", "localhost:5000/a/b/c:t_1", "localhost:5000", "a/b/c", "t_1" },
  { "127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1", "127.0.0.1:5000", "app", "1" },
  { "[::1]:5000/app:1", "[::1]:5000/app:1", "[::1]:5000", "app", "1" },
  { "ghcr.io/org/repo@sha256:" .. D64, "ghcr.io/org/repo@sha256:" .. D64, "ghcr.io", "org/repo", nil, "sha256:" .. D64 },
  { "reg.example/r:t@sha256:" .. D64, "reg.example/r:t@sha256:" .. D64, "reg.example", "r", "t", "sha256:" .. D64 },
  { "a__b/c.d/e-f/g--h", "docker.io/a__b/c.d/e-f/g--h:latest", "docker.io", "a__b/c.d/e-f/g--h", "latest" },
  { "Host.Example:443/x", "Host.Example:443/x:latest", "Host.Example:443", "x", "latest" },
  { "x:" .. ("t"):rep(128), "docker.io/library/x:" .. ("t"):rep(128), "docker.io", "library/x", ("t"):rep(128) },
}

local INVALID = {
  { "", "empty" },
  { "UPPER", "lowercase" },
  { "a/", "path component" },
  { "/a", "path component" },
  { "a//b", "path component" },
  { "-a", "path component" },
  { "a_-b", "path component" },
  { "a___b", "path component" },
  { "a:", "bad tag" },
  { "a:-t", "bad tag" },
  { "a:" .. ("t"):rep(129), "bad tag" },
  { "a@sha256:abc", "bad digest" },
  { "a@sha256:" .. D64:upper(), "bad digest" },
  { "a b", "white space" },
  { "host:99999/x", "registry host" },
  { "-bad.host/x", "registry host" },
  { "reg.example/" .. ("a"):rep(250), "255" },
}

describe("registry.reference", function()
  for _, row in ipairs(VALID) do
    it("parses " .. row[1], function()
      local r = reference.parse(row[1])
      assert.are.equal(row[2], tostring(r))
      assert.are.equal(row[3], r.registry)
      assert.are.equal(row[4], r.repository)
      assert.are.equal(row[5], r.tag)
      assert.are.equal(row[6], r.digest)
      assert.is_true(reference.valid(row[1]))
    end)
  end

  for _, row in ipairs(INVALID) do
    it("refuses " .. ("%q"):format(row[1]:sub(1, 40)), function()
      local ok, err = pcall(reference.parse, row[1])
      assert.is_false(ok)
      assert.is_true(errors.is(err, "Invalid"), errors.message(err))
      assert.are.equal("registry", err.engine)
      assert.truthy(err.message:find(row[2], 1, true), err.message)
      assert.is_false(reference.valid(row[1]))
    end)
  end

  it("resolves names against a given registry without library/", function()
    local r = reference.parse("app:1", { registry = "127.0.0.1:5000" })
    assert.are.equal("127.0.0.1:5000/app:1", tostring(r))
    assert.are.equal("sha256:" .. D64, r:with({ tag = false, digest = "sha256:" .. D64 }):reference())
    assert.are.equal("1", r:reference())
    assert.is_nil(reference.parse("app", { default_tag = false }).tag)
  end)

  it("knows loopback hosts and digests", function()
    for _, h in ipairs({ "localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1" }) do
      assert.is_true(reference.is_loopback(h), h)
    end
    for _, h in ipairs({ "registry.example", "10.0.0.1:5000", "128.0.0.1", "localhost.example:5000" }) do
      assert.is_false(reference.is_loopback(h), h)
    end
    assert.is_true(reference.is_digest("sha256:" .. D64))
    assert.is_false(reference.is_digest("sha256:" .. D64:sub(2)))
    assert.is_false(reference.is_digest(D64))
  end)

  it("names the function on misuse", function()
    local ok, err = pcall(reference.parse, 42)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("registry.reference.parse", 1, true))
  end)
end)
