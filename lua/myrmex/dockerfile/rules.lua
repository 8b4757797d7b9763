--- The lint rules: one table entry per rule, {id=, severity=, summary=, check=}. The ids and
--- severities are hadolint's (DL....) where hadolint has the rule; MX... are ours. Each check
--- is check(df, ctx, report): `df` is dockerfile.parse's result, `ctx` the facts several
--- rules share (built by myrmex.dockerfile.lint), report(ins_or_line, message) files one
--- finding. See docs/dockerfile.md for what each rule finds and where it differs from
--- hadolint.
local shell = require("myrmex.dockerfile.shell")

local has_word, commands_of = shell.has_word, shell.commands

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- ------------------------------------------------------------------ helpers

local function mount_covers(ins, prefixes)
  for _, m in ipairs(ins.mounts or {}) do
    if (m.type == "cache" or m.type == "tmpfs") and type(m.target) == "string" then
      local t = m.target:gsub("/+$", "")
      for _, p in ipairs(prefixes) do
        if t == p or p:sub(1, #t + 1) == t .. "/" or t:sub(1, #p + 1) == p .. "/" then return true end
      end
    end
  end
  return false
end

local function image_parts(ref)
  local name, digest = ref:match("^(.-)@(.+)$")
  name = name or ref
  local last = name:match("[^/]*$")
  local tag = last:match(":(.+)$")
  return tag, digest
end

local ARCHIVE_EXT = { "%.tar$", "%.tar%.gz$", "%.tgz$", "%.tar%.bz2$", "%.tbz2?$", "%.tar%.xz$",
  "%.txz$", "%.tar%.zst$", "%.tar%.lz$" }

local function is_archive(src)
  for _, pat in ipairs(ARCHIVE_EXT) do if src:lower():match(pat) then return true end end
  return false
end

local function is_remote(src)
  return src:match("^https?://") or src:match("^git@") or src:match("%.git$") or src:match("%.git#")
end

--- The words of COPY/ADD without heredoc markers: sources..., destination.
local function copy_words(ins)
  return ins.words or ins.json or {}
end

local function copy_sources(ins)
  local list, srcs = copy_words(ins), {}
  for k = 1, #list - 1 do srcs[#srcs + 1] = list[k] end
  return srcs
end

local function flag(ins, name)
  for _, f in ipairs(ins.flags) do if f.name == name then return f.value end end
  return nil
end

local function is_apt(cmd) return cmd.words[1] == "apt-get" or cmd.words[1] == "apt" end
local function apt_sub(cmd, sub) return is_apt(cmd) and has_word(cmd, sub) end

--- The index of the first of `subs` among a command's words after the program name, so
--- `apt-get -y install` and `apk --no-cache add` find their subcommand.
local function sub_index(cmd, subs)
  for k = 2, #cmd.words do
    local w = cmd.words[k]
    if subs[w] then return k end
  end
  return nil
end

--- The operands after a subcommand: words that are not options, skipping the value of the
--- options listed in `takes_value` (`-t release`, `--virtual .deps`).
local function operands(cmd, from, takes_value)
  local out, k = {}, from + 1
  while k <= #cmd.words do
    local w = cmd.words[k]
    if w:match("^%-") then
      if takes_value and takes_value[w] then k = k + 1 end
    elseif w ~= "" then
      out[#out + 1] = w
    end
    k = k + 1
  end
  return out
end

--- A short-option cluster or long option among the words: `-y`, `-qy`, `--yes`; a cluster
--- may end in an option's value (`-qO-`, `-qO/tmp/x`).
local function has_switch(cmd, short, longs)
  for k = 2, #cmd.words do
    local w = cmd.words[k]
    local cluster = not w:match("^%-%-") and w:match("^%-(%a+)")
    if cluster and short and cluster:find(short, 1, true) then return true end
    for _, l in ipairs(longs or {}) do
      if w == l or w:sub(1, #l + 1) == l .. "=" then return true end
    end
  end
  return false
end

local function run_has(ins, pred)
  for _, cmd in ipairs(commands_of(ins)) do if pred(cmd) then return cmd end end
  return nil
end

local function is_file_operand(p)
  return p:match("^[%./~]") or p:match("%$") ~= nil
end

--- The pinning rules' one check: the first package operand of `cmd` after word `from` that
--- matches none of the `pinned` patterns (a version is given) and is no package file (`ext`)
--- or path, as a message showing the pinned form (`what p: pin its version (p<sep><version>)`).
local function unpinned(cmd, from, takes_value, pinned, ext, what, sep)
  for _, p in ipairs(operands(cmd, from, takes_value)) do
    local ok = p:match(ext) or is_file_operand(p)
    for _, pat in ipairs(pinned) do ok = ok or p:match(pat) end
    if not ok then return what .. " " .. p .. ": pin its version (" .. p .. sep .. "<version>)" end
  end
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function pipefail_shell(stage_shell)
  if not stage_shell then return false end
  for _, w in ipairs(stage_shell) do if w:match("pipefail") then return true end end
  return false
end

local function posix_shell(stage_shell)
  if not stage_shell then return true end
  local exe = (stage_shell[1] or ""):lower()
  return not (exe:match("pwsh") or exe:match("powershell") or exe:match("cmd"))
end

local function sets_pipefail(cmd)
  if cmd.words[1] ~= "set" then return false end
  for k = 2, #cmd.words do
    if cmd.words[k] == "pipefail" and cmd.words[k - 1]:match("^%-%a*o$") then return true end
  end
  return false
end

local DEP_INSTALL = {
  { "npm", "ci" }, { "npm", "install" }, { "npm", "i" }, { "yarn", "install" }, { "yarn" },
  { "pnpm", "install" }, { "pip", "install" }, { "pip3", "install" }, { "poetry", "install" },
  { "go", "mod", "download" }, { "bundle", "install" }, { "composer", "install" },
  { "cargo", "fetch" }, { "uv", "sync" }, { "pipenv", "install" },
}

local function installs_dependencies(cmd)
  for _, pat in ipairs(DEP_INSTALL) do
    local ok = true
    for k, w in ipairs(pat) do if cmd.words[k] ~= w then ok = false break end end
    if ok and #pat == 1 and #cmd.words > 1 and not cmd.words[2]:match("^%-") then ok = false end
    if ok then return true end
  end
  return cmd.words[1] == "python" and cmd.words[2] == "-m" and cmd.words[3] == "pip"
    and cmd.words[4] == "install"
end

local function is_pip_install(cmd)
  local w = cmd.words
  if (w[1] == "pip" or w[1] == "pip3") and w[2] == "install" then return 2 end
  if (w[1] or ""):match("^python[%d%.]*$") and w[2] == "-m" and (w[3] == "pip" or w[3] == "pip3")
    and w[4] == "install" then return 4 end
  return nil
end

-- ------------------------------------------------------------------ the rules table

local RULES = {}

local function rule(id, severity, summary, fn)
  RULES[#RULES + 1] = { id = id, severity = severity, summary = summary, check = fn }
end

--- For rules about one program in RUN: fn(cmd, ins) returns a message or nil.
local function command_rule(id, severity, summary, fn, final_only)
  rule(id, severity, summary, function(_, ctx, report)
    for _, ins in ipairs(ctx.runs) do
      if not final_only or ctx.final[ins.stage] then
        for _, cmd in ipairs(commands_of(ins)) do
          local msg = fn(cmd, ins, ctx)
          if msg then report(cmd.line, msg) end
        end
      end
    end
  end)
end

--- For "clean up after installing" rules: an install in a RUN without the clean in the
--- same RUN, unless a cache or tmpfs mount holds the cache.
local function cleanup_rule(id, severity, summary, installs, cleans, cache_dirs, message)
  rule(id, severity, summary, function(_, ctx, report)
    for _, ins in ipairs(ctx.runs) do
      if ctx.final[ins.stage] and not mount_covers(ins, cache_dirs) then
        local first = run_has(ins, installs)
        if first and not run_has(ins, cleans) then report(first.line, message) end
      end
    end
  end)
end

-- DL1000 and DL1001 are filed by the linter itself (it sees parse errors and pragmas).
rule("DL1000", "error", "The Dockerfile does not parse", function() end)

-- DL1001 is handled by the linter itself (it sees the pragmas); listed here for its id.
rule("DL1001", "ignore", "Please refrain from using inline ignore pragmas `# hadolint ignore=DLxxxx`",
  function() end)

rule("DL3000", "error", "Use absolute WORKDIR", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "WORKDIR" then
      local dir = ins.expanded or ""
      -- An unset variable expands to nothing: only a literal relative path is known wrong.
      local unknown = dir == "" and ins.args:match("%$")
      if not unknown and not dir:match("^/") and not dir:match("^%a:[/\\]") then
        report(ins, "WORKDIR '" .. dir .. "' is relative: use an absolute path")
      end
    end
  end
end)

local POINTLESS = set({ "ssh", "vim", "shutdown", "service", "ps", "free", "top", "kill", "mount",
  "ifconfig", "nano" })
command_rule("DL3001", "info", "For some bash commands it makes no sense running them in a Docker container "
  .. "like ssh, vim, shutdown, service, ps, free, top, kill, mount, ifconfig",
  function(cmd)
    if POINTLESS[cmd.words[1]] then
      return "'" .. cmd.words[1] .. "' in RUN does nothing useful at build time"
    end
  end)

rule("DL3002", "warning", "Last USER should not be root", function(_, ctx, report)
  if ctx.last_user then
    local u = trim(ctx.last_user.expanded or ctx.last_user.args)
    local name = u:match("^([^:]+)") or ""
    -- Docker takes a decimal user id as a number: 00 and +0 are uid 0 too.
    if name == "root" or (name:match("^%+?%d+$") and tonumber(name) == 0) then
      report(ctx.last_user, "the final image runs as root: switch to an unprivileged USER")
    end
  end
end)

rule("DL3003", "warning", "Use WORKDIR to switch to a directory", function(_, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    for _, cmd in ipairs(commands_of(ins)) do
      if cmd.words[1] == "cd" and not cmd.subshell then
        report(cmd.line, "cd in RUN: use WORKDIR to change directory")
      end
    end
  end
end)

rule("DL3004", "error", "Do not use sudo as it leads to unpredictable behavior. Use a tool like gosu "
  .. "to enforce root", function(_, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    for _, cmd in ipairs(commands_of(ins)) do
      if cmd.sudo then
        report(cmd.line, "sudo in RUN: builds run as root already; use USER to drop privileges")
      end
    end
  end
end)

command_rule("DL3005", "error", "Do not use apt-get dist-upgrade", function(cmd)
  if cmd.words[1] == "apt-get" and has_word(cmd, "dist-upgrade") then
    return "apt-get dist-upgrade in RUN: it may pull a new release into the image"
  end
end)

rule("DL3006", "warning", "Always tag the version of an image explicitly", function(df, _, report)
  for _, st in ipairs(df.stages) do
    local img = st.image
    local from_stage = false
    for k = 1, st.index - 1 do if df.stages[k].name == img:lower() then from_stage = true end end
    local tag, digest = image_parts(img)
    if not from_stage and img ~= "scratch" and img ~= "" and not tag and not digest then
      report(st.line, "base image '" .. img .. "' has no tag: pin a version (image:1.2.3)")
    end
  end
end)

rule("DL3007", "warning", "Using latest is prone to errors if the image will ever update. Pin the "
  .. "version explicitly to a release tag", function(df, _, report)
  for _, st in ipairs(df.stages) do
    if image_parts(st.image) == "latest" then
      report(st.line, "base image '" .. st.image .. "' uses latest: pin a version")
    end
  end
end)

local APT_VALUE = set({ "-o", "-t", "-c", "--target-release", "--option", "--config-file" })
command_rule("DL3008", "warning", "Pin versions in apt-get install. Instead of `apt-get install <package>` "
  .. "use `apt-get install <package>=<version>`", function(cmd)
  local k = is_apt(cmd) and sub_index(cmd, { install = true })
  if not k then return nil end
  return unpinned(cmd, k, APT_VALUE, { "=" }, "%.deb$", "apt-get install", "=")
end)

rule("DL3009", "info", "Delete the apt-get lists after installing something", function(_, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    if ctx.final[ins.stage] and not mount_covers(ins, { "/var/lib/apt/lists" }) then
      local updated, removed = nil, false
      for _, cmd in ipairs(commands_of(ins)) do
        if apt_sub(cmd, "update") then updated = updated or cmd end
        if cmd.words[1] == "rm" then
          for _, w in ipairs(cmd.words) do
            if w:match("^/var/lib/apt/lists") then removed = true end
          end
        end
      end
      if updated and not removed then
        report(updated.line, "apt-get update leaves /var/lib/apt/lists in the image: "
          .. "rm -rf /var/lib/apt/lists/* in the same RUN, or use a cache mount")
      end
    end
  end
end)

local function extracts(cmd, name)
  if cmd.words[1] ~= "tar" then return false end
  local x = false
  for k = 2, #cmd.words do
    local w = cmd.words[k]
    if (k == 2 and w:match("^%a+$") and w:find("x", 1, true)) or (w:match("^%-%a+$") and w:find("x", 2, true))
      or w == "--extract" or w == "--get" then x = true end
  end
  if not x then return false end
  for k = 2, #cmd.words do
    local base = cmd.words[k]:match("[^/]+$")
    if base == name then return true end
  end
  return false
end

rule("DL3010", "info", "Use ADD for extracting archives into an image", function(df, _, report)
  for _, st in ipairs(df.stages) do
    for i, ins in ipairs(st.instructions) do
      if ins.cmd == "COPY" and not flag(ins, "from") then
        for _, src in ipairs(copy_sources(ins)) do
          local name = src:match("[^/]+$")
          if name and is_archive(src) then
            -- Only an archive that a later RUN of the stage unpacks: a copied archive that is
            -- kept as it is (a release artefact) is fine.
            for j = i + 1, #st.instructions do
              local later = st.instructions[j]
              if later.cmd == "RUN" and run_has(later, function(c) return extracts(c, name) end) then
                report(ins, "COPY of " .. src .. " unpacked by the RUN on line " .. later.line
                  .. ": ADD unpacks it in one layer")
                break
              end
            end
          end
        end
      end
    end
  end
end)

rule("DL3011", "error", "Valid UNIX ports range from 0 to 65535", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "EXPOSE" then
      for _, w in ipairs(ins.words or {}) do
        local spec = w:gsub("/%a+$", "")
        for port in spec:gmatch("[^%-]+") do
          local n = tonumber(port)
          if port:match("^%d+$") and (n < 0 or n > 65535) then
            report(ins, "EXPOSE " .. w .. ": port " .. port .. " is outside 0-65535")
          end
        end
      end
    end
  end
end)

--- A rule for an instruction of which only the last in a stage counts (HEALTHCHECK, CMD,
--- ENTRYPOINT): every one after the first is reported.
local function once_per_stage(id, severity, summary, instruction)
  rule(id, severity, summary, function(df, _, report)
    for _, st in ipairs(df.stages) do
      local seen = false
      for _, ins in ipairs(st.instructions) do
        if ins.cmd == instruction then
          if seen then
            report(ins, "more than one " .. instruction .. " in a stage: only the last one takes effect")
          end
          seen = true
        end
      end
    end
  end)
end

once_per_stage("DL3012", "error", "Multiple HEALTHCHECK instructions", "HEALTHCHECK")

local PIP_VALUE = set({ "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i",
  "--index-url", "--extra-index-url", "-t", "--target", "--prefix", "--root", "-f", "--find-links",
  "--platform", "--python-version", "--implementation", "--abi", "--src", "--trusted-host",
  "--progress-bar", "--log", "--cache-dir", "--timeout", "--retries", "--upgrade-strategy" })
command_rule("DL3013", "warning", "Pin versions in pip. Instead of `pip install <package>` use "
  .. "`pip install <package>==<version>` or `pip install --requirement <requirements file>`",
  function(cmd)
    local k = is_pip_install(cmd)
    if not k then return nil end
    for _, p in ipairs(operands(cmd, k, PIP_VALUE)) do
      local pinned = p:match("[=<>~!]=") or p:match("[<>]") or p:find("@", 1, true)
        or p:match("%.whl$") or p:match("%.tar%.gz$") or p:match("%.zip$") or is_file_operand(p)
        or p:match("^%a+://")
      if not pinned then return "pip install " .. p .. ": pin its version (" .. p .. "==<version>)" end
    end
  end)

command_rule("DL3014", "warning", "Use the `-y` switch to avoid manual input `apt-get -y install <package>`",
  function(cmd)
    if cmd.words[1] ~= "apt-get" or not sub_index(cmd, { install = true }) then return nil end
    if has_switch(cmd, "y", { "--yes", "--assume-yes" }) or has_word(cmd, "-qq") or has_word(cmd, "-q=2")
      or has_word(cmd, "--quiet=2") then return nil end
    return "apt-get install without -y waits for an answer the build cannot give"
  end)

command_rule("DL3015", "info", "Avoid additional packages by specifying `--no-install-recommends`",
  function(cmd)
    if apt_sub(cmd, "install") and not has_word(cmd, "--no-install-recommends")
      and not table.concat(cmd.words, " "):find("Install-Recommends=false", 1, true) then
      return "apt-get install without --no-install-recommends"
    end
  end)

local NPM_VALUE = set({ "--prefix", "--registry", "-w", "--workspace", "--tag", "--cache" })
command_rule("DL3016", "warning", "Pin versions in npm. Instead of `npm install <package>` use "
  .. "`npm install <package>@<version>`", function(cmd)
  if cmd.words[1] ~= "npm" then return nil end
  local k = sub_index(cmd, { install = true, i = true, add = true })
  if not k then return nil end
  for _, p in ipairs(operands(cmd, k, NPM_VALUE)) do
    local name_at = p:match("^@[^/]+/[^@]+@(.+)$") or (not p:match("^@") and p:match("^[^@]+@(.+)$"))
    local pinned = (name_at and name_at ~= "latest") or is_file_operand(p) or p:match("^%a[%w+]*:")
      or p:match("%.tgz$") or p:match("%.tar%.gz$")
    if not pinned then return "npm install " .. p .. ": pin its version (" .. p .. "@<version>)" end
  end
end)

local APK_VALUE = set({ "-t", "--virtual", "-X", "--repository", "-p", "--root", "--arch",
  "--repositories-file", "--keys-dir", "--cache-dir" })
command_rule("DL3018", "warning", "Pin versions in apk add. Instead of `apk add <package>` use "
  .. "`apk add <package>=<version>`", function(cmd)
  local k = cmd.words[1] == "apk" and sub_index(cmd, { add = true })
  if not k then return nil end
  return unpinned(cmd, k, APK_VALUE, { "[=<>~]" }, "%.apk$", "apk add", "=")
end)

rule("DL3019", "info", "Use the `--no-cache` switch to avoid the need to use `--update` and remove "
  .. "`/var/cache/apk/*` when done installing packages", function(_, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    if not mount_covers(ins, { "/var/cache/apk", "/etc/apk/cache" }) then
      for _, cmd in ipairs(commands_of(ins)) do
        if cmd.words[1] == "apk" and sub_index(cmd, { add = true }) and not has_word(cmd, "--no-cache") then
          report(cmd.line, "apk add without --no-cache keeps the package index in the image")
        end
      end
    end
  end
end)

rule("DL3020", "error", "Use COPY instead of ADD for files and folders", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "ADD" then
      local local_src = #ins.heredocs > 0
      for _, src in ipairs(copy_sources(ins)) do
        if not src:match("^<<") and not is_remote(src) and not is_archive(src) then local_src = true end
      end
      if local_src then report(ins, "ADD of local files: use COPY (ADD is for URLs and archives)") end
    end
  end
end)

rule("DL3021", "error", "COPY with more than 2 arguments requires the last argument to end with /",
  function(df, _, report)
    for _, ins in ipairs(df.instructions) do
      if ins.cmd == "COPY" then
        local w = copy_words(ins)
        if #w > 2 and not w[#w]:match("/$") then
          report(ins, "COPY of " .. (#w - 1) .. " sources to '" .. w[#w] .. "': a folder destination "
            .. "must end with /")
        end
      end
    end
  end)

--- The stage a `--from` value names: a stage (by name or index), or nil for an image.
local function from_target(df, st, value, ctx)
  local v = ctx.expand(value, st)
  if v:match("^%d+$") then return df.stages[tonumber(v) + 1], v, true end
  for _, s in ipairs(df.stages) do
    if s.name == v:lower() then return s, v, false end
  end
  return nil, v, false
end

rule("DL3022", "warning", "COPY --from should reference a previously defined FROM alias",
  function(df, ctx, report)
    for _, st in ipairs(df.stages) do
      for _, ins in ipairs(st.instructions) do
        local from = ins.cmd == "COPY" and flag(ins, "from")
        if type(from) == "string" then
          local target, v = from_target(df, st, from, ctx)
          -- A reference with a registry, tag or digest is an image to copy from: fine.
          local image = v:match("[:/@]")
          if not image and (not target or target.index > st.index) then
            report(ins, "COPY --from=" .. v .. ": no stage named '" .. v .. "' is defined before it")
          end
        end
      end
    end
  end)

rule("DL3023", "error", "COPY --from cannot reference its own FROM alias", function(df, ctx, report)
  for _, st in ipairs(df.stages) do
    for _, ins in ipairs(st.instructions) do
      local from = ins.cmd == "COPY" and flag(ins, "from")
      if type(from) == "string" then
        local target, v = from_target(df, st, from, ctx)
        if target == st then report(ins, "COPY --from=" .. v .. " names the stage it is in") end
      end
    end
  end
end)

rule("DL3024", "error", "FROM aliases (stage names) must be unique", function(df, _, report)
  local seen = {}
  for _, st in ipairs(df.stages) do
    if st.name then
      if seen[st.name] then
        report(st.line, "stage name '" .. st.name .. "' is already used on line " .. seen[st.name])
      else
        seen[st.name] = st.line
      end
    end
  end
end)

rule("DL3025", "warning", "Use arguments JSON notation for CMD and ENTRYPOINT arguments",
  function(df, _, report)
    for _, ins in ipairs(df.instructions) do
      if (ins.cmd == "CMD" or ins.cmd == "ENTRYPOINT") and ins.form == "shell" then
        report(ins, "shell-form " .. ins.cmd .. ": signals go to /bin/sh, not to the program; "
          .. "use the JSON form [\"prog\", \"arg\"]")
      end
    end
  end)

--- The registry of an image reference, as Docker reads it: the first path component when
--- it has a dot or a port or is localhost, docker.io otherwise.
local function registry_of(ref)
  local first, rest = ref:match("^([^/]+)/(.+)$")
  if first and rest and (first:find("[.:]") or first == "localhost") then return first:lower() end
  return "docker.io"
end

local function registry_allowed(reg, trusted)
  for _, t in ipairs(trusted) do
    t = t:lower()
    if t == reg or (t == "docker.io" and reg == "index.docker.io") then return true end
    local suffix = t:match("^%*(%..+)$")
    if suffix and reg:sub(-#suffix) == suffix then return true end
  end
  return false
end

rule("DL3026", "error", "Use only an allowed registry in the FROM image", function(df, ctx, report)
  local trusted = ctx.config.trusted_registries
  if not trusted or #trusted == 0 then return end
  for _, st in ipairs(df.stages) do
    local img = st.image
    local from_stage = false
    for k = 1, st.index - 1 do if df.stages[k].name == img:lower() then from_stage = true end end
    if not from_stage and img ~= "scratch" and img ~= "" then
      local reg = registry_of(img)
      if not registry_allowed(reg, trusted) then
        report(st.line, "base image '" .. img .. "' comes from " .. reg .. ", which is not a trusted registry")
      end
    end
  end
end)

command_rule("DL3027", "warning", "Do not use apt as it is meant to be an end-user tool, use apt-get "
  .. "or apt-cache instead", function(cmd)
  if cmd.words[1] == "apt" then return "apt in RUN: its interface is not stable in scripts; use apt-get" end
end)

local GEM_VALUE = set({ "--source", "-i", "--install-dir", "-n", "--bindir", "-P", "--trust-policy" })
command_rule("DL3028", "warning", "Pin versions in gem install. Instead of `gem install <gem>` use "
  .. "`gem install <gem>:<version>`", function(cmd)
  local k = cmd.words[1] == "gem" and sub_index(cmd, { install = true, i = true })
  if not k then return nil end
  if has_switch(cmd, "v", { "--version" }) then return nil end
  return unpinned(cmd, k, GEM_VALUE, { ":" }, "%.gem$", "gem install", ":")
end)

rule("DL3029", "warning", "Do not use --platform flag with FROM", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    local p = ins.cmd == "FROM" and flag(ins, "platform")
    -- $BUILDPLATFORM / $TARGETPLATFORM are how cross builds are written: only a fixed
    -- platform ties the Dockerfile to one architecture.
    if type(p) == "string" and not p:find("$", 1, true) then
      report(ins, "FROM --platform=" .. p .. " pins one platform: pass --platform to the build instead")
    end
  end
end)

local function is_install(prog, subs)
  return function(cmd)
    local p = cmd.words[1]
    local ok = false
    for _, x in ipairs(prog) do if p == x then ok = true end end
    return ok and sub_index(cmd, subs) ~= nil
  end
end

local yum_install = is_install({ "yum" }, { install = true, groupinstall = true, localinstall = true })
command_rule("DL3030", "warning", "Use the -y switch to avoid manual input `yum install -y <package>`",
  function(cmd)
    if yum_install(cmd) and not has_switch(cmd, "y", { "--assumeyes" }) then
      return "yum install without -y waits for an answer the build cannot give"
    end
  end)

cleanup_rule("DL3032", "warning", "`yum clean all` missing after yum command.", yum_install,
  function(c) return c.words[1] == "yum" and has_word(c, "clean") and has_word(c, "all") end,
  { "/var/cache/yum" }, "yum install without yum clean all in the same RUN keeps the cache in the image")

local RPM_VALUE = set({ "--enablerepo", "--disablerepo", "--setopt", "-c", "--config",
  "--installroot", "--releasever", "-x", "--exclude" })
-- A package group (@name) has no version to pin.
local function rpm_unpinned(cmd, from, what)
  return unpinned(cmd, from, RPM_VALUE, { "%-%d", "^@" }, "%.rpm$", what .. " install", "-")
end

command_rule("DL3033", "warning", "Specify version with `yum install -y <package>-<version>`",
  function(cmd)
    local k = cmd.words[1] == "yum" and sub_index(cmd, { install = true })
    if k then return rpm_unpinned(cmd, k, "yum") end
  end)

local ZYPPER_INSTALL = { install = true, ["in"] = true, remove = true, rm = true,
  ["source-install"] = true, si = true, patch = true }
local zypper_install = is_install({ "zypper" }, { install = true, ["in"] = true })
command_rule("DL3034", "warning", "Non-interactive switch missing from `zypper` command: `zypper install -y`",
  function(cmd)
    if cmd.words[1] == "zypper" and sub_index(cmd, ZYPPER_INSTALL)
      and not has_switch(cmd, "n", { "--non-interactive", "--no-confirm" }) and not has_switch(cmd, "y") then
      return "zypper without -n/-y waits for an answer the build cannot give"
    end
  end)

command_rule("DL3035", "warning", "Do not use `zypper dist-upgrade`.", function(cmd)
  if cmd.words[1] == "zypper" and sub_index(cmd, { ["dist-upgrade"] = true, dup = true }) then
    return "zypper dist-upgrade in RUN: it may pull a new release into the image"
  end
end)

cleanup_rule("DL3036", "warning", "`zypper clean` missing after zypper use.", zypper_install,
  function(c) return c.words[1] == "zypper" and sub_index(c, { clean = true, cc = true }) ~= nil end,
  { "/var/cache/zypp" }, "zypper install without zypper clean in the same RUN keeps the cache in the image")

command_rule("DL3037", "warning", "Specify version with `zypper install -y <package>=<version>`.",
  function(cmd)
    local k = cmd.words[1] == "zypper" and sub_index(cmd, { install = true, ["in"] = true })
    if not k then return nil end
    return unpinned(cmd, k, RPM_VALUE, { "[=<>]" }, "%.rpm$", "zypper install", "=")
  end)

local dnf_install = is_install({ "dnf", "microdnf" }, { install = true, groupinstall = true,
  localinstall = true })
command_rule("DL3038", "warning", "Use the -y switch to avoid manual input `dnf install -y <package>`",
  function(cmd)
    -- microdnf never asks.
    if dnf_install(cmd) and cmd.words[1] == "dnf" and not has_switch(cmd, "y", { "--assumeyes" }) then
      return "dnf install without -y waits for an answer the build cannot give"
    end
  end)

cleanup_rule("DL3040", "warning", "`dnf clean all` missing after dnf command.", dnf_install,
  function(c)
    return (c.words[1] == "dnf" or c.words[1] == "microdnf") and has_word(c, "clean") and has_word(c, "all")
  end, { "/var/cache/dnf", "/var/cache/yum" },
  "dnf install without dnf clean all in the same RUN keeps the cache in the image")

command_rule("DL3041", "warning", "Specify version with `dnf install -y <package>-<version>`", function(cmd)
  local k = (cmd.words[1] == "dnf" or cmd.words[1] == "microdnf") and sub_index(cmd, { install = true })
  if k then return rpm_unpinned(cmd, k, cmd.words[1]) end
end)

rule("DL3042", "warning", "Avoid use of cache directory with pip. Use `pip install --no-cache-dir <package>`",
  function(df, ctx, report)
    for _, ins in ipairs(ctx.runs) do
      local st = df.stages[ins.stage]
      if ctx.final[ins.stage] and not mount_covers(ins, { "/root/.cache/pip", "/root/.cache" })
        and not (st.env.PIP_NO_CACHE_DIR and st.env.PIP_NO_CACHE_DIR ~= "")
        and not (st.env.PIP_CACHE_DIR and mount_covers(ins, { st.env.PIP_CACHE_DIR })) then
        for _, cmd in ipairs(commands_of(ins)) do
          if is_pip_install(cmd) and not has_word(cmd, "--no-cache-dir") then
            report(cmd.line, "pip install keeps its cache in the image: --no-cache-dir, or a cache mount")
          end
        end
      end
    end
  end)

rule("DL3043", "error", "`ONBUILD`, `FROM` or `MAINTAINER` triggered from within `ONBUILD` instruction.",
  function(df, _, report)
    for _, ins in ipairs(df.instructions) do
      local inner = ins.cmd == "ONBUILD" and (ins.args:match("^%s*(%S+)") or ""):upper()
      if inner == "ONBUILD" or inner == "FROM" or inner == "MAINTAINER" then
        report(ins, "ONBUILD " .. inner .. " is not allowed")
      end
    end
  end)

rule("DL3044", "error", "Do not refer to an environment variable within the same `ENV` statement "
  .. "where it is defined.", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "ENV" then
      -- Docker expands every value with the variables as they were before the ENV, so a
      -- reference to a key set earlier in the same ENV does not see that value.
      local defined = {}
      for item in ins.args:gmatch("%S+") do
        local k, v = item:match("^([%a_][%w_]*)=(.*)$")
        if k then
          for ref in v:gmatch("%$%{?([%a_][%w_]*)") do
            if defined[ref] then
              report(ins, "ENV " .. k .. " uses $" .. ref .. ", which this ENV sets: the value "
                .. "is the one from before the ENV; set " .. ref .. " in an ENV of its own first")
            end
          end
          defined[k] = true
        end
      end
    end
  end
end)

rule("DL3045", "warning", "`COPY` to a relative destination without `WORKDIR` set.", function(df, _, report)
  local workdir = {}
  for _, st in ipairs(df.stages) do
    local set_here = st.base_stage and workdir[st.base_stage] or false
    for _, ins in ipairs(st.instructions) do
      if ins.cmd == "WORKDIR" then set_here = true end
      if ins.cmd == "COPY" and not set_here then
        local w = copy_words(ins)
        local dest = w[#w]
        if dest and not dest:match("^/") and not dest:match("^%a:[/\\]") and not dest:match("^%$") then
          report(ins, "COPY to '" .. dest .. "' with no WORKDIR in the stage: the folder depends on "
            .. "the base image")
        end
      end
    end
    workdir[st.index] = set_here
  end
end)

command_rule("DL3046", "warning", "`useradd` without flag `-l` and high UID will result in excessively "
  .. "large Image.", function(cmd)
  if cmd.words[1] ~= "useradd" then return nil end
  if has_switch(cmd, "l", { "--no-log-init" }) then return nil end
  local uid
  for k = 2, #cmd.words do
    local w = cmd.words[k]
    uid = uid or (w == "-u" or w == "--uid") and cmd.words[k + 1] or w:match("^%-%-uid=(%d+)$")
      or w:match("^%-u(%d+)$")
  end
  -- lastlog and faillog are sparse files indexed by uid; a uid past 99999 makes them huge
  -- once a layer stores them.
  if uid and tonumber(uid) and tonumber(uid) > 99999 then
    return "useradd -u " .. uid .. " without -l (--no-log-init) writes a lastlog of gigabytes"
  end
end)

command_rule("DL3047", "info", "`wget` without flag `--progress` will result in excessively bloated build "
  .. "logs when downloading larger files.", function(cmd)
  if cmd.words[1] ~= "wget" then return nil end
  if has_switch(cmd, "q", { "--progress", "--quiet", "--no-verbose", "--output-file", "--append-output" })
    or has_word(cmd, "-nv") or has_switch(cmd, "o") or has_switch(cmd, "a") then return nil end
  return "wget without --progress=dot:giga (or -q / -nv) floods the build log"
end)

-- ------------------------------------------------------------------ labels

--- The LABELs of each stage: {key = {value=, ins=}} (later ones win), inherited from the
--- stage a stage is built FROM.
local function labels_of(df)
  local by_stage = {}
  for _, st in ipairs(df.stages) do
    local l = {}
    for k, v in pairs(st.base_stage and by_stage[st.base_stage] or {}) do l[k] = v end
    for _, ins in ipairs(st.instructions) do
      if ins.cmd == "LABEL" then
        for _, kv in ipairs(ins.pairs or {}) do l[kv[1]] = { value = kv[2], ins = ins } end
      end
    end
    by_stage[st.index] = l
  end
  return by_stage
end

local RESERVED = { "com.docker.", "io.docker.", "org.dockerproject." }
rule("DL3048", "style", "Invalid Label Key", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "LABEL" then
      for _, kv in ipairs(ins.pairs or {}) do
        local k, bad = kv[1], nil
        for _, r in ipairs(RESERVED) do if k:sub(1, #r) == r then bad = "uses the reserved namespace " .. r end end
        if not bad and not (k:match("^[%l%d][%l%d%.%-]*$") and k:match("[%l%d]$")) then
          bad = "must be lower-case letters, digits, '.' and '-', starting and ending with a letter or digit"
        elseif not bad and (k:find("..", 1, true) or k:find("--", 1, true)) then
          bad = "has a repeated '.' or '-'"
        end
        if bad then report(ins, "label key '" .. k .. "' " .. bad) end
      end
    end
  end
end)

local function valid_url(v)
  local scheme, rest = v:match("^(%a[%w+.%-]*)://(.+)$")
  return scheme ~= nil and rest:match("^[^%s/?#]+") ~= nil and not v:find("%s")
end

local function valid_rfc3339(v)
  local y, mo, d, h, mi, s, zone = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)%.?%d*(.*)$")
  if not y then return false end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  local feb = (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28
  local dim = { 31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if mo < 1 or mo > 12 or d < 1 or d > dim[mo] or h > 23 or mi > 59 or s > 60 then return false end
  return zone == "Z" or zone == "z" or zone:match("^[+-]%d%d:%d%d$") ~= nil
end

local function valid_semver(v)
  local core, rest = v:match("^(%d+%.%d+%.%d+)(.*)$")
  if not core then return false end
  for n in core:gmatch("%d+") do if #n > 1 and n:sub(1, 1) == "0" then return false end end
  local pre, build = rest:match("^%-([%w%-%.]+)(.*)$")
  if pre then
    rest = build
    for id in (pre .. "."):gmatch("([^.]*)%.") do
      if id == "" or (id:match("^%d+$") and #id > 1 and id:sub(1, 1) == "0") then return false end
    end
  end
  if rest == "" then return true end
  local meta = rest:match("^%+([%w%-%.]+)$")
  if not meta then return false end
  for id in (meta .. "."):gmatch("([^.]*)%.") do if id == "" then return false end end
  return true
end

local function valid_email(v)
  local l, d = v:match("^([%w!#$%%&'*+/=?^_`{|}~%.%-]+)@([%w%-%.]+)$")
  return l ~= nil and not l:match("^%.") and not l:match("%.$") and not l:find("..", 1, true)
    and d:find(".", 1, true) ~= nil and not d:match("^[.%-]") and not d:match("[.%-]$")
    and not d:find("..", 1, true)
end

local function valid_hash(v) return v:match("^%x+$") ~= nil and (#v == 40 or #v == 64) end

-- The SPDX identifiers most used for images. A full list is several hundred entries that
-- change with each SPDX release; LicenseRef-* and DocumentRef-* always pass.
local SPDX = set({ "0BSD", "AFL-3.0", "AGPL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-1.1",
  "Apache-2.0", "APSL-2.0", "Artistic-1.0", "Artistic-2.0", "BlueOak-1.0.0", "BSD-1-Clause",
  "BSD-2-Clause", "BSD-2-Clause-Patent", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0",
  "BUSL-1.1", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0", "CDDL-1.0",
  "CDDL-1.1", "CECILL-2.1", "CPL-1.0", "ECL-2.0", "EFL-2.0", "EPL-1.0", "EPL-2.0", "EUPL-1.1",
  "EUPL-1.2", "FTL", "GFDL-1.3", "GFDL-1.3-only", "GFDL-1.3-or-later", "GPL-1.0-or-later",
  "GPL-2.0", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0", "GPL-3.0-only", "GPL-3.0-or-later",
  "HPND", "ICU", "IJG", "ISC", "LGPL-2.0", "LGPL-2.0-only", "LGPL-2.0-or-later", "LGPL-2.1",
  "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0", "LGPL-3.0-only", "LGPL-3.0-or-later", "Libpng",
  "MIT", "MIT-0", "MPL-1.1", "MPL-2.0", "MPL-2.0-no-copyleft-exception", "MS-PL", "MS-RL", "NCSA",
  "ODbL-1.0", "OFL-1.1", "OpenSSL", "OSL-3.0", "PHP-3.01", "PostgreSQL", "PSF-2.0", "Python-2.0",
  "Ruby", "SSPL-1.0", "Unicode-DFS-2016", "Unlicense", "UPL-1.0", "Vim", "W3C", "WTFPL", "X11",
  "Zlib", "ZPL-2.1", "curl", "bzip2-1.0.6" })
local SPDX_EXCEPTIONS = set({ "Classpath-exception-2.0", "GCC-exception-3.1", "LLVM-exception",
  "OpenSSL-exception", "Autoconf-exception-3.0", "Bison-exception-2.2", "Font-exception-2.0" })

local function spdx_id(id)
  id = id:gsub("%+$", "")
  return SPDX[id] or id:match("^LicenseRef%-[%w%.%-]+$") or id:match("^DocumentRef%-[%w%.%-]+:LicenseRef%-[%w%.%-]+$")
end

--- An SPDX license expression: ids joined by AND / OR, `WITH exception`, parentheses.
local function valid_spdx(v)
  local tokens = {}
  for t in v:gsub("[()]", " %0 "):gmatch("%S+") do tokens[#tokens + 1] = t end
  local i = 1
  local expr
  local function term()
    local t = tokens[i]
    if t == "(" then
      i = i + 1
      if not expr() or tokens[i] ~= ")" then return false end
      i = i + 1
    elseif t and spdx_id(t) then
      i = i + 1
    else
      return false
    end
    if tokens[i] == "WITH" then
      if not SPDX_EXCEPTIONS[tokens[i + 1] or ""] then return false end
      i = i + 2
    end
    return true
  end
  function expr()
    if not term() then return false end
    while tokens[i] == "AND" or tokens[i] == "OR" do
      i = i + 1
      if not term() then return false end
    end
    return true
  end
  return #tokens > 0 and expr() and i == #tokens + 1
end

local LABEL_TYPES = {
  url = { "DL3052", "is not a valid URL", valid_url },
  rfc3339 = { "DL3053", "is not a valid time format: it must conform to RFC3339", valid_rfc3339 },
  spdx = { "DL3054", "is not a valid SPDX license expression", valid_spdx },
  hash = { "DL3055", "is not a valid git hash", valid_hash },
  semver = { "DL3056", "does not conform to semantic versioning", valid_semver },
  email = { "DL3058", "is not a valid email address (RFC5322)", valid_email },
}

--- Checks of the configured label schema ({name = type}) against the final image's labels.
local function label_rule(id, severity, summary, fn)
  rule(id, severity, summary, function(df, ctx, report)
    local schema = ctx.config.label_schema
    if not schema or next(schema) == nil then return end
    local final = df.stages[#df.stages]
    fn(labels_of(df)[final.index], schema, final, report, ctx)
  end)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

label_rule("DL3049", "info", "Label `<label>` is missing.", function(labels, schema, final, report)
  for _, name in ipairs(sorted_keys(schema)) do
    if not labels[name] then report(final.line, "label '" .. name .. "' is missing from the final image") end
  end
end)

label_rule("DL3050", "info", "Superfluous label(s) present.", function(labels, schema, _, report, ctx)
  if not ctx.config.strict_labels then return end
  for _, name in ipairs(sorted_keys(labels)) do
    if not schema[name] then report(labels[name].ins, "label '" .. name .. "' is not in the label schema") end
  end
end)

label_rule("DL3051", "warning", "Label `<label>` is empty.", function(labels, schema, _, report)
  for _, name in ipairs(sorted_keys(schema)) do
    local l = labels[name]
    if l and trim(l.value) == "" then report(l.ins, "label '" .. name .. "' is empty") end
  end
end)

for _, kind in ipairs({ "url", "rfc3339", "spdx", "hash", "semver", "email" }) do
  local id, what, valid = table.unpack(LABEL_TYPES[kind])
  local summaries = { url = "Label `<label>` is not a valid URL.",
    rfc3339 = "Label `<label>` is not a valid time format - must conform to RFC3339.",
    spdx = "Label `<label>` is not a valid SPDX license identifier.",
    hash = "Label `<label>` is not a valid git hash.",
    semver = "Label `<label>` does not conform to semantic versioning.",
    email = "Label `<label>` is not a valid email format - must conform to RFC5322." }
  label_rule(id, "warning", summaries[kind], function(labels, schema, _, report)
    for _, name in ipairs(sorted_keys(schema)) do
      local l = labels[name]
      if schema[name] == kind and l and trim(l.value) ~= "" and not valid(l.value) then
        report(l.ins, "label '" .. name .. "' value '" .. l.value .. "' " .. what)
      end
    end
  end)
end

rule("DL3057", "ignore", "`HEALTHCHECK` instruction missing.", function(df, ctx, report)
  local final = df.stages[#df.stages]
  for idx in pairs(ctx.final) do
    for _, ins in ipairs(df.stages[idx].instructions) do
      if ins.cmd == "HEALTHCHECK" then return end
    end
  end
  report(final.line, "the final image has no HEALTHCHECK")
end)

rule("DL3059", "info", "Multiple consecutive `RUN` instructions. Consider consolidation.",
  function(df, _, report)
    for _, st in ipairs(df.stages) do
      local prev
      for _, ins in ipairs(st.instructions) do
        if ins.cmd == "RUN" and prev and prev.cmd == "RUN" then
          local a, b = {}, {}
          for _, f in ipairs(prev.flags) do a[#a + 1] = f.name .. "=" .. tostring(f.value) end
          for _, f in ipairs(ins.flags) do b[#b + 1] = f.name .. "=" .. tostring(f.value) end
          table.sort(a)
          table.sort(b)
          if table.concat(a, " ") == table.concat(b, " ") then
            report(ins, "consecutive RUN instructions with the same flags: join them to save a layer")
          end
        end
        prev = ins
      end
    end
  end)

rule("DL3060", "info", "`yarn cache clean` missing after `yarn install` was run.", function(df, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    local st = df.stages[ins.stage]
    local dirs = { "/usr/local/share/.cache/yarn", "/root/.cache/yarn", "/root/.yarn/berry/cache" }
    if st.env.YARN_CACHE_FOLDER then dirs[#dirs + 1] = st.env.YARN_CACHE_FOLDER end
    if ctx.final[ins.stage] and not mount_covers(ins, dirs) then
      local first = run_has(ins, function(c)
        return c.words[1] == "yarn" and (c.words[2] == nil or c.words[2] == "install" or c.words[2]:match("^%-"))
      end)
      local clean = run_has(ins, function(c) return c.words[1] == "yarn" and c.words[2] == "cache"
        and c.words[3] == "clean" end)
      if first and not clean then
        report(first.line, "yarn install without yarn cache clean in the same RUN keeps the cache in the image")
      end
    end
  end
end)

-- DL3061 comes from the parser (an instruction before the first FROM); see the linter.
rule("DL3061", "error", "Invalid instruction order. Dockerfile must begin with `FROM`, `ARG` or comment.",
  function() end)

command_rule("DL3062", "warning", "Pin versions in go install. Instead of `go install <package>` use "
  .. "`go install <package>@<version>`", function(cmd)
  if cmd.words[1] ~= "go" or cmd.words[2] ~= "install" then return nil end
  for _, p in ipairs(operands(cmd, 2, set({ "-o", "-C", "-tags", "-ldflags", "-gcflags", "-mod" }))) do
    local v = p:match("@(.+)$")
    if not is_file_operand(p) and (not v or v == "latest") then
      return "go install " .. p .. ": pin its version (@v1.2.3)"
    end
  end
end)

rule("DL4000", "error", "MAINTAINER is deprecated", function(df, _, report)
  for _, ins in ipairs(df.instructions) do
    if ins.cmd == "MAINTAINER" then
      report(ins, "MAINTAINER is deprecated: LABEL org.opencontainers.image.authors=\"...\"")
    end
  end
end)

rule("DL4001", "warning", "Either use Wget or Curl but not both", function(df, _, report)
  for _, st in ipairs(df.stages) do
    local seen = {}
    for _, ins in ipairs(st.instructions) do
      if ins.cmd == "RUN" then
        for _, cmd in ipairs(commands_of(ins)) do
          local w = cmd.words[1]
          if (w == "wget" or w == "curl") and not seen[w] then
            seen[w] = cmd
            local other = seen[w == "wget" and "curl" or "wget"]
            if other then
              report(cmd.line, w .. " here and " .. other.words[1] .. " on line " .. other.line
                .. ": use one download tool")
            end
          end
        end
      end
    end
  end
end)

once_per_stage("DL4003", "warning", "Multiple `CMD` instructions found. If you list more than one `CMD` then only "
  .. "the last `CMD` will take effect", "CMD")

once_per_stage("DL4004", "error", "Multiple `ENTRYPOINT` instructions found. If you list more than one "
  .. "`ENTRYPOINT` then only the last `ENTRYPOINT` will take effect", "ENTRYPOINT")

command_rule("DL4005", "warning", "Use SHELL to change the default shell", function(cmd)
  if cmd.words[1] ~= "ln" then return nil end
  local last = cmd.words[#cmd.words]
  if last == "/bin/sh" then return "ln to /bin/sh replaces the shell behind Docker's back: use SHELL" end
end)

rule("DL4006", "warning", "Set the SHELL option -o pipefail before RUN with a pipe in it. If you are "
  .. "using /bin/sh in an alpine image or if your shell is symlinked to busybox then consider "
  .. "explicitly setting your SHELL to /bin/ash, or disable this check", function(_, ctx, report)
  for _, ins in ipairs(ctx.runs) do
    local sh = ctx.shell_at[ins]
    if posix_shell(sh) and not pipefail_shell(sh) then
      local armed = false
      for _, cmd in ipairs(commands_of(ins)) do
        if sets_pipefail(cmd) then armed = true end
        if cmd.piped and not armed then
          report(cmd.line, "a pipe without pipefail hides failures of all but the last command: "
            .. "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"] or set -o pipefail")
          break
        end
      end
    end
  end
end)

-- ------------------------------------------------------------------ ours

rule("MX001", "warning", "The final image has no USER (runs as root)", function(df, ctx, report)
  local final = df.stages[#df.stages]
  local root = df.stages[final.index]
  while root.base_stage do root = df.stages[root.base_stage] end
  if not ctx.last_user and not root.image:lower():find("nonroot", 1, true) then
    report(final.line, "no USER in the final stage: the container runs as root")
  end
end)

local function whole_context_copy(ins)
  if ins.cmd ~= "COPY" then return false end
  if flag(ins, "from") then return false end
  for _, src in ipairs(copy_sources(ins)) do
    if src == "." or src == "./" or src == "*" then return true end
  end
  return false
end

local function first_install(ins)
  if ins.cmd ~= "RUN" then return nil end
  return run_has(ins, installs_dependencies)
end

--- Dependencies installed before the whole context is copied are cached; the usual second
--- install after it (the project itself: `uv sync`, `pip install .`) is then fine.
rule("MX002", "warning", "COPY of the whole context before installing dependencies",
  function(df, _, report)
    for _, st in ipairs(df.stages) do
      local whole, installed = nil, false
      for _, ins in ipairs(st.instructions) do
        local cmd = first_install(ins)
        if whole_context_copy(ins) and not whole and not installed then
          whole = ins
        elseif cmd and whole then
          report(whole, "the whole context is copied before '" .. table.concat(cmd.words, " ", 1,
            math.min(#cmd.words, 3)) .. "' (line " .. cmd.line .. "): any source change "
            .. "re-installs dependencies; copy the dependency manifests first")
          break
        elseif cmd then
          installed = true
        end
      end
    end
  end)

-- In id order (DL... before MX...), whatever order the label loop added DL3052..DL3058 in.
table.sort(RULES, function(a, b) return a.id < b.id end)

local M = { list = RULES, by_id = {} }
for _, r in ipairs(RULES) do M.by_id[r.id] = r end

-- Exposed to the linter and the tests.
M.LABEL_TYPES = { text = true, url = true, rfc3339 = true, spdx = true, hash = true, semver = true,
  email = true }
M.valid = { url = valid_url, rfc3339 = valid_rfc3339, spdx = valid_spdx, hash = valid_hash,
  semver = valid_semver, email = valid_email }
M.posix_shell = posix_shell

return M
