--- Plan mode: under `myrmex plan` or `run --dry-run`, state-changing engine calls are
--- recorded instead of made. See docs/plan.md.
local log = require("myrmex.log")

local M = {}

local state = { active = false, actions = {} }

--- True while a plan (dry run) is being made.
---@return boolean
function M.active() return state.active end

--- Turn plan mode on or off (the host does this from the command line).
---@param on boolean
function M.set_active(on)
  state.active = on and true or false
end

---@class myrmex.PlannedAction
---@field planned true
---@field engine string
---@field op string
---@field target string|nil
---@field args table|nil redacted
---@field id string "planned-N", usable where a real id would be

--- Record a state-changing call that plan mode skips; returns a planned result that a
--- recipe can keep using (it has `planned = true` and an `id`).
---@param t {engine:string, op:string, target?:string, args?:table, result?:table}
---@return myrmex.PlannedAction
function M.record(t)
  if type(t) ~= "table" or type(t.engine) ~= "string" or type(t.op) ~= "string" then
    error("plan.record: {engine=string, op=string, ...} expected", 2)
  end
  local n = #state.actions + 1
  local action = {
    planned = true,
    engine = t.engine,
    op = t.op,
    target = t.target and log.redact(tostring(t.target)) or nil,
    args = t.args and log.redact_value(t.args) or nil,
    id = "planned-" .. n,
  }
  state.actions[n] = action
  log.info("plan: " .. t.engine .. " " .. t.op .. (action.target and (" " .. action.target) or ""),
    { planned = true })
  local result = {}
  for k, v in pairs(t.result or {}) do result[k] = v end
  for k, v in pairs(action) do
    if result[k] == nil then result[k] = v end
  end
  return result
end

--- The actions recorded so far, in order.
---@return myrmex.PlannedAction[]
function M.actions()
  local copy = {}
  for i, a in ipairs(state.actions) do copy[i] = a end
  return copy
end

--- Forget recorded actions (tests).
function M.reset() state.actions = {} end

--- The plan as readable text, one numbered line per action.
---@return string
function M.render_text()
  if #state.actions == 0 then return "Plan: no changes.\n" end
  local lines = { string.format("Plan: %d action%s", #state.actions,
    #state.actions == 1 and "" or "s") }
  for i, a in ipairs(state.actions) do
    local args = ""
    if a.args and next(a.args) then
      args = " " .. require("myrmex.json").encode(a.args, { sort_keys = true })
    end
    lines[#lines + 1] = string.format("%3d. %s %s%s%s", i, a.engine, a.op,
      a.target and (" " .. a.target) or "", args)
  end
  return table.concat(lines, "\n") .. "\n"
end

--- The plan as a JSON document {actions=[...]}.
---@return string
function M.render_json()
  local json = require("myrmex.json")
  return json.encode({ actions = json.array(M.actions()) }, { sort_keys = true })
end

return M
