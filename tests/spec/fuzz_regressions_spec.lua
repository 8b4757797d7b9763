-- Inputs that once crashed a fuzz target (tests/fuzz/regressions/<target>/) are run through
-- the same targets here; under the sanitizer build ASan checks them too.
local sh = require("tests.support.sh")
local rt = require("myrmex.core.runtime")

local targets = dofile(sh.src .. "/tests/fuzz/targets.lua")
local root = sh.src .. "/tests/fuzz/regressions"

describe("fuzz regressions", function()
  for _, target in ipairs(rt.listdir(root) or {}) do
    for _, file in ipairs(rt.listdir(root .. "/" .. target) or {}) do
      it(target .. "/" .. file, function()
        local f = assert(io.open(root .. "/" .. target .. "/" .. file, "rb"))
        local data = f:read("a")
        f:close()
        assert.is_function(targets[target], "no fuzz target " .. target)
        targets[target](data)
      end)
    end
  end
end)
