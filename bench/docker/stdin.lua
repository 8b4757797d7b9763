-- Issue 22 bench: FILE through `cat` in the running container CTR by exec with stdin, the
-- output counted as it streams back. Usage: myrmex bench/docker/stdin.lua CTR FILE
local docker = require("myrmex.docker")
local ctr, file = arg[1], arg[2]
local d = docker.connect()
local n = 0
local r = d:exec(ctr, { cmd = { "cat" }, stdin = { file = file }, on_stdout = function(s) n = n + #s end })
assert(r.exit_code == 0, "cat failed: " .. r.stderr)
local f = assert(io.open(file, "rb"))
local size = f:seek("end")
f:close()
assert(n == size, ("got %d bytes back, sent %d"):format(n, size))
