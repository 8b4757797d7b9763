std = "lua54"
max_line_length = 120
globals = { "_MYRMEX_VERSION", "_MYRMEX_DATADIR" }
-- Tests keep to-be-closed handles in variables they never read again (`local c <close> = ...`),
-- which luacheck 1.1 reports as unused.
files["tests"] = { std = "+busted", max_line_length = 160, ignore = { "211", "311", "212" } }
files["tests/fixtures/recipes"] = { ignore = { "211", "311", "113", "241" } }
files["recipes"] = { ignore = { "211/_.*" } }
exclude_files = { "build", "build-*", "tests/support/node_modules", "tests/fixtures/recipes/bad_syntax.lua" }
