-- Fuzz targets: each takes the input bytes, calls a parser, and raises only when the parser
-- failed in a way it must not (an error other than its documented clean one). Loaded by
-- tests/fuzz/fuzz_target.c; `tests/fuzz/run.sh` runs each for a bounded time.
local T = {}

-- A parser may reject input only with a string error naming itself, or an error object of
-- code Invalid; anything else ("attempt to index a nil value") is a bug.
local function expect_clean(prefix, ok, err)
  if ok then return end
  if type(err) == "table" and err.code == "Invalid" then return end
  if type(err) == "string" and err:find(prefix, 1, true) then return end
  if type(err) == "string" and err:find("not enough memory", 1, true) then return end
  error("unclean failure: " .. tostring(err), 0)
end

function T.json(data)
  local json = require("myrmex.json")
  local ok, v = pcall(json.decode, data)
  expect_clean("json.decode", ok, v)
  if ok then
    -- Whatever decodes must encode, and decode again to the same thing.
    local text = json.encode(v, { sort_keys = true })
    assert(json.encode(json.decode(text), { sort_keys = true }) == text, "json round trip changed")
  end
end

function T.yaml(data)
  local yaml = require("myrmex.yaml")
  local ok, v = pcall(yaml.load_all, data)
  expect_clean("yaml", ok, v)
  if ok then
    for _, doc in ipairs(v) do
      local ok2, err = pcall(yaml.dump, doc)
      expect_clean("yaml", ok2, err)
    end
  end
end

function T.tar(data)
  local archive = require("myrmex.core.archive")
  local src = require("myrmex.core.source").from_string(data)
  local ok, err = pcall(function()
    local r <close> = archive.open(src)
    for _ in r:entries() do
      local chunk = r:read()
      while chunk do chunk = r:read() end
    end
  end)
  expect_clean("archive", ok, err)
end

function T.dockerignore(data)
  local archive = require("myrmex.core.archive")
  local patterns, path = {}, "a/b/c.txt"
  for line in data:gmatch("[^\n]+") do patterns[#patterns + 1] = line end
  if #patterns > 0 then path = table.remove(patterns) end
  local ok, err = pcall(archive.match, patterns, path)
  expect_clean("archive.match", ok, err)
end

function T.dockerfile(data)
  local dockerfile = require("myrmex.dockerfile")
  local ok, err = pcall(dockerfile.parse, data)
  expect_clean("dockerfile", ok, err)
  if ok then
    local ok2, err2 = pcall(dockerfile.lint, data)
    expect_clean("dockerfile", ok2, err2)
  end
end

function T.scan_report(data)
  local scan = require("myrmex.scan")
  local ok, err = pcall(scan.load_report, data)
  expect_clean("scan", ok, err)
end

return T
