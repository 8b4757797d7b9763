-- Fuzz targets: each takes the input bytes, calls a parser, and raises only when the parser
-- failed in a way it must not (an error other than its documented clean one). Loaded by
-- tests/fuzz/fuzz_target.c; `tests/fuzz/run.sh` runs each for a bounded time.
local T = {}

-- A parser may reject input only with a string error naming itself, or an error object of
-- code Invalid; anything else ("attempt to index a nil value") is a bug.
local function expect_clean(prefix, ok, err)
  if ok then return end
  if type(err) == "table" and err.code == "Invalid" then return end
  if type(err) == "string" and err:find(prefix, 1, true) then return end
  if type(err) == "string" and err:find("not enough memory", 1, true) then return end
  error("unclean failure: " .. tostring(err), 0)
end

function T.json(data)
  local json = require("myrmex.json")
  local ok, v = pcall(json.decode, data)
  expect_clean("json.decode", ok, v)
  if ok then
    -- A number past the double range decodes to an infinity (spec:json), which encode refuses
    -- by its contract: exactly then, and with that error. Anything else must encode, and
    -- decode again to the same thing.
    local function non_finite(x)
      if type(x) == "number" then return x ~= x or x == math.huge or x == -math.huge end
      if type(x) ~= "table" then return false end
      for k, y in pairs(x) do
        if non_finite(k) or non_finite(y) then return true end
      end
      return false
    end
    if non_finite(v) then
      local eok, err = pcall(json.encode, v, { sort_keys = true })
      assert(not eok and tostring(err):find("cannot encode NaN or infinity", 1, true),
        "json.encode of a non-finite number: " .. tostring(err))
      return
    end
    local text = json.encode(v, { sort_keys = true })
    assert(json.encode(json.decode(text), { sort_keys = true }) == text, "json round trip changed")
  end
end

function T.yaml(data)
  local yaml = require("myrmex.yaml")
  local ok, v = pcall(yaml.load_all, data)
  expect_clean("yaml", ok, v)
  if ok then
    for _, doc in ipairs(v) do
      local ok2, err = pcall(yaml.dump, doc)
      expect_clean("yaml", ok2, err)
    end
  end
end

function T.tar(data)
  local archive = require("myrmex.core.archive")
  local src = require("myrmex.core.source").from_string(data)
  local ok, err = pcall(function()
    local r <close> = archive.open(src)
    for _ in r:entries() do
      local chunk = r:read()
      while chunk do chunk = r:read() end
    end
  end)
  expect_clean("archive", ok, err)
end

