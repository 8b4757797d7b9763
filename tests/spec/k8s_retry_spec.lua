-- Retries of myrmex.k8s as client-go makes them, against tests/k8s/apiserver.py behind
-- tests/k8s/faults.py, which answers 429 / 5xx (with or without Retry-After) on demand: a real
-- API server cannot be made to throttle on cue.
local F = require("tests.k8s.faults")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

describe("k8s retries", function()
  local srv, c, records, unhook, saved
  setup(function()
    srv = F.start()
    c = k8s.connect({ kubeconfig = srv.kubeconfig })
    c:list("configmaps") -- discovery done before any fault is armed
    saved = log.settings()
    log.configure({ level = "debug", quiet = true })
    unhook = log.add_hook(function(rec)
      if rec.msg == "k8s: retrying request" then records[#records + 1] = rec.fields end
    end)
  end)
  teardown(function()
    unhook()
    log.configure({ level = saved.level, quiet = saved.quiet })
    srv.stop()
  end)
  before_each(function() records = {} end)

  it("retries a 429 with Retry-After: 1 and succeeds, waiting what the server asked, each retry at debug", function()
    srv:inject({ method = "GET", path = "/configmaps/cm-gone", status = 429, retry_after = 1, count = 2,
      reason = "TooManyRequests" })
    local ok, err = pcall(c.get, c, "configmaps", "cm-gone")
    -- The third answer is the real server's: the object does not exist.
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    local got = srv:requests("GET", "/configmaps/cm-gone")
    assert.are.equal(3, #got)
    assert.is_true(got[1].injected and got[2].injected)
    assert.is_false(got[3].injected)
    assert.are.equal(2, #records)
    assert.are.equal(1, records[1].delay)
    assert.are.equal(429, records[1].reason)
    assert.are.equal(2, records[2].attempt)
  end)

  it("retries 503 without Retry-After on an idempotent request, with jittered backoff", function()
    c:apply({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "retry-a" }, data = { a = "1" } })
    srv:inject({ method = "GET", path = "/configmaps/retry-a", status = 503, count = 2, reason = "ServiceUnavailable" })
    local cm = c:get("configmaps", "retry-a")
    assert.are.equal("1", cm.data.a)
    assert.are.equal(2, #records)
    for i, r in ipairs(records) do
      local full = math.min(k8s.RETRY_CAP, k8s.RETRY_BASE * 2 ^ (i - 1))
      assert.is_true(r.delay >= full / 2 and r.delay <= full, tostring(r.delay))
    end
  end)

  it("does not replay a POST after a 503 the server may have acted on", function()
    srv:inject({ method = "POST", path = "/configmaps", status = 503, count = 1, reason = "ServiceUnavailable" })
    local ok, err = pcall(c.create, c, { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "retry-post" } })
    assert.is_false(ok)
    assert.are.equal(503, err.status)
    assert.are.equal(1, #srv:requests("POST", "/configmaps"))
    assert.are.equal(0, #records)
  end)

  it("replays a POST the server says it did not process (429, or 5xx with Retry-After)", function()
    srv:inject({ method = "POST", path = "/configmaps", status = 429, retry_after = 0, count = 1,
      reason = "TooManyRequests" })
    srv:inject({ method = "POST", path = "/configmaps", status = 503, retry_after = 0, count = 1,
      reason = "ServiceUnavailable" })
    local cm = c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "retry-post-2" } })
    assert.are.equal("retry-post-2", cm.metadata.name)
    assert.are.equal(2, #records)
  end)

  it("gives up when the call's budget is spent, raising the server's answer", function()
    local r = k8s.connect({ kubeconfig = srv.kubeconfig, retries = 2 })
    r:list("configmaps")
    records = {}
    srv:inject({ method = "GET", path = "/configmaps/retry-a", status = 429, retry_after = 0, count = 5,
      reason = "TooManyRequests" })
    local ok, err = pcall(r.get, r, "configmaps", "retry-a")
    assert.is_false(ok)
    assert.are.equal(429, err.status)
    assert.truthy(tostring(err):find("injected by faults.py", 1, true), tostring(err))
    assert.are.equal(2, #records)
    -- What is left of the rule is used up by a call with no budget at all.
    for _ = 1, 2 do
      local ok2, e2 = pcall(c.request, c, "GET", "/api/v1/namespaces/default/configmaps/retry-a", { retries = 0 })
      assert.is_false(ok2)
      assert.are.equal(429, e2.status)
    end
    assert.are.equal("1", c:get("configmaps", "retry-a").data.a)
  end)

  it("checks the retries option", function()
    assert.has_error(function() k8s.connect({ kubeconfig = srv.kubeconfig, retries = -1 }) end,
      "k8s.connect: retries must be a non-negative integer")
  end)
end)
