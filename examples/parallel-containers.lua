-- Start several containers at once with myrmex.parallel and collect their exit codes.
local docker = require("myrmex.docker")
local parallel = require("myrmex.parallel")

return {
  description = "Run N containers concurrently and report their exit codes",
  params = {
    image = { type = "string", required = true, doc = "an image the engine has" },
    n = { type = "integer", default = 4, doc = "how many containers" },
    max = { type = "integer", default = 4, doc = "how many at once" },
  },
  run = function(p)
    local d = docker.connect()
    local jobs = {}
    for i = 1, p.n do
      jobs[i] = function()
        local c <close> = d:run_container({ image = p.image, cmd = { "sh", "-c", "exit " .. (i % 3) },
          wait = true, network = "none" })
        return c.exit_code
      end
    end
    local codes = parallel(jobs, { max = p.max })
    for i, code in ipairs(codes) do print(string.format("container %d exited %d", i, code)) end
  end,
}
