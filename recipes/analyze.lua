-- Layer-by-layer size analysis of an image, with advice and optional gates.
local log = require("myrmex.log")
local report = require("myrmex.report")
local errors = require("myrmex.errors")
local common = require("_common")

return {
  description = "Analyze an image's layers: sizes, wasted bytes, efficiency, advice",
  params = {
    image = { type = "string", required = true, doc = "local image, saved tar, or registry reference" },
    min_efficiency = { type = "number", default = 0, doc = "fail below this efficiency (0..1)" },
    max_wasted_mb = { type = "number", doc = "fail when more than this many MiB are wasted" },
  },
  run = function(p, ctx)
    local image = common.optional("myrmex.image")
    local a = ctx.step("analyze", function()
      if image then return image.analyze(p.image) end
      local d = require("myrmex.docker").connect()
      return d:analyze_image_size(p.image)
    end)
    local layers = a.layers or {}
    report.add_layers(p.image, layers, { wasted_bytes = a.wasted_bytes, efficiency = a.efficiency })
    log.info("image analysed", { image = p.image, size = a.size or a.total_size, layers = #layers,
      wasted_bytes = a.wasted_bytes, efficiency = a.efficiency })
    if image then
      for _, s in ipairs(image.optimize(a)) do
        log.info("advice: " .. s.message, { kind = s.kind, saves = image.bytes(s.bytes) })
      end
    end
    if a.efficiency and a.efficiency < p.min_efficiency then
      errors.raise({ code = "Invalid", engine = "image", message = string.format(
        "efficiency %.3f is below %.3f", a.efficiency, p.min_efficiency) })
    end
    if p.max_wasted_mb and (a.wasted_bytes or 0) > p.max_wasted_mb * 1048576 then
      errors.raise({ code = "Invalid", engine = "image", message = string.format(
        "%d bytes wasted, more than %s MiB", a.wasted_bytes, p.max_wasted_mb) })
    end
    return a
  end,
}
