--- Dockerfiles: parse, lint and generate. See docs/dockerfile.md.
---
--- parse() follows BuildKit's Dockerfile frontend: parser directives, line continuations with
--- the escape character, heredocs, flags such as `RUN --mount=...`, JSON (exec) and shell
--- forms, and ARG/ENV substitution in the instructions that expand variables. lint() runs
--- hadolint's best-known rules (same ids) on that parse, so heredoc bodies and cache mounts
--- are understood instead of guessed at. generate() writes multi-stage, non-root Dockerfiles
--- with a matching .dockerignore.
local json = require("myrmex.json")
local check = require("myrmex.check")

local M = {}

-- ------------------------------------------------------------------ small helpers

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function split_lines(text)
  local lines = {}
  for line in (text:gsub("\r\n", "\n") .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  if lines[#lines] == "" then lines[#lines] = nil end
  return lines
end

local function parse_error(line, msg)
  error(("dockerfile.parse: line %d: %s"):format(line, msg), 0)
end

local set_of = check.set

-- ------------------------------------------------------------------ directives

local DIRECTIVES = { syntax = true, escape = true, check = true }

--- Parser directives are `# name=value` comments at the very top; the first line that is
--- not one (another comment, a blank line, an instruction) ends them, as in BuildKit.
local function read_directives(lines)
  local found, i = {}, 1
  while i <= #lines do
    local name, value = lines[i]:match("^%s*#%s*([%a_]+)%s*=%s*(.-)%s*$")
    if not name or not DIRECTIVES[name:lower()] then break end
    name = name:lower()
    if found[name] then parse_error(i, "only one " .. name .. " directive is allowed") end
    found[name] = value
    i = i + 1
  end
  local escape = found.escape or "\\"
  if escape ~= "\\" and escape ~= "`" then
    parse_error(1, "invalid escape directive '" .. escape .. "' (\\ or ` expected)")
  end
  return found, escape, i
end

-- ------------------------------------------------------------------ heredocs

local HEREDOC_CMDS = { RUN = true, COPY = true, ADD = true }

--- Heredoc markers (<<EOF, <<-EOF, <<"EOF") outside quotes in an instruction's text.
local function find_heredocs(text)
  local docs, i, quote = {}, 1, nil
  while i <= #text do
    local c = text:sub(i, i)
    if quote then
      if c == quote then quote = nil elseif c == "\\" and quote == '"' then i = i + 1 end
    elseif c == "'" or c == '"' then
      quote = c
    elseif text:sub(i, i + 1) == "<<" and text:sub(i + 2, i + 2) ~= "<" then
      local dash, q, name, stop = text:match("^<<(%-?)%s*([\"']?)([%w_][%w_%.%-]*)%2()", i)
      if name then
        docs[#docs + 1] = { name = name, strip_tabs = dash == "-", expand = q == "",
          marker = text:sub(i, stop - 1) }
        i = stop - 1
      end
    end
    i = i + 1
  end
  return docs
end

--- Read each heredoc's body from the lines after the instruction; returns the next line.
local function read_heredoc_bodies(lines, i, docs, start_line)
  for _, doc in ipairs(docs) do
    local body = {}
    doc.line = i
    while true do
      local line = lines[i]
      if line == nil then
        parse_error(start_line, "heredoc <<" .. doc.name .. " is not terminated")
      end
      local cmp = doc.strip_tabs and line:gsub("^\t+", "") or line
      i = i + 1
      if cmp == doc.name then break end
      body[#body + 1] = doc.strip_tabs and cmp or line
    end
    doc.content = #body > 0 and (table.concat(body, "\n") .. "\n") or ""
  end
  return i
end

-- ------------------------------------------------------------------ logical lines

local function is_comment(line) return line:match("^%s*#") ~= nil end
local function is_blank(line) return line:match("^%s*$") ~= nil end

--- The text of a line that ends with the escape character (maybe followed by blanks),
--- without it; nil when the line does not continue.
local function continued(line, escape)
  local stripped = line:gsub("[ \t]+$", "")
  local n = #stripped - #stripped:gsub("%" .. escape .. "+$", "")
  -- An escaped escape (`x\\`) ends the line: only an odd count continues it.
  if n % 2 == 1 then return stripped:sub(1, -2) end
  return nil
end

--- Join one instruction's physical lines. Comment and blank lines inside a continuation are
--- dropped, as BuildKit does. Returns the joined text, the last line used and the raw lines.
local function join_continuations(lines, i, escape)
  local parts, raw = {}, { lines[i] }
  local text = lines[i]
  while true do
    local head = continued(text, escape)
    if not head then
      parts[#parts + 1] = text
      break
    end
    parts[#parts + 1] = head
    repeat
      i = i + 1
      raw[#raw + 1] = lines[i]
    until lines[i] == nil or not (is_comment(lines[i]) or is_blank(lines[i]))
    if lines[i] == nil then break end
    text = lines[i]
  end
  return table.concat(parts), i, raw
end

-- ------------------------------------------------------------------ flags and forms

--- Leading `--name=value` / `--name` flags of an instruction.
local function take_flags(args)
  local flags = {}
  while true do
    local name, value, rest = args:match("^%-%-([%w%-]+)=(%S*)%s*(.*)$")
    if not name then
      name, rest = args:match("^%-%-([%w%-]+)%s+(.*)$")
      if not name then name, rest = args:match("^%-%-([%w%-]+)$"), "" end
      value = true
    end
    if not name then return flags, args end
    flags[#flags + 1] = { name = name, value = value }
    args = rest
  end
end

--- `type=cache,target=/root/.cache,sharing=locked` -> {type=, target=, ...}; BuildKit's
--- aliases (dst, destination -> target; src -> source) are folded in.
local ALIASES = { dst = "target", destination = "target", src = "source" }
local function parse_mount(value)
  local m = {}
  for item in tostring(value):gmatch("[^,]+") do
    local k, v = item:match("^([^=]+)=(.*)$")
    k = k or item
    k = ALIASES[k] or k
    m[k] = v or true
  end
  m.type = m.type or "bind"
  return m
end

local function exec_form(args)
  if not args:match("^%s*%[") then return nil end
  local ok, v = pcall(json.decode, args)
  if not ok or type(v) ~= "table" then return nil end
  for i = 1, #v do if type(v[i]) ~= "string" then return nil end end
  for k in pairs(v) do if math.type(k) ~= "integer" then return nil end end
  return v
end

-- ------------------------------------------------------------------ words and variables

--- Split a string into words honouring quotes and the escape character; quotes removed.
local function words(s, escape)
  local out, cur, i, quote, have = {}, {}, 1, nil, false
  escape = escape or "\\"
  while i <= #s do
    local c = s:sub(i, i)
    if quote then
      if c == quote then quote = nil
      elseif c == escape and quote == '"' and i < #s then i = i + 1; cur[#cur + 1] = s:sub(i, i)
      else cur[#cur + 1] = c end
    elseif c == "'" or c == '"' then quote, have = c, true
    elseif c == escape and i < #s then i = i + 1; cur[#cur + 1] = s:sub(i, i); have = true
    elseif c:match("%s") then
      if have or #cur > 0 then out[#out + 1] = table.concat(cur) end
      cur, have = {}, false
    else cur[#cur + 1] = c; have = true end
    i = i + 1
  end
  if have or #cur > 0 then out[#out + 1] = table.concat(cur) end
  return out
end

local var_ref -- defined below; expand and var_ref call each other

--- Expand $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt} (and - / + without the colon) with
--- `vars`; nothing inside single quotes; escape-$ is a literal $.

local function expand(s, vars, escape)
  local out, i, squote = {}, 1, false
  escape = escape or "\\"
  while i <= #s do
    local c = s:sub(i, i)
    if c == escape and s:sub(i + 1, i + 1) == "$" then
      out[#out + 1] = escape .. "$"
      i = i + 2
    elseif c == "'" then
      squote = not squote
      out[#out + 1] = c
      i = i + 1
    elseif c == "$" and not squote and var_ref(s, i, vars, escape) then
      local v, stop = var_ref(s, i, vars, escape)
      out[#out + 1] = v
      i = stop
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

--- One reference at s[i] == "$": its value and the index after it, or nil.
function var_ref(s, i, vars, escape)
  -- Names as BuildKit reads them: letters and digits in the Unicode sense (approximated by
  -- any non-ASCII byte) and _, or digits alone ($1), or one special parameter ($$, $@...).
  local name, op, word, stop = s:match("^%${([%a_\128-\255][%w_\128-\255]*)(:?[%-+]?)([^}]*)}()", i)
  if not name then
    op, word = "", ""
    name, stop = s:match("^%$([%a_\128-\255][%w_\128-\255]*)()", i)
    if not name then name, stop = s:match("^%$(%d+)()", i) end
    if not name then name, stop = s:match("^%$([@*#?!$%-])()", i) end
  end
  if not name then return nil end
  local v = vars[name]
  local set = v ~= nil and (v ~= "" or op:sub(1, 1) ~= ":")
  if op:find("-", 1, true) then v = set and v or expand(word, vars, escape)
  elseif op:find("+", 1, true) then v = set and expand(word, vars, escape) or ""
  end
  return v or "", stop
end

--- Words as BuildKit's shell lexer makes them for ENV and LABEL: quotes removed, variables
--- expanded inside a word (a value with spaces stays one word), nothing expanded in single
--- quotes, and inside double quotes the escape character only escapes ", $ and itself.
--- keep_space makes the whole text one word (the legacy `ENV key value` form).
local function lex(s, escape, vars, keep_space)
  local out, cur, i, quote, have = {}, {}, 1, nil, false
  while i <= #s do
    local c = s:sub(i, i)
    local nxt = s:sub(i + 1, i + 1)
    if quote == "'" then
      if c == "'" then quote = nil else cur[#cur + 1] = c end
    elseif c == escape and i < #s and (not quote or nxt == '"' or nxt == "$" or nxt == escape) then
      cur[#cur + 1] = nxt
      have = true
      i = i + 1
    elseif c == '"' then
      if quote then quote = nil else quote = '"' end
      have = true
    elseif c == "'" then
      quote, have = "'", true
    elseif c == "$" and var_ref(s, i, vars, escape) then
      local v, stop = var_ref(s, i, vars, escape)
      cur[#cur + 1] = v
      have = true
      i = stop - 1
    elseif c:match("%s") and not quote and not keep_space then
      if have then out[#out + 1] = table.concat(cur) end
      cur, have = {}, false
    else
      cur[#cur + 1] = c
      have = true
    end
    i = i + 1
  end
  if have then out[#out + 1] = table.concat(cur) end
  return out
end

--- `k=v k2="v 2"` or the legacy `k v` form of ENV and LABEL: {{key, value}, ...}. All values
--- see the variables as they were before the instruction, as in Docker.
local function key_values(args, vars, escape)
  local key, rest = args:match("^%s*([^%s=]+)%s+(.-)%s*$")
  if key then return { { key, lex(rest, escape, vars, true)[1] or "" } } end
  local out = {}
  for _, w in ipairs(lex(args, escape, vars)) do
    local k, v = w:match("^([^=]+)=(.*)$")
    if k then out[#out + 1] = { k, v } end
  end
  return out
end

-- ------------------------------------------------------------------ stages and state

local EXPANDS = { ADD = true, COPY = true, ENV = true, EXPOSE = true, FROM = true, LABEL = true,
  STOPSIGNAL = true, USER = true, VOLUME = true, WORKDIR = true }

local function copy_table(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

--- Apply one instruction to the parse state (stages, ARG and ENV scopes).
local function apply(state, ins)
  local cmd, esc = ins.cmd, state.escape
  if cmd == "FROM" then
    local w = lex(ins.args, esc, state.global_args)
    local image = w[1] or ""
    local name = (w[2] and w[2]:upper() == "AS") and w[3] or nil
    local base
    for _, st in ipairs(state.stages) do
      if st.name and st.name:lower() == image:lower() then base = st end
    end
    local stage = { index = #state.stages + 1, name = name and name:lower(), image = image,
      raw_image = words(ins.args, esc)[1], line = ins.line, instructions = {}, base_stage = base and base.index,
      env = copy_table(base and base.env), args = {} }
    for _, f in ipairs(ins.flags) do
      if f.name == "platform" then stage.platform = expand(f.value, state.global_args, esc) end
    end
    state.stages[#state.stages + 1] = stage
    state.current = stage
    ins.expanded = image
    return
  end
  local stage = state.current
  local scope = stage and copy_table(stage.args) or state.global_args
  if stage then for k, v in pairs(stage.env) do scope[k] = v end end
  if cmd == "ARG" then
    for _, w in ipairs(words(ins.args, esc)) do
      local name, default = w:match("^([^=]+)=(.*)$")
      name = name or w
      local value = state.build_args[name]
      if value == nil and default then value = expand(default, scope, esc) end
      if value == nil and stage then value = state.global_args[name] end
      if stage then stage.args[name] = value or "" else state.global_args[name] = value end
    end
  elseif EXPANDS[cmd] then
    -- As BuildKit: one processed word for WORKDIR, USER, STOPSIGNAL...; words for the rest.
    ins.expanded = lex(ins.args, esc, scope, true)[1] or ""
    ins.words = ins.json or lex(ins.args, esc, scope)
  end
  if cmd == "ENV" or cmd == "LABEL" then
    ins.pairs = key_values(ins.args, scope, esc)
    if cmd == "ENV" and stage then
      for _, kv in ipairs(ins.pairs) do stage.env[kv[1]] = kv[2] end
    end
  end
  if stage then
    stage.instructions[#stage.instructions + 1] = ins
    ins.stage = stage.index
  elseif cmd ~= "ARG" then
    parse_error(ins.line, cmd .. " before the first FROM (only ARG may come first)")
  end
end

local KNOWN = set_of({ "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
  "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
  "WORKDIR" })

--- Turn one logical line into an instruction record.
local function make_instruction(text, line, end_line, raw, comments)
  local cmd, rest = text:match("^%s*(%S+)%s*(.-)%s*$")
  if not KNOWN[cmd:upper()] then parse_error(line, "unknown instruction: " .. cmd) end
  local flags, args = take_flags(rest)
  local ins = { cmd = cmd:upper(), line = line, end_line = end_line, original = table.concat(raw, "\n"),
    args = args, flags = flags, comments = comments }
  ins.json = exec_form(args)
  ins.form = ins.json and "exec" or "shell"
  if ins.cmd == "RUN" then
    ins.mounts = {}
    for _, f in ipairs(flags) do
      if f.name == "mount" then ins.mounts[#ins.mounts + 1] = parse_mount(f.value) end
    end
  end
  return ins
end

---@class myrmex.DockerfileInstruction
---@field cmd string upper-case instruction name
---@field line integer first line (1-based)
---@field end_line integer last line, heredoc bodies included
---@field original string the physical lines as written
---@field args string arguments after the flags, continuations joined
---@field flags {name:string, value:string|boolean}[]
---@field form "exec"|"shell"
---@field json string[]|nil exec-form arguments
---@field heredocs {name:string, content:string, strip_tabs:boolean, expand:boolean,
---  line:integer}[]
---@field mounts table[]|nil RUN --mount flags parsed (type, target, ...)
---@field expanded string|nil args as one word after quote removal and ARG/ENV substitution
---  (instructions that expand: ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR)
---@field words string[]|nil the same arguments split into words (exec form: the JSON list)
---@field pairs string[][]|nil ENV and LABEL: {{key, value}, ...} unquoted and substituted
---@field comments string[] comment lines right above the instruction
---@field stage integer|nil index of the stage it belongs to
---@field trigger myrmex.DockerfileInstruction|nil ONBUILD only: the instruction it registers

---@class myrmex.Dockerfile
---@field directives table<string,string> syntax, escape, check
---@field escape string
---@field instructions myrmex.DockerfileInstruction[]
---@field stages table[]
---@field args table<string,string> global ARGs

local PARSE_OPTS = { args = "table" }

--- Parse a Dockerfile. Raises "dockerfile.parse: line N: ..." on syntax errors.
---@param text string
---@param opts? {args?: table<string,string>} build arguments (override ARG defaults)
---@return myrmex.Dockerfile
function M.parse(text, opts)
  if type(text) ~= "string" then
    error("dockerfile.parse: text must be a string, got " .. type(text), 2)
  end
  opts = check.options("dockerfile", "parse", opts, PARSE_OPTS)
  local lines = split_lines((text:gsub("^\xEF\xBB\xBF", ""))) -- BuildKit ignores a UTF-8 BOM
  local directives, escape, i = read_directives(lines)
  local state = { escape = escape, stages = {}, global_args = {},
    build_args = copy_table(opts.args) }
  local instructions, comments = {}, {}
  while i <= #lines do
    local line = lines[i]
    if is_blank(line) then
      comments = {}
      i = i + 1
    elseif is_comment(line) then
      comments[#comments + 1] = trim(line)
      i = i + 1
    else
      local start = i
      local joined, last, raw = join_continuations(lines, i, escape)
      last = math.min(last, #lines)
      i = last + 1
      local ins = make_instruction(joined, start, last, raw, comments)
      ins.heredocs = {}
      if HEREDOC_CMDS[ins.cmd] then
        ins.heredocs = find_heredocs(ins.args)
        if #ins.heredocs > 0 then
          i = read_heredoc_bodies(lines, i, ins.heredocs, start)
          ins.end_line = i - 1
        end
      end
      if ins.cmd == "ONBUILD" and ins.args:match("%S") then
        -- The trigger runs in a downstream build; it is kept parsed (not applied) for lint.
        ins.trigger = make_instruction(ins.args, start, ins.end_line, raw, {})
        ins.trigger.heredocs = {}
      end
      apply(state, ins)
      if ins.trigger then ins.trigger.stage = ins.stage end
      instructions[#instructions + 1] = ins
      comments = {}
    end
  end
  if #state.stages == 0 then parse_error(#lines + 1, "no FROM instruction") end
  return { directives = directives, escape = escape, instructions = instructions,
    stages = state.stages, args = state.global_args }
end

-- ------------------------------------------------------------------ lint

---@class myrmex.LintFinding
---@field rule string rule id: hadolint's (DL3006, ...), ShellCheck's (SC2086) or ours (MX001)
---@field line integer
---@field column integer|nil for ShellCheck findings inside a heredoc body
---@field severity "error"|"warning"|"info"|"style"
---@field message string

---@class myrmex.LintOptions
---@field args? table<string,string> build arguments, as for parse
---@field ignore? string[]|table<string,boolean> rule ids not to run or report
---@field override? table<string,string[]> severity -> rule ids: {error={"DL3008"}}
---@field trusted_registries? string[] registries DL3026 allows (`*.corp.example` matches subdomains)
---@field label_schema? table<string,string> label -> text|url|semver|hash|rfc3339|spdx|email
---@field strict_labels? boolean labels outside label_schema are DL3050 findings
---@field disable_ignore_pragma? boolean `# hadolint ignore=` comments are not honoured
---@field shell? boolean|string false: no ShellCheck; a path: that shellcheck binary

local LINT_OPTS = { args = "table", ignore = "table", override = "table", trusted_registries = "table",
  label_schema = "table", strict_labels = "boolean", disable_ignore_pragma = "boolean",
  shell = "boolean|string" }

--- Lint a Dockerfile. A syntax error is returned as one finding with rule DL1000 (DL3061
--- for an instruction before the first FROM).
---@param text string
---@param opts? myrmex.LintOptions
---@return myrmex.LintFinding[]
function M.lint(text, opts)
  if type(text) ~= "string" then
    error("dockerfile.lint: text must be a string, got " .. type(text), 2)
  end
  opts = check.options("dockerfile", "lint", opts, LINT_OPTS)
  local ok, res = pcall(require("myrmex.dockerfile.lint").lint, text, opts)
  if not ok then error(res, 2) end
  return res
end

--- The rules lint() knows: {id=, severity=, summary=} in a stable order (by id).
---@return {id:string, severity:string, summary:string}[]
function M.rules()
  local out = {}
  for _, r in ipairs(require("myrmex.dockerfile.rules").list) do
    out[#out + 1] = { id = r.id, severity = r.severity, summary = r.summary }
  end
  return out
end

--- True when a finding is at or above `threshold`, as hadolint's --failure-threshold decides
--- its exit status. `none` never fails.
---@param findings myrmex.LintFinding[]
---@param threshold? "error"|"warning"|"info"|"style"|"ignore"|"none" default info
---@return boolean
function M.fails(findings, threshold)
  return require("myrmex.dockerfile.lint").fails(findings, threshold)
end

--- hadolint's configuration: `.hadolint.yaml` (opts.file, or the first of hadolint's default
--- places), then the HADOLINT_* environment variables. Returns {lint=<options for lint>,
--- failure_threshold=, format=, no_fail=, no_color=, file=}.
---@param opts? {file?: string, env?: boolean}
---@return table
function M.config(opts)
  opts = check.options("dockerfile", "config", opts, { file = "string", env = "boolean" })
  return require("myrmex.dockerfile.lint").config(opts)
end

--- Findings as text in one of hadolint's output formats: tty, json, checkstyle, codeclimate,
--- gitlab_codeclimate, sarif, sonarqube. A finding's `file` (or opts.file) names its file.
---@param findings myrmex.LintFinding[]
---@param fmt string
---@param opts? {file?: string, color?: boolean}
---@return string
function M.format(findings, fmt, opts)
  opts = check.options("dockerfile", "format", opts, { file = "string", color = "boolean" })
  local formats = require("myrmex.dockerfile.format")
  if type(fmt) ~= "string" or not formats[fmt] then
    error("dockerfile.format: format must be one of " .. table.concat(formats.NAMES, ", ") .. ", got "
      .. tostring(fmt), 2)
  end
  return formats[fmt](findings, opts)
end

-- ------------------------------------------------------------------ generate

--- Pinned defaults: a reproducible tag for every base image generate() writes.
M.defaults = {
  go = { version = "1.23.4", runtime = "gcr.io/distroless/static-debian12:nonroot" },
  python = { version = "3.12.8" },
  node = { version = "22.12.0" },
  static = { image = "busybox:1.37.0" },
  c = { builder = "debian:12.8-slim", distroless = "gcr.io/distroless/static-debian12:nonroot" },
}

local COMMON_IGNORE = { ".git", ".gitignore", ".dockerignore", "Dockerfile", "**/*.log", ".env",
  ".env.*", "**/*.pem", "**/*.key", "**/id_rsa*", ".vscode", ".idea", "**/.DS_Store" }

local LANG_IGNORE = {
  go = { "**/*_test.go", "bin/", "vendor/" },
  python = { "**/__pycache__", "**/*.pyc", ".venv", "venv", ".pytest_cache", ".mypy_cache",
    "dist/", "build/", "*.egg-info" },
  node = { "node_modules", "npm-debug.log*", "coverage", ".next/cache", "dist/" },
  c = { "build/", "**/*.o", "**/*.a" },
  cpp = { "build/", "**/*.o", "**/*.a" },
  static = {},
}

local GEN_KEYS = set_of({ "language", "version", "entrypoint", "packages", "user", "ports",
  "healthcheck", "binary", "runtime", "cmd", "workdir", "requirements", "build", "public" })

local function json_array(list)
  local parts = {}
  for _, v in ipairs(list) do parts[#parts + 1] = json.encode(tostring(v)) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local function as_list(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

local function user_line(spec, default)
  return "USER " .. (spec.user or default)
end

local function expose_lines(out, spec)
  for _, p in ipairs(as_list(spec.ports)) do out[#out + 1] = "EXPOSE " .. tostring(p) end
end

local function healthcheck_line(out, spec, probe)
  if spec.healthcheck == false then return end
  local cmd = spec.healthcheck
  if type(cmd) == "string" then cmd = { "CMD-SHELL", cmd }
  elseif type(cmd) == "table" then cmd = { "CMD", table.unpack(cmd) }
  elseif probe and #as_list(spec.ports) > 0 then cmd = probe(as_list(spec.ports)[1])
  end
  if cmd then
    out[#out + 1] = "HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \\"
    out[#out + 1] = "  CMD " .. (cmd[1] == "CMD-SHELL" and cmd[2] or json_array({ table.unpack(cmd, 2) }))
  end
end

-- Debian's archive keeps only the current version of a package, so a pinned `pkg=1.2-3`
-- breaks the build at the next point release; the pinned base image tag is what fixes the
-- release. DL3008 is therefore silenced, visibly, on this one instruction.
local function apt_install(packages)
  if #packages == 0 then return nil end
  return "# hadolint ignore=DL3008\n"
    .. "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n"
    .. "    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\\n"
    .. "    rm -f /etc/apt/apt.conf.d/docker-clean \\\n"
    .. "    && apt-get update \\\n"
    .. "    && apt-get install -y --no-install-recommends " .. table.concat(packages, " ")
end

local GENERATORS = {}

--- C or C++: a prebuilt static binary (spec.binary) goes on scratch alone; otherwise a
--- Debian builder compiles it with `make` (spec.build overrides the command) and only the
--- static binary is copied to scratch.
function GENERATORS.c(spec, out)
  local name = spec.entrypoint or (spec.binary and spec.binary:match("[^/]+$")) or "app"
  if not spec.binary then
    local builder = spec.version and ("gcc:" .. spec.version) or M.defaults.c.builder
    out[#out + 1] = "FROM " .. builder .. " AS build"
    -- The gcc images have the toolchain already; plain Debian needs build-essential.
    local pk = builder:match("^debian") and { "build-essential" } or {}
    for _, p in ipairs(as_list(spec.packages)) do pk[#pk + 1] = p end
    out[#out + 1] = apt_install(pk)
    out[#out + 1] = "WORKDIR /src"
    out[#out + 1] = "COPY . ."
    out[#out + 1] = "RUN " .. (spec.build or ("make LDFLAGS=-static && strip " .. name))
    out[#out + 1] = ""
  end
  local distroless = spec.runtime == "distroless"
  if spec.runtime ~= nil and spec.runtime ~= "scratch" and not distroless then
    error("dockerfile.generate: spec.runtime: 'scratch' or 'distroless' expected, got "
      .. tostring(spec.runtime), 3)
  end
  out[#out + 1] = "FROM " .. (distroless and M.defaults.c.distroless or "scratch")
  if spec.binary then
    out[#out + 1] = "COPY " .. spec.binary .. " /" .. name
  else
    out[#out + 1] = "COPY --from=build /src/" .. name .. " /" .. name
  end
  expose_lines(out, spec)
  out[#out + 1] = user_line(spec, distroless and "65532:65532" or "65534:65534")
  local ep = { "/" .. name }
  for _, a in ipairs(as_list(spec.cmd)) do ep[#ep + 1] = a end
  out[#out + 1] = "ENTRYPOINT " .. json_array(ep)
end
GENERATORS.cpp = GENERATORS.c

function GENERATORS.go(spec, out)
  local version = spec.version or M.defaults.go.version
  local name = spec.entrypoint or "app"
  out[#out + 1] = "FROM golang:" .. version .. "-bookworm AS build"
  out[#out + 1] = "WORKDIR /src"
  out[#out + 1] = "ENV CGO_ENABLED=0"
  out[#out + 1] = "COPY go.mod go.sum* ./" -- a module without dependencies has no go.sum
  out[#out + 1] = "RUN --mount=type=cache,target=/go/pkg/mod go mod download"
  out[#out + 1] = "COPY . ."
  out[#out + 1] = "RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \\"
  out[#out + 1] = "    go build -trimpath -ldflags=\"-s -w\" -o /out/" .. name .. " " .. (spec.build or "./...")
  out[#out + 1] = ""
  out[#out + 1] = "FROM " .. M.defaults.go.runtime
  out[#out + 1] = "COPY --from=build /out/" .. name .. " /" .. name
  expose_lines(out, spec)
  out[#out + 1] = user_line(spec, "65532:65532")
  if type(spec.healthcheck) == "table" or type(spec.healthcheck) == "string" then
    healthcheck_line(out, spec)
  end
  local ep = { "/" .. name }
  for _, a in ipairs(as_list(spec.cmd)) do ep[#ep + 1] = a end
  out[#out + 1] = "ENTRYPOINT " .. json_array(ep)
end

function GENERATORS.python(spec, out)
  local version = spec.version or M.defaults.python.version
  local image = "python:" .. version .. "-slim-bookworm"
  local req = spec.requirements or "requirements.txt"
  out[#out + 1] = "FROM " .. image .. " AS build"
  local native = as_list(spec.packages)
  if #native > 0 then out[#out + 1] = apt_install(native) end
  out[#out + 1] = "WORKDIR /build"
  out[#out + 1] = "RUN python -m venv /venv"
  out[#out + 1] = "ENV PATH=/venv/bin:$PATH"
  out[#out + 1] = "COPY " .. req .. " ./"
  out[#out + 1] = "RUN --mount=type=cache,target=/root/.cache/pip pip install -r " .. req:match("[^/]+$")
  out[#out + 1] = ""
  out[#out + 1] = "FROM " .. image
  out[#out + 1] = "ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1"
  out[#out + 1] = "RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app"
  out[#out + 1] = "WORKDIR " .. (spec.workdir or "/app")
  out[#out + 1] = "COPY --from=build /venv /venv"
  out[#out + 1] = "COPY . ."
  expose_lines(out, spec)
  out[#out + 1] = user_line(spec, "10001:10001")
  healthcheck_line(out, spec, function(port)
    return { "CMD", "python", "-c",
      ("import urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/', timeout=2)"):format(port) }
  end)
  local ep = { "python", spec.entrypoint or "main.py" }
  for _, a in ipairs(as_list(spec.cmd)) do ep[#ep + 1] = a end
  out[#out + 1] = "CMD " .. json_array(ep)
end

function GENERATORS.node(spec, out)
  local version = spec.version or M.defaults.node.version
  local image = "node:" .. version .. "-bookworm-slim"
  out[#out + 1] = "FROM " .. image .. " AS build"
  out[#out + 1] = "WORKDIR /app"
  out[#out + 1] = "COPY package.json package-lock.json* ./"
  out[#out + 1] = "RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev"
  out[#out + 1] = ""
  out[#out + 1] = "FROM " .. image
  out[#out + 1] = "ENV NODE_ENV=production"
  out[#out + 1] = "WORKDIR /app"
  out[#out + 1] = "COPY --from=build --chown=node:node /app/node_modules ./node_modules"
  out[#out + 1] = "COPY --chown=node:node . ."
  expose_lines(out, spec)
  out[#out + 1] = user_line(spec, "node")
  healthcheck_line(out, spec, function(port)
    return { "CMD", "node", "-e",
      ("fetch('http://127.0.0.1:%s/').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"):format(port) }
  end)
  local ep = { "node", spec.entrypoint or "index.js" }
  for _, a in ipairs(as_list(spec.cmd)) do ep[#ep + 1] = a end
  out[#out + 1] = "CMD " .. json_array(ep)
end

--- Static files served by busybox httpd as an unprivileged user on port 8080.
function GENERATORS.static(spec, out)
  local port = as_list(spec.ports)[1] or 8080
  spec.ports = { port }
  out[#out + 1] = "FROM " .. (spec.version and ("busybox:" .. spec.version) or M.defaults.static.image)
  out[#out + 1] = "COPY " .. (spec.public or ".") .. " /www/"
  expose_lines(out, spec)
  out[#out + 1] = user_line(spec, "65534:65534")
  healthcheck_line(out, spec, function(p)
    return { "CMD", "wget", "-q", "--spider", "http://127.0.0.1:" .. p .. "/" }
  end)
  out[#out + 1] = "ENTRYPOINT " .. json_array({ "httpd", "-f", "-v", "-p", tostring(port), "-h", "/www" })
end

---@class myrmex.DockerfileSpec
---@field language "c"|"cpp"|"go"|"python"|"node"|"static"
---@field version? string
---@field entrypoint? string
---@field packages? string[]
---@field user? string
---@field ports? integer[]
---@field healthcheck? string|string[]|false
---@field binary? string
---@field runtime? "scratch"|"distroless"
---@field cmd? string[]
---@field build? string
---@field requirements? string
---@field public? string
---@field workdir? string

--- Write a Dockerfile and its .dockerignore for a language.
---@param spec myrmex.DockerfileSpec
---@return {dockerfile: string, dockerignore: string}
function M.generate(spec)
  check.fields("dockerfile", "generate", "spec", spec, GEN_KEYS)
  local lang = spec.language
  local gen = GENERATORS[lang]
  if not gen then
    error("dockerfile.generate: spec.language: one of c, cpp, go, python, node, static expected, got "
      .. tostring(lang), 2)
  end
  local s = copy_table(spec)
  local out = { "# Generated by myrmex dockerfile.generate{language=\"" .. lang .. "\"}" }
  gen(s, out)
  local ignore = {}
  for _, p in ipairs(COMMON_IGNORE) do ignore[#ignore + 1] = p end
  for _, p in ipairs(LANG_IGNORE[lang]) do ignore[#ignore + 1] = p end
  if spec.binary then
    -- Only the binary is needed: send nothing else to the daemon.
    ignore = { "*", "!" .. spec.binary }
  end
  return { dockerfile = table.concat(out, "\n") .. "\n", dockerignore = table.concat(ignore, "\n") .. "\n" }
end

-- Exposed for tests and for other modules (image.optimize reads RUN lines with it).
M._shell_commands = require("myrmex.dockerfile.shell").split
M._expand = expand

return M
