-- Push an image from the local engine to a registry, verified by digest.
local registry = require("myrmex.registry")
local log = require("myrmex.log")
local common = require("_common")

return {
  description = "Push a local image to a registry (streamed from the engine, digests verified)",
  params = {
    image = { type = "string", required = true, doc = "local image name:tag" },
    to = { type = "string", required = true, doc = "destination reference, e.g. 127.0.0.1:5000/app:1" },
    username = { type = "string", doc = "registry user (default: ~/.docker/config.json)" },
    password = { type = "string", secret = true, doc = "registry password" },
  },
  run = function(p, ctx)
    local host = common.registry_host(p.to)
    local r = registry.connect(host, { username = p.username, password = p.password })
    local res = ctx.step("push", function() return r:push_image(p.image, p.to) end)
    local digest = type(res) == "table" and (res.digest or res.id) or res
    log.info("pushed", { image = p.image, to = p.to, digest = digest })
    return { ref = p.to, digest = digest }
  end,
}
