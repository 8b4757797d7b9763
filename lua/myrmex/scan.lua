--- Vulnerability scanning with Trivy, Grype and Docker Scout, normalized into one model, with
--- one policy layer and exports for people (JSON), spreadsheets (CSV) and GitHub code
--- scanning (SARIF). See docs/scan.md.
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local process = require("myrmex.process")
local rt = require("myrmex.core.runtime")
local model = require("myrmex.scan.model")
local policy_mod = require("myrmex.scan.policy")
local export_mod = require("myrmex.scan.export")
local core = require("myrmex.core.scan")

local M = {}

---@type string[] severities from worst to best
M.SEVERITIES = model.SEVERITIES
---@type string[] compliance levels from best to worst
M.LEVELS = policy_mod.LEVELS
---@type string[] the default CSV columns, in order
M.CSV_COLUMNS = export_mod.CSV_COLUMNS

local READERS = {
  trivy = require("myrmex.scan.trivy"),
  grype = require("myrmex.scan.grype"),
  sarif = require("myrmex.scan.sarif_in"),
}
READERS.scout = READERS.sarif
local DETECT_ORDER = { "trivy", "grype", "sarif" }

local BACKENDS = { "trivy", "grype", "scout" }
local DEFAULT_TIMEOUT = 900
local DEFAULT_MAX_OUTPUT = 1024 * 1024 * 1024
-- Reports from this size on get a full collection once read (see load_report).
local BIG_REPORT = 16 * 1024 * 1024

local function fail(code, msg, details)
  errors.raise({ code = code, engine = "scan", message = msg, details = details }, 3)
end

local function check_keys(fname, t, allowed)
  for k in pairs(t) do
    if not allowed[k] then error(fname .. ": unknown option '" .. tostring(k) .. "'", 3) end
  end
end

