-- Prune what pipelines leave behind, by label and age.
local docker = require("myrmex.docker")
local log = require("myrmex.log")

return {
  description = "Prune stopped containers, dangling images, unused networks and volumes by label and age",
  params = {
    label = { type = "string", default = "", doc = "only objects with this label (key or key=value)" },
    older_than = { type = "string", default = "24h", doc = "only objects older than this (Docker duration: 10m, 24h)" },
    volumes = { type = "boolean", default = false, doc = "also prune unused volumes (data loss!)" },
  },
  run = function(p, ctx)
    local d = docker.connect()
    local filters = { ["until"] = p.older_than }
    if p.label ~= "" then filters.label = p.label end
    local out = {}
    out.containers = ctx.step("containers", function() return d:prune_containers({ filters = filters }) end)
    out.images = ctx.step("images", function() return d:prune_images({ filters = filters }) end)
    out.networks = ctx.step("networks", function() return d:prune_networks({ filters = filters }) end)
    if p.volumes then
      -- The volumes API knows no "until" filter.
      out.volumes = ctx.step("volumes", function()
        return d:prune_volumes({ filters = p.label ~= "" and { label = p.label } or nil })
      end)
    end
    log.info("pruned", { space_reclaimed = (out.images or {}).SpaceReclaimed })
    return out
  end,
}
