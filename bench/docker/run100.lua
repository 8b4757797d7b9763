-- create + start + wait + remove N busybox containers (`true`, network none), sequentially
-- or `par` at a time through myrmex.parallel. Usage: run100.lua IMAGE [N] [PAR]
local image, n, par = arg[1], tonumber(arg[2]) or 100, tonumber(arg[3]) or 1
local d = require("myrmex.docker").connect()
local function one()
  local c = d:create_container { image = image, cmd = { "true" }, network = "none" }
  d:start_container(c)
  local code = d:wait_container(c)
  d:remove_container(c)
  assert(code == 0)
end
if par <= 1 then
  for _ = 1, n do one() end
else
  local fns = {}
  for i = 1, n do fns[i] = one end
  require("myrmex.parallel").run(fns, { max = par })
end
