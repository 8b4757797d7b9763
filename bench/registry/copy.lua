-- usage: myrmex copy.lua SRC_REF DST_REF   (full references, plain HTTP loopback registries)
local registry = require("myrmex.registry")
local d, stats = registry.copy(arg[1], arg[2], { config = false })
io.stderr:write(("copied %s: %d blobs, %d bytes\n"):format(d, stats.copied, stats.bytes))
