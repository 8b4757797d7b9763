-- archive.extract against hand-made malicious tars (written by python3's tarfile, not by our
-- own writer, so the archives hold what an attacker's image layer could): every entry that
-- would land outside the destination is refused, and whatever happens nothing appears outside
-- it and no link left inside it leads out of it.
local archive = require("myrmex.core.archive")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local rt = require("myrmex.core.runtime")
local sh = require("tests.support.sh")

-- Entries as JSON: {name, type?, linkname?, data?, mode?, pax?}; `gnu = true` writes GNU
-- long-name records instead of pax headers.
local MAKE_TAR = [[
import io, json, sys, tarfile
spec = json.load(open(sys.argv[1]))
types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
fmt = tarfile.GNU_FORMAT if spec.get("gnu") else tarfile.PAX_FORMAT
with tarfile.open(sys.argv[2], "w", format=fmt) as t:
    for e in spec["entries"]:
        ti = tarfile.TarInfo(e["name"])
        ti.type = types[e.get("type", "file")]
        ti.linkname = e.get("linkname", "")
        ti.mode = e.get("mode", 0o755 if ti.type == tarfile.DIRTYPE else 0o644)
        ti.devmajor, ti.devminor = e.get("dev", [0, 0])
        if "pax" in e:
            ti.pax_headers = e["pax"]
        data = e.get("data", "").encode()
        if ti.type == tarfile.REGTYPE:
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        else:
            t.addfile(ti)
]]

local function check(cmd)
  local r = sh.run(cmd)
  assert(r.code == 0, table.concat(type(cmd) == "table" and cmd or { cmd }, " ") .. ": " .. r.stderr)
  return r.stdout
end

local function make_tar(dir, entries, gnu)
  local spec = sh.tmpfile(json.encode({ entries = entries, gnu = gnu or false }))
  local script = sh.tmpfile(MAKE_TAR, ".py")
  local path = dir .. "/evil.tar"
  check({ "python3", script, spec, path })
  os.remove(spec)
  os.remove(script)
  return path
end

-- Every path under root, except those under root/a/b/out (the destination) and the tar.
local function outside_files(root)
  local out = check({ "find", root, "-mindepth", "1", "-path", root .. "/a/b/out", "-prune", "-o",
    "-print" })
  local list = {}
  for line in out:gmatch("[^\n]+") do
    if line ~= root .. "/a" and line ~= root .. "/a/b" and line ~= root .. "/evil.tar"
      and line ~= root .. "/a/b/out" and line ~= root .. "/a/sentinel" then
      list[#list + 1] = line
    end
  end
  return list
end

-- Symlinks under dest whose resolved target is outside dest (or dangling towards outside).
local function escaping_links(dest)
  local real_dest = rt.realpath(dest)
  local bad = {}
  for line in check({ "find", dest, "-type", "l" }):gmatch("[^\n]+") do
    local target = check({ "readlink", "-m", line }):gsub("%s+$", "")
    if target ~= real_dest and target:sub(1, #real_dest + 1) ~= real_dest .. "/" then
      bad[#bad + 1] = line .. " -> " .. target
    end
  end
  return bad
end

describe("archive.extract on malicious tars", function()
  local root
  before_each(function()
    root = check("mktemp -d /tmp/mx-extract-XXXXXX"):gsub("%s+$", "")
    check({ "mkdir", "-p", root .. "/a/b" })
    local f = assert(io.open(root .. "/a/sentinel", "w"))
    f:write("untouched")
    f:close()
  end)
  after_each(function() sh.run({ "rm", "-rf", root }) end)

  local function extract(entries, gnu)
    local tar = make_tar(root, entries, gnu)
    return pcall(archive.extract, tar, root .. "/a/b/out")
  end

  local function assert_contained()
    assert.are.same({}, outside_files(root))
    local f = assert(io.open(root .. "/a/sentinel"))
    assert.are.equal("untouched", f:read("a"))
    f:close()
    if rt.stat(root .. "/a/b/out") then assert.are.same({}, escaping_links(root .. "/a/b/out")) end
    assert.is_nil(rt.stat("/tmp/mx-evil-absolute"))
  end

  local refused = {
    { "a parent path", { { name = "../evil", data = "x" } } },
    { "a parent path two levels up", { { name = "../../evil", data = "x" } } },
    { "a parent path behind a directory", { { name = "d/../../evil", data = "x" } } },
    { "a parent path behind ./", { { name = "./../evil", data = "x" } } },
    { "a parent path as a directory", { { name = "../evildir", type = "dir" } } },
    { "an absolute path", { { name = "/tmp/mx-evil-absolute", data = "x" } } },
    { "an absolute path with two slashes", { { name = "//tmp/mx-evil-absolute", data = "x" } } },
    { "a pax path header leaving the tree", { { name = "innocent", data = "x",
      pax = { path = "../../evil" } } } },
    { "a pax linkpath header leaving the tree", { { name = "l", type = "symlink",
      linkname = "ok", pax = { linkpath = "../../.." } } } },
    { "a GNU long name leaving the tree", { { name = ("../"):rep(2) .. ("x"):rep(120), data = "x" } },
      true },
    { "a symlink to the parent", { { name = "l", type = "symlink", linkname = ".." } } },
    { "a symlink to an absolute directory", { { name = "l", type = "symlink", linkname = "/tmp" } } },
    { "a symlink leaving from a subdirectory", { { name = "d", type = "dir" },
      { name = "d/l", type = "symlink", linkname = "../../x" } } },
    { "a symlink then a file written through it", { { name = "l", type = "symlink", linkname = "." },
      { name = "l/../evil", data = "x" } } },
    { "a directory replaced by a symlink out, then written through",
      { { name = "d", type = "dir" }, { name = "d", type = "symlink", linkname = "/tmp" },
        { name = "d/mx-evil-absolute", data = "x" } } },
    { "a symlink whose target leaves through another symlink",
      { { name = "u", type = "symlink", linkname = "." }, { name = "v", type = "symlink", linkname = "u/.." } } },
    { "a symlink chain through a nested link",
      { { name = "d", type = "dir" }, { name = "d/up", type = "symlink", linkname = ".." },
        { name = "w", type = "symlink", linkname = "d/up/.." } } },
    { "a hard link to a parent path", { { name = "h", type = "hardlink", linkname = "../sentinel" } } },
    { "a hard link to an absolute path", { { name = "h", type = "hardlink", linkname = "/etc/passwd" } } },
    { "a hard link through a planted symlink", { { name = "l", type = "symlink", linkname = "." },
      { name = "h", type = "hardlink", linkname = "l/../../sentinel" } } },
    -- lexically "sentinel" (inside); through u -> "." it is two levels above the destination
    { "a hard link climbing back out through symlinks", { { name = "u", type = "symlink",
      linkname = "." }, { name = "h", type = "hardlink", linkname = "u/u/../../sentinel" } } },
    { "a symlink climbing back out through symlinks", { { name = "u", type = "symlink",
      linkname = "." }, { name = "s", type = "symlink", linkname = "u/u/../../sentinel" } } },
    { "a symlink made before the link it climbs through",
      { { name = "d", type = "dir" }, { name = "v", type = "symlink", linkname = "d/.." },
        { name = "d", type = "symlink", linkname = "." } } },
  }
  for _, case in ipairs(refused) do
    it("refuses " .. case[1], function()
      local ok, err = extract(case[2], case[3])
      assert.is_false(ok, "extracted")
      assert.is_true(errors.is(err, "Invalid"), tostring(err))
      assert_contained()
    end)
  end

  it("keeps links that stay inside and writes regular content", function()
    local ok, n = extract({
      { name = "d", type = "dir" },
      { name = "d/f", data = "inside" },
      { name = "d/rel", type = "symlink", linkname = "f" },
      { name = "d/up", type = "symlink", linkname = "../d/./f" },
      { name = "h", type = "hardlink", linkname = "d/f" },
    })
    assert.is_true(ok, tostring(n))
    assert.are.equal(5, n)
    local f = assert(io.open(root .. "/a/b/out/d/up"))
    assert.are.equal("inside", f:read("a"))
    f:close()
    assert_contained()
  end)

  it("does not make device nodes or set-id files an image could plant", function()
    local ok, err = extract({
      { name = "suid", data = "#!/bin/sh\n", mode = tonumber("4755", 8) },
      { name = "sgid", data = "#!/bin/sh\n", mode = tonumber("2755", 8) },
      { name = "mem", type = "char", dev = { 1, 1 } },
    })
    if ok then
      local st = rt.stat(root .. "/a/b/out/mem")
      assert.is_true(st == nil or st.type ~= "char", "a character device was created")
    else
      assert.is_true(errors.is(err, "Invalid"), tostring(err))
    end
    for _, name in ipairs({ "suid", "sgid" }) do
      local mode = sh.run({ "stat", "-c", "%a", root .. "/a/b/out/" .. name }).stdout:gsub("%s+$", "")
      assert.is_true(mode == "" or #mode <= 3, name .. " kept mode " .. mode)
    end
    assert_contained()
  end)
end)
