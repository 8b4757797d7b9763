-- The shared transport against real local servers: TCP and unix sockets, TLS with a test CA
-- made by openssl, timeouts, retries, streaming with flat memory, failures.
local sh = require("tests.support.sh")
local server = require("tests.support.server")
local http = require("myrmex.http")
local json = require("myrmex.json")
local digest = require("myrmex.digest")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local HTTPD = "python3 " .. sh.src .. "/tests/support/httpd.py"

local function raises(code, fn, needle)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected a " .. code .. " error")
  assert.is_true(errors.is(err, code), "expected " .. code .. ", got " .. errors.message(err))
  if needle then assert.truthy(tostring(err):find(needle, 1, true), tostring(err)) end
  return err
end

describe("http.parse_headers", function()
  it("keeps every header in order and the last of each name by lower-case name", function()
    local map, list = http.parse_headers("HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\n"
      .. "Set-Cookie: a=1\r\nX-Empty:\r\nnot a header\r\n : no name\r\nSET-COOKIE: b=2\nWarning: 299 - \"x: y\"\r\n\r\n")
    assert.are.same({ ["content-type"] = "application/json", ["set-cookie"] = "b=2", ["x-empty"] = "",
      warning = '299 - "x: y"' }, map)
    assert.are.same({ { name = "Content-Type", value = "application/json" }, { name = "Set-Cookie", value = "a=1" },
      { name = "X-Empty", value = "" }, { name = "SET-COOKIE", value = "b=2" },
      { name = "Warning", value = '299 - "x: y"' } }, list)
    assert.are.same({}, (http.parse_headers("")))
  end)
end)

