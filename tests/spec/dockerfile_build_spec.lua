-- needs: docker
-- A generated scratch Dockerfile builds and runs for real: a static C binary compiled here,
-- built by the docker CLI against the test dockerd (no network needed), run as non-root.
local dockerfile = require("myrmex.dockerfile")
local sh = require("tests.support.sh")

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function ok(cmd, opts)
  local r = sh.run(cmd, opts)
  assert(r.code == 0, (type(cmd) == "table" and table.concat(cmd, " ") or cmd) .. ": " .. r.stderr)
  return r.stdout
end

describe("generated scratch Dockerfile", function()
  local dir, tag

  before_each(function()
    dir = sh.run("mktemp -d /tmp/mx-dockerfile-XXXXXX").stdout:gsub("%s+$", "")
    tag = "myrmex-test-dockerfile:" .. tostring(os.time()) .. tostring(math.random(1000, 9999))
  end)

  after_each(function()
    sh.run({ "docker", "rmi", "-f", tag })
    os.execute("rm -rf " .. sh.q(dir))
  end)

  it("builds with docker and runs the static binary as an unprivileged user", function()
    os.execute("mkdir -p " .. sh.q(dir .. "/build") .. " " .. sh.q(dir .. "/src"))
    write(dir .. "/src/hello.c", [[
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  printf("hello %s uid=%d\n", argc > 1 ? argv[1] : "nobody", (int)getuid());
  return 0;
}
]])
    ok({ "cc", "-static", "-O2", "-o", dir .. "/build/hello", dir .. "/src/hello.c" })
    local out = dockerfile.generate({ language = "c", binary = "build/hello", cmd = { "world" } })
    assert.are.same({}, dockerfile.lint(out.dockerfile))
    write(dir .. "/Dockerfile", out.dockerfile)
    write(dir .. "/.dockerignore", out.dockerignore)
    ok({ "docker", "build", "-q", "-t", tag, dir })
    local run = ok({ "docker", "run", "--rm", "--network", "none", tag })
    assert.are.equal("hello world uid=65534\n", run)
    local user = ok({ "docker", "image", "inspect", "-f", "{{.Config.User}}", tag })
    assert.are.equal("65534:65534\n", user)
    -- The image filesystem is the binary and nothing of ours besides.
    local id = ok({ "docker", "create", tag }):gsub("%s+$", "")
    local listing = ok({ "sh", "-c", "docker export " .. sh.q(id) .. " | tar -t" })
    sh.run({ "docker", "rm", "-f", id })
    assert.truthy(listing:find("\nhello\n", 1, true) or listing:find("^hello\n"))
    assert.is_nil(listing:find("hello.c", 1, true))
  end)
end)
