-- Child processes: argument vectors, pipes, timeouts and caps, against real programs.
local process = require("myrmex.process")
local errors = require("myrmex.errors")

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A killed orphan may linger as a zombie until init reaps it: that counts as dead.
local function alive(pid)
  for _ = 1, 50 do
    local stat = read_file("/proc/" .. tonumber(pid) .. "/stat")
    if not stat or stat:match("^%d+ %b() (%a)") == "Z" then return false end
    os.execute("sleep 0.02")
  end
  return true
end

describe("process.run", function()
  it("passes every argument as one argv entry, with no shell in between", function()
    local odd = { "a b", "$(touch /tmp/mx-pwned)", "'quoted'", '"dq"', "semi;colon", "new\nline",
      "*", "", "back\\slash", "ümlaut" }
    local argv = { "printf", "[%s]\n" }
    for _, a in ipairs(odd) do argv[#argv + 1] = a end
    local res = process.run { argv = argv }
    assert.are.equal(0, res.status)
    local want = {}
    for _, a in ipairs(odd) do want[#want + 1] = "[" .. a .. "]\n" end
    assert.are.equal(table.concat(want), res.stdout)
    assert.is_nil(io.open("/tmp/mx-pwned"))
  end)

  it("feeds stdin and collects stdout and stderr separately", function()
    local input = string.rep("line of input\n", 20000) -- larger than a pipe buffer
    local res = process.run { argv = { "sh", "-c", "cat; echo oops >&2; exit 3" }, stdin = input }
    assert.are.equal(3, res.status)
    assert.is_nil(res.signal)
    assert.are.equal(input, res.stdout)
    assert.are.equal("oops\n", res.stderr)
    assert.is_false(res.timed_out)
  end)

  it("does not deadlock when the child fills both pipes", function()
    local script = [[
import sys
sys.stderr.write("e" * 3000000); sys.stderr.flush()
sys.stdout.write("o" * 3000000); sys.stdout.flush()
sys.stderr.write("E" * 1000000)
]]
    local res = process.run { argv = { "python3", "-c", script }, timeout = 20 }
    assert.are.equal(0, res.status)
    assert.are.equal(3000000, #res.stdout)
    assert.are.equal(4000000, #res.stderr)
    assert.are.equal(string.rep("e", 3000000) .. string.rep("E", 1000000), res.stderr)
  end)

  it("survives a child that does not read its stdin", function()
    local res = process.run { argv = { "true" }, stdin = string.rep("x", 4 * 1024 * 1024) }
    assert.are.equal(0, res.status)
  end)

  it("gives the child /dev/null as stdin when none is given", function()
    local res = process.run { argv = { "cat" }, timeout = 5 }
    assert.are.equal(0, res.status)
    assert.are.equal("", res.stdout)
    assert.is_false(res.timed_out)
  end)

  it("kills the whole process group on timeout", function()
    local pidfile = os.tmpname()
    local t0 = os.time()
    local res = process.run {
      argv = { "sh", "-c", "sleep 300 & echo $! > " .. pidfile .. "; echo started; sleep 300" },
      timeout = 0.5,
    }
    assert.is_true(res.timed_out)
    assert.are.equal(9, res.signal)
    assert.is_nil(res.status)
    assert.are.equal("started\n", res.stdout)
    assert.is_true(os.time() - t0 < 10)
    local grandchild = assert(tonumber(read_file(pidfile)))
    os.remove(pidfile)
    assert.is_false(alive(grandchild))
    assert.matches("after timeout", process.describe(res))
  end)

  it("stops a child whose output passes max_output and says which stream", function()
    local res = process.run { argv = { "yes" }, max_output = 100000, timeout = 20 }
    assert.are.equal("stdout", res.overflow)
    assert.are.equal(100000, #res.stdout)
    assert.are.equal(9, res.signal)
    assert.is_false(res.timed_out)
  end)

  it("treats max_output = 0 as: no output wanted", function()
    local quiet = process.run { argv = { "true" }, max_output = 0 }
    assert.are.equal(0, quiet.status)
    assert.is_nil(quiet.overflow)
    local loud = process.run { argv = { "echo", "hi" }, max_output = 0 }
    assert.are.equal("stdout", loud.overflow)
    assert.are.equal("", loud.stdout)
  end)

  it("streams chunks to callbacks instead of collecting them", function()
    local chunks, total = 0, 0
    local res = process.run {
      argv = { "head", "-c", "5000000", "/dev/zero" },
      on_stdout = function(c) chunks = chunks + 1; total = total + #c end,
      max_output = 10, -- the cap applies to collected output only
    }
    assert.are.equal(0, res.status)
    assert.are.equal(5000000, total)
    assert.is_true(chunks > 1)
    assert.are.equal("", res.stdout)
  end)

  it("kills the child and re-raises when a callback fails", function()
    local pidfile = os.tmpname()
    local ok, err = pcall(process.run, {
      argv = { "sh", "-c", "echo $$ > " .. pidfile .. "; while :; do echo x; sleep 0.01; done" },
      on_stdout = function() error("callback says no") end,
    })
    assert.is_false(ok)
    assert.matches("callback says no", err)
    local pid = assert(tonumber(read_file(pidfile)))
    os.remove(pidfile)
    assert.is_false(alive(pid))
  end)

  it("uses exactly the environment given, or ours when env is nil", function()
    local res = process.run { argv = { "/usr/bin/env" }, env = { ONLY = "this one", X = "1=2" } }
    local lines = {}
    for l in res.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    assert.are.same({ "ONLY=this one", "X=1=2" }, lines)
    local inherited = process.run { argv = { "/usr/bin/env" } }
    assert.matches("PATH=", inherited.stdout)
    local merged = process.run { argv = { "/usr/bin/env" }, env = process.environ { EXTRA = "yes" } }
    assert.matches("\nEXTRA=yes\n", "\n" .. merged.stdout)
    assert.matches("PATH=", merged.stdout)
  end)

  it("runs in cwd", function()
    local res = process.run { argv = { "pwd" }, cwd = "/tmp" }
    assert.are.equal("/tmp\n", res.stdout)
  end)

  it("reports a signal that ended the child", function()
    local res = process.run { argv = { "sh", "-c", "kill -TERM $$" } }
    assert.are.equal(15, res.signal)
    assert.is_nil(res.status)
    assert.are.equal("killed by signal 15", process.describe(res))
  end)

  it("raises NotFound for a program that does not exist", function()
    local ok, err = pcall(process.run, { argv = { "mx-no-such-program-xyz" } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.matches("mx%-no%-such%-program%-xyz", tostring(err))
  end)

  it("raises Forbidden for a file that is not executable", function()
    local path = os.tmpname()
    local ok, err = pcall(process.run, { argv = { path } })
    os.remove(path)
    assert.is_true(errors.is(err, "Forbidden"), tostring(err))
    assert.is_false(ok)
  end)

  it("rejects misuse with a message naming the function", function()
    local cases = {
      { { argv = {} }, "argv must be a non%-empty list" },
      { { argv = { "true" }, timout = 3 }, "unknown option 'timout'" },
      { { argv = { "true", 3 } }, "argv%[2%] must be a string" },
      { { argv = { "true" }, timeout = -1 }, "timeout must be a positive" },
      { { argv = { "true" }, env = { ["A=B"] = "x" } }, "not a variable name" },
      { { argv = { "true" }, on_stdout = "x" }, "on_stdout must be a function" },
      { { argv = { "tr\0ue" } }, "NUL byte" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(process.run, c[1])
      assert.is_false(ok)
      assert.is_string(err)
      assert.matches("process.run: .*" .. c[2], err)
    end
  end)

  it("leaves no zombie behind", function()
    for _ = 1, 50 do process.run { argv = { "true" } } end
    local res = process.run { argv = { "sh", "-c", "ps -o stat= --ppid " .. tostring(
      tonumber(read_file("/proc/self/stat"):match("^(%d+)"))) } }
    -- lists our children (the sh itself included); none may be a zombie
    assert.is_nil(res.stdout:match("Z"))
  end)
end)

describe("process.which", function()
  it("finds programs on PATH and on a given path", function()
    assert.are.equal("/bin/sh", process.which("sh", "/bin"))
    assert.is_string(process.which("sh"))
    assert.is_nil(process.which("mx-no-such-program-xyz"))
    assert.is_nil(process.which("sh", "/nonexistent"))
    assert.are.equal("/bin/sh", process.which("/bin/sh"))
    assert.is_nil(process.which("/etc/passwd"))
  end)
end)

describe("process.run and signals", function()
  local sh = require("tests.support.sh")

  -- A child myrmex waits on `sleep`; SIGINT to it must kill the sleep and raise Interrupted.
  it("kills the child and raises Interrupted on SIGINT", function()
    local dir = require("myrmex.core.runtime").mkdtemp("/tmp/mx-proc-")
    local script = dir .. "/wait.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local process = require("myrmex.process")
local errors = require("myrmex.errors")
local ok, err = pcall(process.run, { argv = { "sh", "-c", "echo $$ > ]] .. dir .. [[/pid; exec sleep 60" } })
print(ok, errors.is(err, "Interrupted"))
]])
    f:close()
    local t0 = os.time()
    local res = process.run { timeout = 30, argv = { "sh", "-c",
      sh.q(sh.bin) .. " " .. sh.q(script) .. " & p=$!; " ..
      "while [ ! -s " .. dir .. "/pid ]; do sleep 0.05; done; kill -INT $p; wait $p" } }
    assert.are.equal("false\ttrue\n", res.stdout)
    assert.is_true(os.time() - t0 < 20)
    local pid = tonumber(read_file(dir .. "/pid"))
    assert.is_false(alive(pid))
    process.run { argv = { "rm", "-rf", "--", dir } }
  end)
end)
