-- luacheck: max line length 140
--- The HTML report of a run (`--report FILE.html`): one self-contained page with the steps and
--- their timings, image layers as a bar chart, findings by severity, and the plan. Recipes and
--- modules add sections while the run goes; the host writes the page at the end.
--- See docs/report.md.
local log = require("myrmex.log")

local M = {}

local sections = { layers = {}, findings = {}, notes = {} }

local function esc(s)
  s = log.redact(tostring(s == nil and "" or s))
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function human(n)
  n = tonumber(n) or 0
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do
    n = n / 1024
    i = i + 1
  end
  return i == 1 and string.format("%d B", n) or string.format("%.1f %s", n, units[i])
end
M.human_bytes = human

--- Add an image's layers: `layers` is a list of {size=bytes, instruction=text} (the shape
--- image.analyze returns), drawn as a bar chart.
---@param image string
---@param layers {size:integer, instruction?:string, created_by?:string}[]
---@param extra? {wasted_bytes?:integer, efficiency?:number}
function M.add_layers(image, layers, extra)
  sections.layers[#sections.layers + 1] = { image = image, layers = layers, extra = extra or {} }
end

--- Add a scan result (anything with `counts` by severity, `findings`, `image`, `compliance`).
---@param result table
function M.add_findings(result)
  sections.findings[#sections.findings + 1] = result
end

--- Add a free-text note with a title.
---@param title string
---@param text string
function M.add_note(title, text)
  sections.notes[#sections.notes + 1] = { title = title, text = text }
end

--- Forget everything added (tests).
function M.reset()
  sections = { layers = {}, findings = {}, notes = {} }
end

local CSS = [[
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;border-bottom:1px solid #eaeef2;text-align:left}
.ok{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.muted{color:#57606a}
.bar{background:#0969da;height:14px;border-radius:3px;min-width:2px}
.sev{display:inline-block;padding:.15rem .5rem;border-radius:1rem;margin-right:.4rem;color:#fff;font-weight:600}
.CRITICAL{background:#8b0000}.HIGH{background:#cf222e}.MEDIUM{background:#bf8700}.LOW{background:#57606a}.UNKNOWN{background:#8c959f}
code{font:12px ui-monospace,monospace;background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
]]

local function steps_html(run)
  if #run.steps == 0 then return "<p class=muted>No steps.</p>" end
  local max = 0
  for _, s in ipairs(run.steps) do max = math.max(max, s.duration or 0) end
  local rows = { "<table><tr><th>step</th><th>result</th><th>time</th><th></th></tr>" }
  for _, s in ipairs(run.steps) do
    local w = max > 0 and math.floor((s.duration or 0) / max * 100) or 0
    rows[#rows + 1] = string.format(
      '<tr><td>%s</td><td class="%s">%s</td><td>%.2f s</td><td style="width:40%%"><div class=bar style="width:%d%%"></div></td></tr>',
      esc(s.name), s.ok and "ok" or "fail", s.ok and "ok" or ("failed: " .. esc(s.error)),
      s.duration or 0, w)
  end
  rows[#rows + 1] = "</table>"
  return table.concat(rows, "\n")
end

local function layers_html()
  local out = {}
  for _, img in ipairs(sections.layers) do
    local total = 0
    for _, l in ipairs(img.layers) do total = total + (l.size or 0) end
    out[#out + 1] = string.format("<h3>%s <span class=muted>%s in %d layers%s</span></h3>",
      esc(img.image), human(total), #img.layers,
      img.extra.wasted_bytes and (", " .. human(img.extra.wasted_bytes) .. " wasted") or "")
    out[#out + 1] = "<table>"
    for i, l in ipairs(img.layers) do
      local w = total > 0 and math.floor((l.size or 0) / total * 100 + 0.5) or 0
      out[#out + 1] = string.format(
        '<tr><td>%d</td><td><code>%s</code></td><td>%s</td><td style="width:35%%"><div class=bar style="width:%d%%"></div></td></tr>',
        i, esc((l.instruction or l.created_by or ""):sub(1, 120)), human(l.size), w)
    end
    out[#out + 1] = "</table>"
  end
  return #out > 0 and table.concat(out, "\n") or "<p class=muted>No image analysed in this run.</p>"
end

local SEVERITIES = { "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN" }

local function findings_html()
  local out = {}
  for _, r in ipairs(sections.findings) do
    local badges = {}
    for _, sev in ipairs(SEVERITIES) do
      badges[#badges + 1] = string.format('<span class="sev %s">%s %d</span>', sev, sev,
        (r.counts or {})[sev] or 0)
    end
    out[#out + 1] = string.format("<h3>%s <span class=muted>%s</span></h3><p>%s</p>",
      esc(r.image or r.target or "scan"), esc(r.compliance or ""), table.concat(badges))
    local list = r.findings or {}
    if #list > 0 then
      out[#out + 1] = "<table><tr><th>id</th><th>severity</th><th>package</th><th>installed</th><th>fixed</th></tr>"
      for i = 1, math.min(#list, 50) do
        local f = list[i]
        out[#out + 1] = string.format("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
          esc(f.id), esc(f.severity), esc(f.package), esc(f.installed_version),
          esc(f.fixed_version or "none"))
      end
      out[#out + 1] = "</table>"
      if #list > 50 then out[#out + 1] = string.format("<p class=muted>and %d more</p>", #list - 50) end
    end
  end
  return #out > 0 and table.concat(out, "\n") or "<p class=muted>No scan in this run.</p>"
end

local function plan_html(run)
  if not run.plan or #run.plan == 0 then return "<p class=muted>No planned actions.</p>" end
  local out = { "<ol>" }
  for _, a in ipairs(run.plan) do
    out[#out + 1] = string.format("<li><code>%s %s</code> %s</li>", esc(a.engine), esc(a.op),
      esc(a.target or ""))
  end
  out[#out + 1] = "</ol>"
  return table.concat(out, "\n")
end

--- The page for a run {name=, steps=, duration=, error=?, plan=?}.
---@param run table
---@return string
function M.html(run)
  local notes = {}
  for _, n in ipairs(sections.notes) do
    notes[#notes + 1] = "<h2>" .. esc(n.title) .. "</h2><pre>" .. esc(n.text) .. "</pre>"
  end
  return table.concat({
    "<!doctype html><html lang=en><head><meta charset=utf-8>",
    "<meta name=viewport content='width=device-width,initial-scale=1'>",
    "<title>myrmex: " .. esc(run.name) .. "</title><style>" .. CSS .. "</style></head><body>",
    string.format("<h1>myrmex run: %s <span class=%s>%s</span></h1>", esc(run.name),
      run.error and "fail" or "ok", run.error and "failed" or "succeeded"),
    string.format("<p class=muted>%s, %.2f s</p>", os.date("!%Y-%m-%d %H:%M:%S UTC"), run.duration or 0),
    run.error and ("<p class=fail>" .. esc(run.error) .. "</p>") or "",
    "<h2>Steps</h2>", steps_html(run),
    "<h2>Image layers</h2>", layers_html(),
    "<h2>Findings</h2>", findings_html(),
    "<h2>Plan</h2>", plan_html(run),
    table.concat(notes, "\n"),
    "</body></html>\n",
  }, "\n")
end

return M
