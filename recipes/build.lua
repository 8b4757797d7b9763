-- Build an image: take the Dockerfile in the context or generate one, lint it, build it.
local docker = require("myrmex.docker")
local dockerfile = require("myrmex.dockerfile")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local common = require("_common")

local SEVERITY = { info = 1, warning = 2, error = 3, none = 99 }

return {
  description = "Build an image: generate or take a Dockerfile, lint it, build it",
  params = {
    tag = { type = "string", required = true, doc = "name:tag of the image to build" },
    context = { type = "string", default = ".", doc = "build context folder" },
    dockerfile = { type = "string",
      doc = "Dockerfile inside the context (default: Dockerfile; generated when missing and language is set)" },
    language = { type = "string", choices = { "c", "cpp", "go", "python", "node", "static" },
      doc = "generate a Dockerfile for this language when the context has none" },
    entrypoint = { type = "string", doc = "program the generated image runs" },
    binary = { type = "string", doc = "c/cpp: a prebuilt static binary in the context (one scratch stage)" },
    lint_fail = { type = "string", default = "error", choices = { "info", "warning", "error", "none" },
      doc = "fail the build on lint findings at or above this severity" },
    nocache = { type = "boolean", default = false, doc = "do not use the build cache" },
    buildargs = { type = "list", default = {}, doc = "KEY=VALUE build arguments" },
    labels = { type = "list", default = {}, doc = "KEY=VALUE image labels" },
  },
  run = function(p, ctx)
    local name = p.dockerfile or "Dockerfile"
    local path = p.context .. "/" .. name
    local text = ctx.step("dockerfile", function()
      local existing = common.read(path)
      if existing then return existing end
      if not p.language then
        error("no " .. path .. " and no language to generate one for (--set language=c|go|...)", 0)
      end
      local out = dockerfile.generate({ language = p.language, entrypoint = p.entrypoint, binary = p.binary })
      if ctx.dry_run then
        plan.record({ engine = "file", op = "write", target = path })
        return out.dockerfile
      end
      common.write(path, out.dockerfile)
      if not common.read(p.context .. "/.dockerignore") then
        common.write(p.context .. "/.dockerignore", out.dockerignore)
      end
      log.info("generated a Dockerfile", { path = path, language = p.language })
      return out.dockerfile
    end)
    local findings = ctx.step("lint", function()
      local list = dockerfile.lint(text)
      local worst = 0
      for _, f in ipairs(list) do
        log.warn(string.format("%s:%d %s %s", name, f.line or 0, f.rule, f.message),
          { rule = f.rule, severity = f.severity, at = path .. ":" .. (f.line or 0) })
        worst = math.max(worst, SEVERITY[f.severity] or 0)
      end
      if worst >= SEVERITY[p.lint_fail] then
        error(string.format("%d lint finding(s) at or above %s in %s", #list, p.lint_fail, path), 0)
      end
      return list
    end)
    local image = ctx.step("build", function()
      local d = docker.connect()
      return d:build_image({ context = p.context, dockerfile = name, tags = { p.tag }, nocache = p.nocache,
        buildargs = common.pairs_to_table(p.buildargs, "buildargs"),
        labels = common.pairs_to_table(p.labels, "labels") })
    end)
    log.info(image.planned and "build planned" or "built", { image = p.tag, id = image.id })
    return { id = image.id, tag = p.tag, dockerfile = path, lint = findings, planned = image.planned }
  end,
}
