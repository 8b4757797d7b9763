-- The smallest recipe: typed parameters, a step, a log line.
local log = require("myrmex.log")

return {
  description = "Say hello (the smallest recipe)",
  params = {
    name = { type = "string", default = "world", doc = "who to greet" },
    times = { type = "integer", default = 1, doc = "how many greetings" },
    shout = { type = "boolean", default = false, doc = "upper-case the greeting" },
  },
  run = function(p, ctx)
    ctx.step("greet", function()
      for _ = 1, p.times do
        local msg = "hello, " .. p.name
        print(p.shout and msg:upper() or msg)
      end
    end)
    log.info("greeted", { name = p.name, times = p.times })
  end,
}
