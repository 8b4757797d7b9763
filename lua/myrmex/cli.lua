--- The command line of the myrmex binary. host/main.c calls cli.main(argv) and exits with
--- the status it returns: 0 success, 1 recipe failed, 2 usage or parameter error,
--- 130 interrupted by SIGINT, 143 by SIGTERM.
local rt = require("myrmex.core.runtime")
local log = require("myrmex.log")
local errors = require("myrmex.errors")
local recipe = require("myrmex.recipe")
local plan = require("myrmex.plan")

local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

-- 128 + the signal, as a shell reports a process a signal ended: 130 for SIGINT, 143 for
-- SIGTERM (an Interrupted error raised without one, as tests do, counts as SIGINT).
local function exit_interrupted()
  local _, sig = rt.interrupted()
  return 128 + (sig or 2)
end

local HELP = [[
myrmex — container pipelines as Lua recipes

Usage:
  myrmex run RECIPE [options]      run a recipe (a path, or a name on the recipe path)
  myrmex plan RECIPE [options]     show what RECIPE would change, changing nothing
  myrmex list                      list the recipes found on the recipe path
  myrmex describe RECIPE           show a recipe's parameters and documentation
  myrmex RECIPE --help             the same as describe
  myrmex doctor                    check each engine: reachable, version, where configured
  myrmex lint DOCKERFILE...        lint Dockerfiles as hadolint does (myrmex lint --help)
  myrmex version                   print the version
  myrmex FILE.lua [args...]        run a Lua script with the myrmex modules (like lua)
  myrmex -e CHUNK                  run a Lua chunk

Options for run and plan:
  --set KEY=VALUE        set a recipe parameter (repeatable); MYRMEX_PARAM_KEY works too
  --dry-run              record state-changing engine calls instead of making them
  --plan-format text|json   how plan mode prints the plan (default text)
  --log-format text|json    default: json when CI is set, text otherwise
  --log-level debug|info|warn|error
  --quiet                only warnings and errors
  --on kubernetes        run the recipe as a Job in the current cluster (with --image IMAGE
                         holding myrmex and the recipe, and --namespace NS)
  --items FILE.json      run the recipe once per item (a JSON list of params objects), here
                         through myrmex.parallel or, with --on kubernetes, as one Indexed Job;
                         one line per item, exit 1 when any failed (docs/k8s.md, "Fan-out")
  --parallelism N        items at once (default 8); --timeout SECONDS for the whole fan-out
  --push-to REF          with --on kubernetes --items: push the image myrmex packs there
  --plan                 with --on kubernetes --items: print the Job and ConfigMap, create nothing
  --junit FILE           write a JUnit XML report: one test case per step
  --report FILE.html     write a self-contained HTML report of the run
  --sandbox              run an untrusted recipe: no processes, no writes outside --workdir,
                         capped memory and time, undefined globals raise, containers and pods
                         kept off the host (docs/security.md)
  --workdir DIR          the only folder a sandboxed recipe may write (default .)
  --memory-limit MB      Lua heap cap under --sandbox (default 256)
  --time-limit SECONDS   wall-time cap under --sandbox (default 600)
  -h, --help             this text

Recipe path: ./recipes, then $MYRMEX_PATH (colon-separated), then the installed library.
Exit status: 0 success, 1 the recipe failed, 2 usage or parameter error, 130 interrupted
(SIGINT), 143 terminated (SIGTERM).
]]

local function usage(fmt, ...)
  recipe.usage_error(fmt, ...)
end

local function say(fmt, ...)
  io.stdout:write(string.format(fmt, ...), "\n")
end

local function value_of(args, i, flag)
  local v = args[i + 1]
  if v == nil then usage("%s needs a value", flag) end
  return v
end

