-- Prune what pipelines leave behind, by label and age.
local docker = require("myrmex.docker")
local log = require("myrmex.log")

--- "90s", "10m", "24h", "7d" -> seconds.
local function seconds(d)
  local n, unit = tostring(d):match("^(%d+)([smhd]?)$")
  if not n then error("cleanup: older_than must look like 30m, 24h or 7d, got '" .. tostring(d) .. "'", 0) end
  return tonumber(n) * ({ s = 1, m = 60, h = 3600, d = 86400, [""] = 1 })[unit]
end

return {
  description = "Prune stopped containers, dangling images, unused networks and volumes by label and age",
  params = {
    label = { type = "string", default = "", doc = "only objects with this label (key or key=value)" },
    older_than = { type = "string", default = "24h", doc = "only objects older than this (30s, 10m, 24h, 7d)" },
    volumes = { type = "boolean", default = false, doc = "also prune unused volumes (data loss!)" },
  },
  run = function(p, ctx)
    local d = docker.connect()
    local filters = { ["until"] = seconds(p.older_than) .. "s" }
    if p.label ~= "" then filters.label = p.label end
    local out = {}
    out.containers = ctx.step("containers", function()
      -- Stopped containers with the label, older than the cut-off, removed one by one.
      local cutoff = os.time() - seconds(p.older_than)
      local removed = {}
      local list = d:list_containers({ all = true, filters = { status = { "exited", "created", "dead" },
        label = p.label ~= "" and { p.label } or nil } })
      for _, c in ipairs(list) do
        if (c.Created or 0) <= cutoff then
          d:remove_container(c.Id, { volumes = true })
          removed[#removed + 1] = c.Id
        end
      end
      return removed
    end)
    out.images = ctx.step("images", function() return d:prune_images({ filters = filters }) end)
    out.networks = ctx.step("networks", function() return d:prune_networks({ filters = filters }) end)
    if p.volumes then
      -- The volumes API knows no "until" filter.
      out.volumes = ctx.step("volumes", function()
        return d:prune_volumes({ filters = p.label ~= "" and { label = p.label } or nil })
      end)
    end
    local reclaimed = 0
    for _, kind in ipairs { "images", "volumes" } do
      reclaimed = reclaimed + ((out[kind] or {}).space_reclaimed or 0)
    end
    out.space_reclaimed = reclaimed
    log.info("pruned", { space_reclaimed = reclaimed })
    return out
  end,
}
