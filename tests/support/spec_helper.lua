--- Loaded by busted before every spec (cmake/tests.cmake, --helper). myrmex's own log lines
--- (build steps, pushes, retries) go to the file MYRMEX_SPEC_LOG names instead of stderr, so a
--- failing spec's ctest output is busted's failure report, not thousands of progress lines
--- that push it out of what a CI page shows. Specs that read the log set their own sink.
local path = os.getenv("MYRMEX_SPEC_LOG")
if path and path ~= "" then
  local f = assert(io.open(path, "w"))
  f:setvbuf("line")
  require("myrmex.log").configure({ out = f })
end
