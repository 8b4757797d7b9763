-- needs: docker
-- Ctrl-C and SIGTERM stop a run with its cleanup wherever they land (issue #23). Each run
-- starts tests/fixtures/recipes/interrupt_stress.lua, waits for its first guard, sleeps a
-- random delay, sends SIGINT or SIGTERM (every third run gets it twice, a random 0-3 ms apart,
-- as timeout(1) and CI runners deliver it: to the process, then to its group) and checks the
-- exit status (130 / 143) and that every <close> guard the recipe armed ran. A busy loop keeps
-- the other core loaded meanwhile. Each run is bounded (killed after 60 s: a failure).
--   MYRMEX_INTERRUPT_RUNS (default 200) and MYRMEX_INTERRUPT_CONTAINER_RUNS (default 12) set
--   the counts; MYRMEX_INTERRUPT_SEED replays a sequence (the seed is in every failure).
local sh = require("tests.support.sh")
local dt = require("tests.support.docker")

local R = "tests/fixtures/recipes/"
local RUNS = tonumber(os.getenv("MYRMEX_INTERRUPT_RUNS") or "") or 200
local CONTAINER_RUNS = tonumber(os.getenv("MYRMEX_INTERRUPT_CONTAINER_RUNS") or "") or 12
local SEED = tonumber(os.getenv("MYRMEX_INTERRUPT_SEED") or "") or os.time()
local EXIT = { INT = 130, TERM = 143 }

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Guards armed and not closed, from the recipe's log (nil when all closed), and the count
-- armed. A guard may be closed without its "armed" line: the signal came as it was arming.
local function unclosed(log)
  local armed, closed, n = {}, {}, 0
  for what, name in log:gmatch("(%a+) ([^\n]+)\n") do
    if what == "armed" then
      armed[name], n = true, n + 1
    elseif what == "closed" then
      closed[name] = true
    end
  end
  local left = {}
  for name in pairs(armed) do
    if not closed[name] then left[#left + 1] = name end
  end
  table.sort(left)
  return #left > 0 and table.concat(left, ", ") or nil, n
end

-- One run: start the recipe with `sets`, wait for its first guard, then `delay` seconds
-- later send `sig` (and again `again` seconds after, if set). Returns the exit status and
-- the recipe's stderr and log.
local function interrupt(sets, sig, delay, again)
  local log, err = os.tmpname(), os.tmpname()
  os.remove(log)
  local args = { sh.bin, "run", "interrupt_stress", "--set", "log=" .. log }
  for _, s in ipairs(sets) do args[#args + 1] = "--set"; args[#args + 1] = s end
  for i, a in ipairs(args) do args[i] = sh.q(a) end
  -- `read -t` on a pipe no one writes is a sleep without a fork (sleep(1) per poll made each
  -- run a third slower on a loaded machine).
  local script = table.concat({
    "exec 9<> <(:)",
    table.concat(args, " ") .. " >/dev/null 2>" .. sh.q(err) .. " & pid=$!",
    "n=0; while [ ! -s " .. sh.q(log) .. " ] && [ $n -lt 4000 ]; do read -t 0.005 -u 9; n=$((n+1)); done",
    ("read -t %.4f -u 9; kill -%s $pid"):format(delay, sig),
    again and ("read -t %.4f -u 9; kill -%s $pid 2>/dev/null"):format(again, sig) or ":",
    "wait $pid; echo $?",
  }, "\n")
  local r = sh.run("timeout -k 2 60 bash -c " .. sh.q(script), { env = { MYRMEX_PATH = R, CI = "" } })
  local code = tonumber(r.stdout:match("(%d+)%s*$") or "") or r.code
  local out = { code = code, stderr = read(err), log = read(log) }
  os.remove(log)
  os.remove(err)
  return out
end

-- Keeps one core busy until stopped: the race showed only on a loaded machine.
local function busy_core()
  local r = sh.run("timeout 900 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!")
  local pid = assert(tonumber(r.stdout:match("%d+")), "cannot start the busy loop")
  return function() os.execute("kill " .. pid .. " 2>/dev/null") end
end

describe("interrupting a run", function()
  local stop_busy
  before_each(function() stop_busy = busy_core() end)
  after_each(function() stop_busy() end)

  it("runs every <close> of parallel branches and exits 130 / 143, at " .. RUNS .. " random points", function()
    math.randomseed(SEED)
    local failures, armed_total = {}, 0
    for i = 1, RUNS do
      local sig = i % 2 == 1 and "INT" or "TERM"
      local delay = math.random(0, 40) / 1000
      local again = i % 3 == 0 and math.random(0, 30) / 10000 or nil
      local r = interrupt({}, sig, delay, again)
      local left, armed = unclosed(r.log)
      armed_total = armed_total + armed
      local what
      if r.code ~= EXIT[sig] then
        what = ("exit %d, expected %d"):format(r.code, EXIT[sig])
      elseif left then
        what = "<close> skipped: " .. left
      elseif not r.stderr:find("Interrupted", 1, true) then
        what = "no Interrupted error reported"
      end
      if what then
        failures[#failures + 1] = ("run %d (SIG%s after %.3f s%s, seed %d): %s; stderr: %s"):format(i, sig,
          delay, again and (", again after " .. again) or "", SEED, what, r.stderr:match("[^\n]*\n?[^\n]*$"))
      end
    end
    assert.are.equal(0, #failures, table.concat(failures, "\n"))
    assert.is_true(armed_total > RUNS, "the runs armed no guard beyond the first: " .. armed_total)
  end)

  it("leaves no container of run_containers behind, at " .. CONTAINER_RUNS .. " random points", function()
    if not dt.available() then pending("no Docker engine") return end
    local image = dt.image()
    math.randomseed(SEED + 1)
    local failures, started = {}, 0
    for i = 1, CONTAINER_RUNS do
      local sig = i % 2 == 1 and "INT" or "TERM"
      -- Spread over 0-3 s, so some runs stop while the containers are being made and some
      -- after all four run.
      local delay = (i - 1) / math.max(CONTAINER_RUNS - 1, 1) * 3 + math.random(0, 50) / 1000
      local again = i % 3 == 0 and math.random(0, 30) / 10000 or nil
      local r = interrupt({ "image=" .. image, "label=" .. dt.label_filter, "prefix=" .. dt.name("intr") },
        sig, delay, again)
      local left = unclosed(r.log)
      local leaked = dt.containers()
      if r.log:find("started 4", 1, true) then started = started + 1 end
      local what
      if r.code ~= EXIT[sig] then
        what = ("exit %d, expected %d"):format(r.code, EXIT[sig])
      elseif left then
        what = "<close> skipped: " .. left
      elseif #leaked > 0 then
        what = "containers left: " .. table.concat(leaked, " ")
      end
      if what then
        failures[#failures + 1] = ("run %d (SIG%s after %.3f s%s, seed %d): %s; stderr: %s"):format(i, sig,
          delay, again and (", again after " .. again) or "", SEED + 1, what, r.stderr:match("[^\n]*\n?[^\n]*$"))
        dt.cleanup()
      end
    end
    dt.cleanup()
    assert.are.equal(0, #failures, table.concat(failures, "\n"))
    print(("%d of %d runs were stopped after run_containers returned"):format(started, CONTAINER_RUNS))
  end)
end)
