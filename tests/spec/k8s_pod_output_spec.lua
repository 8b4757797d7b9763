-- needs: k8s
-- What a pod prints, through the real API server from a kwok node's kubelet endpoint: attach
-- (kwok's ClusterAttach follows $STATE/kubernetes/attach.log from its end) and followed logs
-- (its ClusterLogs follows pod.log). Both files are in the CRI log format a kubelet reads; a
-- writer in the background appends to them as a container would print. What kwok's attach
-- does not do: read stdin (it drops it) or end (it follows the file until the client leaves),
-- so these attaches leave through on_output.
local K = require("tests.k8s.support")
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local rt = require("myrmex.core.runtime")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

-- A background writer: every `every` seconds, one stdout line "MARK N EPOCH" (and, with
-- `stderr`, one stderr line "MARK-err N") appended to `path` in the CRI format, up to 600 lines;
-- with `cut` (a recorder's URL), after 8 lines it cuts the recorder's streams, so that a client
-- that would hand lines over only when the stream ends fails instead of waiting forever.
local function writer(path, mark, every, stderr, cut)
  local script = [[
echo READY 0
i=0
while [ $i -lt 600 ]; do
  i=$((i+1)); t=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  printf '%s stdout F %s %d %s\n' "$t" "$1" "$i" "$(date +%s.%N)" >> "$2"
  if [ "$4" = 1 ]; then printf '%s stderr F %s-err %d\n' "$t" "$1" "$i" >> "$2"; fi
  if [ -n "$5" ] && [ $i = 8 ]; then curl -s -X POST "$5/_test/drop-watches" >/dev/null; fi
  sleep "$3"
done
]]
  return server.start("exec bash -c " .. sh.q(script) .. " writer " .. sh.q(mark) .. " " .. sh.q(path) .. " "
    .. every .. " " .. (stderr and 1 or 0) .. " " .. sh.q(cut or ""), 20)
end

describe("k8s pod output on the real control plane", function()
  local t, c
  setup(function()
    t = T.open("out", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
    K.running_pod(c, "printer")
  end)
  teardown(function() t.stop() end)

  it("attach receives stdout and stderr as the container prints them, and on_output returning false detaches",
    function()
      local mark = ("attach" .. t.namespace):gsub("%W", "") -- no pattern characters
      local w = writer(K.kwok_attach_log(), mark, 0.2, true)
      local got = { stdout = "", stderr = "" }
      local ok, r = pcall(c.attach, c, "printer", { container = "main", timeout = 60, on_output = function(s, data)
        got[s] = got[s] .. data
        local _, outs = got.stdout:gsub(mark .. " %d+", "")
        local _, errs = got.stderr:gsub(mark .. "%-err %d+", "")
        return not (outs >= 3 and errs >= 2)
      end })
      w.stop()
      assert.is_true(ok, tostring(r))
      assert.is_true(r.detached)
      assert.is_nil(r.exit_code)
      assert.are.equal("v5.channel.k8s.io", r.protocol)
      assert.are.equal(got.stdout, r.stdout)
      assert.are.equal(got.stderr, r.stderr)
      -- Consecutive lines, each on its own channel: stdout has no stderr line and the other way round.
      local nums = {}
      for n in r.stdout:gmatch(mark .. " (%d+) ") do nums[#nums + 1] = tonumber(n) end
      assert.is_true(#nums >= 3, r.stdout)
      for i = 2, #nums do assert.are.equal(nums[i - 1] + 1, nums[i], r.stdout) end
      assert.is_nil(r.stdout:find("-err", 1, true))
      assert.truthy(r.stderr:find(mark .. "-err " .. nums[1], 1, true), r.stderr)
      assert.is_nil(r.stderr:find(mark .. " ", 1, true))
    end)

  it("attach to a pod that does not exist raises NotFound with the server's Status", function()
    local ok, err = pcall(c.attach, c, "no-such-pod", { timeout = 30, on_output = function() end })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.truthy(tostring(err):find('pods "no-such-pod" not found', 1, true), tostring(err))
  end)

  it("checks on_output", function()
    assert.has_error(function() c:attach("printer", { on_output = 1 }) end, "k8s.attach: on_output must be a function")
    assert.has_error(function() c:exec("printer", { cmd = { "true" }, on_output = "x" }) end,
      "k8s.exec: on_output must be a function")
  end)

  it("exec's on_output sees the output as it comes, and can leave early", function()
    local chunks = {}
    local r = c:exec("printer", { cmd = { "sh", "-c", "echo first; sleep 30; echo never" }, timeout = 20,
      on_output = function(s, data)
        chunks[#chunks + 1] = s .. ":" .. data
        return false
      end })
    assert.is_true(r.detached)
    assert.are.same({ "stdout:first\n" }, chunks)
    assert.are.equal("first\n", r.stdout)
  end)

  it("logs{follow = true, on_line} hands each line over within a second of its being written", function()
    -- kwok's logs endpoint follows pod.log; the writer appends a line a second, each carrying
    -- the time it was written. The recorder in front only bounds the test (the writer cuts
    -- the stream after 8 lines); it relays each chunk as it comes.
    local cl = K.cluster("logs")
    local lc = k8s.connect({ kubeconfig = cl.kubeconfig_path })
    K.running_pod(lc, "printer")
    local mark = ("logs" .. cl.namespace):gsub("%W", "")
    local w = writer(K.kwok_log(), mark, 1, false, cl.url)
    local lags, nums = {}, {}
    local ok, err = pcall(lc.logs, lc, "printer", { container = "main", follow = true, on_line = function(line)
      local n, at = line:match(mark .. " (%d+) ([%d.]+)$")
      if not n then return true end
      nums[#nums + 1] = tonumber(n)
      lags[#lags + 1] = rt.time() - tonumber(at)
      return #lags < 3
    end })
    w.stop()
    cl.stop()
    assert.is_true(ok, tostring(err))
    assert.are.equal(3, #lags)
    for i, lag in ipairs(lags) do
      assert.is_true(lag < 1.0, ("line %d reached on_line %.3fs after it was written"):format(nums[i], lag))
    end
    assert.are.same({ nums[1], nums[1] + 1, nums[1] + 2 }, nums)
  end)
end)
