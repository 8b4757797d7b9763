-- Streamed pod logs: `on_line` gets each line as it arrives. tests/k8s/faults.py serves the log
-- one line at a time and sends the next line only once the callback has acknowledged the
-- previous one, so a client that hands lines over only when the stream ends is caught
-- without any clock (each line then waits out its acknowledgement timeout instead).
-- Against the real control plane this cannot be shown: its kwok nodes run no processes.
local F = require("tests.k8s.faults")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")

describe("k8s logs", function()
  local srv, c
  setup(function()
    srv = F.start()
    c = k8s.connect({ kubeconfig = srv.kubeconfig })
  end)
  teardown(function() srv.stop() end)

  it("follow = true calls on_line as each line arrives, before the next one is sent", function()
    srv:stream("/pods/ticker/log", { "tick 1", "tick 2", "tick 3" }, 5)
    local seen = {}
    local text = c:logs("ticker", { follow = true, on_line = function(line)
      seen[#seen + 1] = line
      srv:ack()
    end })
    assert.are.same({ "tick 1", "tick 2", "tick 3" }, seen)
    assert.are.equal("tick 1\ntick 2\ntick 3\n", text)
    local report = srv:log().stream
    assert.are.equal(3, #report)
    for _, r in ipairs(report) do assert.is_true(r.acked_while_streaming, r.line) end
    local req = srv:requests("GET", "/pods/ticker/log")[1]
    assert.truthy(req.path:find("follow=true", 1, true), req.path)
  end)

  it("stops following when on_line returns false", function()
    srv:stream("/pods/forever/log", { "a", "b", "c", "d" }, 5)
    local seen = {}
    local text = c:logs("forever", { follow = true, on_line = function(line)
      seen[#seen + 1] = line
      srv:ack()
      return line ~= "b"
    end })
    assert.are.same({ "a", "b" }, seen)
    assert.are.equal("a\nb\n", text)
  end)

  it("raises the server's Status for a pod that does not exist, streamed or not", function()
    for _, o in ipairs({ {}, { on_line = function() end } }) do
      local ok, err = pcall(c.logs, c, "no-such-pod", o)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "NotFound"), tostring(err))
    end
  end)

  it("checks on_line", function()
    assert.has_error(function() c:logs("x", { on_line = 1 }) end, "k8s.logs: on_line must be a function")
  end)
end)