--- Parse the options of run/plan/describe; returns {recipe=, sets={}, sources={}, ...}.
local function parse_run_args(args, first)
  local o = { sets = {}, sources = {}, log = {} }
  local i = first
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or a
    local function val()
      if inline then return inline end
      i = i + 1
      return value_of(args, i - 1, flag)
    end
    if flag == "--set" then
      local kv = val()
      local k, v = kv:match("^([%w_%-%.]+)=(.*)$")
      if not k then usage("--set expects KEY=VALUE, got '%s'", kv) end
      o.sets[k] = v
      o.sources[k] = "--set " .. k
    elseif flag == "--dry-run" then
      o.dry_run = true
    elseif flag == "--log-format" then
      o.log.format = val()
      if o.log.format ~= "text" and o.log.format ~= "json" then
        usage("--log-format must be text or json, got '%s'", o.log.format)
      end
    elseif flag == "--log-level" then
      o.log.level = val()
      if not log.levels[o.log.level] then
        usage("--log-level must be debug, info, warn or error, got '%s'", o.log.level)
      end
    elseif flag == "--plan-format" then
      o.plan_format = val()
      if o.plan_format ~= "text" and o.plan_format ~= "json" then
        usage("--plan-format must be text or json, got '%s'", o.plan_format)
      end
    elseif flag == "--on" then
      o.on = val()
      if o.on ~= "kubernetes" then usage("--on takes 'kubernetes', got '%s'", o.on) end
    elseif flag == "--image" then
      o.image = val()
    elseif flag == "--items" then
      o.items = val()
    elseif flag == "--push-to" then
      o.push_to = val()
    elseif flag == "--plan" then
      o.plan = true
    elseif flag == "--parallelism" or flag == "--timeout" then
      local n = tonumber(val())
      if not n or n <= 0 or (flag == "--parallelism" and math.type(n) ~= "integer") then
        usage("%s needs a positive %s", flag, flag == "--parallelism" and "integer" or "number")
      end
      if flag == "--parallelism" then o.parallelism = n else o.timeout = n end
    elseif flag == "--namespace" then
      o.namespace = val()
    elseif flag == "--junit" then
      o.junit = val()
    elseif flag == "--report" then
      o.report = val()
    elseif flag == "--sandbox" then
      o.sandbox = true
    elseif flag == "--workdir" then
      o.workdir = val()
    elseif flag == "--memory-limit" or flag == "--time-limit" then
      local n = tonumber(val())
      if not n or n <= 0 then usage("%s needs a positive number", flag) end
      if flag == "--memory-limit" then o.memory_mb = n else o.time_limit = n end
    elseif flag == "--quiet" or flag == "-q" then
      o.log.quiet = true
    elseif flag == "--help" or flag == "-h" then
      o.help = true
    elseif a:sub(1, 1) == "-" then
      usage("unknown option '%s' (see myrmex --help)", a)
    elseif o.recipe == nil then
      o.recipe = a
    else
      usage("unexpected argument '%s' (parameters are given with --set KEY=VALUE)", a)
    end
    i = i + 1
  end
  return o
end

local function resolve(name)
  local path = recipe.find(name)
  if not path then
    usage("no recipe '%s' (looked for a file, and on the recipe path: %s)", name,
      table.concat(recipe.search_path(), ", "))
  end
  return path
end

