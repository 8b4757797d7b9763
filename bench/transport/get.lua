-- GET `url` `n` times, `max` at once (1: one after the other on the kept-alive connection).
-- usage: myrmex bench/transport/get.lua URL N [MAX] [CA]
local http = require("myrmex.http")
local parallel = require("myrmex.parallel")

local url, n, max, ca = arg[1], tonumber(arg[2]), tonumber(arg[3] or "1"), arg[4]
local tls = ca and { ca = ca } or nil

local function get(i)
  local res = http.request { url = url .. "?n=" .. i, tls = tls }
  if res.status ~= 200 then error(("GET %s: status %d"):format(url, res.status)) end
  return #res.body
end

if max == 1 then
  for i = 1, n do get(i) end
else
  local list = {}
  for i = 1, n do list[i] = i end
  parallel.map(list, get, { max = max })
end
