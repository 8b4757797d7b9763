-- usage: myrmex push_engine.lua HOST IMAGE REPO:TAG [COMPRESSION [LEVEL]]   (an image in the local engine)
local registry = require("myrmex.registry")
local c = registry.connect(arg[1], { config = false })
local res = c:push_image(arg[2], arg[3],
  { from = "engine", compression = arg[4], compression_level = tonumber(arg[5]) })
io.stderr:write(("pushed %s: %d blobs, %d bytes in %.2f s\n"):format(res.digest, res.layers, res.bytes, res.seconds))
