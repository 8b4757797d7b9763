std = "lua54"
max_line_length = 120
globals = { "_MYRMEX_VERSION", "_MYRMEX_DATADIR" }
files["tests"] = { std = "+busted", max_line_length = 160 }
files["tests/fixtures/recipes"] = { ignore = { "211", "311", "113", "241" } }
exclude_files = { "build", "tests/support/node_modules", "tests/fixtures/recipes/bad_syntax.lua" }
