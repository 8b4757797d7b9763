-- One build through myrmex for bench/docker/build.sh: build.lua CONTEXT TAG [nocache]
local docker = require("myrmex.docker")
local d = docker.connect()
local img = d:build_image { context = arg[1], tags = { arg[2] }, nocache = arg[3] == "nocache",
  network = "none", labels = { ["myrmex.bench"] = "1" } }
io.write(img.builder, " ", img.id, "\n")
