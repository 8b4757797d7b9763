--- Shell scripts inside a Dockerfile: a small POSIX tokenizer that splits RUN scripts (and
--- heredoc bodies fed to a shell) into simple commands, for the lint rules. It understands
--- quotes, escapes, comments, $(...), backticks, &&, ||, ;, | and subshells, and evaluates
--- nothing. See docs/dockerfile.md.
local check = require("myrmex.check")

local M = {}

local set_of = check.set

local SHELLS = set_of({ "sh", "bash", "ash", "dash", "zsh", "/bin/sh", "/bin/bash", "/bin/ash",
  "/bin/dash", "/usr/bin/bash", "/usr/bin/env" })

--- Split a POSIX shell script into simple commands: {words=, line=, piped=, subshell=}.
--- Quotes, escapes, comments, $(...) and `...` are skipped over, so a | inside them is not a
--- pipe.
local function shell_commands(script, line)
  local cmds, cur, word, i, depth = {}, nil, {}, 1, 0
  local function start()
    if not cur then cur = { words = {}, line = line, subshell = depth > 0 } end
  end
  local function end_word()
    if #word > 0 then
      start()
      cur.words[#cur.words + 1] = table.concat(word)
      word = {}
    end
  end
  local function end_cmd(op)
    end_word()
    if cur then
      cur.op = op
      cmds[#cmds + 1] = cur
      cur = nil
    end
  end
  while i <= #script do
    local c = script:sub(i, i)
    local two = script:sub(i, i + 1)
    if c == "'" then
      local j = script:find("'", i + 1, true) or #script
      word[#word + 1] = script:sub(i + 1, j - 1)
      line = line + select(2, script:sub(i, j):gsub("\n", ""))
      i = j
    elseif c == '"' then
      local j = i + 1
      while j <= #script and script:sub(j, j) ~= '"' do
        if script:sub(j, j) == "\\" then j = j + 1 end
        j = j + 1
      end
      word[#word + 1] = script:sub(i + 1, j - 1)
      line = line + select(2, script:sub(i, j):gsub("\n", ""))
      i = j
    elseif c == "\\" then
      if script:sub(i + 1, i + 1) == "\n" then line = line + 1 else word[#word + 1] = script:sub(i + 1, i + 1) end
      i = i + 1
    elseif two == "$(" or c == "`" then
      local close, j, d = c == "`" and "`" or ")", i + (c == "`" and 1 or 2), 1
      while j <= #script and d > 0 do
        local x = script:sub(j, j)
        if close == ")" and x == "(" then d = d + 1 elseif x == close then d = d - 1 end
        j = j + 1
      end
      word[#word + 1] = script:sub(i, j - 1)
      i = j - 1
    elseif c == "#" and #word == 0 then
      local j = script:find("\n", i, true) or #script + 1
      i = j - 1
    elseif two == "&&" or two == "||" then
      end_cmd(two)
      i = i + 1
    elseif c == "&" and (script:sub(i - 1, i - 1):match("[<>]") or script:sub(i + 1, i + 1) == ">") then
      word[#word + 1] = c -- 2>&1, &>file: a redirection, not a separator
    elseif c == "|" or c == ";" or c == "&" then
      end_cmd(c)
    elseif c == "\n" then
      end_cmd("\n")
      line = line + 1
    elseif c == "(" and #word == 0 then
      end_cmd(nil)
      depth = depth + 1
    elseif c == ")" then
      end_cmd(nil)
      depth = math.max(depth - 1, 0)
    elseif c:match("%s") then
      end_word()
    else
      word[#word + 1] = c
    end
    i = i + 1
  end
  end_cmd(nil)
  for k, cmd in ipairs(cmds) do
    cmd.piped = cmd.op == "|" or (k > 1 and cmds[k - 1].op == "|")
    -- `FOO=bar cmd` and `sudo`-less lookups want the command name first.
    while cmd.words[1] and cmd.words[1]:match("^[%a_][%w_]*=") do table.remove(cmd.words, 1) end
    -- `sudo apt-get install` is still an apt-get install; the sudo itself is remembered.
    if cmd.words[1] == "sudo" then
      cmd.sudo = true
      table.remove(cmd.words, 1)
      while cmd.words[1] and cmd.words[1]:match("^%-") do table.remove(cmd.words, 1) end
    end
  end
  return cmds
end

--- The first word of a command line, quotes removed (nil for an empty line).
---@param text string
---@return string|nil
function M.first_word(text)
  local w = text:match("^%s*(%S+)")
  return w and (w:gsub("[\"']", ""))
end

--- The shell code a RUN executes, as {text=, line=} pieces: the command line (heredoc
--- markers removed) and each heredoc body fed to a shell. Bodies fed to other programs
--- (python3 <<EOF, cat <<EOF > file) are data, not shell.
local function run_scripts(ins)
  if ins.form == "exec" then return {} end
  local head = ins.args
  for _, doc in ipairs(ins.heredocs) do head = head:gsub(doc.marker:gsub("%p", "%%%0"), "", 1) end
  local pieces = { { text = head, line = ins.line } }
  local first = M.first_word(head)
  for _, doc in ipairs(ins.heredocs) do
    -- With no command, BuildKit runs a body that starts with #! as a script of that
    -- interpreter, so `#!/usr/bin/env python3` is Python, not shell.
    local interp, arg = doc.content:match("^#!%s*(%S+)[ \t]*(%S*)")
    local prog = interp and ((interp:match("/env$") and arg ~= "") and arg or interp:match("[^/]+$"))
    if (first == nil and (not prog or SHELLS[prog])) or SHELLS[first] then
      pieces[#pieces + 1] = { text = doc.content, line = doc.line, heredoc = doc }
    end
  end
  return pieces
end

-- Rules ask for the same RUN's commands many times: split each script once.
local cache = setmetatable({}, { __mode = "k" })

local function commands_of(ins)
  if cache[ins] then return cache[ins] end
  local all = {}
  for _, p in ipairs(run_scripts(ins)) do
    for _, c in ipairs(shell_commands(p.text, p.line)) do all[#all + 1] = c end
  end
  cache[ins] = all
  return all
end

--- True when one of the command's words is `w`.
---@param cmd table a command from M.commands
---@param w string
---@return boolean
function M.has_word(cmd, w)
  for _, x in ipairs(cmd.words) do if x == w then return true end end
  return false
end

M.SHELLS = SHELLS
M.split = shell_commands
M.scripts = run_scripts
M.commands = commands_of

return M