function T.dockerignore(data)
  local archive = require("myrmex.core.archive")
  local patterns, path = {}, "a/b/c.txt"
  for line in data:gmatch("[^\n]+") do patterns[#patterns + 1] = line end
  if #patterns > 0 then path = table.remove(patterns) end
  local ok, err = pcall(archive.match, patterns, path)
  expect_clean("archive.match", ok, err)
end

function T.dockerfile(data)
  local dockerfile = require("myrmex.dockerfile")
  local ok, err = pcall(dockerfile.parse, data)
  expect_clean("dockerfile", ok, err)
  if ok then
    -- The rules, not ShellCheck: one process per input would slow fuzzing to a crawl.
    local ok2, err2 = pcall(dockerfile.lint, data, { shell = false })
    expect_clean("dockerfile", ok2, err2)
  end
end

function T.scan_report(data)
  local scan = require("myrmex.scan")
  local ok, err = pcall(scan.load_report, data)
  expect_clean("scan", ok, err)
end

-- Deep equality, metatables included (scan's fast path must build what the Lua readers build).
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b and math.type(a) == math.type(b)
  end
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in next, a do
    if not same(v, rawget(b, k)) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

local function scan_error(err)
  return type(err) == "table" and tostring(err.code) .. ": " .. tostring(err.message) or tostring(err)
end

-- Each normalizer on its own, past format detection. Text not starting like JSON would be
-- taken as a file path, so only JSON-looking inputs reach the normalizer. Trivy and Grype
-- reports are read by the C fast path and by the Lua readers: results and errors must agree.
local function scan_format(format)
  return function(data)
    if not data:find("^%s*[{%[]") then return end
    local scan = require("myrmex.scan")
    local opts = { format = format, now = "2026-01-01T00:00:00Z" }
    local ok, res = pcall(scan.load_report, data, opts)
    expect_clean("scan", ok, res)
    if format ~= "trivy" and format ~= "grype" then return end
    scan.fast_path(false)
    local ok_lua, res_lua = pcall(scan.load_report, data, opts)
    scan.fast_path(true)
    assert(ok == ok_lua, "scan fast path " .. (ok and "read" or "rejected") .. " what the Lua reader "
      .. (ok_lua and "read" or "rejected") .. ": " .. scan_error(ok and res_lua or res))
    if not ok then
      assert(scan_error(res) == scan_error(res_lua), "scan fast path error differs: " .. scan_error(res)
        .. " / " .. scan_error(res_lua))
      return
    end
    -- a report without a time is stamped when read: the two reads may straddle a second
    res.time = res_lua.time
    assert(same(res, res_lua), "scan fast path result differs from the Lua reader's")
  end
end
T.scan_trivy = scan_format("trivy")
T.scan_grype = scan_format("grype")
T.scan_sarif = scan_format("sarif")
T.scan_scout = scan_format("scout")

-- Image references: a parsed reference prints as a string that parses to the same thing.
function T.reference(data)
  local reference = require("myrmex.registry.reference")
  local ok, ref = pcall(reference.parse, data)
  expect_clean("registry.reference", ok, ref)
  if not ok then return end
  local again = reference.parse(tostring(ref))
  assert(tostring(again) == tostring(ref), "reference round trip changed: " .. tostring(ref))
end

-- WWW-Authenticate never raises: every challenge has a lowercase scheme and string params.
function T.challenges(data)
  local auth = require("myrmex.registry.auth")
  local ok, list = pcall(auth.parse_challenges, data)
  expect_clean("parse_challenges", ok, list)
  if not ok then return end
  for _, ch in ipairs(list) do
    assert(type(ch.scheme) == "string" and ch.scheme == ch.scheme:lower(), "bad scheme")
    for k, v in pairs(ch.params) do
      assert(type(k) == "string" and type(v) == "string", "bad param")
    end
  end
end

-- Link headers of paged listings, through the real Client:tags with its request function
-- replaced (no network): the first page carries the fuzzed Link, the next page none.
function T.link(data)
  local registry = require("myrmex.registry")
  local c = registry.connect("127.0.0.1:5000", { plain_http = true, config = false })
  local calls = {}
  c._call = function(_, t)
    calls[#calls + 1] = t.url or t.path
    local headers = #calls == 1 and { link = data } or {}
    return { status = 200, body = '{"name":"a","tags":["t' .. #calls .. '"]}', headers = headers }
  end
  local ok, tags = pcall(c.tags, c, "a")
  expect_clean("registry", ok, tags)
  if ok then
    assert(#calls <= 2 and #tags == #calls, "pages followed: " .. #calls)
    if calls[2] then assert(calls[2]:find("^https?://"), "relative next page: " .. calls[2]) end
  end
end

-- The Docker stream demultiplexer: fed the same bytes in one piece or in pieces cut where the
-- first bytes say, it delivers the same stdout and stderr and agrees on where it ended.
local function demux_run(data, cuts)
  local stream = require("myrmex.docker.stream")
  local out = { stdout = {}, stderr = {} }
  local d = stream.demux(function(kind, bytes) table.insert(out[kind], bytes) end)
  local pos = 1
  for _, n in ipairs(cuts) do
    d:feed(data:sub(pos, pos + n - 1))
    pos = pos + n
  end
  d:feed(data:sub(pos))
  return table.concat(out.stdout), table.concat(out.stderr), d:finish()
end

function T.demux(data)
  local cuts = {}
  for i = 1, math.min(#data, 4) do cuts[i] = data:byte(i) % 17 end
  local ok, o1, e1, f1 = pcall(demux_run, data, {})
  expect_clean("docker.stream", ok, o1)
  local o2, e2, f2 = demux_run(data, cuts)
  assert(o1 == o2 and e1 == e2 and f1 == f2, "demux depends on how the stream was cut")
  assert(#o1 + #e1 <= #data, "demux delivered more than it was given")
end

-- JSON-lines progress streams (docker pull/build/push): split by the line splitter, each line
-- decoded; the splitter loses no byte.
function T.jsonl(data)
  local stream = require("myrmex.docker.stream")
  local json = require("myrmex.json")
  local lines = {}
  local s = stream.lines(function(line) lines[#lines + 1] = line end)
  local cut = math.max(1, (data:byte(1) or 1) % 64)
  for i = 1, #data, cut do s:feed(data:sub(i, i + cut - 1)) end
  s:finish()
  local joined = table.concat(lines, "\n")
  assert(joined == data or joined .. "\n" == data, "line splitter lost bytes")
  for _, line in ipairs(lines) do
    local ok, err = pcall(json.decode, line)
    expect_clean("json.decode", ok, err)
  end
end

-- kubeconfig: loading (merge rules, relative paths, *-data) and resolving every context. A
-- missing context is NotFound; anything malformed must be Invalid or the YAML error.
local kubeconfig_path = os.tmpname()

function T.kubeconfig(data)
  local kc = require("myrmex.k8s.kubeconfig")
  local f = assert(io.open(kubeconfig_path, "wb"))
  f:write(data)
  f:close()
  local ok, cfg = pcall(kc.load, kubeconfig_path)
  if not ok and type(cfg) == "string" then expect_clean("yaml", ok, cfg) return end
  expect_clean("kubeconfig", ok, cfg)
  if not ok then return end
  for name in pairs(cfg.contexts) do
    local ok2, err = pcall(kc.resolve, cfg, { context = name })
    if not (type(err) == "table" and err.code == "NotFound") then expect_clean("kubeconfig", ok2, err) end
  end
end

-- Layer tar analysis: image.analyze over a saved image given as a stream (docker-archive or
-- OCI layout tar, layers nested inside). Broken input must end as Invalid/NotFound or the
-- archive's own clean error.
function T.image_tar(data)
  local image = require("myrmex.image")
  local src = require("myrmex.core.source").from_string(data)
  local ok, err = pcall(image.analyze, src)
  if not ok and type(err) == "table" and (err.code == "NotFound" or err.code == "Invalid") then return end
  expect_clean("archive", ok, err)
end

return T
