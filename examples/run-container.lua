-- Run a command in a throw-away container and use its output.
-- myrmex run examples/run-container.lua --set image=busybox-local:1 --set cmd="echo,hi"
local docker = require("myrmex.docker")

return {
  description = "Run a command in a container and print its output",
  params = {
    image = { type = "string", required = true, doc = "an image the engine has" },
    cmd = { type = "list", default = { "echo", "hello from a container" }, doc = "command, comma-separated" },
  },
  run = function(p)
    local d = docker.connect()
    -- <close> removes the container when this scope ends, even on error.
    local c <close> = d:run_container({ image = p.image, cmd = p.cmd, wait = true, network = "none" })
    io.write(c.stdout)
    return c.exit_code
  end,
}
