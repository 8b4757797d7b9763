-- myrmex.parallel over real transfers: ordering, the max limit, cancellation, errors.
local sh = require("tests.support.sh")
local server = require("tests.support.server")
local http = require("myrmex.http")
local json = require("myrmex.json")
local parallel = require("myrmex.parallel")
local rt = require("myrmex.core.runtime")

describe("myrmex.parallel", function()
  local srv, base
  setup(function()
    srv = server.start("python3 " .. sh.src .. "/tests/support/httpd.py")
    base = "http://127.0.0.1:" .. srv.port
  end)
  teardown(function() srv.stop() end)

  local function get_count(id, delay)
    return json.decode(http.request({ url = base .. "/count", query = { id = id, delay = delay or 0.3 } }).body).id
  end

  it("returns results in input order and overlaps the waits", function()
    http.request({ url = base .. "/maxseen" })
    local fns = {}
    for i = 1, 8 do fns[i] = function() return get_count(tostring(i)) end end
    local t0 = rt.monotonic()
    local res = parallel(fns, { max = 8 })
    local took = rt.monotonic() - t0
    assert.are.same({ "1", "2", "3", "4", "5", "6", "7", "8" }, res)
    assert.is_true(took < 1.5, "8 x 0.3 s ran concurrently, took " .. took)
    assert.are.equal(8, json.decode(http.request({ url = base .. "/maxseen" }).body).max)
  end)

  it("never runs more than max branches at once", function()
    http.request({ url = base .. "/maxseen" })
    local res = parallel.map({ "a", "b", "c", "d", "e", "f", "g" }, function(id) return get_count(id, 0.2) end, { max = 3 })
    assert.are.same({ "a", "b", "c", "d", "e", "f", "g" }, res)
    assert.are.equal(3, json.decode(http.request({ url = base .. "/maxseen" }).body).max)
  end)

  it("gives one value as itself and several as a packed table", function()
    local res = parallel({ function() return "a" end, function() return 1, nil, "z" end, function() end })
    assert.are.equal("a", res[1])
    assert.are.same({ 1, nil, "z", n = 3 }, res[2])
    assert.is_nil(res[3])
  end)

  it("supports named branches and packed results", function()
    local res = parallel({ one = function() return 1, "x" end, two = function() return 2 end }, { pack = true })
    assert.are.same({ 1, "x", n = 2 }, res.one)
    assert.are.equal(2, res.two[1])
  end)

  it("cancels the other branches on the first error and names the failing branch", function()
    local closed = {}
    local ok, err = pcall(parallel, {
      function()
        local guard <close> = setmetatable({}, { __close = function() closed[#closed + 1] = "slow" end })
        http.request({ url = base .. "/slow", query = { delay = 5 } })
        return "finished"
      end,
      function()
        http.request({ url = base .. "/count", query = { delay = 0.1 } })
        require("myrmex.errors").raise({ code = "Conflict", message = "name in use", engine = "docker" })
      end,
    })
    assert.is_false(ok)
    assert.are.equal("Conflict", err.code)
    assert.are.equal("2", err.branch)
    assert.are.same({ "slow" }, closed)
    assert.are.equal(0, require("myrmex.core.transport").active(), "the slow transfer was aborted")
  end)

  it("cancels a waiting branch by raising in it, so its pcall cleanup runs and may still wait", function()
    local seen = {}
    local ok, err = pcall(parallel, {
      a = function()
        local caught_ok, e = pcall(http.request, { url = base .. "/slow", query = { delay = 5 } })
        seen[#seen + 1] = caught_ok and "finished" or ("cancelled by " .. tostring(e))
        -- Cleanup that makes a request of its own: the scheduler drives it to its end.
        seen[#seen + 1] = "cleanup " .. get_count("cleanup-a", 0.05)
        error(e, 0)
      end,
      b = function()
        http.sleep(0.05)
        error("b failed", 0)
      end,
      c = function() seen[#seen + 1] = "c ran" end,
    }, { max = 2 })
    assert.is_false(ok)
    assert.are.equal("parallel branch b: b failed", err)
    assert.are.same({ "cancelled by parallel branch b: b failed", "cleanup cleanup-a" }, seen,
      "c, never started, must not run")
    assert.are.equal(0, require("myrmex.core.transport").active(), "the slow transfer was aborted")
  end)

  it("finishes a finish_on_cancel request of a cancelled branch, raising at its next wait", function()
    local seen = {}
    local ok = pcall(parallel, {
      a = function()
        local res = http.request({ url = base .. "/slow", query = { delay = 0.3 }, finish_on_cancel = true })
        seen[#seen + 1] = "reply " .. res.status
        local waited = pcall(http.sleep, 0.01)
        seen[#seen + 1] = waited and "slept" or "raised at the next wait"
      end,
      b = function()
        http.sleep(0.05)
        error("b failed", 0)
      end,
    })
    assert.is_false(ok)
    assert.are.same({ "reply 200", "raised at the next wait" }, seen)
  end)

  it("prefixes string errors with the branch", function()
    local ok, err = pcall(parallel, { function() error("plain failure", 0) end })
    assert.is_false(ok)
    assert.are.equal("parallel branch 1: plain failure", err)
  end)

  it("nests", function()
    local res = parallel({
      function() return parallel({ function() return get_count("x", 0.1) end, function() return "y" end }) end,
      function() return get_count("z", 0.1) end,
    })
    assert.are.same({ { "x", "y" }, "z" }, res)
  end)

  it("rejects bad arguments with its name", function()
    assert.has_error(function() parallel({ 1 }) end, "parallel: entry 1 is not a function")
    assert.has_error(function() parallel({}, { max = 0 }) end, "parallel: max must be a positive integer")
  end)
end)
