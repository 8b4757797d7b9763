-- Lint a Dockerfile and print the findings like a compiler would.
local dockerfile = require("myrmex.dockerfile")

return {
  description = "Lint a Dockerfile (hadolint's rules, heredoc- and cache-mount-aware)",
  params = { path = { type = "string", default = "Dockerfile" } },
  run = function(p)
    local f = assert(io.open(p.path))
    local findings = dockerfile.lint(f:read("a"))
    f:close()
    for _, x in ipairs(findings) do
      print(string.format("%s:%d: %s %s: %s", p.path, x.line or 0, x.severity, x.rule, x.message))
    end
    return #findings == 0 and 0 or 1
  end,
}
