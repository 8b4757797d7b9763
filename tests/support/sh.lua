--- Test helper: run a command line, capture stdout, stderr and the exit status.
local M = {}

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  os.remove(path)
  return s
end

--- Quote one argument for /bin/sh.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Run `cmd` (a string for sh, or a list of arguments) with optional env {K=V} and stdin text.
--- Returns {code=, stdout=, stderr=}.
function M.run(cmd, opts)
  opts = opts or {}
  if type(cmd) == "table" then
    local parts = {}
    for i, a in ipairs(cmd) do parts[i] = M.q(a) end
    cmd = table.concat(parts, " ")
  end
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. M.q(v) end
  local out, err = os.tmpname(), os.tmpname()
  local line = (opts.cwd and ("cd " .. M.q(opts.cwd) .. " && ") or "")
    .. (#env > 0 and ("env " .. table.concat(env, " ") .. " ") or "")
    .. cmd .. " >" .. out .. " 2>" .. err
  if opts.stdin then
    local inp = os.tmpname()
    local f = assert(io.open(inp, "wb"))
    f:write(opts.stdin)
    f:close()
    line = line .. " <" .. inp
  else
    line = line .. " </dev/null"
  end
  local ok, how, code = os.execute(line)
  local status = ok and 0 or (how == "exit" and code or 128 + code)
  return { code = status, stdout = slurp(out), stderr = slurp(err) }
end

--- The myrmex binary under test.
M.bin = os.getenv("MYRMEX_BIN") or "build/myrmex"
M.src = os.getenv("MYRMEX_SOURCE_DIR") or "."
M.fixtures = os.getenv("MYRMEX_FIXTURES") or "tests/fixtures"

--- Run myrmex with a list of arguments.
function M.myrmex(args, opts)
  local cmd = { M.bin }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return M.run(cmd, opts)
end

--- Run fn(log) with myrmex.log writing JSON lines at debug level to a file; returns the
--- decoded records (and re-raises fn's error after restoring the log settings).
function M.capture_log(fn)
  local log = require("myrmex.log")
  local json = require("myrmex.json")
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local before = log.settings()
  log.configure({ out = f, format = "json", level = "debug", quiet = false })
  local ok, err = pcall(fn, log)
  log.configure({ out = before.out, format = before.format, level = before.level, quiet = before.quiet })
  f:close()
  local recs = {}
  for line in io.lines(path) do recs[#recs + 1] = json.decode(line) end
  os.remove(path)
  if not ok then error(err, 0) end
  return recs
end

--- Read a whole file, or nil when it cannot be opened.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local offline_ok
--- `argv` to run in a network namespace of its own with no interface up (`unshare --net`, as
--- root), for peers that look names up on their own (kubectl resolves every server of a
--- kubeconfig it views): no packet leaves the machine. As given when unshare is refused.
function M.offline(argv)
  if offline_ok == nil then offline_ok = os.execute("unshare --net -- true >/dev/null 2>&1") == true end
  if not offline_ok then return argv end
  local out = { "unshare", "--net", "--" }
  for i, a in ipairs(argv) do out[i + 3] = a end
  return out
end

--- Write a whole file (raises when it cannot be written).
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- Write text to a new temporary file and return its path.
function M.tmpfile(text, suffix)
  local path = os.tmpname() .. (suffix or "")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

return M
