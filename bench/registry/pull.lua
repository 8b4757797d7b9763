-- usage: myrmex pull.lua HOST REPO:TAG DEST [FORMAT]
local registry = require("myrmex.registry")
local c = registry.connect(arg[1], { config = false })
local res = c:pull_image(arg[2], { to = arg[3], format = arg[4] or "oci" })
io.stderr:write(("pulled %s: %d blobs, %d bytes in %.2f s\n"):format(res.digest, res.layers, res.bytes, res.seconds))
