-- needs: docker
-- Every example a newcomer copies runs as documented.
local sh = require("tests.support.sh")
local dsupport = require("tests.support.docker")

local function ex(name) return sh.src .. "/examples/" .. name end

describe("examples", function()
  local image
  setup(function() image = dsupport.image() end)

  it("hello", function()
    local r = sh.myrmex({ "run", ex("hello.lua"), "--set", "name=ants", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("hello, ants\n", r.stdout)
  end)

  it("run-container", function()
    local r = sh.myrmex({ "run", ex("run-container.lua"), "--set", "image=" .. image, "--set", "cmd=echo,hi there", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("hi there\n", r.stdout)
  end)

  it("parallel-containers", function()
    local r = sh.myrmex({ "run", ex("parallel-containers.lua"), "--set", "image=" .. image, "--set", "n=5", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("container 1 exited 1\ncontainer 2 exited 2\ncontainer 3 exited 0\ncontainer 4 exited 1\ncontainer 5 exited 2\n", r.stdout)
  end)

  it("scan-gate", function()
    local fx = os.getenv("MYRMEX_FIXTURES") .. "/scanners/"
    local r = sh.myrmex({ "run", ex("scan-gate.lua"), "--set", "report=" .. fx .. "trivy/alpine-310.json", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("MEDIUM", 1, true), r.stdout)
    r = sh.myrmex({ "run", ex("scan-gate.lua"), "--set", "report=" .. fx .. "trivy/debian-buster.json", "--quiet" })
    assert.are.equal(1, r.code)
  end)

  it("lint-dockerfile", function()
    local df = sh.tmpfile("FROM debian:latest\nRUN cd /tmp && apt-get install -y curl\n")
    local r = sh.myrmex({ "run", ex("lint-dockerfile.lua"), "--set", "path=" .. df, "--quiet" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stdout:find("DL3007", 1, true), r.stdout)
    os.remove(df)
  end)
end)
