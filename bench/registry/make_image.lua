-- Write an OCI layout of a FROM scratch image with two random, uncompressed layers.
-- usage: myrmex make_image.lua DIR LAYER_MIB
package.path = "./?.lua;" .. package.path
local R = require("tests.support.registry")
local dir, mib = arg[1], tonumber(arg[2])
local img = R.make_layout(dir, { tag = "bench", random = { mib * 1048576, mib * 1048576 } })
print(img.digest)
