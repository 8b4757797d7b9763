-- The benchmarked steps in myrmex: load and normalize a Trivy report, judge it, export SARIF
-- and CSV. usage: myrmex pipeline.lua REPORT OUTDIR
local scan = require("myrmex.scan")
local report, outdir = arg[1], arg[2] or "/tmp"
local result = scan.load_report(report, { policy = { fail_on = "HIGH" } })
local compliance = scan.generate_compliance_report(result)
scan.export(result, "sarif", outdir .. "/myrmex.sarif.json")
scan.export(result, "csv", outdir .. "/myrmex.csv")
print(#result.findings, compliance.level, #compliance.recommendations)
