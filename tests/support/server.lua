--- Test helper: start a background server process that prints "READY <port>", and stop it.
local M = {}

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

--- Start `cmd` (a shell command line) in the background; returns {port=, pid=, log=, stop=}.
function M.start(cmd, timeout)
  local log = os.tmpname()
  local pidf = os.tmpname()
  assert(os.execute("(" .. cmd .. ") >" .. log .. " 2>&1 & echo $! >" .. pidf))
  local pid = read(pidf):match("%d+")
  os.remove(pidf)
  local deadline = os.time() + (timeout or 15)
  while os.time() <= deadline do
    local out = read(log)
    local port = out:match("READY (%S+)")
    if port then
      return {
        port = tonumber(port) or port,
        pid = pid,
        log = log,
        stop = function()
          os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.1; kill -9 " .. pid .. " 2>/dev/null")
          os.remove(log)
        end,
      }
    end
    os.execute("sleep 0.1")
  end
  os.execute("kill " .. pid .. " 2>/dev/null")
  error("server did not start: " .. cmd .. "\n" .. read(log))
end

--- VmHWM of this process in KiB (peak resident memory).
function M.peak_rss_kib()
  return tonumber(read("/proc/self/status"):match("VmHWM:%s*(%d+)"))
end

--- Reset the peak resident size (VmHWM) to the current one, so that a test measures its own
--- peak rather than the largest of every test before it.
function M.reset_peak_rss()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then
    f:write("5")
    f:close()
  end
end

--- True in an AddressSanitizer build: its shadow memory and quarantine keep hundreds of MiB
--- resident, so a flat-memory bound there can only show that a body was not held whole.
---@return boolean
function M.sanitized()
  for line in io.lines("/proc/self/maps") do
    if line:find("libasan", 1, true) then return true end
  end
  return false
end

return M