describe("http over TCP", function()
  local srv, base
  setup(function()
    srv = server.start(HTTPD)
    base = "http://127.0.0.1:" .. srv.port
  end)
  teardown(function() srv.stop() end)

  it("sends method, headers, query and body, and parses the response", function()
    local res = http.request({ method = "PUT", url = base .. "/echo", query = { b = "2 3", a = "1" },
      headers = { ["X-Test"] = "yes", ["Content-Type"] = "text/plain" }, body = "hello" })
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    local e = json.decode(res.body)
    assert.are.same({ "PUT", "yes", "hello", "1", "2 3" },
      { e.method, e.headers["x-test"], e.body, e.query.a, e.query.b })
    assert.falsy(e.headers.expect, "no 100-continue round trip")
  end)

  it("sends POST, PUT, PATCH and DELETE without a body as those methods", function()
    for _, m in ipairs({ "POST", "PUT", "PATCH", "DELETE" }) do
      local e = json.decode(http.request({ method = m, url = base .. "/echo" }).body)
      assert.are.equal(m, e.method)
      assert.are.equal(0, e.body_len)
    end
    assert.are.equal(200, http.request({ method = "HEAD", url = base .. "/echo" }).status)
  end)

  it("returns HTTP error statuses instead of raising", function()
    local res = http.request({ url = base .. "/status", query = { code = 409 } })
    assert.are.equal(409, res.status)
    assert.are.equal("Conflict", errors.from_status(res.status))
  end)

  it("streams a file and a source as the request body", function()
    local path = sh.tmpfile(string.rep("abc", 100000))
    local res = http.request({ method = "POST", url = base .. "/echo", body = { file = path } })
    local e = json.decode(res.body)
    assert.are.equal(300000, e.body_len)
    assert.are.equal(digest.file(path), "sha256:" .. e.body_sha256)
    local src = require("myrmex.core.source").from_string("from a source")
    e = json.decode(http.request({ method = "POST", url = base .. "/echo", body = src }).body)
    assert.are.equal("from a source", e.body)
    os.remove(path)
  end)

  it("retries idempotent requests on 503 with backoff, and only those", function()
    local res = http.request({ url = base .. "/flaky", query = { key = "get1", fail = 2 }, retries = 3 })
    assert.are.equal(200, res.status)
    assert.are.equal(3, json.decode(res.body).attempts)
    res = http.request({ method = "POST", url = base .. "/flaky", query = { key = "post1", fail = 1 },
      retries = 3, body = "x" })
    assert.are.equal(503, res.status, "POST is not retried")
    res = http.request({ url = base .. "/flaky", query = { key = "get2", fail = 5 }, retries = 1 })
    assert.are.equal(503, res.status, "gives up after the retries")
    assert.are.equal(2, json.decode(http.request({ url = base .. "/attempts", query = { key = "get2" } }).body).attempts)
  end)

  it("enforces the total timeout with a Timeout error", function()
    local t0 = os.time()
    raises("Timeout", function() http.request({ url = base .. "/slow", query = { delay = 5 }, timeout = 0.5 }) end)
    assert.is_true(os.time() - t0 <= 2)
  end)

  it("reports a refused connection as Unreachable naming the address", function()
    raises("Unreachable", function() http.request({ url = "http://127.0.0.1:9/", engine = "docker" }) end,
      "cannot connect to http://127.0.0.1:9")
  end)

  it("reports a connection reset mid-body as Unreachable, not as success", function()
    raises("Unreachable", function() http.request({ url = base .. "/reset" }) end, "lost")
  end)

  it("hands over a stream cut mid-body with the bytes that came, then the error", function()
    -- The whole cut response is in before open_source looks: headers, 7 bytes, the reset.
    for _, open in ipairs({ http.open_source, http.open }) do
      local s = open({ url = base .. "/reset" })
      assert.are.equal(200, s.status)
      assert.are.equal("partial", s:read())
      raises("Unreachable", function() s:read() end, "lost")
      s:close()
    end
  end)

  it("refuses huge headers and bodies over max_body", function()
    raises("Invalid", function() http.request({ url = base .. "/hugeheaders" }) end, "headers larger")
    raises("Invalid", function() http.request({ url = base .. "/bytes", query = { n = 2000 }, max_body = 1000 }) end,
      "larger than 1000")
  end)

  it("follows redirects only when asked", function()
    assert.are.equal(302, http.request({ url = base .. "/redirect" }).status)
    assert.are.equal(200, http.request({ url = base .. "/redirect", follow = true }).status)
  end)

  it("sends a body again when curl has to (a 307 keeps the method and body)", function()
    local res = http.request({ method = "POST", url = base .. "/redirect", query = { code = 307 }, follow = true,
      body = "once more" })
    assert.are.equal(200, res.status)
    assert.are.equal("once more", json.decode(res.body).body)
  end)

  it("decodes line-delimited JSON as it arrives and can stop early", function()
    local seen = {}
    http.request({ url = base .. "/ndjson", query = { n = 5 }, on_json = function(o) seen[#seen + 1] = o.i end })
    assert.are.same({ 1, 2, 3, 4, 5 }, seen)
    seen = {}
    local res = http.request({ url = base .. "/ndjson", query = { n = 50, gap = 0.01 },
      on_json = function(o) seen[#seen + 1] = o.i; return o.i < 3 end })
    assert.is_true(res.stopped)
    assert.are.same({ 1, 2, 3 }, seen)
  end)

  it("reuses one kept-alive connection for sequential requests", function()
    http.request({ url = base .. "/peers" })
    for i = 1, 20 do
      assert.are.equal(200, http.request({ url = base .. "/echo", query = { i = i } }).status)
    end
    -- The /peers request itself rides the same connection.
    assert.are.equal(1, json.decode(http.request({ url = base .. "/peers" }).body).connections)
  end)

  it("registers credentials it sends as secrets, so logs never quote them bare", function()
    local token, auth = "tok-" .. os.time() .. "-q9Zx", "cmVnaXN0cnktYXV0aC0" .. os.time()
    local res = http.request({ url = base .. "/echo", headers = { Authorization = "Bearer " .. token,
      ["X-Registry-Auth"] = auth } })
    local seen = json.decode(res.body).headers
    assert.are.equal("Bearer " .. token, seen.authorization)
    local line = log.redact(("token %s, auth %s"):format(token, auth))
    assert.is_nil(line:find(token, 1, true), line)
    assert.is_nil(line:find(auth, 1, true), line)
  end)

  it("splits many lines per chunk in order, and bounds a line that never ends", function()
    local n, i = 20000, 0
    http.request({ url = base .. "/ndjson", query = { n = n }, on_line = function(line)
      i = i + 1
      assert.are.equal(('{"i": %d}'):format(i), line)
    end })
    assert.are.equal(n, i)
    raises("Invalid", function()
      http.request({ url = base .. "/bytes", query = { n = 200000 }, max_body = 100000, on_line = function() end })
    end, "longer than max_body")
  end)

  it("streams 1 GiB to a file and a digest with flat memory", function()
    local n = 1024 * 1048576
    local path = os.tmpname()
    server.reset_peak_rss()
    local ref, block = digest.new(), string.rep("x", 65536)
    for _ = 1, n // #block do ref:update(block) end
    local want = ref:final()
    local res = http.request({ url = base .. "/bytes", query = { n = n }, to_file = path, digest = want })
    assert.are.equal(n, res.size)
    assert.are.equal(want, res.digest)
    local f = assert(io.open(path))
    assert.are.equal(n, f:seek("end"))
    f:close()
    os.remove(path)
    local h = digest.new()
    local s <close> = http.open({ url = base .. "/bytes", query = { n = n } })
    for chunk in s.read, s do h:update(chunk) end
    assert.are.equal(want, h:final())
    -- Under ASan the bound is looser but still below the 1 GiB a buffered body would need.
    local bound = server.sanitized() and 768 * 1024 or 64 * 1024
    assert.is_true(server.peak_rss_kib() < bound, "peak RSS " .. server.peak_rss_kib() .. " KiB")
  end)

  it("raises DigestMismatch and leaves no file", function()
    local path = os.tmpname()
    os.remove(path)
    raises("DigestMismatch", function()
      http.request({ url = base .. "/bytes", query = { n = 1000 }, to_file = path, digest = "sha256:" .. string.rep("0", 64) })
    end)
    assert.is_nil(io.open(path))
    assert.is_nil(io.open(path .. ".part"))
  end)

  it("pipes one response into another request's body", function()
    -- 256 MiB through a bounded buffer: the peak stays flat (the upload lags the download).
    local n = 256 * 1048576
    server.reset_peak_rss()
    local src <close> = http.open({ url = base .. "/bytes", query = { n = n } })
    local res = http.request({ method = "PUT", url = base .. "/echo", body = src, body_size = n })
    local e = json.decode(res.body)
    assert.are.equal(n, e.body_len)
    -- Under ASan, shadow memory and quarantine alone exceed what a held body would add here.
    if not server.sanitized() then
      assert.is_true(server.peak_rss_kib() < 96 * 1024, "peak RSS " .. server.peak_rss_kib() .. " KiB")
    end
  end)

  it("rejects unknown options, naming them", function()
    local ok, err = pcall(http.request, { url = base, timout = 3 })
    assert.is_false(ok)
    assert.truthy(err:find("http.request: unknown option 'timout'", 1, true), err)
  end)
end)

describe("http over a unix socket", function()
  it("talks HTTP on a unix-domain socket", function()
    local sock = os.tmpname() .. ".sock"
    local srv = server.start(HTTPD .. " --unix " .. sock)
    local res = http.request({ url = "http://localhost/echo", unix_socket = sock })
    assert.are.equal(200, res.status)
    assert.are.equal("GET", json.decode(res.body).method)
    srv.stop()
    raises("Unreachable", function() http.request({ url = "http://localhost/echo", unix_socket = sock }) end,
      "unix://" .. sock)
  end)
end)

describe("http over TLS", function()
  local pki, srv, mtls
  setup(function()
    pki = os.tmpname()
    os.remove(pki)
    assert.are.equal(0, sh.run({ sh.src .. "/tests/support/tlsgen.sh", pki }).code)
    srv = server.start(HTTPD .. " --cert " .. pki .. "/server.pem --key " .. pki .. "/server.key")
    mtls = server.start(HTTPD .. " --cert " .. pki .. "/server.pem --key " .. pki .. "/server.key --client-ca " .. pki .. "/ca.pem")
  end)
  teardown(function()
    srv.stop()
    mtls.stop()
    os.execute("rm -rf " .. pki)
  end)

  local function read(p)
    local f = assert(io.open(p))
    local s = f:read("a")
    f:close()
    return s
  end

  it("verifies the server with a CA file and with CA data in memory", function()
    local url = "https://127.0.0.1:" .. srv.port .. "/echo"
    assert.are.equal(200, http.request({ url = url, tls = { ca = pki .. "/ca.pem" } }).status)
    assert.are.equal(200, http.request({ url = url, tls = { ca_data = read(pki .. "/ca.pem") } }).status)
  end)

  it("refuses a server its CA did not sign", function()
    raises("Unreachable", function()
      http.request({ url = "https://127.0.0.1:" .. srv.port .. "/echo", tls = { ca = pki .. "/other-ca.pem" } })
    end, "TLS")
  end)

  it("connects without verification only when asked, with a warning", function()
    local r = sh.myrmex({ "-e", "print(require('myrmex.http').request({url='https://127.0.0.1:" .. srv.port
      .. "/echo', tls={insecure=true}}).status)" })
    assert.are.equal("200\n", r.stdout)
    assert.truthy(r.stderr:find("TLS verification is off", 1, true), r.stderr)
  end)

  it("checks the certificate against server_name", function()
    local url = "https://127.0.0.1:" .. srv.port .. "/echo"
    assert.are.equal(200, http.request({ url = url, tls = { ca = pki .. "/ca.pem", server_name = "myrmex.test" } }).status)
    raises("Unreachable", function()
      http.request({ url = url, tls = { ca = pki .. "/ca.pem", server_name = "not-in-cert.test" } })
    end, "TLS")
  end)

  it("authenticates with a client certificate from files and from memory", function()
    local url = "https://127.0.0.1:" .. mtls.port .. "/echo"
    local e = json.decode(http.request({ url = url, tls = { ca = pki .. "/ca.pem", cert = pki .. "/client.pem",
      key = pki .. "/client.key" } }).body)
    assert.are.equal("myrmex-client", e.client_cert.commonName)
    e = json.decode(http.request({ url = url, tls = { ca = pki .. "/ca.pem", cert_data = read(pki .. "/client.pem"),
      key_data = read(pki .. "/client.key") } }).body)
    assert.are.equal("myrmex-client", e.client_cert.commonName)
    raises("Unreachable", function() http.request({ url = url, tls = { ca = pki .. "/ca.pem" } }) end)
  end)
end)

describe("interrupts", function()
  it("cancels a transfer in flight on SIGINT and exits 130", function()
    local srv = server.start(HTTPD)
    local t0 = os.time()
    local r = sh.run("timeout --preserve-status -s INT 1 " .. sh.bin .. " -e "
      .. sh.q("require('myrmex.http').request({url='http://127.0.0.1:" .. srv.port .. "/slow?delay=20'})"))
    srv.stop()
    assert.are.equal(130, r.code, r.stderr)
    assert.is_true(os.time() - t0 < 5)
  end)
end)
