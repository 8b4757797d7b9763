-- The HTML report, loaded in a real headless Chromium: rendered DOM and a screenshot.
local sh = require("tests.support.sh")

local R = sh.src .. "/tests/fixtures/recipes/"

local function chromium(args)
  local profile = os.tmpname()
  os.remove(profile)
  -- Chromium looks names up and probes the network on its own even for a file:// page (seen
  -- with strace): no name resolves, and anything else goes to a closed loopback port.
  local cmd = { "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND", "--dns-prefetch-disable", "--no-pings",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--user-data-dir=" .. profile }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  local r = sh.run(sh.offline(cmd)) -- it still probes for IPv6 (a UDP connect to 2001:4860:4860::8888)
  os.execute("rm -rf " .. profile)
  return r
end

describe("--report", function()
  local html = os.tmpname() .. ".html"

  setup(function()
    local r = sh.myrmex({ "run", R .. "reported.lua", "--report", html, "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
  end)

  teardown(function() os.remove(html) end)

  it("is one self-contained page that escapes what it shows", function()
    local f = assert(io.open(html))
    local text = f:read("a")
    f:close()
    assert.falsy(text:find("<script", 1, true), "no scripts, and recipe text is escaped")
    assert.falsy(text:find("src=", 1, true))
    assert.truthy(text:find("RUN rm -rf /var/cache &lt;script&gt;", 1, true))
  end)

  it("renders steps, layers, findings and plan in Chromium", function()
    local r = chromium({ "--dump-dom", "file://" .. html })
    assert.are.equal(0, r.code, r.stderr)
    local dom = r.stdout
    assert.truthy(dom:find("myrmex run: " .. R .. "reported.lua", 1, true), dom)
    assert.truthy(dom:find(">analyze<", 1, true))
    assert.truthy(dom:find("4.0 MiB in 2 layers, 512.0 KiB wasted", 1, true), dom)
    assert.truthy(dom:find('class="sev HIGH">HIGH 2<', 1, true), dom)
    assert.truthy(dom:find("CVE-2023-0001", 1, true))
    assert.truthy(dom:find("No planned actions.", 1, true))
  end)

  it("takes a screenshot of a real, non-blank page", function()
    local png = os.tmpname() .. ".png"
    local r = chromium({ "--screenshot=" .. png, "--window-size=1000,1400", "file://" .. html })
    assert.are.equal(0, r.code, r.stderr)
    local f = assert(io.open(png, "rb"), "no screenshot")
    local data = f:read("a")
    f:close()
    assert.are.equal("\137PNG", data:sub(1, 4))
    assert.is_true(#data > 20000, "a page with content compresses to more than a blank one")
    os.rename(png, (os.getenv("MYRMEX_BUILD_DIR") or "/tmp") .. "/report-screenshot.png")
  end)
end)
