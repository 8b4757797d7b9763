-- Scan an image with the scanner found on PATH, judge it with the policy, export reports.
local scan = require("myrmex.scan")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local report = require("myrmex.report")
local ci = require("myrmex.ci")

return {
  description = "Scan an image (Trivy, Grype or Docker Scout), apply the policy, export JSON/CSV/SARIF",
  params = {
    image = { type = "string", doc = "image reference to scan (local engine or registry)" },
    input = { type = "string", doc = "a saved image tarball to scan instead of a reference" },
    report = { type = "string", doc = "an existing scanner report to judge instead of scanning" },
    backend = { type = "string", default = "auto", choices = { "auto", "trivy", "grype", "scout" } },
    fail_on = { type = "string", default = "HIGH", choices = { "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN" },
      doc = "fail when a finding is at or above this severity" },
    only_fixed = { type = "boolean", default = false, doc = "count only findings that have a fix" },
    json = { type = "string", doc = "write the normalized result as JSON here" },
    csv = { type = "string", doc = "write the findings as CSV here" },
    sarif = { type = "string", doc = "write SARIF 2.1.0 here (for GitHub code scanning)" },
    require_scanner = { type = "boolean", default = false,
      doc = "fail when no scanner is installed (default: say so and skip)" },
  },
  run = function(p, ctx)
    if not (p.image or p.input or p.report) then
      error("scan: give image, input or report (--set image=app:1)", 0)
    end
    local policy = { fail_on = p.fail_on, only_fixed = p.only_fixed }
    local result = ctx.step("scan", function()
      if p.report then return scan.load_report(p.report, { policy = policy, image = p.image }) end
      local ok, scanner = pcall(scan.new, { backend = p.backend, policy = policy })
      if not ok then
        if errors.is(scanner, "NotFound") and not p.require_scanner then
          log.warn("image not scanned: " .. scanner.message, { image = p.image })
          return nil
        end
        error(scanner, 0)
      end
      return scanner:scan_image(p.image, { input = p.input })
    end)
    if not result then return { skipped = true, passed = true } end
    report.add_findings(result)
    local rep = scan.generate_compliance_report(result, policy)
    log.info(rep.summary, { level = rep.level, passed = rep.passed })
    for _, r in ipairs(rep.recommendations or {}) do log.info("advice: " .. r.text) end
    ctx.step("export", function()
      if p.json then scan.export(result, "json", p.json) end
      if p.csv then scan.export(result, "csv", p.csv) end
      local sarif = p.sarif
      if not sarif and ci.github() then sarif = "myrmex.sarif" end -- where upload-sarif is pointed
      if sarif then scan.export(result, "sarif", sarif) end
    end)
    if not rep.passed then
      errors.raise({ code = "Invalid", engine = "scan",
        message = "policy failed: " .. table.concat(rep.violations or {}, "; ") })
    end
    return { passed = true, level = rep.level, counts = result.counts, result = result }
  end,
}
