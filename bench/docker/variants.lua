-- Experiment (docs/benchmarks.md, docker run 4): lifecycle variants, N containers, PAR at a time.
-- A: create, start, wait, remove. B: create with AutoRemove, wait?condition=removed opened before
-- start (the docker CLI's sequence), start, read the wait. Usage: variants.lua IMAGE N PAR A|B
local http = require("myrmex.http")
local json = require("myrmex.json")
local image, n, par, variant = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local d = require("myrmex.docker").connect()
local function one()
  if variant == "A" then -- create, start, wait, remove (current)
    local c = d:create_container { image = image, cmd = { "true" }, network = "none" }
    d:start_container(c)
    assert(d:wait_container(c) == 0)
    d:remove_container(c)
  else -- B: create(AutoRemove), wait(removed) registered before start, start, read wait body
    local c = d:create_container { image = image, cmd = { "true" }, network = "none", auto_remove = true }
    local s <close> = http.open(d:_request_table { method = "POST", path = "/containers/" .. c.id .. "/wait",
      query = { condition = "removed" }, timeout = false })
    assert(s.status == 200, s.status)
    d:start_container(c)
    local body = s:read_all()
    assert(json.decode(body).StatusCode == 0, body)
  end
end
local fns = {}
for i = 1, n do fns[i] = one end
if par <= 1 then for _, f in ipairs(fns) do f() end else require("myrmex.parallel").run(fns, { max = par }) end
