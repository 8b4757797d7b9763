--- CI ergonomics: JUnit XML of the steps, GitHub Actions annotations and job summary.
--- See docs/ci.md.
local rt = require("myrmex.core.runtime")
local log = require("myrmex.log")

local M = {}

local function xml_escape(s)
  s = log.redact(tostring(s))
  -- XML 1.0 cannot carry most control characters at all, even escaped.
  s = s:gsub("[%z\1-\8\11\12\14-\31]", "?")
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&apos;" }))
end
M.xml_escape = xml_escape

--- The JUnit XML text for a run: one testcase per step (with its time and failure message),
--- or one testcase for the whole recipe when it has no steps.
---@param t {name:string, steps:table[], duration:number, error?:string}
---@return string
function M.junit_xml(t)
  local cases = {}
  local steps = t.steps
  if #steps == 0 then
    steps = { { name = t.name, ok = t.error == nil, duration = t.duration, error = t.error } }
  end
  local failures = 0
  for _, s in ipairs(steps) do
    local body = ""
    if not s.ok then
      failures = failures + 1
      local msg = s.error or t.error or "failed"
      body = string.format('\n      <failure message="%s" type="%s">%s</failure>\n    ',
        xml_escape(msg:match("^[^\n]*")), xml_escape(s.code or "error"), xml_escape(msg))
    end
    cases[#cases + 1] = string.format(
      '    <testcase classname="%s" name="%s" time="%.3f">%s</testcase>',
      xml_escape(t.name), xml_escape(s.name), s.duration or 0, body)
  end
  -- A failure outside any step (before the first, or between steps) is a case of its own.
  if t.error and failures == 0 then
    failures = 1
    cases[#cases + 1] = string.format('    <testcase classname="%s" name="(recipe)" time="0.000">'
      .. '\n      <failure message="%s" type="error">%s</failure>\n    </testcase>',
      xml_escape(t.name), xml_escape(t.error:match("^[^\n]*")), xml_escape(t.error))
  end
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>',
    string.format('<testsuites name="myrmex" tests="%d" failures="%d" time="%.3f">', #cases, failures,
      t.duration),
    string.format('  <testsuite name="%s" tests="%d" failures="%d" errors="0" time="%.3f" timestamp="%s"'
      .. ' hostname="%s">', xml_escape(t.name), #cases, failures, t.duration,
      os.date("!%Y-%m-%dT%H:%M:%S"), xml_escape(rt.hostname())),
    table.concat(cases, "\n"),
    "  </testsuite>",
    "</testsuites>",
    "",
  }, "\n")
end

--- Write a file completely or not at all (a temporary file renamed into place).
---@param path string
---@param text string
function M.write_atomic(path, text)
  local tmp = path .. ".part"
  local f, err = io.open(tmp, "wb")
  if not f then error("cannot write " .. path .. ": " .. err, 2) end
  local ok, werr = f:write(text)
  f:close()
  if not ok then
    os.remove(tmp)
    error("cannot write " .. path .. ": " .. tostring(werr), 2)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error("cannot write " .. path .. ": " .. tostring(rerr), 2)
  end
end

--- True when running under GitHub Actions.
---@return boolean
function M.github()
  return os.getenv("GITHUB_ACTIONS") == "true"
end

local function gha_escape_data(s)
  return (log.redact(s):gsub("%%", "%%25"):gsub("\r", "%%0D"):gsub("\n", "%%0A"))
end

local function gha_escape_prop(s)
  return (gha_escape_data(s):gsub(":", "%%3A"):gsub(",", "%%2C"))
end

--- The workflow command line for an annotation: `::error file=F,line=L,title=T::message`.
---@param level "error"|"warning"|"notice"
---@param msg string
---@param loc? {file?:string, line?:integer, title?:string}
---@return string
function M.annotation(level, msg, loc)
  local props = {}
  loc = loc or {}
  if loc.file then props[#props + 1] = "file=" .. gha_escape_prop(loc.file) end
  if loc.line then props[#props + 1] = "line=" .. tostring(loc.line) end
  if loc.title then props[#props + 1] = "title=" .. gha_escape_prop(loc.title) end
  return "::" .. level .. (#props > 0 and (" " .. table.concat(props, ",")) or "") .. "::"
    .. gha_escape_data(msg)
end

--- Under GitHub Actions, turn warn and error log records into annotations on stdout.
---@return fun() remove the hook
function M.annotate_logs()
  return log.add_hook(function(rec)
    if rec.level ~= "warn" and rec.level ~= "error" then return end
    -- A failing step is reported once, by the run's final error record that names it.
    if rec.fields.step and not rec.fields.at and rec.level == "error" then return end
    local file, line = tostring(rec.fields.at or ""):match("^(.-):(%d+)$")
    io.stdout:write(M.annotation(rec.level == "warn" and "warning" or "error", rec.msg,
      { file = file, line = tonumber(line), title = rec.fields.step and ("step " .. rec.fields.step) }), "\n")
    io.stdout:flush()
  end)
end

--- The markdown job summary of a run.
---@param t {name:string, steps:table[], duration:number, error?:string, plan?:table[]}
---@return string
function M.summary_markdown(t)
  local out = { string.format("## myrmex: %s %s", t.name, t.error and "failed" or "succeeded"), "" }
  if #t.steps > 0 then
    out[#out + 1] = "| step | result | time |"
    out[#out + 1] = "|---|---|---|"
    for _, s in ipairs(t.steps) do
      out[#out + 1] = string.format("| %s | %s | %.2f s |", s.name:gsub("|", "\\|"),
        s.ok and "ok" or "**failed**", s.duration or 0)
    end
    out[#out + 1] = ""
  end
  if t.error then out[#out + 1] = "**Error:** `" .. log.redact(t.error):gsub("`", "'") .. "`" end
  if t.plan and #t.plan > 0 then
    out[#out + 1] = ""
    out[#out + 1] = string.format("### Plan (%d actions)", #t.plan)
    for i, a in ipairs(t.plan) do
      out[#out + 1] = string.format("%d. %s %s %s", i, a.engine, a.op, a.target or "")
    end
  end
  out[#out + 1] = string.format("\n_%.2f s_", t.duration)
  return table.concat(out, "\n") .. "\n"
end

--- Append the job summary to $GITHUB_STEP_SUMMARY when it is set.
---@param t table as summary_markdown
function M.write_summary(t)
  local path = os.getenv("GITHUB_STEP_SUMMARY")
  if not path or path == "" then return end
  local f = io.open(path, "a")
  if not f then
    log.warn("cannot append to GITHUB_STEP_SUMMARY", { path = path })
    return
  end
  f:write(M.summary_markdown(t))
  f:close()
end

return M