local function describe(decl, name)
  say("%s — %s", name, decl.description or "(no description)")
  say("  file: %s", decl.path)
  local names = {}
  for k in pairs(decl.params or {}) do names[#names + 1] = k end
  table.sort(names)
  if #names == 0 then
    say("  parameters: none")
    return
  end
  say("  parameters:")
  for _, k in ipairs(names) do
    local p = decl.params[k]
    local extra = p.required and "required" or (p.default ~= nil and ("default " ..
      (type(p.default) == "table" and table.concat(p.default, ",") or tostring(p.default))) or "optional")
    if p.choices then extra = extra .. "; one of " .. table.concat(p.choices, ", ") end
    say("    %-20s %-8s %s (%s)", k, p.type or "string", p.doc or "", extra)
  end
end

--- Run fn under a handler that keeps the error, its recipe location and the traceback.
local function protected(fn, ...)
  local caught
  local ok, a, b, c = xpcall(fn, function(e)
    local where = type(e) == "table" and e.where or recipe.locate(2)
    caught = { err = e, where = where, trace = debug.traceback("", 2) }
    return e
  end, ...)
  if ok then return true, a, b, c end
  -- Lua calls no message handler for out-of-memory errors.
  return false, caught or { err = a, trace = "" }
end

local function report_failure(caught, path)
  local e = caught.err
  if recipe.is_usage_error(e) then
    io.stderr:write("myrmex: ", log.redact(e.message), "\n")
    return EXIT_USAGE
  end
  local msg = errors.message(e)
  -- A string error from error("...") already starts with "file:line:"; keep one location.
  local where = caught.where
  if type(e) == "string" and where and msg:sub(1, #where) == where then
    msg = msg:sub(#where + 3)
  end
  msg = log.redact(msg:match("^[^\n]*"))
  log.error("recipe failed: " .. msg, { recipe = path, at = where, code = type(e) == "table" and e.code or nil,
    step = type(e) == "table" and e.step or nil })
  if log.enabled("debug") then io.stderr:write(log.redact(caught.trace), "\n") end
  if errors.is(e, "Interrupted") then return exit_interrupted() end
  return EXIT_FAIL
end

--- The one-line text of a caught failure (for reports).
local function failure_text(caught)
  local e = caught.err
  local msg = recipe.is_usage_error(e) and e.message or errors.message(e)
  return log.redact(msg:match("^[^\n]*"))
end

local function print_summary()
  local steps = recipe.steps()
  if #steps == 0 then return end
  local parts = {}
  for _, s in ipairs(steps) do
    if s.depth == 1 then
      parts[#parts + 1] = string.format("%s %s (%.2fs)", s.ok and "ok" or "FAILED", s.name,
        s.duration or 0)
    end
  end
  log.info("summary: " .. table.concat(parts, ", "), { steps = #steps })
end

--- Run a loaded recipe; returns the exit status and the failure text (nil on success).
local function execute(o, path, chunk, dry)
  local ok, decl = protected(recipe.declaration, path, chunk)
  if not ok then return report_failure(decl, path), failure_text(decl) end
  if o.help then
    if decl then describe(decl, o.recipe) else say("%s: a plain Lua script (no parameters)", path) end
    return EXIT_OK
  end
  local result
  if decl then
    local params = recipe.resolve_params(decl, o.sets, o.sources)
    log.debug("recipe start", { recipe = path, dry_run = dry })
    ok, result = protected(decl.run, params, recipe.context(decl))
    print_summary()
    if not ok then return report_failure(result, path), failure_text(result) end
  end
  if dry then
    io.stdout:write(o.plan_format == "json" and (plan.render_json() .. "\n") or plan.render_text())
  end
  if result == false then
    log.error("recipe reported failure", { recipe = path })
    return EXIT_FAIL, "the recipe reported failure"
  elseif math.type(result) == "integer" then
    return result, result ~= 0 and ("the recipe returned exit status " .. result) or nil
  end
  return EXIT_OK
end

--- JUnit file and GitHub job summary, written whatever the outcome.
local function finish_reports(o, path, duration, failure)
  local ci = require("myrmex.ci")
  local run = { name = o.recipe, steps = recipe.steps(), duration = duration, error = failure,
    plan = plan.actions(), path = path }
  if o.junit then
    local ok, err = pcall(ci.write_atomic, o.junit, ci.junit_xml(run))
    if not ok then log.error("cannot write the JUnit report", { path = o.junit, error = err }) end
  end
  if o.report then
    local ok, err = pcall(ci.write_atomic, o.report, require("myrmex.report").html(run))
    if ok then
      log.info("report written", { path = o.report })
    else
      log.error("cannot write the HTML report", { path = o.report, error = err })
    end
  end
  if ci.github() then ci.write_summary(run) end
end

--- `run --on kubernetes`: the same command line, run as a Job in the cluster by an image that
--- holds myrmex and the recipe; its pods' logs are printed and its outcome is the exit status.
local function run_on_kubernetes(o)
  local image = o.image or os.getenv("MYRMEX_RUNNER_IMAGE")
  if not image or image == "" then
    usage("--on kubernetes needs --image IMAGE (an image holding myrmex and the recipe) or MYRMEX_RUNNER_IMAGE")
  end
  -- Check the parameters here when the recipe is also on this machine: a typo fails in a second
  -- instead of after a pod was scheduled.
  local local_path = recipe.find(o.recipe)
  if local_path and recipe.looks_declared(local_path) then
    local decl = recipe.declaration(local_path, recipe.load(local_path))
    if decl then recipe.resolve_params(decl, o.sets, o.sources) end
  end
  local command = { "myrmex", "run", o.recipe, "--log-format", "json" }
  local names = {}
  for k in pairs(o.sets) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    command[#command + 1] = "--set"
    command[#command + 1] = k .. "=" .. o.sets[k]
  end
  local k8s = require("myrmex.k8s")
  local c = k8s.connect({ namespace = o.namespace })
  local name = (o.recipe:match("([^/]+)$"):gsub("%.lua$", ""):lower():gsub("[^a-z0-9-]", "-"))
  log.info("running on kubernetes", { recipe = o.recipe, image = image, namespace = o.namespace })
  local res = c:run_job({ generate_name = "myrmex-" .. name:sub(1, 40) .. "-", image = image, command = command,
    namespace = o.namespace, labels = { ["app.kubernetes.io/managed-by"] = "myrmex",
      ["myrmex.dev/recipe"] = name:sub(1, 63) } })
  if res.planned then
    io.stdout:write(plan.render_text())
    return EXIT_OK
  end
  local code = EXIT_OK
  for _, pod in ipairs(res.pods or {}) do
    io.stdout:write(pod.log or "")
    if pod.exit_code and pod.exit_code ~= 0 then code = pod.exit_code end
  end
  if not res.succeeded then
    log.error("job " .. tostring(res.name) .. " failed: " .. tostring(res.reason))
    if code == EXIT_OK then code = EXIT_FAIL end
  end
  return code
end

local function cmd_run(args, first, force_plan)
  local o = parse_run_args(args, first)
  log.configure(o.log)
  if o.items then
    if not o.recipe then usage("run --items needs a RECIPE") end
    return require("myrmex.k8s.fanout").cli(o, force_plan)
  end
  if o.parallelism or o.push_to or o.plan or o.timeout then
    usage("--parallelism, --push-to, --plan and --timeout go with --items")
  end
  if o.on then
    if not o.recipe then usage("run --on kubernetes needs a RECIPE") end
    plan.set_active(force_plan or o.dry_run)
    return run_on_kubernetes(o)
  end
  if o.image or o.namespace then usage("--image and --namespace go with --on kubernetes") end
  if not o.recipe then usage("%s needs a RECIPE (see myrmex list)", force_plan and "plan" or "run") end
  local path = resolve(o.recipe)
  if next(o.sets) and not recipe.looks_declared(path) then
    usage("%s declares no parameters, so --set %s is not accepted", path, next(o.sets))
  end
  _G.arg = { [0] = path }
  for _, k in ipairs({ "junit", "report" }) do
    if o[k] and o[k]:sub(1, 1) ~= "/" then o[k] = (rt.realpath(".") or ".") .. "/" .. o[k] end
  end
  local dry = force_plan or o.dry_run
  plan.set_active(dry)
  local chunk
  if o.sandbox then
    local sandbox = require("myrmex.sandbox")
    local err
    chunk, err = sandbox.loadfile(path)
    if not chunk then usage("%s", err) end
    sandbox.enter({ root = o.workdir or ".", memory = math.floor((o.memory_mb or 256) * 1048576),
      seconds = o.time_limit or 600 })
  else
    if o.workdir or o.memory_mb or o.time_limit then
      usage("--workdir, --memory-limit and --time-limit go with --sandbox")
    end
    chunk = recipe.load(path)
  end
  local t0 = rt.monotonic()
  local remove_hook = require("myrmex.ci").github() and require("myrmex.ci").annotate_logs()
  local code, failure = execute(o, path, chunk, dry)
  if remove_hook then remove_hook() end
  if o.sandbox then rt.set_limits({ memory = 0, seconds = 0 }) end
  finish_reports(o, path, rt.monotonic() - t0, failure)
  return code
end

local function cmd_list()
  local found = recipe.discover()
  if #found == 0 then
    say("no recipes found (searched %s)", table.concat(recipe.search_path(), ", "))
    return EXIT_OK
  end
  local w = 0
  for _, r in ipairs(found) do w = math.max(w, #r.name) end
  for _, r in ipairs(found) do say("%-" .. w .. "s  %s", r.name, r.description) end
  return EXIT_OK
end

local function cmd_describe(args)
  local name = args[2]
  if not name then usage("describe needs a RECIPE") end
  if args[3] then usage("unexpected argument '%s'", args[3]) end
  local path = resolve(name)
  local ok, decl = protected(recipe.declaration, path, recipe.load(path))
  if not ok then return report_failure(decl, path) end
  if not decl then
    say("%s: a plain Lua script (no parameters)", path)
  else
    describe(decl, name)
  end
  return EXIT_OK
end

local function cmd_doctor()
  local failures = 0
  local checks = require("myrmex.doctor").run()
  for _, c in ipairs(checks) do
    local state = c.ok and "ok" or (c.optional and "absent" or "FAIL")
    if not c.ok and not c.optional then failures = failures + 1 end
    say("%-10s %-6s %s%s", c.name, state, c.detail or "",
      c.source and ("  [" .. c.source .. "]") or "")
  end
  return failures == 0 and EXIT_OK or EXIT_FAIL
end

--- Run a Lua file or chunk the way the lua interpreter does, with `arg` set.
local function run_script(args, first)
  local script = args[first]
  local chunk, err
  if script == "-e" then
    if not args[first + 1] then usage("-e needs a chunk") end
    chunk, err = load(args[first + 1], "=(command line)")
    first = first + 1
  else
    chunk, err = loadfile(script)
  end
  if not chunk then
    io.stderr:write("myrmex: ", err, "\n")
    return EXIT_USAGE
  end
  local a = { [0] = args[first], [-1] = args[0] }
  for i = first + 1, #args do a[#a + 1] = args[i] end
  _G.arg = a
  local ok, caught = protected(chunk, table.unpack(a))
  if ok then return EXIT_OK end
  local e = caught.err
  -- os.exit inside a script (busted does this) never gets here; anything else is a failure.
  if recipe.is_usage_error(e) then return report_failure(caught, script) end
  io.stderr:write("myrmex: ", log.redact(errors.message(e)), "\n")
  if log.enabled("debug") then io.stderr:write(caught.trace, "\n") end
  return errors.is(e, "Interrupted") and exit_interrupted() or EXIT_FAIL
end

local COMMANDS = {
  run = function(args) return cmd_run(args, 2, false) end,
  plan = function(args) return cmd_run(args, 2, true) end,
  list = function(args)
    if args[2] then usage("unexpected argument '%s'", args[2]) end
    return cmd_list()
  end,
  describe = cmd_describe,
  -- hadolint's command line and exit codes, so it can stand in for hadolint in CI.
  lint = function(args) return require("myrmex.dockerfile.lint").main(args) end,
  doctor = function(args)
    if args[2] then usage("unexpected argument '%s'", args[2]) end
    return cmd_doctor()
  end,
  version = function()
    say("myrmex %s (%s)", _MYRMEX_VERSION, _VERSION)
    return EXIT_OK
  end,
  help = function()
    io.stdout:write(HELP)
    return EXIT_OK
  end,
}
COMMANDS["--help"] = COMMANDS.help
COMMANDS["-h"] = COMMANDS.help
COMMANDS["--version"] = COMMANDS.version

local function dispatch(args)
  local cmd = args[1]
  if cmd == nil then
    io.stderr:write(HELP)
    return EXIT_USAGE
  end
  if COMMANDS[cmd] then return COMMANDS[cmd](args) end
  if cmd == "-e" then return run_script(args, 1) end
  if cmd:sub(1, 1) == "-" then usage("unknown option '%s' (see myrmex --help)", cmd) end
  local st = rt.stat(cmd)
  if st and st.type == "file" then
    if args[2] == "--help" or args[2] == "--set" or args[2] == "--dry-run" then
      return cmd_run(args, 1, false)
    end
    return run_script(args, 1)
  end
  if recipe.find(cmd) then
    if args[2] == "--help" then return cmd_describe({ "describe", cmd }) end
    usage("'%s' is a recipe: run it with 'myrmex run %s'", cmd, cmd)
  end
  usage("unknown command or file '%s' (see myrmex --help)", cmd)
end

--- Entry point: returns the exit status.
---@param argv string[] argv[0] is the program name
---@return integer
function M.main(argv)
  recipe.datadir = _MYRMEX_DATADIR
  local ok, res = xpcall(dispatch, function(e)
    if recipe.is_usage_error(e) or errors.is(e) then return e end
    return debug.traceback(errors.message(e), 2)
  end, argv)
  local code
  if ok then
    code = res or EXIT_OK
  elseif recipe.is_usage_error(res) then
    io.stderr:write("myrmex: ", log.redact(res.message), "\n")
    code = EXIT_USAGE
  elseif errors.is(res, "Interrupted") then
    io.stderr:write("myrmex: interrupted\n")
    return exit_interrupted()
  else
    io.stderr:write("myrmex: ", log.redact(errors.message(res)), "\n")
    code = EXIT_FAIL
  end
  -- A run a signal stopped says so even when its Interrupted error was caught on the way
  -- (a pcall in a recipe, or turned into another error): CI must not read it as a result.
  if rt.interrupted() then return exit_interrupted() end
  return code
end

return M
