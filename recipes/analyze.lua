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
    max_wasted_share = { type = "number",
      doc = "fail when wasted bytes exceed this share (0..1) of the bytes above the base layer" },
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
    -- The gate: dive's three thresholds through image.check when the module is there.
    local policy = { min_efficiency = p.min_efficiency, max_wasted_share = p.max_wasted_share,
      max_wasted_bytes = p.max_wasted_mb and p.max_wasted_mb * 1048576 or nil }
    local failures = {}
    if image then
      failures = image.check(a, policy).failures
    else
      if a.efficiency and a.efficiency < p.min_efficiency then
        failures[#failures + 1] = { message = string.format("efficiency %.3f is below %.3f",
          a.efficiency, p.min_efficiency) }
      end
      if policy.max_wasted_bytes and (a.wasted_bytes or 0) > policy.max_wasted_bytes then
        failures[#failures + 1] = { message = string.format("%d bytes wasted, more than %s MiB",
          a.wasted_bytes, p.max_wasted_mb) }
      end
    end
    if #failures > 0 then
      local msgs = {}
      for _, f in ipairs(failures) do msgs[#msgs + 1] = f.message end
      errors.raise({ code = "Invalid", engine = "image", message = table.concat(msgs, "; ") })
    end
    return a
  end,
}
