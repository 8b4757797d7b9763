--- Run independent functions concurrently: coroutines over the one curl multi handle, so a
--- branch waiting on I/O lets the others run. See docs/parallel.md.
local http = require("myrmex.http")
local core = require("myrmex.core.transport")
local errors = require("myrmex.errors")

local M = {}

local function branch_error(name, err)
  if errors.is(err) then
    err.branch = err.branch or name
    return err
  end
  if type(err) == "string" then return "parallel branch " .. name .. ": " .. err end
  return err
end

--- Run `fns` (a list, or a table name -> function) concurrently, at most `opts.max` at once
--- (default 8). Returns the results in the same shape: results[k] is the value branch k
--- returned when it returned one (nil for none), or a packed table {v1, v2, n = 2} when it
--- returned several; opts.pack = true packs every branch's values.
--- The first error (a branch's, or Interrupted on Ctrl-C / SIGTERM) cancels the other
--- branches: each has that error raised where it waits, so its pcalls and <close> variables
--- run, and it is driven until it ends; then the error is raised again naming the branch.
---@param fns table<any, function>
---@param opts? {max?:integer, pack?:boolean}
---@return table results
function M.run(fns, opts)
  if type(fns) ~= "table" then error("parallel: a table of functions expected", 2) end
  opts = opts or {}
  local max = opts.max or 8
  if math.type(max) ~= "integer" or max < 1 then error("parallel: max must be a positive integer", 2) end
  local keys = {}
  for k, f in pairs(fns) do
    if type(f) ~= "function" then error("parallel: entry " .. tostring(k) .. " is not a function", 2) end
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return tostring(a) < tostring(b)
  end)
  local results, running, next_i = {}, {}, 1
  local failure
  local me = coroutine.running()

  -- Whatever ends this call, no branch is left suspended with its <close> variables pending:
  -- the draining below ends every branch; this closes any it could not reach (this scheduler
  -- is itself a branch being closed, or a bug in the draining).
  local _ <close> = setmetatable({}, { __close = function()
    for _, b in ipairs(running) do
      http._branches[b.co] = nil
      coroutine.close(b.co)
    end
    running = {}
  end })

  local function start(k)
    local co = coroutine.create(function() return table.pack(fns[k]()) end)
    http._branches[co] = true
    running[#running + 1] = { co = co, key = k }
  end

  -- A branch that ended (returned or raised): out of the transport's branches, and closed, so
  -- the <close> variables an error left pending run now.
  local function finish(b)
    http._branches[b.co] = nil
    coroutine.close(b.co)
  end

  local function wait_io()
    if http._branches[me] then http._yield(me) else core.perform(20) end
  end

  -- Resume each branch once; a branch that raised becomes the failure.
  local function round()
    local still = {}
    for _, b in ipairs(running) do
      if failure then
        still[#still + 1] = b
      else
        local ok, res = coroutine.resume(b.co)
        -- Marked after: an error striking before this line leaves it to be closed, not
        -- resumed with the cancellation (that would start a branch never started).
        b.started = true
        if not ok then
          failure = branch_error(tostring(b.key), res)
          failure = failure ~= nil and failure or "parallel branch " .. tostring(b.key) .. " failed"
          finish(b)
        elseif coroutine.status(b.co) == "dead" then
          finish(b)
          -- One value stays itself; several come back packed (res.n), so none is lost.
          if opts.pack or res.n > 1 then results[b.key] = res else results[b.key] = res[1] end
        else
          still[#still + 1] = b
        end
      end
    end
    running = still
  end

  local function schedule()
    while not failure do
      while #running < max and next_i <= #keys do
        start(keys[next_i])
        next_i = next_i + 1
      end
      if #running == 0 then return end
      round()
      -- Only yielded branches remain: let their transfers progress.
      if not failure and #running > 0 then wait_io() end
    end
  end

  -- Cancel every branch left: raise the failure once in each where it waits, then drive it
  -- until it ends, as its cleanup may make requests. A branch never resumed is only closed.
  local function drain()
    while #running > 0 do
      local still = {}
      for _, b in ipairs(running) do
        if coroutine.status(b.co) ~= "suspended" or not b.started then
          finish(b) -- dead (an error may have struck between its resume and its close) or unstarted
        else
          local token
          if not b.cancelled then
            b.cancelled = true
            token = http._cancel(failure)
          end
          coroutine.resume(b.co, token)
          if coroutine.status(b.co) == "dead" then finish(b) else still[#still + 1] = b end
        end
      end
      running = still
      if #running > 0 then wait_io() end
    end
  end

  -- An error raised here rather than in a branch (Interrupted from the transport's wait or
  -- from the signal hook, between two resumes) fails the run like a branch's error; one
  -- arriving while draining (the first Ctrl-C during the cleanup of a branch's failure) takes
  -- over, so the exit says interrupted, and the draining goes on.
  local ok, err = pcall(schedule)
  if not ok then failure = err ~= nil and err or "parallel: scheduler failed" end
  for _ = 1, 3 do
    if #running == 0 then break end
    ok, err = pcall(drain)
    if not ok and errors.is(err, "Interrupted") then failure = err end
  end
  if failure ~= nil then error(failure, 2) end
  return results
end

--- Apply fn to each item of a list concurrently: results[i] = fn(list[i], i).
---@param list any[]
---@param fn fun(item:any, i:integer):any
---@param opts? {max?:integer}
---@return any[]
function M.map(list, fn, opts)
  local fns = {}
  for i, item in ipairs(list) do fns[i] = function() return fn(item, i) end end
  return M.run(fns, opts)
end

return setmetatable(M, { __call = function(_, fns, opts) return M.run(fns, opts) end })
