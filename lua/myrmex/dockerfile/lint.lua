--- The Dockerfile linter behind dockerfile.lint: runs the rules of myrmex.dockerfile.rules on
--- a parse, applies hadolint's pragmas and configuration (ignored rules, severity overrides,
--- trusted registries, label schema), and runs ShellCheck on the RUN scripts when it is
--- installed. Configuration files and HADOLINT_* variables are read by M.config. See
--- docs/dockerfile.md.
local dockerfile = require("myrmex.dockerfile")
local rules = require("myrmex.dockerfile.rules")
local shell = require("myrmex.dockerfile.shell")
local json = require("myrmex.json")

local M = {}

--- hadolint's severities, most severe first; `ignore` findings are not reported.
M.LEVELS = { "error", "warning", "info", "style", "ignore" }
local RANK = {}
for i, l in ipairs(M.LEVELS) do RANK[l] = i end
RANK.none = 0

-- ------------------------------------------------------------------ facts rules share

local function final_chain(df)
  local chain, st = {}, df.stages[#df.stages]
  while st do
    chain[st.index] = true
    st = st.base_stage and df.stages[st.base_stage]
  end
  return chain
end

--- The stage-wide facts several rules need: RUNs, the SHELL in force, the last USER.
local function lint_context(df, config)
  local ctx = { runs = {}, shell_at = {}, final = final_chain(df), config = config }
  local shells = {}
  for _, st in ipairs(df.stages) do
    shells[st.index] = st.base_stage and shells[st.base_stage] or nil
    for _, ins in ipairs(st.instructions) do
      if ins.cmd == "SHELL" and ins.json then shells[st.index] = ins.json end
      local run = ins.cmd == "RUN" and ins or (ins.trigger and ins.trigger.cmd == "RUN" and ins.trigger)
      if run then
        ctx.runs[#ctx.runs + 1] = run
        ctx.shell_at[run] = shells[st.index]
      end
      if ins.cmd == "USER" and ctx.final[st.index] then ctx.last_user = ins end
    end
  end
  -- A flag value such as --from=$BUILDER, with the global ARGs and the stage's ARGs.
  ctx.expand = function(value, st)
    local vars = {}
    for k, v in pairs(df.args) do vars[k] = v end
    for k, v in pairs(st.args or {}) do vars[k] = v end
    return dockerfile._expand(value, vars, df.escape)
  end
  return ctx
end

-- ------------------------------------------------------------------ pragmas

local function id_list(list)
  local ids = {}
  for id in list:gmatch("[%w]+") do ids[#ids + 1] = id end
  return ids
end

--- `# hadolint ignore=DL3003,SC2086` (also `# ignore=` and `# myrmex ignore=`) directly above
--- an instruction silences those rules for it; `# hadolint global ignore=...` anywhere
--- silences them for the file; `# hadolint shell=bash` names the shell ShellCheck assumes.
local function pragma_of(comment)
  local c = comment:match("^%s*#%s*(.-)%s*$")
  if not c then return nil end
  local list = c:match("^hadolint%s+global%s+ignore%s*=%s*(.+)$")
  if list then return "global", id_list(list) end
  list = c:match("^hadolint%s+ignore%s*=%s*(.+)$") or c:match("^ignore%s*=%s*(.+)$")
    or c:match("^myrmex%s+ignore%s*=%s*(.+)$")
  if list then return "ignore", id_list(list) end
  local sh = c:match("^hadolint%s+shell%s*=%s*(%S+)$")
  if sh then return "shell", sh end
  return nil
end

--- Every pragma of the file: {line=, kind=, ids= | shell=}, from the raw lines (the parse
--- keeps comments only above instructions, without their line numbers).
local function pragmas(text)
  local out, n = {}, 0
  for line in (text:gsub("\r\n", "\n") .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if line:match("^%s*#") then
      local kind, v = pragma_of(line)
      if kind == "shell" then out[#out + 1] = { line = n, kind = kind, shell = v }
      elseif kind then out[#out + 1] = { line = n, kind = kind, ids = v } end
    end
  end
  return out
end

local function inline_ignores(ins)
  local ids = {}
  for _, c in ipairs(ins.comments or {}) do
    local kind, list = pragma_of(c)
    if kind == "ignore" then for _, id in ipairs(list) do ids[id] = true end end
  end
  return ids
end

local function instruction_at(df, line)
  for _, ins in ipairs(df.instructions) do
    if line >= ins.line and line <= ins.end_line then return ins end
  end
  return nil
end

-- ------------------------------------------------------------------ ShellCheck

-- Sourced files are not in the build context ShellCheck sees, and SC2187 (ash is not
-- supported) would fire for every Alpine SHELL: the same exclusions as hadolint.
local SC_EXCLUDE = "SC1090,SC1091,SC2187"

local SHEBANG = { sh = "#!/bin/sh", bash = "#!/bin/bash", dash = "#!/bin/dash", ksh = "#!/bin/ksh",
  ash = "#!/bin/sh", zsh = "#!/bin/bash" }

local function shell_name(sh_json, pragma_shell)
  local exe = pragma_shell or (sh_json and sh_json[1]) or "/bin/sh"
  local name = exe:match("([^/\\]+)$"):lower():gsub("%.exe$", "")
  return name
end

--- Run ShellCheck once over every RUN script of the file: each script is its own file, so
--- one RUN's variables do not leak into the next one's analysis. Findings go to `add`.
local function shellcheck(df, ctx, exe, pragma_shell, add)
  local process = require("myrmex.process")
  local files, map = {}, {}
  local ok, err = pcall(function()
    for _, ins in ipairs(ctx.runs) do
      local name = shell_name(ctx.shell_at[ins], pragma_shell)
      if SHEBANG[name] and rules.posix_shell(ctx.shell_at[ins]) then
        local st = df.stages[ins.stage]
        -- ARG and ENV names in scope are set at run time: declare them so ShellCheck does
        -- not call them unassigned.
        local header = { SHEBANG[name] }
        local names = {}
        for k in pairs(df.args) do names[#names + 1] = k end
        for k in pairs(st.args) do names[#names + 1] = k end
        for k in pairs(st.env) do names[#names + 1] = k end
        table.sort(names)
        local seen = {}
        for _, k in ipairs(names) do
          if not seen[k] and k:match("^[%a_][%w_]*$") then
            header[#header + 1] = "export " .. k .. "=\"${" .. k .. ":-}\""
            seen[k] = true
          end
        end
        for _, piece in ipairs(shell.scripts(ins)) do
          if piece.text:match("%S") then
            local path = os.tmpname()
            local f = assert(io.open(path, "w"))
            local body, head = piece.text, header
            -- A body's own #! line names its shell and must stay the first line: it takes
            -- the header's place and leaves an empty line, so line numbers still match.
            local bang = piece.heredoc and body:match("^(#![^\n]*)")
            if bang then
              head = { bang, table.unpack(header, 2) }
              body = body:sub(#bang + 1)
              head[#head + 1] = ""
              body = body:gsub("^\n", "", 1)
            end
            f:write(table.concat(head, "\n"), "\n", body, body:match("\n$") and "" or "\n")
            f:close()
            files[#files + 1] = path
            map[path] = { ins = ins, piece = piece, offset = bang and #head - 1 or #header }
          end
        end
      end
    end
    if #files == 0 then return end
    local argv = { exe, "--format=json1", "--norc", "--exclude=" .. SC_EXCLUDE }
    for _, p in ipairs(files) do argv[#argv + 1] = p end
    local res = process.run({ argv = argv, timeout = 120, max_output = 64 * 1024 * 1024 })
    -- 0: clean, 1: findings; anything else is shellcheck failing, a failure of the world.
    if res.status ~= 0 and res.status ~= 1 then
      require("myrmex.errors").raise({ code = "Engine", engine = "shellcheck",
        message = "dockerfile.lint: " .. exe .. " " .. process.describe(res) .. ": "
          .. (res.stderr:match("[^\n]*") or "") })
    end
    local decoded, out = pcall(json.decode, res.stdout)
    if not decoded or type(out) ~= "table" then
      require("myrmex.errors").raise({ code = "Engine", engine = "shellcheck",
        message = "dockerfile.lint: " .. exe .. " wrote output that is not its json1 format" })
    end
    for _, c in ipairs(out.comments or {}) do
      local m = map[c.file]
      if m then
        local rel = c.line - m.offset
        -- A heredoc body keeps its lines; the RUN line itself was joined into one line,
        -- so its findings go to the RUN's first line, as hadolint reports them.
        local line = m.piece.heredoc and (m.piece.line + rel - 1) or m.ins.line
        if rel >= 1 then
          add({ rule = ("SC%04d"):format(c.code), line = line, column = m.piece.heredoc and c.column or nil,
            severity = c.level, message = c.message }, m.ins)
        end
      end
    end
  end)
  for _, p in ipairs(files) do os.remove(p) end
  if not ok then error(err, 0) end
end

-- ------------------------------------------------------------------ lint

local function set_from(v)
  local s = {}
  for k, x in pairs(v or {}) do
    if type(k) == "number" then s[x] = true elseif x then s[k] = true end
  end
  return s
end

--- The severity each overridden rule gets: {DL3008="error", ...}.
local function overrides(o)
  local sev = {}
  for level, list in pairs(o or {}) do
    if not RANK[level] or level == "none" then
      error("dockerfile.lint: option override: unknown severity '" .. tostring(level)
        .. "' (error, warning, info, style or ignore)", 0)
    end
    for id in pairs(set_from(list)) do sev[id] = level end
  end
  return sev
end

--- Lint Dockerfile text with validated options (see dockerfile.lint).
---@param text string
---@param opts table
---@return myrmex.LintFinding[]
function M.lint(text, opts)
  local ignore = set_from(opts.ignore)
  local sev = overrides(opts.override)
  local config = { trusted_registries = opts.trusted_registries, label_schema = opts.label_schema,
    strict_labels = opts.strict_labels }
  for name, kind in pairs(opts.label_schema or {}) do
    if not rules.LABEL_TYPES[kind] then
      error("dockerfile.lint: option label_schema: label '" .. tostring(name) .. "' has unknown type '"
        .. tostring(kind) .. "' (text, url, semver, hash, rfc3339, spdx or email)", 0)
    end
  end
  local findings = {}
  local function keep(f)
    f.severity = sev[f.rule] or f.severity
    if not ignore[f.rule] and f.severity ~= "ignore" then findings[#findings + 1] = f end
  end
  local ok, df = pcall(dockerfile.parse, text, { args = opts.args })
  if not ok then
    local msg = tostring(df)
    local line = tonumber(msg:match("line (%d+)")) or 1
    local id = msg:find("before the first FROM", 1, true) and "DL3061" or "DL1000"
    keep({ rule = id, line = line, severity = "error", message = msg })
    return findings
  end
  local marks = opts.disable_ignore_pragma and {} or pragmas(text)
  local global, pragma_shell = {}, nil
  for _, p in ipairs(marks) do
    if p.kind == "global" then for _, id in ipairs(p.ids) do global[id] = true end end
    if p.kind == "shell" then pragma_shell = p.shell end
  end
  local function report_for(id, severity)
    return function(where, message, column)
      local line = type(where) == "table" and where.line or where
      local ins = type(where) == "table" and where or instruction_at(df, line)
      if global[id] then return end
      if ins and not opts.disable_ignore_pragma and inline_ignores(ins)[id] then return end
      keep({ rule = id, line = line, column = column, severity = severity, message = message })
    end
  end
  local ctx = lint_context(df, config)
  for _, r in ipairs(rules.list) do
    if not ignore[r.id] then r.check(df, ctx, report_for(r.id, r.severity)) end
  end
  for _, p in ipairs(marks) do
    if p.kind ~= "shell" then
      report_for("DL1001", "ignore")(p.line, "inline ignore pragma: fix the finding or ignore the "
        .. "rule in .hadolint.yaml")
    end
  end
  if opts.shell ~= false then
    local exe = type(opts.shell) == "string" and opts.shell or require("myrmex.process").which("shellcheck")
    if exe then
      local ran, err = pcall(shellcheck, df, ctx, exe, pragma_shell, function(f, ins)
        if global[f.rule] or (not opts.disable_ignore_pragma and inline_ignores(ins)[f.rule]) then return end
        keep(f)
      end)
      -- A sandboxed recipe may not start processes: it gets the DL rules alone.
      if not ran and not require("myrmex.errors").is(err, "Forbidden") then error(err, 0) end
    end
  end
  table.sort(findings, function(a, b)
    if a.line ~= b.line then return a.line < b.line end
    if a.rule ~= b.rule then return a.rule < b.rule end
    return (a.column or 0) < (b.column or 0)
  end)
  return findings
end

--- True when a finding is at or above `threshold` (hadolint's --failure-threshold; `none`
--- never fails).
---@param findings myrmex.LintFinding[]
---@param threshold? string error|warning|info|style|ignore|none (default info)
---@return boolean
function M.fails(findings, threshold)
  threshold = threshold or "info"
  local limit = RANK[threshold]
  if not limit then
    error("dockerfile.fails: threshold must be error, warning, info, style, ignore or none, got "
      .. tostring(threshold), 2)
  end
  for _, f in ipairs(findings) do
    if (RANK[f.severity] or 1) <= limit then return true end
  end
  return false
end

-- ------------------------------------------------------------------ configuration

local CONFIG_KEYS = { ignored = "list", override = "table", trustedRegistries = "list",
  ["failure-threshold"] = "string", format = "string", ["label-schema"] = "table",
  ["strict-labels"] = "boolean", ["disable-ignore-pragma"] = "boolean", ["no-fail"] = "boolean",
  ["no-color"] = "boolean", verbose = "boolean" }

local function config_error(where, msg)
  error("dockerfile.config: " .. where .. ": " .. msg, 0)
end

local function list_of(v, where)
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then config_error(where, "a list expected, got " .. type(v)) end
  local out = {}
  for i, x in ipairs(v) do
    if type(x) ~= "string" then config_error(where .. "[" .. i .. "]", "a string expected") end
    out[#out + 1] = x
  end
  return out
end

local function check_level(v, where, allow_none)
  if type(v) ~= "string" or not RANK[v] or (v == "none" and not allow_none) then
    config_error(where, "'" .. tostring(v) .. "' is not error, warning, info, style, ignore"
      .. (allow_none and " or none" or ""))
  end
  return v
end

--- Fold one configuration table (the keys of .hadolint.yaml) into `cfg`.
local function apply_config(cfg, t, where)
  if type(t) ~= "table" then config_error(where, "a mapping expected") end
  for k, v in pairs(t) do
    local kind = CONFIG_KEYS[k]
    local at = where .. ": " .. tostring(k)
    if not kind then config_error(at, "unknown key") end
    if kind == "boolean" and type(v) ~= "boolean" then config_error(at, "true or false expected") end
    if k == "ignored" then
      for _, id in ipairs(list_of(v, at)) do cfg.lint.ignore[#cfg.lint.ignore + 1] = id end
    elseif k == "override" then
      if type(v) ~= "table" then config_error(at, "a mapping of severity to rule list expected") end
      for level, ids in pairs(v) do
        local lv = tostring(level):gsub("%-rules$", "")
        check_level(lv, at, false)
        cfg.lint.override[lv] = cfg.lint.override[lv] or {}
        for _, id in ipairs(list_of(ids, at .. "." .. level)) do table.insert(cfg.lint.override[lv], id) end
      end
    elseif k == "trustedRegistries" then
      cfg.lint.trusted_registries = list_of(v, at)
    elseif k == "failure-threshold" then
      cfg.failure_threshold = check_level(v, at, true)
    elseif k == "format" then
      cfg.format = v
    elseif k == "label-schema" then
      if type(v) ~= "table" then config_error(at, "a mapping of label to type expected") end
      cfg.lint.label_schema = {}
      for name, kind2 in pairs(v) do
        if not rules.LABEL_TYPES[kind2] then
          config_error(at .. "." .. tostring(name), "unknown type '" .. tostring(kind2)
            .. "' (text, url, semver, hash, rfc3339, spdx or email)")
        end
        cfg.lint.label_schema[name] = kind2
      end
    elseif k == "strict-labels" then
      cfg.lint.strict_labels = v
    elseif k == "disable-ignore-pragma" then
      cfg.lint.disable_ignore_pragma = v
    elseif k == "no-fail" then
      cfg.no_fail = v
    elseif k == "no-color" then
      cfg.no_color = v
    end
  end
end

local function truthy(v) return v ~= nil and v ~= "" and v ~= "0" and v:lower() ~= "false" end

local function csv(v)
  local out = {}
  for x in v:gmatch("[^,%s]+") do out[#out + 1] = x end
  return out
end

--- The HADOLINT_* environment variables, folded into `cfg` (they win over the file).
local function apply_env(cfg, getenv)
  local function env(name) return getenv("HADOLINT_" .. name) end
  if env("NOFAIL") then cfg.no_fail = truthy(env("NOFAIL")) end
  if env("NOCOLOR") then cfg.no_color = truthy(env("NOCOLOR")) end
  if env("FORMAT") then cfg.format = env("FORMAT") end
  if env("FAILURE_THRESHOLD") then
    cfg.failure_threshold = check_level(env("FAILURE_THRESHOLD"), "HADOLINT_FAILURE_THRESHOLD", true)
  end
  for _, level in ipairs({ "error", "warning", "info", "style" }) do
    local v = env("OVERRIDE_" .. level:upper())
    if v then
      cfg.lint.override[level] = cfg.lint.override[level] or {}
      for _, id in ipairs(csv(v)) do table.insert(cfg.lint.override[level], id) end
    end
  end
  if env("IGNORE") then for _, id in ipairs(csv(env("IGNORE"))) do table.insert(cfg.lint.ignore, id) end end
  if env("STRICT_LABELS") then cfg.lint.strict_labels = truthy(env("STRICT_LABELS")) end
  if env("DISABLE_IGNORE_PRAGMA") then cfg.lint.disable_ignore_pragma = truthy(env("DISABLE_IGNORE_PRAGMA")) end
  if env("TRUSTED_REGISTRIES") then cfg.lint.trusted_registries = csv(env("TRUSTED_REGISTRIES")) end
  if env("REQUIRE_LABELS") then
    cfg.lint.label_schema = cfg.lint.label_schema or {}
    for _, item in ipairs(csv(env("REQUIRE_LABELS"))) do
      local name, kind = item:match("^([^:]+):(.+)$")
      if not name or not rules.LABEL_TYPES[kind] then
        config_error("HADOLINT_REQUIRE_LABELS", "'" .. item .. "' is not label:type (text, url, semver, "
          .. "hash, rfc3339, spdx or email)")
      end
      cfg.lint.label_schema[name] = kind
    end
  end
end

--- Where hadolint looks for its configuration when none is named.
local function default_config_paths(getenv)
  local paths = { ".hadolint.yaml", ".hadolint.yml" }
  local xdg, home = getenv("XDG_CONFIG_HOME"), getenv("HOME")
  if xdg and xdg ~= "" then paths[#paths + 1] = xdg .. "/hadolint.yaml" end
  if home and home ~= "" then
    for _, p in ipairs({ "/.config/hadolint.yaml", "/.hadolint/hadolint.yaml", "/hadolint/config.yaml",
      "/.hadolint.yaml" }) do paths[#paths + 1] = home .. p end
  end
  return paths
end

--- Read hadolint's configuration: the file (`file`, or the first of hadolint's default places
--- that exists), then the HADOLINT_* variables over it.
---@param opts {file?: string, env?: boolean, getenv?: fun(name:string):string|nil}
---@return table cfg {lint=, failure_threshold=, format=, no_fail=, no_color=, file=}
function M.config(opts)
  local getenv = opts.getenv or os.getenv
  local cfg = { lint = { ignore = {}, override = {} } }
  local path = opts.file
  if not path then
    for _, p in ipairs(default_config_paths(getenv)) do
      local f = io.open(p, "r")
      if f then f:close() path = p break end
    end
  end
  if path then
    local f, err = io.open(path, "r")
    if not f then error("dockerfile.config: " .. err, 0) end
    local text = f:read("a")
    f:close()
    local yaml = require("myrmex.yaml")
    local ok, doc = pcall(yaml.load, text)
    if not ok then config_error(path, tostring(doc)) end
    if doc ~= nil and doc ~= yaml.null then apply_config(cfg, doc, path) end
    cfg.file = path
  end
  if opts.env ~= false then apply_env(cfg, getenv) end
  return cfg
end

-- ------------------------------------------------------------------ myrmex lint

M.USAGE = [[
Usage: myrmex lint [options] DOCKERFILE...   (- reads standard input)

  -f, --format FMT             tty (default), json, checkstyle, codeclimate,
                               gitlab_codeclimate, sarif, sonarqube
  -c, --config FILE            hadolint's configuration (default: ./.hadolint.yaml, then
                               hadolint's places under $XDG_CONFIG_HOME and $HOME)
  -t, --failure-threshold LVL  error, warning, info (default), style, ignore or none
      --ignore RULE            do not report RULE (repeatable)
      --error/--warning/--info/--style RULE   report RULE with that severity (repeatable)
      --trusted-registry REG   registries DL3026 allows (repeatable)
      --require-label L:TYPE   label schema entry (text url semver hash rfc3339 spdx email)
      --strict-labels          labels outside the schema are DL3050 findings
      --disable-ignore-pragma  do not honour # hadolint ignore= comments
      --no-shellcheck          do not run ShellCheck on RUN scripts
      --no-fail                exit 0 whatever the findings
      --no-color               no colours in tty output
HADOLINT_* variables are read as hadolint reads them. Exit status: 0 no finding at or above
the threshold, 1 findings, a file that cannot be read, or a usage error (as hadolint).
]]

local function usage_fail(msg)
  io.stderr:write("myrmex lint: ", msg, "\n")
  return 1
end

--- `myrmex lint [options] FILE...`: hadolint's command line. Returns the exit status.
---@param args string[] args[1] is "lint"
---@return integer
function M.main(args)
  local formats = require("myrmex.dockerfile.format")
  local files, cli, i = {}, { ignore = {}, override = {}, labels = {}, registries = {} }, 2
  local value_opts = { ["-f"] = "format", ["--format"] = "format", ["-c"] = "config", ["--config"] = "config",
    ["-t"] = "threshold", ["--failure-threshold"] = "threshold", ["--ignore"] = "ignore",
    ["--error"] = "error", ["--warning"] = "warning", ["--info"] = "info", ["--style"] = "style",
    ["--trusted-registry"] = "registry", ["--require-label"] = "label" }
  local flags = { ["--strict-labels"] = "strict_labels", ["--disable-ignore-pragma"] = "disable_ignore_pragma",
    ["--no-shellcheck"] = "no_shellcheck", ["--no-fail"] = "no_fail", ["--no-color"] = "no_color" }
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    if a == "-h" or a == "--help" then
      io.stdout:write(M.USAGE)
      return 0
    elseif value_opts[name] then
      local v = inline
      if not v then
        i = i + 1
        v = args[i]
      end
      if v == nil then return usage_fail(name .. " needs a value") end
      local key = value_opts[name]
      if key == "ignore" then cli.ignore[#cli.ignore + 1] = v
      elseif key == "registry" then cli.registries[#cli.registries + 1] = v
      elseif key == "label" then
        local l, kind = v:match("^([^:]+):(.+)$")
        if not l or not rules.LABEL_TYPES[kind] then
          return usage_fail(name .. ": '" .. v .. "' is not LABEL:TYPE (text, url, semver, hash, rfc3339, spdx, email)")
        end
        cli.labels[l] = kind
      elseif key == "error" or key == "warning" or key == "info" or key == "style" then
        cli.override[key] = cli.override[key] or {}
        table.insert(cli.override[key], v)
      elseif key == "format" then
        local ok = false
        for _, n in ipairs(formats.NAMES) do if n == v then ok = true end end
        if not ok then
          return usage_fail(name .. ": one of " .. table.concat(formats.NAMES, ", ") .. " expected, got '" .. v .. "'")
        end
        cli.format = v
      elseif key == "threshold" then
        if not RANK[v] then
          return usage_fail(name .. ": error, warning, info, style, ignore or none expected, got '" .. v .. "'")
        end
        cli.threshold = v
      else
        cli[key] = v
      end
    elseif flags[a] then
      cli[flags[a]] = true
    elseif a ~= "-" and a:match("^%-") then
      return usage_fail("unknown option '" .. a .. "' (see myrmex lint --help)")
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then return usage_fail("no Dockerfile given (see myrmex lint --help)") end
  local ok, cfg = pcall(M.config, { file = cli.config })
  if not ok then return usage_fail(tostring(cfg)) end
  local o = cfg.lint
  for _, id in ipairs(cli.ignore) do o.ignore[#o.ignore + 1] = id end
  for level, ids in pairs(cli.override) do
    o.override[level] = o.override[level] or {}
    for _, id in ipairs(ids) do table.insert(o.override[level], id) end
  end
  if #cli.registries > 0 then o.trusted_registries = cli.registries end
  if next(cli.labels) then
    o.label_schema = o.label_schema or {}
    for k, v in pairs(cli.labels) do o.label_schema[k] = v end
  end
  if cli.strict_labels then o.strict_labels = true end
  if cli.disable_ignore_pragma then o.disable_ignore_pragma = true end
  if cli.no_shellcheck then o.shell = false end
  local fmt = cli.format or cfg.format or "tty"
  if not formats[fmt] then return usage_fail("format '" .. fmt .. "' from " .. (cfg.file or "HADOLINT_FORMAT")
    .. " is not one of " .. table.concat(formats.NAMES, ", ")) end
  local threshold = cli.threshold or cfg.failure_threshold or "info"
  local all, status = {}, 0
  for _, path in ipairs(files) do
    local text, err
    if path == "-" then
      text = io.stdin:read("a")
    else
      local f
      f, err = io.open(path, "r")
      if f then text = f:read("a") f:close() end
    end
    if not text then
      io.stderr:write("myrmex lint: ", tostring(err), "\n")
      status = 1
    else
      local lok, found = pcall(M.lint, text, o)
      if not lok then
        io.stderr:write("myrmex lint: ", path, ": ", require("myrmex.errors").message(found), "\n")
        status = 1
      else
        for _, f in ipairs(found) do f.file = path all[#all + 1] = f end
      end
    end
  end
  local rt = require("myrmex.core.runtime")
  local color = fmt == "tty" and not cli.no_color and not cfg.no_color and not os.getenv("NO_COLOR")
    and rt.isatty(1)
  io.stdout:write(formats[fmt](all, { color = color }))
  if M.fails(all, threshold) and not (cli.no_fail or cfg.no_fail) then status = 1 end
  return status
end

return M
