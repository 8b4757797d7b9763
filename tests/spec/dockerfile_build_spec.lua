-- needs: docker
-- Against the real engine (docker CLI and the test dockerd, no network needed):
-- a generated scratch Dockerfile builds and runs a static C binary as non-root, and the
-- parser agrees with Docker's own on continuations, directives, quoting and substitution.
local dockerfile = require("myrmex.dockerfile")
local json = require("myrmex.json")
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

  -- Only metadata instructions on scratch, so the build needs nothing but the daemon; the
  -- image config then shows how Docker parsed every line.
  local ORACLE = table.concat({
    "# escape=\\",
    "ARG BASE=scratch",
    "ARG VERSION=1.2.3",
    "ARG SPACED=\"two  words\"",
    "FROM ${BASE}",
    "ARG VERSION",
    "ARG SPACED",
    "ARG EMPTY",
    "ENV APP_HOME=/opt/app \\",
    "    # a comment inside the continuation",
    "",
    "    MODE=${EMPTY:-release} TAGGED=${VERSION:+v$VERSION} UNSET=${EMPTY}x",
    "ENV LEGACY value with  \"inner  spaces\" $VERSION",
    "ENV FROMVAR=$SPACED Q=\"a \\\"quoted\\\" \\$HOME\" S='$APP_HOME \\n' SEEN=$APP_HOME",
    "LABEL quoted=\"a b\" single='$APP_HOME' escaped=\\$APP_HOME plain=$APP_HOME/x multi=\"line \\",
    "continued\"",
    "LABEL trailing=x\\\\",
    "LABEL after=y",
    "WORKDIR \"$APP_HOME/my dir\"",
    "US\\",
    "ER \"1000\":${VERSION}",
    "EXPOSE 8080/tcp 9090",
    "STOPSIGNAL SIGTERM",
    "CMD run --mode $MODE",
    "ENTRYPOINT [\"/app\", \"--home\", \"$APP_HOME\"]",
  }, "\n") .. "\n"

  it("parses like Docker: the image config of a built oracle Dockerfile", function()
    write(dir .. "/Dockerfile", ORACLE)
    ok({ "docker", "build", "-q", "-t", tag, dir })
    local config = json.decode(ok({ "docker", "image", "inspect", "-f", "{{json .Config}}", tag }))
    local df = dockerfile.parse(ORACLE)
    local st = df.stages[1]
    local env = {}
    for _, e in ipairs(config.Env) do
      local k, v = e:match("^([^=]+)=(.*)$")
      if k ~= "PATH" then env[k] = v end
    end
    assert.are.same(env, st.env)
    local labels, ins_of = {}, {}
    for _, ins in ipairs(st.instructions) do
      ins_of[ins.cmd] = ins
      if ins.cmd == "LABEL" then for _, kv in ipairs(ins.pairs) do labels[kv[1]] = kv[2] end end
    end
    assert.are.same(config.Labels, labels)
    assert.are.equal(config.WorkingDir, ins_of.WORKDIR.expanded)
    assert.are.equal(config.User, ins_of.USER.expanded)
    assert.are.equal(config.StopSignal, ins_of.STOPSIGNAL.expanded)
    assert.are.same(config.Cmd, { "/bin/sh", "-c", ins_of.CMD.args })
    assert.are.same(config.Entrypoint, ins_of.ENTRYPOINT.json)
    local ports = {}
    for p in ins_of.EXPOSE.expanded:gmatch("%S+") do ports[p:find("/", 1, true) and p or (p .. "/tcp")] = true end
    local want = {}
    for p in pairs(config.ExposedPorts) do want[p] = true end
    assert.are.same(want, ports)
  end)

  -- Random LABEL values from quoting segments Docker's lexer treats differently: double and
  -- single quotes, escapes inside and outside quotes, $V, ${V}, ${U:-d}, ${V:+a}.
  local SEGMENTS = {
    function() return "plain" end,
    function() return "a\\ b" end,
    function() return "\\$V" end,
    function() return "\\\\" end,
    function() return "$V" end,
    function() return "${V}x" end,
    function() return "${U:-dflt}" end,
    function() return "${V:+alt}" end,
    function() return "${U:+alt}" end,
    function() return '"in dq $V \\" \\$ \\\\ \\n"' end,
    function() return "'in sq $V \\ \"'" end,
    function() return '"sp  aces"' end,
    function() return "$S" end,
    function() return '"$S"' end,
    function() return "x=y" end,
    function() return "#not-a-comment" end,
    function() return "caf\xC3\xA9" end,
    function() return "$$" end,
    function() return "$1x" end,
    function() return "a$" end,
  }

  it("lexes random ENV/LABEL quoting exactly as Docker does", function()
    math.randomseed(2024)
    local lines = { "FROM scratch", "ENV V=vee S=\"s  p\"" }
    -- Eight labels per instruction: the classic builder commits once per instruction.
    for i = 1, 12 do
      local pairs_ = {}
      for j = 1, 8 do
        local parts = {}
        for k = 1, math.random(1, 4) do parts[k] = SEGMENTS[math.random(#SEGMENTS)]() end
        pairs_[j] = ("l%02d_%d=%s"):format(i, j, table.concat(parts))
      end
      lines[#lines + 1] = "LABEL " .. table.concat(pairs_, " ")
    end
    local text = table.concat(lines, "\n") .. "\n"
    write(dir .. "/Dockerfile", text)
    ok({ "docker", "build", "-q", "-t", tag, dir })
    local labels = json.decode(ok({ "docker", "image", "inspect", "-f", "{{json .Config.Labels}}", tag }))
    local ours = {}
    for _, ins in ipairs(dockerfile.parse(text).instructions) do
      for _, kv in ipairs(ins.cmd == "LABEL" and ins.pairs or {}) do ours[kv[1]] = kv[2] end
    end
    for k, v in pairs(labels) do
      assert(ours[k] == v, k .. ": docker " .. ("%q"):format(v) .. ", parse " .. ("%q"):format(tostring(ours[k])))
    end
    assert.are.same(labels, ours)
  end)
end)

