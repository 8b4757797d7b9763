-- Stream one blob into FILE, verifying its digest on the way (nothing buffered in Lua).
-- usage: myrmex bench/transport/blob.lua URL DIGEST FILE
local http = require("myrmex.http")

local url, digest, file = arg[1], arg[2], arg[3]
local res = http.request { url = url, to_file = file, digest = digest }
if res.status ~= 200 then error(("GET %s: status %d"):format(url, res.status)) end
