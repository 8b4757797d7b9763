-- A recipe written once, run per item: on this machine (`myrmex run square.lua --items
-- items.json`, through myrmex.parallel) or over a cluster (`--on kubernetes`, one Indexed Job).
local errors = require("myrmex.errors")
local http = require("myrmex.http")

return {
  description = "Square a number (a fan-out example: one item per number)",
  params = {
    n = { type = "integer", required = true, doc = "the number" },
    sleep = { type = "number", default = 0, doc = "seconds to wait first (stands for real work)" },
    fail = { type = "boolean", default = false, doc = "fail this item, to see a failure pinned to it" },
  },
  run = function(p)
    if p.sleep > 0 then http.sleep(p.sleep) end -- yields inside myrmex.parallel
    if p.fail then
      errors.raise({ code = "Invalid", engine = "square", message = "item n=" .. p.n .. " was asked to fail" })
    end
    return { n = p.n, square = p.n * p.n }
  end,
}
