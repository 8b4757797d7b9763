-- needs: docker
-- stdin into containers through the hijacked attach and exec connections: run_container and
-- exec with a string, a writer function or a file; client:attach's write/close_write/read.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local dt = require("tests.support.docker")

local d
setup(function()
  d = docker.connect()
  dt.image()
end)
teardown(function() dt.cleanup() end)

local cfg = dt.config

-- Bytes that are not all the same, so a lost or reordered piece shows.
local function pattern(n)
  local parts, i = {}, 0
  while #parts * 16 < n do
    parts[#parts + 1] = ("%015d\n"):format(i)
    i = i + 1
  end
  return table.concat(parts):sub(1, n)
end

describe("run_container{stdin=}", function()
  it("writes a string and closes stdin, so cat ends and its output comes back", function()
    local c <close> = d:run_container(cfg { cmd = { "cat" }, stdin = "hello stdin\nsecond line\n", wait = true })
    assert.are.equal(0, c.exit_code)
    assert.are.equal("hello stdin\nsecond line\n", c.stdout)
    assert.are.equal("", c.stderr)
  end)

  it("streams 6 MiB in and out of cat without loss (the writer drains the output meanwhile)", function()
    local data = pattern(6 * 1024 * 1024)
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "cat; echo done >&2" }, stdin = data, wait = true })
    assert.are.equal(0, c.exit_code)
    assert.are.equal(#data, #c.stdout)
    assert.is_true(c.stdout == data, "stdout differs from what was written")
    assert.are.equal("done\n", c.stderr)
  end)

  it("takes a writer function and a file", function()
    local c <close> = d:run_container(cfg { cmd = { "wc", "-c" }, wait = true, stdin = function(write)
      for _ = 1, 50 do write(("z"):rep(1000)) end
    end })
    assert.are.equal("50000", c.stdout:match("%d+"))
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(pattern(200000))
    f:close()
    local c2 <close> = d:run_container(cfg { cmd = { "md5sum" }, wait = true, stdin = { file = path } })
    local want = io.popen("md5sum " .. path):read("l"):match("^(%x+)")
    assert.are.equal(want, c2.stdout:match("^(%x+)"))
    os.remove(path)
  end)

  it("feeds a container that is not waited for; it ends on its own", function()
    local c <close> = d:run_container(cfg { cmd = { "sh", "-c", "read line; echo got:$line" }, stdin = "abc\n" })
    assert.are.equal(0, d:wait_container(c, { timeout = 60 }))
    assert.are.equal("got:abc\n", d:container_logs(c).stdout)
  end)

  it("rejects bad stdin values naming the key", function()
    assert.has_error(function() d:run_container(cfg { cmd = { "cat" }, stdin = 42 }) end,
      "docker.run_container: config.stdin: expected a string, a function(write) or {file = PATH}, got integer")
    assert.has_error(function() d:run_container(cfg { cmd = { "cat" }, stdin = { path = "/x" } }) end,
      "docker.run_container: config.stdin.path: unknown key")
    assert.has_error(function() d:create_container(cfg { cmd = { "cat" }, stdin = "x" }) end,
      "docker.create_container: config.stdin: unknown key")
    local err
    local ok = pcall(function()
      local _ <close> = d:run_container(cfg { cmd = { "cat" }, wait = true, stdin = { file = "/no/such/file" } })
    end)
    assert.is_false(ok)
    ok, err = pcall(d.run_container, d, cfg { cmd = { "cat" }, wait = true, stdin = { file = "/no/such/file" } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.truthy(tostring(err):find("/no/such/file", 1, true), tostring(err))
    -- the failed run removed its container
    assert.are.same({}, dt.containers())
  end)
end)

describe("exec{stdin=}", function()
  it("writes into a command in a running container and gets its output and exit code", function()
    local c <close> = d:run_container(cfg { cmd = { "sleep", "60" } })
    local r = d:exec(c, { cmd = { "sh", "-c", "tr a-z A-Z; exit 3" }, stdin = "shout\n" })
    assert.are.equal(3, r.exit_code)
    assert.are.equal("SHOUT\n", r.stdout)
    local data = pattern(3 * 1024 * 1024)
    local got = {}
    local r2 = c:exec { cmd = { "cat" }, stdin = data, on_stdout = function(chunk) got[#got + 1] = chunk end }
    assert.are.equal(0, r2.exit_code)
    assert.is_true(table.concat(got) == data, "exec output differs from its stdin")
    assert.has_error(function() d:exec(c, { cmd = { "cat" }, stdin = true }) end,
      "docker.exec: stdin: expected a string, a function(write) or {file = PATH}, got boolean")
  end)
end)

describe("client:attach", function()
  it("writes, reads line by line, closes stdin and reads to the end", function()
    local c <close> = d:create_container(cfg { cmd = { "sh", "-c", "while read l; do echo out:$l; echo err:$l >&2; done; echo bye" },
      stdin_open = true, stdin_once = true })
    local a <close> = d:attach(c, { stdin = true })
    assert.matches("^docker.attach%(%x+%)$", tostring(a))
    d:start_container(c)
    a:write("one\n")
    local seen = {}
    while #seen < 2 do
      local kind, data = a:read()
      assert.is_not_nil(kind, "the stream ended early")
      seen[#seen + 1] = kind .. "=" .. data
    end
    table.sort(seen)
    assert.are.same({ "stderr=err:one\n", "stdout=out:one\n" }, seen)
    a:write("two\n")
    a:close_write()
    local rest = a:read_all()
    assert.are.equal("out:two\nbye\n", rest.stdout)
    assert.are.equal("err:two\n", rest.stderr)
    assert.is_nil(a:read())
    assert.are.equal(0, d:wait_container(c, { timeout = 60 }))
    a:close()
    assert.has_error(function() a:read() end, "docker.attach: read: the attach handle is closed")
  end)

  it("replays earlier output with logs = true and refuses a write without stdin", function()
    local c <close> = d:run_container(cfg { cmd = { "echo", "early" }, wait = true })
    local a <close> = c:attach { logs = true, stream = false }
    assert.are.equal("early\n", a:read_all().stdout)
    assert.has_error(function() a:write("x") end,
      "docker.attach: write: the attach was made without stdin = true")
    assert.has_error(function() d:attach(c, { stdn = true }) end, "docker.attach: option stdn: unknown key")
    local err = select(2, pcall(d.attach, d, "mxt-no-such-container-" .. dt.run_id))
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)

  it("drives a TTY container: input echoed back raw", function()
    local c <close> = d:create_container(cfg { cmd = { "sh", "-c", "read l; echo got:$l" }, tty = true,
      stdin_open = true, stdin_once = true })
    local a <close> = d:attach(c, { stdin = true })
    d:start_container(c)
    a:write("tty\r")
    local out = a:read_all().stdout
    assert.truthy(out:find("got:tty", 1, true), out)
  end)
end)

describe("stdin over plain tcp://", function()
  it("works through a TCP engine address as through the unix socket", function()
    local port = dt.free_port()
    local p = dt.proxy { tcp = port }
    local t = docker.connect { host = "tcp://127.0.0.1:" .. port }
    local data = pattern(2 * 1024 * 1024)
    local c <close> = t:run_container(cfg { cmd = { "cat" }, stdin = data, wait = true })
    assert.are.equal(0, c.exit_code)
    assert.is_true(c.stdout == data, "stdout differs from what was written")
    local r = t:exec(d:run_container(cfg { cmd = { "sleep", "60" } }), { cmd = { "wc", "-c" }, stdin = data })
    assert.are.equal(tostring(#data), r.stdout:match("%d+"))
    p.stop()
  end)
end)

describe("stdin over a TLS engine connection", function()
  it("is refused before anything is created, naming the host", function()
    local pki = dt.pki()
    local port = dt.free_port()
    local p = dt.proxy { tcp = port, tls = { cert = pki .. "/server.pem", key = pki .. "/server.key" } }
    local t = docker.connect { host = "tcp://127.0.0.1:" .. port, tls = { ca = pki .. "/ca.pem" } }
    local before = #dt.containers()
    local err = select(2, pcall(t.run_container, t, cfg { cmd = { "cat" }, stdin = "x", wait = true }))
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.truthy(err.message:find("run_container: writing stdin needs a unix-socket or plain tcp:// engine "
      .. "connection; tcp://127.0.0.1:" .. port .. " is TLS", 1, true), err.message)
    assert.are.equal(before, #dt.containers())
    -- reading an attach works over TLS; writing is refused the same way
    local c <close> = t:create_container(cfg { cmd = { "echo", "over tls" }, stdin_open = true })
    local a <close> = t:attach(c, { stdin = true })
    t:start_container(c)
    err = select(2, pcall(a.write, a, "x"))
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.are.equal("over tls\n", a:read_all().stdout)
    a:close()
    c:remove { force = true }
    p.stop()
    require("tests.support.sh").run({ "rm", "-rf", pki })
  end)
end)