-- "HIGH,CRITICAL" or {"HIGH", "critical"} -> {"HIGH", "CRITICAL"}; a word that is no
-- severity raises (a typo must not read as UNKNOWN and drop findings).
local function severity_list(fname, sev)
  if sev == nil then return nil end
  if type(sev) ~= "string" and type(sev) ~= "table" then
    error(fname .. ": severity must be a string or a list of strings", 4)
  end
  local list = type(sev) == "string" and { sev } or sev
  local out = {}
  for i, s in ipairs(list) do
    if type(s) ~= "string" then error(fname .. ": severity[" .. i .. "] must be a string", 4) end
    for part in s:gmatch("[^,%s]+") do
      local norm = part:upper()
      if not model.rank[norm] then
        error(fname .. ": unknown severity '" .. part .. "' (CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN)", 4)
      end
      out[#out + 1] = norm
    end
  end
  if #out == 0 then error(fname .. ": severity names no severity", 4) end
  return out
end

-- ---- reading reports ----

-- UTF-16 (with BOM) to UTF-8: Windows shells write reports that way ("trivy ... > x.json"
-- in PowerShell). Unpaired surrogates become U+FFFD.
local function utf16_to_utf8(s, little)
  local out, n, i = {}, 0, 3
  local len = #s - (#s % 2)
  local function unit(at)
    local a, b = s:byte(at, at + 1)
    return little and (a + b * 256) or (a * 256 + b)
  end
  while i < len do
    local u = unit(i)
    i = i + 2
    if u >= 0xD800 and u <= 0xDBFF and i < len then
      local lo = unit(i)
      if lo >= 0xDC00 and lo <= 0xDFFF then
        u = 0x10000 + (u - 0xD800) * 0x400 + (lo - 0xDC00)
        i = i + 2
      else
        u = 0xFFFD
      end
    elseif u >= 0xD800 and u <= 0xDFFF then
      u = 0xFFFD
    end
    n = n + 1
    out[n] = utf8.char(u)
  end
  return table.concat(out)
end

local function to_utf8(text)
  local b1, b2, b3 = text:byte(1, 3)
  if b1 == 0xEF and b2 == 0xBB and b3 == 0xBF then return text:sub(4) end
  if b1 == 0xFF and b2 == 0xFE then return utf16_to_utf8(text, true) end
  if b1 == 0xFE and b2 == 0xFF then return utf16_to_utf8(text, false) end
  return text
end

-- A parse error of json.decode / json.decode_file (or of the fast path's read_text /
-- read_file, which raise the same) as the error load_report gives.
local function decode_failed(msg, what, path)
  msg = tostring(msg)
  if path then
    local prefix = "json.decode_file: " .. path .. ": "
    if msg:sub(1, #prefix) == prefix then msg = msg:sub(#prefix + 1) end
  end
  fail("Invalid", what .. ": not valid JSON: " .. msg:gsub("^.-json%.decode_?f?i?l?e?: ", ""))
end

-- A decoded report must be an object or an array.
local function check_doc(doc, what)
  if type(doc) ~= "table" then fail("Invalid", what .. ": not a scanner report (JSON " .. type(doc) .. ")") end
  return doc
end

local function decode(text, what)
  local ok, doc = pcall(json.decode, to_utf8(text))
  if not ok then decode_failed(doc, what) end
  return check_doc(doc, what)
end

-- The fast path (bindings/scan.c): a Trivy or Grype report is normalized in C straight
-- from the parsed tree; any other report comes back decoded. Returns "trivy" or "grype" and
-- the fields for model.result, or "doc" and the decoded document.
local function read_fast(reader, source, format, what, path)
  local ok, kind, value = pcall(reader, source, format)
  if not ok then decode_failed(kind, what, path) end
  if kind == "doc" then check_doc(value, what) end
  return kind, value
end

-- A report file: decoded straight from the file, so its text is freed once parsed instead of
-- living as long as the result (a 100 MB report is then never text + tables at once).
local function decode_file(path)
  local ok, doc = pcall(json.decode_file, path)
  if not ok then decode_failed(doc, path, path) end
  return check_doc(doc, path)
end

-- A scanner's stdout: the report, possibly followed by text some versions print after it
-- (Docker Scout's "What's Next?" hint, scout-cli#78). The report is kept, the rest logged.
local function decode_output(text, name)
  text = to_utf8(text)
  local ok, doc = pcall(json.decode, text)
  if not ok then
    local at = tostring(doc):match("trailing data at byte (%d+)$")
    if not at then return decode(text, name .. " output") end
    local rest = text:sub(tonumber(at))
    log.warn(name .. " printed text after its report; ignored",
      { engine = "scan", text = rest:sub(1, 200):gsub("%s+", " ") })
    return decode(text:sub(1, tonumber(at) - 1), name .. " output")
  end
  if type(doc) ~= "table" then return decode(text, name .. " output") end
  return doc
end

local function detect(doc)
  for _, name in ipairs(DETECT_ORDER) do
    if READERS[name].detect(doc) then return name end
  end
  return nil
end

-- Log the entries a reader left out, then filter and judge the result.
local function judge(result, format, what, opts)
  result.format = format == "scout" and "sarif" or format
  -- Entries that are no finding anyone can act on (no id, not an object) are left out, but
  -- never silently: each is logged at debug level, and once a warning with their number.
  local dropped = result.dropped or {}
  for _, d in ipairs(dropped) do
    log.debug("scan: " .. what .. ": " .. d, { engine = "scan" })
  end
  if #dropped > 0 then
    log.warn(string.format("scan: %s: %d entr%s left out (%s%s)", what, #dropped,
      #dropped == 1 and "y" or "ies", dropped[1], #dropped > 1 and "; more at debug level" or ""),
      { engine = "scan" })
  end
  if opts.image and not result.image then result.image = opts.image end
  model.filter(result, opts)
  policy_mod.evaluate(result, opts.policy, opts.now)
  return result
end

--- Turn a decoded report into a judged result.
local function finish(doc, format, what, opts)
  format = format or detect(doc)
  if not format then
    fail("Invalid", what .. ": unrecognized report format (expected Trivy JSON, Grype JSON or SARIF)")
  end
  local reader = READERS[format]
  if not reader.detect(doc) then
    fail("Invalid", what .. ": does not look like a " .. format .. " report")
  end
  return judge(reader.normalize(doc), format, what, opts)
end

-- What read_fast gave, judged.
local function finish_fast(kind, value, format, what, opts)
  if kind ~= "doc" then return judge(model.result(value), kind, what, opts) end
  return finish(value, format, what, opts)
end

-- The formats the fast path reads itself or hands back decoded (not "sarif"/"scout": those
-- are decoded as before).
local FAST_FORMATS = { trivy = true, grype = true }

-- Report text starts with "{" or "[" (after blanks or a byte-order mark); a path is one
-- line of sane length. Anything else is taken as (bad) text, never as a file name.
local function looks_like_path(source)
  if source:find("^[%s\239\187\191\255\254]*[{%[]") or source:find("^\254\255") then return false end
  return #source > 0 and #source <= 4096 and not source:find("[%z\r\n]")
end

local LOAD_KEYS = { format = true, policy = true, severity = true, ignore_unfixed = true,
  image = true, now = true }

---@class myrmex.scan.LoadOptions
---@field format? "trivy"|"grype"|"sarif"|"scout"
---@field policy? table
---@field severity? string|string[]
---@field ignore_unfixed? boolean
---@field image? string

--- Parse an existing report: a file path, or the report text itself. The format (Trivy JSON
--- schema 2, Grype JSON, SARIF from Docker Scout or Trivy) is detected unless given.
---@param source string path or JSON text
---@param opts? myrmex.scan.LoadOptions
---@return table result
function M.load_report(source, opts)
  if type(source) ~= "string" then
    error("scan.load_report: path or report text expected, got " .. type(source), 2)
  end
  opts = opts or {}
  check_keys("scan.load_report", opts, LOAD_KEYS)
  if opts.format and not READERS[opts.format] then
    error("scan.load_report: unknown format '" .. tostring(opts.format) .. "'", 2)
  end
  opts = { format = opts.format, policy = opts.policy, image = opts.image, now = opts.now,
    ignore_unfixed = opts.ignore_unfixed, severity = severity_list("scan.load_report", opts.severity) }
  if opts.policy then policy_mod.check(opts.policy) end
  local fast = model.fast and (opts.format == nil or FAST_FORMATS[opts.format])
  local text, what = source, "report"
  if looks_like_path(source) then
    what = source
    local st = rt.stat(source)
    if st and st.type ~= "file" then fail("Invalid", "cannot read report: " .. source .. " is a " .. st.type) end
    local f, err = io.open(source, "rb")
    -- Invalid rather than NotFound: the argument may as well be text that is no report.
    if not f then
      fail("Invalid", "neither report text nor a readable file: " .. tostring(err), { path = source })
    end
    local head = f:read(2) or ""
    if head ~= "\255\254" and head ~= "\254\255" then
      f:close()
      local result
      if fast then
        local kind, value = read_fast(core.read_file, source, opts.format, what, source)
        result = finish_fast(kind, value, opts.format, what, opts)
      else
        result = finish(decode_file(source), opts.format, what, opts)
      end
      -- The decoded report is garbage now, but the collector paced itself while it was
      -- alive: left alone, the heap would grow to twice report + findings before the next
      -- cycle. One full collection sets the pace from the findings alone.
      if st and st.size and st.size >= BIG_REPORT then collectgarbage() end
      return result
    end
    -- UTF-16 is converted in Lua: read at the known size (read("a") grows a buffer by
    -- doubling, twice the report at peak).
    local size = f:seek("end")
    f:seek("set")
    text = f:read(size) or ""
    f:close()
  end
  if fast then
    local kind, value = read_fast(core.read_text, to_utf8(text), opts.format, what)
    return finish_fast(kind, value, opts.format, what, opts)
  end
  return finish(decode(text, what), opts.format, what, opts)
end

--- Whether load_report and the CSV export take the C fast path (bindings/scan.c, the
--- default) or the Lua readers and writer, which give the same results; for tests and for
--- telling the two apart when one is suspected. Returns the previous setting.
---@param on boolean
---@return boolean
function M.fast_path(on)
  if type(on) ~= "boolean" then error("scan.fast_path: boolean expected, got " .. type(on), 2) end
  local was = model.fast
  model.fast = on
  return was
end

-- ---- running scanners ----

---@class myrmex.Scanner
---@field backend "trivy"|"grype"|"scout"
---@field path string the executable (docker for Scout)
local Scanner = {}
Scanner.__index = Scanner
Scanner.__name = "myrmex.scan.scanner"

local function scout_available(docker)
  local ok, res = pcall(process.run, { argv = { docker, "scout", "version" }, timeout = 30,
    max_output = 1024 * 1024 })
  return ok and res.status == 0
end

local function find_backend(name, path)
  local exe = process.which(path or (name == "scout" and "docker" or name))
  if not exe then return nil end
  if name == "scout" and not scout_available(exe) then return nil end
  return exe
end

-- Argument vectors, one per back end. The reference always comes after "--", so one that
-- starts with "-" cannot be taken for an option.
local ARGV = {
  trivy = function(self, ref, o)
    -- Trivy stops itself after its own --timeout (5 minutes unless told): it gets ours, so the
    -- scan is capped by what the caller asked for, not by Trivy's default.
    local a = { self.path, "image", "--format", "json", "--quiet",
      "--timeout", string.format("%ds", math.max(1, math.ceil(o.timeout))) }
    if o.severity then a[#a + 1] = "--severity"; a[#a + 1] = table.concat(o.severity, ",") end
    if o.ignore_unfixed then a[#a + 1] = "--ignore-unfixed" end
    if o.platform then a[#a + 1] = "--platform"; a[#a + 1] = o.platform end
    if o.input then a[#a + 1] = "--input"; a[#a + 1] = o.input end
    return a, not o.input and ref or nil
  end,
  grype = function(self, ref, o)
    local a = { self.path, "-o", "json" }
    if o.ignore_unfixed then a[#a + 1] = "--only-fixed" end
    if o.platform then a[#a + 1] = "--platform"; a[#a + 1] = o.platform end
    return a, o.input and ("docker-archive:" .. o.input) or ref
  end,
  scout = function(self, ref, o)
    local a = { self.path, "scout", "cves", "--format", "sarif" }
    if o.severity then
      local lower = {}
      for i, s in ipairs(o.severity) do lower[i] = s:lower() end
      a[#a + 1] = "--only-severity"; a[#a + 1] = table.concat(lower, ",")
    end
    if o.ignore_unfixed then a[#a + 1] = "--only-fixed" end
    if o.platform then a[#a + 1] = "--platform"; a[#a + 1] = o.platform end
    return a, o.input and ("archive://" .. o.input) or ref
  end,
}

local NEW_KEYS = { backend = true, path = true, timeout = true, args = true, max_output = true,
  policy = true }

---@class myrmex.scan.NewOptions
---@field backend? "auto"|"trivy"|"grype"|"scout"
---@field path? string
---@field timeout? number
---@field args? string[]
---@field max_output? integer
---@field policy? table

--- A scanner. `backend="auto"` (the default) takes the first found on PATH: Trivy, then
--- Grype, then Docker Scout (`docker scout`), and logs which. Raises NotFound when none is.
---@param opts? myrmex.scan.NewOptions
---@return myrmex.Scanner
function M.new(opts)
  if require("myrmex.sandbox").active() and type(opts) == "table" and (opts.path or opts.args) then
    -- A sandboxed recipe must not choose which program runs, or with which arguments.
    error("scan.new: path and args are not allowed under --sandbox", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("scan.new: options table expected", 2) end
  check_keys("scan.new", opts, NEW_KEYS)
  local backend = opts.backend or "auto"
  if backend ~= "auto" and not ARGV[backend] then
    error("scan.new: unknown backend '" .. tostring(backend) .. "' (auto, trivy, grype, scout)", 2)
  end
  if backend == "auto" and opts.path then error("scan.new: path needs an explicit backend", 2) end
  for i, a in ipairs(opts.args or {}) do
    if type(a) ~= "string" then error("scan.new: args[" .. i .. "] must be a string", 2) end
  end
  if opts.policy then policy_mod.check(opts.policy) end
  local exe
  if backend == "auto" then
    for _, name in ipairs(BACKENDS) do
      exe = find_backend(name)
      if exe then backend = name; break end
    end
    if not exe then
      fail("NotFound", "no scanner found on PATH (looked for trivy, grype, docker scout)")
    end
    log.info("scan: using " .. backend, { engine = "scan", path = exe })
  else
    exe = find_backend(backend, opts.path)
    if not exe then
      fail("NotFound", backend .. " not found" .. (opts.path and (" at " .. opts.path) or " on PATH"))
    end
  end
  return setmetatable({ backend = backend, path = exe, timeout = opts.timeout or DEFAULT_TIMEOUT,
    args = opts.args or {}, max_output = opts.max_output or DEFAULT_MAX_OUTPUT,
    policy = opts.policy }, Scanner)
end

-- stderr is logged line by line as it arrives; its tail is kept for error messages.
local function stderr_sink(name, ref)
  local tail, partial = {}, ""
  local function line(l)
    if l ~= "" then
      log.debug(name .. ": " .. l, { engine = "scan", target = ref })
      tail[#tail + 1] = l
      if #tail > 20 then table.remove(tail, 1) end
    end
  end
  local sink = {}
  function sink.write(chunk)
    partial = partial .. chunk
    local last = 1
    for l, rest in partial:gmatch("([^\n]*)\n()") do line(l); last = rest end
    partial = partial:sub(last)
    if #partial > 65536 then partial = partial:sub(-65536) end
  end
  function sink.message()
    line(partial)
    partial = ""
    local text = table.concat(tail, " | ")
    if #text > 2000 then text = "..." .. text:sub(-2000) end
    return text
  end
  return sink
end

-- Runs the scanner; returns its stdout, exit status and (when a non-zero status made it
-- look) the decoded report, or raises the error that says why there is none.
function Scanner:_run(argv, shown, timeout)
  local name = self.backend
  local sink = stderr_sink(name, shown)
  local res = log.span("scan", "scan_image", shown, process.run, {
    argv = argv,
    timeout = timeout,
    max_output = self.max_output,
    on_stderr = sink.write,
  })
  local msg = sink.message()
  if res.timed_out then
    fail("Timeout", string.format("%s did not finish within %gs%s", name, timeout,
      msg ~= "" and (": " .. msg) or ""))
  end
  if res.overflow then
    fail("Invalid", string.format("%s wrote more than %d bytes of output", name, self.max_output))
  end
  local doc
  if res.status ~= 0 or res.signal ~= nil then
    -- `trivy --exit-code N` and `grype --fail-on` exit non-zero after printing a whole report:
    -- that report is the scan, and the policy judges it. An exit without a complete report (or
    -- by a signal) is a failure.
    local ok = false
    if not res.signal and not res.stdout:find("^%s*$") then
      ok, doc = pcall(json.decode, to_utf8(res.stdout))
      ok = ok and type(doc) == "table" and detect(doc) ~= nil
    end
    if not ok then
      fail("Engine", string.format("%s failed (%s): %s", name, process.describe(res),
        msg ~= "" and msg or "no message on stderr"), { status = res.status, signal = res.signal })
    end
    log.info(string.format("%s exited with status %d after a complete report (its own fail "
      .. "threshold); the report is used", name, res.status), { engine = "scan", target = shown })
  end
  if res.stdout:find("^%s*$") then
    fail("Invalid", name .. " printed no report" .. (msg ~= "" and (": " .. msg) or ""))
  end
  return res.stdout, res.status, doc
end

local SCAN_KEYS = { severity = true, ignore_unfixed = true, platform = true, input = true,
  policy = true, timeout = true, now = true }

---@class myrmex.scan.ScanOptions
---@field severity? string|string[]
---@field ignore_unfixed? boolean
---@field platform? string
---@field input? string
---@field policy? table
---@field timeout? number

--- Scan an image: from the local engine or a registry by reference, or a saved tarball
--- (`input=`). Runs the scanner as a child process (argument vector, no shell), logs its
--- stderr, enforces the timeout, and returns the normalized, judged result.
---@param ref string|nil image reference (may be nil with input=)
---@param opts? myrmex.scan.ScanOptions
---@return table result
function Scanner:scan_image(ref, opts)
  opts = opts or {}
  check_keys("scanner:scan_image", opts, SCAN_KEYS)
  if ref ~= nil and (type(ref) ~= "string" or ref == "") then
    error("scanner:scan_image: ref must be a non-empty string", 2)
  end
  if ref == nil and not opts.input then error("scanner:scan_image: ref or input= is required", 2) end
  if opts.input and type(opts.input) ~= "string" then error("scanner:scan_image: input must be a path", 2) end
  local timeout = opts.timeout or self.timeout
  local o = { severity = severity_list("scanner:scan_image", opts.severity),
    ignore_unfixed = opts.ignore_unfixed, platform = opts.platform, input = opts.input,
    timeout = timeout }
  local argv, target = ARGV[self.backend](self, ref, o)
  for _, a in ipairs(self.args) do argv[#argv + 1] = a end
  if target then argv[#argv + 1] = "--"; argv[#argv + 1] = target end
  local name = self.backend
  local out, status, decoded = self:_run(argv, ref or opts.input, timeout)
  local format = name == "scout" and "sarif" or name
  local judged = { image = ref or opts.input, severity = o.severity,
    ignore_unfixed = opts.ignore_unfixed, policy = opts.policy or self.policy, now = opts.now }
  local result
  if not decoded and model.fast and FAST_FORMATS[format] then
    -- The report as the fast path reads it; output it cannot take whole (text after the
    -- report, no JSON) goes the way below, which says what is wrong with it.
    local ok, kind, value = pcall(core.read_text, to_utf8(out), format)
    if ok and kind ~= "doc" then
      result = finish_fast(kind, value, format, name .. " output", judged)
    elseif ok and type(value) == "table" then
      decoded = value
    end
  end
  if not result then
    result = finish(decoded or decode_output(out, name), format, name .. " output", judged)
  end
  result.image = ref or result.image
  result.scanner_status = status
  return result
end

function Scanner:__tostring()
  return "scanner(" .. self.backend .. " " .. self.path .. ")"
end

-- ---- judging, combining, exporting ----

--- (Re)judge a result under a policy: sets `compliance`, `passed`, `violations`,
--- `ignored`, `expired_ignores`. Returns the result.
---@param result table
---@param policy? table
---@param now? string RFC 3339 UTC time for ignore expiry (default: now)
---@return table
function M.evaluate(result, policy, now)
  if type(result) ~= "table" or type(result.findings) ~= "table" then
    error("scan.evaluate: result expected", 2)
  end
  return (policy_mod.evaluate(result, policy or policy_mod.used(result), now))
end

--- The compliance report: summary, level, deciding findings, recommendations.
---@param result table
---@param policy? table
---@param now? string
---@return table
function M.generate_compliance_report(result, policy, now)
  if type(result) ~= "table" or type(result.findings) ~= "table" then
    error("scan.generate_compliance_report: result expected", 2)
  end
  -- Without a policy the result keeps the one it was judged with: a report must never turn
  -- a failing gate into a passing one.
  return policy_mod.report(result, policy or policy_mod.used(result), now)
end

--- Exit status for a recipe: 0 when the result passes its policy, 1 when it fails.
---@param result table
---@return integer
function M.exit_status(result)
  return result.passed and 0 or 1
end

local function copy_finding(f)
  local c = {}
  for k, v in pairs(f) do c[k] = v end
  c.found_by = {}
  for i, name in ipairs(f.found_by or { f.scanner }) do c.found_by[i] = name end
  c.aliases = {}
  for i, a in ipairs(f.aliases or {}) do c.aliases[i] = a end
  return c
end

-- The merged finding answers to every name the scanners used for it.
local function add_aliases(hit, f)
  local known = { [hit.id] = true }
  for _, a in ipairs(hit.aliases) do known[a] = true end
  local function add(a)
    if not known[a] then
      known[a] = true
      hit.aliases[#hit.aliases + 1] = a
    end
  end
  add(f.id)
  for _, a in ipairs(f.aliases or {}) do add(a) end
end

-- Keys under which a finding can be met again: its id and each alias, with the package
-- (and, for merge, the installed version).
local function keys_of(f, keyfn)
  keyfn = keyfn or model.key
  local keys = { keyfn(f) }
  for _, a in ipairs(f.aliases or {}) do keys[#keys + 1] = keyfn(f, a) end
  return keys
end

-- What makes a misconfiguration, secret or license the same one in two results.
local OTHER_KEYS = {
  misconfigurations = { "id", "target", "start_line", "end_line", "message" },
  secrets = { "id", "target", "start_line", "end_line" },
  licenses = { "name", "package", "file_path", "target" },
}

-- The misconfigurations, secrets and licenses of every input, each once, in input order.
local function merge_others(inputs, merged)
  for list, fields in pairs(OTHER_KEYS) do
    local out, seen = {}, {}
    for _, r in ipairs(inputs) do
      for _, x in ipairs(type(r[list]) == "table" and r[list] or {}) do
        local parts = {}
        for i, k in ipairs(fields) do parts[i] = tostring(x[k]) end
        local key = table.concat(parts, "\0")
        if not seen[key] then
          seen[key] = true
          out[#out + 1] = x
        end
      end
    end
    merged[list] = out
  end
end

--- Merge results of the same image from several scanners: one finding per vulnerability
--- (id or alias), package and installed version; the first result's data wins, missing fields are filled from
--- the others, `found_by` lists every scanner that reported it. Misconfigurations, secrets and
--- licenses of every result are kept, each once.
---@param ... table results
---@return table
function M.merge(...)
  local inputs = { ... }
  if #inputs == 0 then error("scan.merge: at least one result expected", 2) end
  local findings, index, scanners = {}, {}, {}
  for _, r in ipairs(inputs) do
    if type(r) ~= "table" or type(r.findings) ~= "table" then
      error("scan.merge: results expected", 2)
    end
    for _, s in ipairs(r.scanners or {}) do scanners[#scanners + 1] = s end
    for _, f in ipairs(r.findings) do
      local hit
      for _, k in ipairs(keys_of(f)) do
        hit = index[k]
        if hit then break end
      end
      if hit then
        for _, name in ipairs(f.found_by or { f.scanner }) do
          local seen = false
          for _, s in ipairs(hit.found_by) do seen = seen or s == name end
          if not seen then hit.found_by[#hit.found_by + 1] = name end
        end
        add_aliases(hit, f)
        for k, v in pairs(f) do
          if hit[k] == nil then hit[k] = v end
        end
      else
        hit = copy_finding(f)
        findings[#findings + 1] = hit
      end
      for _, k in ipairs(keys_of(f)) do index[k] = index[k] or hit end
    end
  end
  local first = inputs[1]
  local merged = {}
  for k, v in pairs(first) do merged[k] = v end
  local names = {}
  for i, s in ipairs(scanners) do names[i] = s.name end
  merged.scanner = table.concat(names, "+")
  merged.scanners = scanners
  merged.findings = findings
  merged.counts = model.count(findings)
  merge_others(inputs, merged)
  for _, r in ipairs(inputs) do
    for _, k in ipairs({ "image", "digest", "image_id", "os" }) do
      if merged[k] == nil then merged[k] = r[k] end
    end
  end
  policy_mod.evaluate(merged, policy_mod.used(first))
  return merged
end

--- Compare two results (e.g. the new image against the deployed one): findings
--- `introduced` (only in new), `fixed` (only in old), `unchanged` (in both, as in new).
--- Findings are the same when id (or an alias) and package match, whatever the version.
---@param old table
---@param new table
---@return {introduced:table[], fixed:table[], unchanged:table[], counts:table}
function M.diff(old, new)
  if type(old) ~= "table" or type(new) ~= "table" then error("scan.diff: two results expected", 2) end
  local in_old, in_new, loose = {}, {}, model.loose_key
  for _, f in ipairs(old.findings) do
    for _, k in ipairs(keys_of(f, loose)) do in_old[k] = true end
  end
  for _, f in ipairs(new.findings) do
    for _, k in ipairs(keys_of(f, loose)) do in_new[k] = true end
  end
  local function present(set, f)
    for _, k in ipairs(keys_of(f, loose)) do
      if set[k] then return true end
    end
    return false
  end
  local out = { introduced = {}, fixed = {}, unchanged = {} }
  for _, f in ipairs(new.findings) do
    local list = present(in_old, f) and out.unchanged or out.introduced
    list[#list + 1] = f
  end
  for _, f in ipairs(old.findings) do
    if not present(in_new, f) then out.fixed[#out.fixed + 1] = f end
  end
  out.counts = { introduced = model.count(out.introduced), fixed = model.count(out.fixed),
    unchanged = model.count(out.unchanged) }
  return out
end

local WRITERS = { json = export_mod.json, csv = export_mod.csv, sarif = export_mod.sarif }
local EXPORT_KEYS = { json = {}, csv = { columns = true, csv_raw = true, bom = true },
  sarif = { dockerfile = true, dockerfile_line = true, max_results = true } }

--- Write a result as "json" (the normalized model), "csv" (RFC 4180, one row per finding,
--- formula-like cells neutralised) or "sarif" (2.1.0, as Trivy writes it, for GitHub code
--- scanning). Returns the text when `path` is nil, else writes the file and returns the path.
---@param result table
---@param format "json"|"csv"|"sarif"
---@param path? string
---@param opts? {dockerfile?:string, dockerfile_line?:integer, max_results?:integer,
---  columns?:string[], csv_raw?:boolean, bom?:boolean}
---@return string
function M.export(result, format, path, opts)
  if type(result) ~= "table" or type(result.findings) ~= "table" then
    error("scan.export: result expected", 2)
  end
  local writer = WRITERS[format]
  if not writer then error("scan.export: unknown format '" .. tostring(format) .. "' (json, csv, sarif)", 2) end
  if opts ~= nil then
    if type(opts) ~= "table" then error("scan.export: options table expected", 2) end
    check_keys("scan.export", opts, EXPORT_KEYS[format])
  end
  if path ~= nil and type(path) ~= "string" then error("scan.export: path must be a string", 2) end
  if not path then
    local parts = {}
    writer(result, opts, function(...) table.move({ ... }, 1, select("#", ...), #parts + 1, parts) end)
    return table.concat(parts)
  end
  -- Written in pieces (a 100 MB report is never one string), to a temporary file renamed
  -- into place at the end, so a failure half-way leaves no half-written file at `path`.
  local tmp = path .. ".part"
  local f, err = io.open(tmp, "wb")
  if not f then fail("Invalid", "cannot write " .. path .. ": " .. tostring(err)) end
  f:setvbuf("full", 65536)
  local function emit(...)
    local written, e = f:write(...)
    if not written then fail("Invalid", "cannot write " .. path .. ": " .. tostring(e)) end
  end
  local ok, werr = pcall(function()
    writer(result, opts, emit)
    local closed, e = f:close()
    if not closed then fail("Invalid", "cannot write " .. path .. ": " .. tostring(e)) end
  end)
  if not ok then
    pcall(f.close, f)
    os.remove(tmp)
    -- A writer's error (a string that is not UTF-8, a number no JSON can hold) says what
    -- was wrong; the file it was for is added, so a CI log names which export failed.
    if type(werr) == "string" and not werr:find(path, 1, true) then
      werr = "scan.export: " .. path .. ": " .. werr:gsub("^.-scan%.export: ", "")
    end
    error(werr, 0)
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    fail("Invalid", "cannot write " .. path .. ": " .. tostring(rerr))
  end
  return path
end

return M
