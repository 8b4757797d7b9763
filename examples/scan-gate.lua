-- Judge an existing scanner report with a policy and fail CI when it does not pass.
local scan = require("myrmex.scan")

return {
  description = "Gate on a scanner report: print the compliance summary, fail on HIGH",
  params = {
    report = { type = "string", required = true, doc = "a Trivy, Grype or Docker Scout report" },
    fail_on = { type = "string", default = "HIGH" },
  },
  run = function(p)
    local result = scan.load_report(p.report, { policy = { fail_on = p.fail_on } })
    local rep = scan.generate_compliance_report(result, { fail_on = p.fail_on })
    print(rep.summary)
    return scan.exit_status(result)
  end,
}
