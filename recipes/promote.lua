-- Copy an image between registries only when its scan passes the policy.
local registry = require("myrmex.registry")
local recipe = require("myrmex.recipe")
local log = require("myrmex.log")

return {
  description = "Promote an image to another registry only if its scan passes",
  params = {
    from = { type = "string", required = true, doc = "source reference" },
    to = { type = "string", required = true, doc = "destination reference" },
    fail_on = { type = "string", default = "HIGH", doc = "scan policy threshold" },
    require_scanner = { type = "boolean", default = true,
      doc = "refuse to promote when no scanner is installed" },
  },
  run = function(p, ctx)
    ctx.step("gate", function()
      return recipe.call("scan", { image = p.from, fail_on = p.fail_on, require_scanner = p.require_scanner })
    end)
    local res = ctx.step("copy", function() return registry.copy(p.from, p.to) end)
    log.info("promoted", { from = p.from, to = p.to })
    return res
  end,
}
