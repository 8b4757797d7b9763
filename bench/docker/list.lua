-- N sequential container listings (all=true) over one connection.
local n = tonumber(arg and arg[1]) or 1000
local d = require("myrmex.docker").connect()
local count
for _ = 1, n do count = #d:list_containers { all = true } end
io.write(count, "\n")
