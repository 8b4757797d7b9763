-- The stages of pipeline.lua up to one of them, on the C fast path or the Lua one, for
-- counting instructions per stage (stages.sh runs it under callgrind; a stage's cost is the
-- difference between two runs). usage: myrmex stages.lua REPORT OUTDIR FAST(1|0) UPTO
-- UPTO: 0 start-up, 1 load_report, 2 compliance report, 3 SARIF, 4 CSV.
local scan = require("myrmex.scan")
local report, outdir, fast, upto = arg[1], arg[2], arg[3] == "1", tonumber(arg[4])
scan.fast_path(fast)
if upto < 1 then return end
local result = scan.load_report(report, { policy = { fail_on = "HIGH" } })
if upto < 2 then return end
scan.generate_compliance_report(result)
if upto < 3 then return end
scan.export(result, "sarif", outdir .. "/stages.sarif.json")
if upto < 4 then return end
scan.export(result, "csv", outdir .. "/stages.csv")
