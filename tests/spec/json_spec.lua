-- myrmex.json: table-driven edge cases (lua-cjson style rows).
local json = require("myrmex.json")

describe("myrmex.json", function()
  local decode_rows = {
    { "empty array round-trips", "[]", "[]" },
    { "empty object round-trips", "{}", "{}" },
    { "nested empties", '{"a":[],"b":{}}', '{"a":[],"b":{}}' },
    { "null stays null", '[null,1]', "[null,1]" },
    { "integers stay exact", "[9007199254740991]", "[9007199254740991]" },
    { "floats", "[1.5,-0.25,1e-07]", "[1.5,-0.25,1e-07]" },
    { "unicode escapes", '["\\u00e9\\ud83d\\ude00"]', '["é😀"]' },
    { "whitespace", ' \n[ 1 , 2 ]\t', "[1,2]" },
    { "true false", "[true,false]", "[true,false]" },
  }
  for _, r in ipairs(decode_rows) do
    it(r[1], function()
      assert.are.equal(r[3], json.encode(json.decode(r[2]), { sort_keys = true }))
    end)
  end

  local bad_rows = {
    { "truncated", "[1,2", "json.decode: " },
    { "garbage", "[1,x]", "at byte 4" },
    { "trailing data", "[1] [2]", "trailing data at byte 5" },
    { "invalid UTF-8", '["\255"]', "invalid UTF-8 at byte 3" },
    { "overlong UTF-8", '["\192\175"]', "invalid UTF-8 at byte 3" },
    { "empty input", "", "json.decode: " },
    { "deep nesting", string.rep("[", 5000) .. string.rep("]", 5000), "nesting deeper than 1000 levels" },
  }
  for _, r in ipairs(bad_rows) do
    it("rejects " .. r[1], function()
      local ok, err = pcall(json.decode, r[2])
      assert.is_false(ok)
      assert.truthy(err:find(r[3], 1, true), err)
    end)
  end

  it("decodes null to the sentinel and encodes it back", function()
    local v = json.decode('{"a":null}')
    assert.are.equal(json.null, v.a)
    assert.is_true(json.isnull(v.a))
    assert.are.equal('{"a":null}', json.encode(v))
  end)

  it("decodes \\u0000 inside strings and keys as a NUL byte, whole (cJSON strings end at NUL)", function()
    local v = json.decode('{"a":"x\\u0000y","k\\u0000":"\\\\u0000","l":["\\u0000\\u0000"]}')
    assert.are.equal("x\0y", v.a)
    assert.are.equal("\\u0000", v["k\0"]) -- an escaped backslash before u0000 is no NUL
    assert.are.equal("\0\0", v.l[1])
    -- and encode writes them back as \u0000, in values and keys, so the document round-trips
    assert.are.equal('{"a":"x\\u0000y","k\\u0000":"\\\\u0000","l":["\\u0000\\u0000"]}',
      json.encode(v, { sort_keys = true }))
    assert.are.equal('"\\u0000\195\191"', json.quote("\0\195\191"))
    assert.has_error(function() json.encode({ "\255" }) end, "json.encode: string is not valid UTF-8")
    -- 0xFF stands for NUL while converting: a real U+00FF next to one is kept
    assert.are.equal("\195\191", json.decode('["\\u0000", "\195\191"]')[2])
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write('{"a":"x\\u0000y"}')
    f:close()
    assert.are.equal("x\0y", json.decode_file(path).a)
    os.remove(path)
    -- errors keep the offsets of the text as given
    assert.matches("at byte 12 near .x", select(2, pcall(json.decode, '["\\u0000", x]')))
  end)

  it("keeps huge numbers as floats and Lua integers exact", function()
    local v = json.decode("[123456789012345678901234567890, 1e400]")
    assert.are.equal("float", math.type(v[1]))
    assert.are.equal(math.huge, v[2])
    assert.are.equal("[9223372036854775807]", json.encode({ math.maxinteger }))
    assert.are.equal("[0.1]", json.encode({ 0.1 }))
  end)

  it("refuses what JSON cannot hold, naming it", function()
    local cyc = {}
    cyc.self = cyc
    local rows = {
      { cyc, "nesting deeper than 1000 levels (a cycle?)" },
      { { f = print }, "cannot encode a function" },
      { { 0 / 0 }, "cannot encode NaN" },
      { { [1] = 1, [3] = 3 }, "table key is not a string" },
      { { "\255" }, "not valid UTF-8" },
    }
    for _, r in ipairs(rows) do
      local ok, err = pcall(json.encode, r[1])
      assert.is_false(ok)
      assert.truthy(err:find(r[2], 1, true), err)
    end
  end)

  it("sorts keys for reproducible output and indents on request", function()
    local t = { zeta = 1, alpha = { c = 1, b = 2 }, mid = "x" }
    local a = json.encode(t, { sort_keys = true })
    assert.are.equal('{"alpha":{"b":2,"c":1},"mid":"x","zeta":1}', a)
    assert.truthy(json.encode(t, { indent = true, sort_keys = true }):find("\n", 1, true))
  end)

  it("marks tables as arrays or objects", function()
    assert.are.equal("[]", json.encode(json.array()))
    assert.are.equal("{}", json.encode(json.object()))
    assert.are.equal("{}", json.encode({}))
  end)

  it("round-trips every scanner fixture exactly (semantically)", function()
    local dir = (os.getenv("MYRMEX_FIXTURES") or "tests/fixtures") .. "/scanners/trivy/"
    local f = assert(io.open(dir .. "alpine-310.json"))
    local text = f:read("a")
    f:close()
    local v = json.decode(text)
    local again = json.decode(json.encode(v))
    assert.are.same(v, again)
    assert.are.equal(4, #v.Results[1].Vulnerabilities)
  end)

  describe("decode_file", function()
    local path
    before_each(function() path = os.tmpname() end)
    after_each(function() os.remove(path) end)
    local function write(text)
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
    end

    it("decodes what decode does, skipping a UTF-8 byte-order mark", function()
      -- more than one arena block (1 MiB) of nodes, strings longer than the big-allocation
      -- threshold (128 KiB), and empty containers
      local rows = {}
      for i = 1, 30000 do rows[i] = { n = i, s = "row " .. i, e = json.array(), o = json.object() } end
      rows[#rows + 1] = { big = string.rep("x", 300000) }
      local text = json.encode(rows)
      write(text)
      assert.are.same(json.decode(text), json.decode_file(path))
      write("\239\187\191" .. '{"a":[]}')
      assert.are.equal('{"a":[]}', json.encode(json.decode_file(path)))
    end)

    it("gives byte offsets in the file and names it", function()
      write("\239\187\191[1,x]")
      local ok, err = pcall(json.decode_file, path)
      assert.is_false(ok)
      assert.truthy(err:find("json.decode_file: " .. path .. ": invalid JSON at byte 7", 1, true), err)
      write("[1] [2]")
      ok, err = pcall(json.decode_file, path)
      assert.truthy(err:find("trailing data at byte 5", 1, true), err)
      ok, err = pcall(json.decode_file, path .. ".missing")
      assert.is_false(ok)
      assert.truthy(err:find("cannot open " .. path .. ".missing", 1, true), err)
    end)

    it("frees a partial tree on error and keeps working", function()
      write('[' .. string.rep('{"k":"v"},', 100000) .. '{"k":}]')
      assert.is_false((pcall(json.decode_file, path)))
      collectgarbage()
      write('{"ok":true}')
      assert.is_true(json.decode_file(path).ok)
      assert.are.equal('["x"]', json.encode(json.decode('["x"]')))
    end)
  end)

  it("quotes strings as JSON string literals", function()
    assert.are.equal('"a\\"b\\\\c\\n\\u0001"', json.quote('a"b\\c\n\1'))
    assert.are.equal('"é"', json.quote("é"))
    local long = string.rep('"', 5000)
    assert.are.equal(long, json.decode(json.quote(long)))
    assert.is_false((pcall(json.quote, "\255")))
    assert.are.equal('"a\\u0000b"', json.quote("a\0b"))
    assert.are.equal("a\0" .. long, json.decode(json.quote("a\0" .. long)))
  end)
end)
