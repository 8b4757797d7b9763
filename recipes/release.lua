-- The pipeline most users want: build -> analyze -> scan -> push -> verify -> deploy.
local recipe = require("myrmex.recipe")
local docker = require("myrmex.docker")
local registry = require("myrmex.registry")
local log = require("myrmex.log")
local report = require("myrmex.report")
local common = require("_common")

return {
  description = "Build, analyze, scan, push, verify and deploy an image",
  params = {
    context = { type = "string", required = true, doc = "build context folder" },
    image = { type = "string", required = true, doc = "registry reference to publish, e.g. 127.0.0.1:5000/app:1" },
    language = { type = "string", doc = "generate a Dockerfile for this language when there is none" },
    entrypoint = { type = "string", doc = "program the generated image runs" },
    binary = { type = "string", doc = "c/cpp: a prebuilt static binary in the context" },
    fail_on = { type = "string", default = "HIGH", doc = "scan policy threshold" },
    verify_cmd = { type = "list", default = {}, doc = "arguments for a run of the pulled image (verify step)" },
    deploy = { type = "boolean", default = true, doc = "deploy (planned when no cluster is configured)" },
    name = { type = "string", default = "app", doc = "name of the deployment" },
    sarif = { type = "string", doc = "write the scan as SARIF here" },
  },
  run = function(p, ctx)
    local built = ctx.step("build", function()
      return recipe.call("build", { tag = p.image, context = p.context, language = p.language,
        entrypoint = p.entrypoint, binary = p.binary })
    end)
    -- In plan mode nothing was built, so what reads the image is planned too.
    local planned = built.planned or ctx.dry_run
    if not planned then
      ctx.step("analyze", function() return recipe.call("analyze", { image = p.image }) end)
    end
    local scanned = planned and { skipped = true } or ctx.step("scan", function()
      return recipe.call("scan", { image = p.image, fail_on = p.fail_on, sarif = p.sarif })
    end)
    if scanned.skipped then
      report.add_note("Scan", "No scanner (trivy, grype, docker scout) is installed: the image was not scanned.")
    end
    local pushed = ctx.step("push", function() return recipe.call("push", { image = p.image, to = p.image }) end)
    local verified = planned and { stdout = "(planned)" } or ctx.step("verify", function()
      local d = docker.connect()
      -- Pull back what the registry holds (not the local build) and run it.
      pcall(d.remove_image, d, p.image, { force = true })
      local r = registry.connect(common.registry_host(p.image))
      r:pull_image(p.image, { format = "engine" })
      local c <close> = d:run_container({ image = p.image, cmd = #p.verify_cmd > 0 and p.verify_cmd or nil,
        wait = true, network = "none", labels = { ["myrmex.recipe"] = "release" } })
      if c.exit_code ~= 0 then
        error(string.format("the pulled image exited %d: %s", c.exit_code, c.stderr or ""), 0)
      end
      log.info("verified the pushed image", { output = (c.stdout or ""):gsub("%s+$", "") })
      return { exit_code = c.exit_code, stdout = c.stdout }
    end)
    local deployed
    if p.deploy then
      deployed = ctx.step("deploy", function()
        return recipe.call("deploy", { image = p.image, name = p.name })
      end)
    end
    local result = { image = p.image, id = built.id, digest = pushed.digest, verified = verified.stdout,
      scan = scanned.skipped and "skipped (no scanner)" or scanned.level,
      deploy = deployed and (deployed.planned and "planned" or "applied") or "skipped" }
    log.info("released", result)
    return result
  end,
}
