-- needs: k8s
-- exec over WebSocket (v5.channel.k8s.io) on the real control plane. Its kwok nodes run a
-- pod's exec as a local command ("local" ClusterExec), so stdin, stdout, stderr and the status
-- channel go through the real API server's WebSocket handling. What kwok does not do as a
-- kubelet does: a non-zero exit comes back as an InternalError naming the exit status instead
-- of NonZeroExitCode, and the end of stdin is not passed on (kubectl's `exec -i ... cat` hangs
-- there too), so the commands here read one line. The NonZeroExitCode status a kubelet sends
-- is decoded from its recorded form.
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local stream = require("myrmex.k8s.stream")
local errors = require("myrmex.errors")
local http = require("myrmex.http")

describe("k8s exec", function()
  local t, c
  setup(function()
    t = T.open("exec", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
    c:apply({ apiVersion = "v1", kind = "Pod", metadata = { name = "shell" },
      spec = { containers = { { name = "main", image = "busybox" } } } })
    for _ = 1, 300 do
      if (c:get("pods", "shell").status or {}).phase == "Running" then break end
      http.sleep(0.1)
    end
  end)
  teardown(function() t.stop() end)

  it("runs a command with stdin, and returns stdout, stderr and the exit code from the status channel", function()
    local r = c:exec("shell", { cmd = { "sh", "-c", "read x; echo got $x; echo oops >&2" }, stdin = "hello\n",
      container = "main", timeout = 60 })
    assert.are.equal(0, r.exit_code)
    assert.are.equal("got hello\n", r.stdout)
    assert.are.equal("oops\n", r.stderr)
    assert.are.equal("v5.channel.k8s.io", r.protocol)
  end)

  it("carries binary output and large output intact", function()
    local r = c:exec("shell", { cmd = { "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' 'x'; printf '\\001\\377'" },
      timeout = 60 })
    assert.are.equal(300002, #r.stdout)
    assert.are.equal("\1\255", r.stdout:sub(-2))
  end)

  it("raises what the server says when the command fails", function()
    local ok, err = pcall(c.exec, c, "shell", { cmd = { "sh", "-c", "exit 3" }, timeout = 60 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.truthy(tostring(err):find("exit status 3", 1, true), tostring(err))
  end)

  it("raises NotFound for a pod that does not exist, with the server's Status", function()
    local ok, err = pcall(c.exec, c, "no-such-pod", { cmd = { "true" }, timeout = 60 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.truthy(tostring(err):find('pods "no-such-pod" not found', 1, true), tostring(err))
  end)

  it("reads a kubelet's NonZeroExitCode status as the exit code", function()
    -- As k8s.io/kubelet's streaming server writes it (remotecommand.go, v4 error channel).
    local st = '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
      .. 'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
      .. '"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    assert.are.equal(3, stream._exit_code("exec", st))
    assert.are.equal(0, stream._exit_code("exec", '{"metadata":{},"status":"Success"}'))
  end)

  it("checks its arguments", function()
    assert.has_error(function() c:exec("shell", { cmd = {} }) end, "k8s.exec: cmd must be a non-empty list")
    assert.has_error(function() c:exec("shell", { cmd = { "a", 1 } }) end, "k8s.exec: cmd[2] must be a string")
    assert.has_error(function() c:exec("shell", { cmd = { "a" }, stdin = 1 }) end, "k8s.exec: stdin must be a string")
    assert.has_error(function() c:exec("shell", { command = { "a" } }) end, "k8s.exec: unknown option 'command'")
  end)
end)
