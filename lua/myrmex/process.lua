--- Child processes from an argument vector, never a shell. See docs/process.md.
local core = require("myrmex.core.process")

local M = {}

---@class myrmex.ProcessResult
---@field status integer|nil exit code when the child exited
---@field signal integer|nil signal number when a signal ended it
---@field stdout string collected stdout ("" when on_stdout took it)
---@field stderr string collected stderr ("" when on_stderr took it)
---@field timed_out boolean the timeout fired and the process group was killed
---@field overflow "stdout"|"stderr"|nil the stream that passed max_output (child killed)
---@field duration number seconds from start to the last byte

---@class myrmex.ProcessOptions
---@field argv string[]
---@field env? table<string,string>
---@field stdin? string
---@field timeout? number
---@field cwd? string
---@field max_output? integer
---@field on_stdout? fun(chunk:string)
---@field on_stderr? fun(chunk:string)

--- Run a program and wait for it. The program is looked up on the caller's PATH (or given
--- as a path). Misuse raises a string; a program that cannot be started raises a
--- myrmex.errors object (NotFound, Forbidden, Engine); Ctrl-C kills the child and raises
--- Interrupted. A non-zero exit is not an error: look at `status`.
---@param opts myrmex.ProcessOptions
---@return myrmex.ProcessResult
function M.run(opts)
  if type(opts) ~= "table" then
    error("process.run: options table expected, got " .. type(opts), 2)
  end
  return core.run(opts)
end

--- The path of an executable named `name` on PATH (or on `path`), or nil.
---@param name string
---@param path? string a PATH-style list to search instead of $PATH
---@return string|nil
function M.which(name, path)
  if type(name) ~= "string" then
    error("process.which: name must be a string, got " .. type(name), 2)
  end
  return core.which(name, path)
end

--- The current environment with `overrides` applied (a value of false removes a variable),
--- for `env=` when a child needs most of ours plus a few changes.
---@param overrides? table<string, string|false>
---@return table<string,string>
function M.environ(overrides)
  local env = require("myrmex.core.runtime").environ()
  for k, v in pairs(overrides or {}) do
    if v == false then env[k] = nil else env[k] = tostring(v) end
  end
  return env
end

--- One line describing how a run ended ("exit 2", "killed by signal 9 after timeout").
---@param res myrmex.ProcessResult
---@return string
function M.describe(res)
  local how
  if res.status then how = "exit " .. res.status else how = "killed by signal " .. tostring(res.signal) end
  if res.timed_out then how = how .. " after timeout" end
  if res.overflow then how = how .. " (" .. res.overflow .. " exceeded max_output)" end
  return how
end

return M
