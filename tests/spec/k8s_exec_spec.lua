-- needs: k8s
-- exec over WebSocket (v5.channel.k8s.io) on the real control plane, against two kubelet
-- endpoints. The test bed's kwok nodes run a pod's exec as a local command ("local"
-- ClusterExec), so stdin, stdout, stderr and the status channel go through the real API
-- server's WebSocket handling; but kwok (v0.8) does two things as no kubelet does: a non-zero
-- exit comes back as an InternalError naming the exit status ("error executing command in
-- container: cmd wait: ... exit status 3": kwok returns os/exec's error wrapped, and the
-- streaming code maps only a k8s.io/utils/exec ExitError to NonZeroExitCode), and the end of
-- stdin is not passed on (it copies stdin into the command's pipe and never closes it). The
-- second describe runs the kubelet's own streaming code (tests/tools/kubelet, kubelet-stub) as
-- the endpoint of a node of its own: there the exit code and the end of stdin are a kubelet's.
local K = require("tests.k8s.support")
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
    K.running_pod(c, "shell")
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

-- A node of the spec's own whose kubelet endpoint is tests/tools/kubelet (kubelet-stub): the
-- kubelet's streaming code serving exec, so the error channel carries what a kubelet sends for
-- a non-zero exit (NonZeroExitCode with the ExitCode cause; kwok sends an InternalError), and
-- stdin ends when the client closes it (v5's close signal, through the real API server).
describe("k8s exec against the kubelet's streaming code", function()
  local t, c, stub, node
  local STUB = (os.getenv("MYRMEX_TEST_BIN") or "/usr/local/lib/myrmex-test/bin") .. "/kubelet-stub"
  local server = require("tests.support.server")
  local sh = require("tests.support.sh")
  setup(function()
    local f = io.open(STUB)
    assert(f, STUB .. " missing: the test bed's kubelet set is not built (bash .ci/install-test-tools kubelet)")
    f:close()
    t = T.open("kubelet", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
    assert(sh.run({ "bash", sh.src .. "/tests/support/tlsgen.sh", t.dir }).code == 0)
    stub = server.start("exec " .. sh.q(STUB) .. " -cert " .. sh.q(t.dir .. "/server.pem") .. " -key "
      .. sh.q(t.dir .. "/server.key"), 20)
    node = t.namespace .. "-kubelet"
    c:apply({ apiVersion = "v1", kind = "Node", metadata = { name = node, labels = { type = "kubelet-stub" } } })
    c:patch("nodes", node, { status = { addresses = { { type = "InternalIP", address = "127.0.0.1" } },
      daemonEndpoints = { kubeletEndpoint = { Port = stub.port } } } }, { type = "merge", subresource = "status" })
    -- Bound by name: no scheduler, and no kwok (it manages only its own nodes).
    c:apply({ apiVersion = "v1", kind = "Pod", metadata = { name = "real" },
      spec = { nodeName = node, containers = { { name = "main", image = "busybox" } } } })
  end)
  teardown(function()
    -- No kubelet confirms a deletion here: the pod goes at once, then the node.
    if c then
      pcall(c.delete, c, "pods", "real", { grace_period = 0 })
      pcall(c.delete, c, "nodes", node)
    end
    if stub then stub.stop() end
    if t then t.stop() end
  end)

  it("maps the kubelet's NonZeroExitCode status to exit_code, with the output", function()
    local r = c:exec("real", { cmd = { "sh", "-c", "echo out; echo err >&2; exit 3" }, timeout = 60 })
    assert.are.same({ 3, "out\n", "err\n", "v5.channel.k8s.io" }, { r.exit_code, r.stdout, r.stderr, r.protocol })
    assert.are.equal(0, c:exec("real", { cmd = { "true" }, timeout = 60 }).exit_code)
  end)

  it("closes stdin over v5, so a command reading to the end finishes", function()
    local r = c:exec("real", { cmd = { "sh", "-c", "wc -c; cat >/dev/null; echo done" }, stdin = ("x"):rep(100000),
      timeout = 60 })
    assert.are.same({ 0, "100000\ndone\n" }, { r.exit_code, (r.stdout:gsub("^%s+", "")) })
  end)

  it("over v4 (no close signal) sends stdin but cannot end it: a command reading to the end waits", function()
    local offered = stream.CHANNEL_PROTOCOLS
    stream.CHANNEL_PROTOCOLS = "v4.channel.k8s.io" -- as a server that speaks only v4 leaves us
    local ok, err = pcall(function()
      local r = c:exec("real", { cmd = { "sh", "-c", "read x; echo got $x; exit 4" }, stdin = "one\n", timeout = 60 })
      assert.are.same({ 4, "got one\n", "v4.channel.k8s.io" }, { r.exit_code, r.stdout, r.protocol })
      local t0 = require("myrmex.core.runtime").monotonic()
      local ok2, e2 = pcall(c.exec, c, "real", { cmd = { "cat" }, stdin = "x", timeout = 3 })
      assert.is_false(ok2)
      assert.is_true(errors.is(e2, "Timeout"), tostring(e2))
      assert.is_true(require("myrmex.core.runtime").monotonic() - t0 >= 3)
    end)
    stream.CHANNEL_PROTOCOLS = offered
    assert(ok, err)
  end)

  it("raises Engine with the server's message for a command that cannot start", function()
    local ok, err = pcall(c.exec, c, "real", { cmd = { "/no/such/program" }, timeout = 60 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.truthy(tostring(err):find("no such file", 1, true), tostring(err))
  end)
end)
