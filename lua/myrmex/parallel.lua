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
--- The first error cancels the other branches (their <close> variables run, their transfers
--- are aborted) and is raised again naming the branch.
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

  local function start(k)
    local co = coroutine.create(function() return table.pack(fns[k]()) end)
    http._branches[co] = true
    running[#running + 1] = { co = co, key = k }
  end

  local function cancel_all()
    for _, b in ipairs(running) do
      http._branches[b.co] = nil
      coroutine.close(b.co)
    end
    running = {}
  end

  while true do
    while #running < max and next_i <= #keys do
      start(keys[next_i])
      next_i = next_i + 1
    end
    if #running == 0 then break end
    local still = {}
    for _, b in ipairs(running) do
      if not failure then
        local ok, res = coroutine.resume(b.co)
        if not ok then
          failure = branch_error(tostring(b.key), res)
          failure = failure ~= nil and failure or "parallel branch " .. tostring(b.key) .. " failed"
          http._branches[b.co] = nil
          coroutine.close(b.co)
        elseif coroutine.status(b.co) == "dead" then
          http._branches[b.co] = nil
          -- One value stays itself; several come back packed (res.n), so none is lost.
          if opts.pack or res.n > 1 then results[b.key] = res else results[b.key] = res[1] end
        else
          still[#still + 1] = b
        end
      else
        still[#still + 1] = b
      end
    end
    running = still
    if failure then
      cancel_all()
      error(failure, 2)
    end
    if #running > 0 then
      -- Only yielded branches remain: let their transfers progress.
      local co = coroutine.running()
      if http._branches[co] then coroutine.yield(http.WAIT) else core.perform(20) end
    end
  end
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
