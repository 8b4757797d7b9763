-- The libarchive binding: .dockerignore matching, streamed packing, reading, writing and
-- safe extraction, checked against GNU tar and sha256sum on real files.
local archive = require("myrmex.core.archive")
local errors = require("myrmex.errors")
local sh = require("tests.support.sh")

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute(("chmod %o %s"):format(mode, sh.q(path))) end
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function tmpdir()
  local r = sh.run("mktemp -d /tmp/mx-archive-XXXXXX")
  return (r.stdout:gsub("%s+$", ""))
end

local function sh_ok(cmd)
  local r = sh.run(cmd)
  assert(r.code == 0, cmd .. ": " .. r.stderr)
  return r.stdout
end

-- Everything a source yields, as one string.
local function drain(src)
  local parts = {}
  for chunk in function() return src:read() end do parts[#parts + 1] = chunk end
  return table.concat(parts)
end

local function listing(src_or_path)
  local r <close> = archive.open(src_or_path)
  local out = {}
  for e in r:entries() do
    e.data = (e.type == "file") and r:read_all() or nil
    out[e.path] = e
  end
  return out
end

local function vm_hwm_kib()
  return tonumber(read("/proc/self/status"):match("VmHWM:%s+(%d+)"))
end

describe("archive.match (Docker's .dockerignore semantics)", function()
  -- { patterns, path, excluded? }
  local rows = {
    { { "*.o" }, "x.o", true },
    { { "*.o" }, "dir/x.o", false },              -- * never crosses a slash
    { { "**/*.o" }, "dir/sub/x.o", true },
    { { "**/*.o" }, "x.o", true },                -- **/ also matches zero directories
    { { "dir/**" }, "dir/a/b", true },
    { { "dir/**/z" }, "dir/z", true },
    { { "dir/**/z" }, "dir/a/b/z", true },
    { { "a?c" }, "abc", true },
    { { "a?c" }, "a/c", false },
    { { "[a-c]x" }, "bx", true },
    { { "[a-c]x" }, "dx", false },
    { { "build" }, "build/deep/file", true },     -- a parent match excludes what is below
    { { "/build" }, "build/x", true },            -- leading slash means the context root
    { { "./a/../build" }, "build", true },        -- patterns are cleaned like filepath.Clean
    { { "*.md", "!README.md" }, "README.md", false },
    { { "*.md", "!README.md" }, "CHANGES.md", true },
    { { "!README.md", "*.md" }, "README.md", true }, -- the last matching pattern wins
    { { "docs", "!docs/keep" }, "docs/keep", false },
    { { "docs", "!docs/keep" }, "docs/other", true },
    { { "a\\*b" }, "a*b", true },                 -- backslash escapes a wildcard
    { { "a\\*b" }, "axb", false },
    { { "a+b.c" }, "a+b.c", true },               -- regex characters are literal
    { { "a+b.c" }, "aab.c", false },
    { { "   spaced.txt  " }, "spaced.txt", true },
    { { "**" }, "anything/at/all", true },
  }
  for i, row in ipairs(rows) do
    it(("row %d: %s vs %s"):format(i, table.concat(row[1], ","), row[2]), function()
      assert.are.equal(row[3], archive.match(row[1], row[2]))
    end)
  end

  it("rejects a malformed pattern naming the function", function()
    local ok, err = pcall(archive.match, { "[z-a" }, "x")
    assert.is_false(ok)
    assert.matches("archive.match: exclude%[1%]: bad pattern", err)
  end)
end)

describe("archive.pack", function()
  local dir, outside
  before_each(function()
    dir, outside = tmpdir(), tmpdir()
    sh_ok(("mkdir -p %s/src/deep %s/.git %s/build/keep %s/docs"):format(dir, dir, dir, dir))
    write(dir .. "/Dockerfile", "FROM scratch\n")
    write(dir .. "/run.sh", "#!/bin/sh\n", 493) -- 0755
    write(dir .. "/secret.key", "k", 384)        -- 0600
    write(dir .. "/src/main.c", "int main;")
    write(dir .. "/src/main.o", "obj")
    write(dir .. "/src/deep/x.o", "obj")
    write(dir .. "/keep.o", "kept")
    write(dir .. "/.git/HEAD", "ref")
    write(dir .. "/build/keep/me", "me")
    write(dir .. "/build/other", "no")
    write(dir .. "/docs/a.md", "a")
    write(outside .. "/private", "must never be sent")
    sh_ok(("ln -s ../run.sh %s/src/link && ln -s %s %s/escape"):format(dir, outside, dir))
    sh_ok(("ln %s/src/main.c %s/src/hard.c"):format(dir, dir))
  end)
  after_each(function() sh.run({ "rm", "-rf", dir, outside }) end)

  it("streams a tar that GNU tar reads, with modes, symlinks and hardlinks preserved", function()
    local tarfile = dir .. ".tar"
    write(tarfile, drain(archive.pack { dir = dir }))
    local tv = sh_ok("tar -tvf " .. tarfile)
    assert.matches("%-rwxr%-xr%-x 0/0%s+10 [^\n]* run.sh", tv)
    assert.matches("%-rw%-%-%-%-%-%-%- 0/0%s+1 [^\n]* secret.key", tv)
    assert.matches("src/link %-> %.%./run.sh", tv)
    assert.matches("escape %-> " .. outside:gsub("%-", "%%-"), tv)
    assert.matches("src/main.c link to src/hard.c", tv) -- hard.c sorts first and carries the data
    assert.is_nil(tv:find("private", 1, true))          -- the link is stored, never followed
    os.remove(tarfile)
  end)

  it("honours exclusions, exceptions and Docker's rule for excluded directories", function()
    local got = listing(archive.pack {
      dir = dir,
      exclude = { ".git", "**/*.o", "!keep.o", "build", "!build/keep/me", "docs", "!**/a.md" },
    })
    assert.is_not_nil(got["keep.o"])
    assert.is_nil(got["src/main.o"])
    assert.is_nil(got["src/deep/x.o"])
    assert.is_nil(got[".git/HEAD"])
    assert.are.equal("me", got["build/keep/me"].data) -- named literally: walked into
    assert.is_nil(got["build/other"])
    -- A wildcard exception does not reopen an excluded directory, exactly as the CLI does.
    assert.is_nil(got["docs/a.md"])
    assert.are.equal("int main;", got["src/hard.c"].data)
  end)

  it("always sends the Dockerfile and .dockerignore, even when excluded", function()
    write(dir .. "/.dockerignore", "*\n")
    local got = listing(archive.pack { dir = dir, exclude = { "*", "Dockerfile", ".dockerignore" } })
    assert.are.equal("FROM scratch\n", got["Dockerfile"].data)
    assert.is_not_nil(got[".dockerignore"])
    assert.is_nil(got["run.sh"])
  end)

  it("keeps a custom Dockerfile inside the context and ships one from outside under a new name", function()
    write(dir .. "/src/Build.df", "FROM scratch\n")
    local src, name = archive.pack { dir = dir, exclude = { "src" }, dockerfile = "src/Build.df" }
    assert.are.equal("src/Build.df", name)
    assert.is_not_nil(listing(src)["src/Build.df"])
    write(outside .. "/Other.df", "FROM other\n")
    local src2, name2 = archive.pack { dir = dir, dockerfile = outside .. "/Other.df" }
    assert.matches("^%.dockerfile%.%x+$", name2)
    local got = listing(src2)
    assert.are.equal("FROM other\n", got[name2].data)
    assert.is_nil(got["private"])
  end)

  it("raises NotFound for a missing directory and names the function for bad arguments", function()
    local ok, err = pcall(archive.pack, { dir = dir .. "/nope" })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"))
    ok, err = pcall(archive.pack, { exclude = {} })
    assert.is_false(ok)
    assert.matches("archive.pack: dir", err)
  end)

  it("packs 300 MiB with flat memory", function()
    sh_ok(("truncate -s 300M %s/big.bin"):format(dir))
    collectgarbage()
    local before = vm_hwm_kib()
    local src = archive.pack { dir = dir }
    local total = 0
    for chunk in function() return src:read() end do total = total + #chunk end
    assert.is_true(total > 300 * 1024 * 1024)
    local grown = vm_hwm_kib() - before
    if not require("tests.support.docker").sanitized() then
      assert.is_true(grown < 8 * 1024, "peak RSS grew by " .. grown .. " KiB")
    end
  end)
end)

describe("archive.open", function()
  local dir
  before_each(function()
    dir = tmpdir()
    sh_ok(("mkdir -p %s/t/sub && printf hello > %s/t/a.txt && head -c 200000 /dev/urandom > %s/t/sub/rand && ln -s a.txt %s/t/l")
      :format(dir, dir, dir, dir))
  end)
  after_each(function() sh.run({ "rm", "-rf", dir }) end)

  for _, fmt in ipairs { { "tar", "" }, { "tar.gz", "-z" }, { "tar.zst", "--zstd" } } do
    it("reads " .. fmt[1] .. " by content, not by name", function()
      local path = dir .. "/x." .. fmt[1]
      sh_ok(("tar %s -cf %s -C %s t"):format(fmt[2], path, dir))
      local got = listing(path)
      assert.are.equal("hello", got["t/a.txt"].data)
      assert.are.equal("symlink", got["t/l"].type)
      assert.are.equal("a.txt", got["t/l"].linkname)
      assert.are.equal("dir", got["t/sub/"].type)
      assert.are.equal(200000, got["t/sub/rand"].size)
    end)
  end

  it("reads data in chunks, skips unread data and digests like sha256sum", function()
    local path = dir .. "/x.tar"
    sh_ok(("tar -cf %s -C %s t"):format(path, dir))
    local want = sh_ok("sha256sum " .. dir .. "/t/sub/rand"):match("^(%x+)")
    local r <close> = archive.open(path)
    local seen = {}
    for e in r:entries() do
      seen[#seen + 1] = e.path
      if e.path == "t/sub/rand" then
        local first = r:read()
        assert.is_true(#first > 0 and #first <= 65536)
        local d, size = r:digest("sha256") -- the rest of the data
        assert.are.equal(200000 - #first, size)
        assert.is_string(d)
      end
    end
    assert.are.equal(5, #seen)
    local r2 <close> = archive.open(path)
    for e in r2:entries() do
      if e.path == "t/sub/rand" then
        local d, size = r2:digest()
        assert.are.equal("sha256:" .. want, d)
        assert.are.equal(200000, size)
      end
    end
  end)

  it("copies an entry atomically and verifies its digest", function()
    local path = dir .. "/x.tar"
    sh_ok(("tar -cf %s -C %s t"):format(path, dir))
    local want = "sha256:" .. sh_ok("sha256sum " .. dir .. "/t/sub/rand"):match("^(%x+)")
    local r <close> = archive.open(path)
    for e in r:entries() do
      if e.path == "t/sub/rand" then
        local d, size = r:copy_to(dir .. "/copy", { digest = want })
        assert.are.equal(want, d)
        assert.are.equal(200000, size)
      elseif e.path == "t/a.txt" then
        local ok, err = pcall(r.copy_to, r, dir .. "/bad", { digest = "sha256:" .. ("0"):rep(64) })
        assert.is_false(ok)
        assert.is_true(errors.is(err, "DigestMismatch"), tostring(err))
      end
    end
    assert.are.equal(read(dir .. "/t/sub/rand"), read(dir .. "/copy"))
    assert.are.equal("", sh_ok("ls " .. dir .. " | grep -v '^copy$' | grep -e bad -e tmp || true"))
  end)

  it("bounds read_all and reports broken or missing archives", function()
    local path = dir .. "/x.tar"
    sh_ok(("tar -cf %s -C %s t"):format(path, dir))
    local r <close> = archive.open(path)
    for e in r:entries() do
      if e.path == "t/sub/rand" then
        local ok, err = pcall(r.read_all, r, 1000)
        assert.is_true(errors.is(err, "Invalid"), tostring(err))
        assert.is_false(ok)
      end
    end
    write(dir .. "/junk.tar", ("garbage"):rep(1000))
    local ok, err = pcall(function()
      local j <close> = archive.open(dir .. "/junk.tar")
      for _ in j:entries() do end
    end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    ok, err = pcall(archive.open, dir .. "/missing.tar")
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    -- a truncated archive fails while reading, not silently
    local whole = read(path)
    write(dir .. "/cut.tar", whole:sub(1, 100000))
    ok, err = pcall(function()
      local c <close> = archive.open(dir .. "/cut.tar")
      for e in c:entries() do if e.type == "file" then c:read_all() end end
    end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
  end)

  it("lists a layer as a compact path list: normalized, whiteouts resolved, os-release kept", function()
    local path = dir .. "/layer.tar"
    local py = sh.tmpfile([[
import io, sys, tarfile
def add(t, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.size = kind, mode, link, len(data)
    t.addfile(ti, io.BytesIO(data))
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    add(t, ".", tarfile.DIRTYPE, mode=0o755)
    add(t, "./etc/", tarfile.DIRTYPE, mode=0o755)
    add(t, "/etc/os-release", data=b"ID=first\n")
    add(t, "etc/passwd", data=b"root:x:0:0", mode=0o4755)
    add(t, "usr/lib/os-release", data=b"ID=last\n")
    add(t, "var/.wh.cache")
    add(t, "opt/.wh..wh..opq")
    add(t, "x/.wh..wh.aufs")
    add(t, ".wh.top")
    add(t, "a.wh.b/f", data=b"abc")
    add(t, "l", tarfile.SYMTYPE, link="etc/passwd")
    add(t, "h", tarfile.LNKTYPE, link="etc/passwd")
]], ".py")
    sh_ok(("python3 %s %s"):format(py, path))
    local r <close> = archive.open(path)
    local ticks = 0
    local list, kept = r:paths({ tick = function() ticks = ticks + 1 end, every = 2,
      keep = { "etc/os-release", "usr/lib/os-release" } })
    assert.are.equal(11, #list)
    assert.are.equal(5, ticks)
    assert.are.equal("ID=last\n", kept)
    local path_, size, kind, mode, parent = list:arrays()
    assert.are.same({ "", "etc", "etc/os-release", "etc/passwd", "usr/lib/os-release", "var/cache",
      "opt", "top", "a.wh.b/f", "l", "h" }, path_)
    assert.are.same({ "d", "d", "f", "f", "f", "w", "q", "w", "f", "l", "h" }, kind)
    assert.are.same({ 0, 0, 9, 10, 8, 0, 0, 0, 3, 0, 0 }, size)
    assert.are.equal(2541, mode[4]) -- 04755
    assert.are.same({ "", "", "etc", "etc", "usr/lib", "var", "", "", "a.wh.b", "", "" }, parent)
    local again <close> = archive.open(path)
    local _, none = again:paths({ keep = { "usr/lib/os-release" }, keep_max = 8 })
    assert.is_nil(none) -- 8 bytes is not below keep_max
    for _, case in ipairs({
      { { tick = 1 }, "reader:paths: tick must be a function" },
      { { every = 0 }, "reader:paths: every must be a positive integer" },
      { { keep_max = "x" }, "reader:paths: keep_max must be a positive integer" },
      { { keep = "etc/os-release" }, "reader:paths: keep must be a list of paths" },
      { 5, "reader:paths: options table expected, got number" },
    }) do
      local bad <close> = archive.open(path)
      assert.has_error(function() bad:paths(case[1]) end, case[2])
    end
  end)

  it("raises a clear error outside the entries loop and after close", function()
    local path = dir .. "/x.tar"
    sh_ok(("tar -cf %s -C %s t"):format(path, dir))
    local r = archive.open(path)
    assert.has_error(function() r:read() end,
      "reader:read: no current entry (call it inside the entries() loop)")
    r:close()
    assert.has_error(function() r:entries() end, "archive reader is closed")
  end)
end)

describe("archive.writer", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() sh.run({ "rm", "-rf", dir }) end)

  it("writes entries of every kind that GNU tar lists and extracts", function()
    write(dir .. "/payload", ("p"):rep(100000))
    local w <close> = archive.writer(dir .. "/out.tar")
    w:add { path = "d", type = "dir" }
    w:add { path = "d/s.txt", data = "string data", mode = 416 } -- 0640
    w:add { path = "d/f.bin", data = { file = dir .. "/payload" }, mtime = 1700000000 }
    w:add { path = "d/l", type = "symlink", linkname = "s.txt" }
    w:add { path = "d/h", type = "hardlink", linkname = "d/s.txt" }
    w:add { path = "d/src", data = archive.pack { dir = dir, exclude = { "out.tar*" } } }
    local n = w:close()
    assert.is_true(n > 100000)
    local tv = sh_ok("tar -tvf " .. dir .. "/out.tar")
    assert.matches("%-rw%-r%-%-%-%-%- 0/0%s+11 [^\n]* d/s.txt", tv)
    assert.matches("d/l %-> s.txt", tv)
    assert.matches("d/h link to d/s.txt", tv)
    assert.matches("100000 2023%-11%-1", tv)
    sh_ok(("mkdir %s/x && tar -xf %s/out.tar -C %s/x"):format(dir, dir, dir))
    assert.are.equal("string data", read(dir .. "/x/d/h"))
    -- the source of unknown size was spooled: it is itself a tar holding the payload
    assert.are.equal(("p"):rep(100000), listing(dir .. "/x/d/src")["payload"].data)
  end)

  it("compresses with gzip and zstd", function()
    for _, c in ipairs { "gzip", "zstd" } do
      local path = dir .. "/c." .. c
      local w <close> = archive.writer(path, { compression = c })
      w:add { path = "z", data = ("z"):rep(1000000) }
      w:close()
      assert.is_true(#read(path) < 100000)
      assert.are.equal(1000000, listing(path)["z"].size)
    end
  end)

  it("spools to a temp file when given no path and hands the tar over as a source", function()
    local w = archive.writer(nil)
    w:add { path = "a", data = "A" }
    local src = w:source()
    local got = listing(src)
    assert.are.equal("A", got["a"].data)
    assert.has_error(function() w:add { path = "b", data = "B" } end,
      "writer:add: writer already finished (source() was called)")
  end)

  it("leaves nothing behind when the scope fails, and finishes on a normal exit", function()
    local ok = pcall(function()
      local w <close> = archive.writer(dir .. "/fail.tar")
      w:add { path = "a", data = "A" }
      error("boom")
    end)
    assert.is_false(ok)
    assert.are.equal("", sh_ok("ls -A " .. dir))
    do
      local w <close> = archive.writer(dir .. "/ok.tar")
      w:add { path = "a", data = "A" }
    end
    assert.are.equal("A", listing(dir .. "/ok.tar")["a"].data)
  end)

  it("rejects bad entries naming the method", function()
    local w <close> = archive.writer(nil)
    assert.has_error(function() w:add { path = "x", type = "weird" } end,
      "writer:add: type must be file, dir, symlink or hardlink, not weird")
    assert.has_error(function() w:add { path = "x", type = "symlink" } end,
      "writer:add: a symlink needs linkname")
    assert.has_error(function() w:add { path = "x", data = 42 } end,
      "writer:add: data must be a string, {file=PATH} or a source")
    local ok, err = pcall(w.add, w, { path = "x", data = { file = dir .. "/none" } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"))
  end)
end)

describe("archive.extract", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() sh.run({ "rm", "-rf", dir }) end)

  local function tar_of(entries)
    local w = archive.writer(nil)
    for _, e in ipairs(entries) do w:add(e) end
    return w:source()
  end

  it("unpacks files, links and modes, with strip", function()
    local n = archive.extract(tar_of {
      { path = "top/bin", type = "dir" },
      { path = "top/bin/tool", data = "#!/bin/sh\n", mode = 493 },
      { path = "top/alias", type = "symlink", linkname = "bin/tool" },
      { path = "top/hard", type = "hardlink", linkname = "top/bin/tool" },
      { path = "dropped-by-strip", data = "x" },
    }, dir .. "/out", { strip = 1 })
    assert.are.equal(4, n)
    assert.are.equal("#!/bin/sh\n", read(dir .. "/out/alias"))
    assert.are.equal("#!/bin/sh\n", read(dir .. "/out/hard"))
    assert.matches("^%-rwxr%-xr%-x", sh_ok("ls -l " .. dir .. "/out/bin/tool"))
    assert.is_nil(read(dir .. "/out/dropped-by-strip"))
  end)

  local evil = {
    { "a parent path", { path = "../evil", data = "x" } },
    { "an absolute path", { path = "/tmp/mx-evil-abs", data = "x" } },
    { "a symlink leaving the tree", { path = "l", type = "symlink", linkname = "../../etc" } },
    { "an absolute symlink", { path = "l", type = "symlink", linkname = "/etc" } },
    { "a hardlink to outside", { path = "h", type = "hardlink", linkname = "../outside" } },
  }
  for _, case in ipairs(evil) do
    it("refuses " .. case[1], function()
      local ok, err = pcall(archive.extract, tar_of { case[2] }, dir .. "/out")
      assert.is_false(ok)
      assert.is_true(errors.is(err, "Invalid"), tostring(err))
      assert.matches("refusing", err.message)
      assert.is_nil(read(dir .. "/evil"))
      assert.is_nil(read("/tmp/mx-evil-abs"))
    end)
  end

  it("refuses to write through a symlink planted earlier in the same archive", function()
    sh_ok("mkdir " .. dir .. "/victim")
    local ok, err = pcall(archive.extract, tar_of {
      { path = "sub", type = "dir" },
      { path = "sub/l", type = "symlink", linkname = "." },
      { path = "sub/l/x", data = "through the link" },
    }, dir .. "/out")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.is_nil(read(dir .. "/out/sub/x"))
  end)
end)
