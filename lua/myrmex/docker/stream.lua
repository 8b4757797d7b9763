--- Decoders for the Engine's streaming bodies: the multiplexed stdout/stderr framing of logs,
--- attach and exec (an 8-byte header per frame), and JSON-lines progress.
local M = {}

local Demux = {}
Demux.__index = Demux

--- A decoder fed with arbitrary chunks of a multiplexed stream. Each complete frame's payload
--- goes to `sink(stream, data)`, stream being "stdout" or "stderr" (stdin frames, type 0, are
--- reported as stdout, as the engine does for a TTY-less attach). With `raw = true` (a TTY
--- container) chunks are passed through as stdout.
---@param sink fun(stream:string, data:string)
---@param raw? boolean
---@return table decoder with :feed(chunk) and :finish()
function M.demux(sink, raw)
  return setmetatable({ sink = sink, raw = raw, buf = "", need = nil, kind = nil }, Demux)
end

local KIND = { [0] = "stdout", [1] = "stdout", [2] = "stderr", [3] = "stderr" }

--- Feed one chunk; calls the sink for every frame (or frame part) it completes. Frame payloads
--- are delivered as they arrive, so a 50 MB frame never has to sit in memory whole.
---@param chunk string
function Demux:feed(chunk)
  if self.raw then
    if #chunk > 0 then self.sink("stdout", chunk) end
    return
  end
  local buf, pos = self.buf .. chunk, 1
  while true do
    if self.need then
      local avail = #buf - pos + 1
      if avail <= 0 then break end
      local take = math.min(avail, self.need)
      self.sink(self.kind, buf:sub(pos, pos + take - 1))
      pos, self.need = pos + take, self.need - take
      if self.need == 0 then self.need = nil end
    else
      if #buf - pos + 1 < 8 then break end
      local t, size = string.unpack(">I1xxxI4", buf, pos)
      self.kind = KIND[t] or "stdout"
      pos = pos + 8
      if size > 0 then self.need = size end
    end
  end
  self.buf = buf:sub(pos)
end

--- Call at the end of the stream: true when it ended on a frame boundary.
---@return boolean
function Demux:finish()
  return self.raw or (self.need == nil and #self.buf == 0)
end

--- A line splitter over chunks: `on_line(line)` for every complete line (without "\n").
---@param on_line fun(line:string)
---@return table splitter with :feed(chunk) and :finish()
function M.lines(on_line)
  local buf = ""
  return {
    feed = function(_, chunk)
      buf = buf .. chunk
      local start = 1
      while true do
        local nl = buf:find("\n", start, true)
        if not nl then break end
        on_line(buf:sub(start, nl - 1))
        start = nl + 1
      end
      buf = buf:sub(start)
    end,
    finish = function()
      if #buf > 0 then on_line(buf) end
      buf = ""
    end,
  }
end

return M
