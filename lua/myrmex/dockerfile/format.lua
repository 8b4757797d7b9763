--- Lint findings in the output formats hadolint's --format offers and CI systems read:
--- tty, json, checkstyle, codeclimate, gitlab_codeclimate, sarif (GitHub code scanning) and
--- sonarqube (generic issue import). Internal to myrmex.dockerfile; see docs/dockerfile.md.
local json = require("myrmex.json")

local M = {}

M.NAMES = { "tty", "json", "checkstyle", "codeclimate", "gitlab_codeclimate", "sarif", "sonarqube" }

local function file_of(f, opts) return f.file or opts.file or "Dockerfile" end

local COLORS = { error = "\27[31m", warning = "\27[33m", info = "\27[32m", style = "\27[36m" }

--- One line per finding: `Dockerfile:3 DL3006 warning: message`.
function M.tty(findings, opts)
  local out = {}
  for _, f in ipairs(findings) do
    local sev = f.severity
    if opts.color and COLORS[sev] then sev = COLORS[sev] .. sev .. "\27[0m" end
    out[#out + 1] = ("%s:%d %s %s: %s\n"):format(file_of(f, opts), f.line, f.rule, sev, f.message)
  end
  return table.concat(out)
end

--- A JSON array of {code, column, file, level, line, message}, hadolint's fields.
function M.json(findings, opts)
  local list = {}
  for i, f in ipairs(findings) do
    list[i] = { code = f.rule, column = f.column or 1, file = file_of(f, opts), level = f.severity,
      line = f.line, message = f.message }
  end
  return json.encode(json.array(list), { sort_keys = true }) .. "\n"
end

local function xml_attr(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&apos;" }):gsub("[%z\1-\8\11\12\14-\31]", ""))
end

--- Checkstyle XML: one <file> per file, one <error> per finding.
function M.checkstyle(findings, opts)
  local order, by_file = {}, {}
  for _, f in ipairs(findings) do
    local name = file_of(f, opts)
    if not by_file[name] then by_file[name] = {} order[#order + 1] = name end
    table.insert(by_file[name], f)
  end
  local out = { "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<checkstyle version=\"4.3\">\n" }
  for _, name in ipairs(order) do
    out[#out + 1] = ("  <file name=\"%s\">\n"):format(xml_attr(name))
    for _, f in ipairs(by_file[name]) do
      out[#out + 1] = ("    <error line=\"%d\" column=\"%d\" severity=\"%s\" message=\"%s\" source=\"%s\"/>\n")
        :format(f.line, f.column or 1, xml_attr(f.severity), xml_attr(f.message), xml_attr(f.rule))
    end
    out[#out + 1] = "  </file>\n"
  end
  out[#out + 1] = "</checkstyle>\n"
  return table.concat(out)
end

local CC_SEVERITY = { error = "blocker", warning = "major", info = "info", style = "minor" }

local function cc_issue(f, opts, fingerprint)
  local issue = { type = "issue", check_name = f.rule, description = f.message,
    categories = json.array({ f.severity == "style" and "Style" or "Bug Risk" }),
    severity = CC_SEVERITY[f.severity] or "info",
    location = { path = file_of(f, opts), lines = { begin = f.line, ["end"] = f.line } } }
  if fingerprint then
    -- GitLab deduplicates issues across pipelines by fingerprint: the same rule on the same
    -- line of the same file with the same message is the same issue.
    local digest = require("myrmex.digest")
    issue.fingerprint = digest.string(table.concat({ file_of(f, opts), f.rule, tostring(f.line),
      f.message }, "\0"), "sha256"):match("[%x]+$")
  end
  return issue
end

--- Code Climate's engine output: each issue as a JSON object followed by a NUL byte.
function M.codeclimate(findings, opts)
  local out = {}
  for _, f in ipairs(findings) do
    out[#out + 1] = json.encode(cc_issue(f, opts, false), { sort_keys = true }) .. "\0"
  end
  return table.concat(out)
end

--- GitLab's code quality report: one JSON array of Code Climate issues with fingerprints.
function M.gitlab_codeclimate(findings, opts)
  local list = {}
  for i, f in ipairs(findings) do list[i] = cc_issue(f, opts, true) end
  return json.encode(json.array(list), { sort_keys = true }) .. "\n"
end

local SARIF_LEVEL = { error = "error", warning = "warning", info = "note", style = "note" }

local function help_uri(id)
  if id:match("^SC%d+$") then return "https://www.shellcheck.net/wiki/" .. id end
  if id:match("^DL%d+$") then return "https://github.com/hadolint/hadolint/wiki/" .. id end
  return nil
end

--- SARIF 2.1.0, one run, the rules that fired described under tool.driver.rules.
function M.sarif(findings, opts)
  local rules = require("myrmex.dockerfile.rules").by_id
  local index, rule_list, results = {}, {}, {}
  for _, f in ipairs(findings) do
    if not index[f.rule] then
      local r = rules[f.rule]
      local desc = { id = f.rule, shortDescription = { text = r and r.summary or f.rule },
        defaultConfiguration = { level = SARIF_LEVEL[r and r.severity or f.severity] or "note" } }
      desc.helpUri = help_uri(f.rule)
      rule_list[#rule_list + 1] = desc
      index[f.rule] = #rule_list - 1
    end
    local region = { startLine = f.line, endLine = f.line }
    if f.column then region.startColumn = f.column end
    results[#results + 1] = { ruleId = f.rule, ruleIndex = index[f.rule],
      level = SARIF_LEVEL[f.severity] or "note", message = { text = f.message },
      locations = json.array({ { physicalLocation = { artifactLocation = { uri = file_of(f, opts) },
        region = region } } }) }
  end
  local doc = {
    ["$schema"] = "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/main/sarif-2.1/schema/"
      .. "sarif-schema-2.1.0.json",
    version = "2.1.0",
    runs = json.array({ {
      tool = { driver = { name = "myrmex-dockerfile-lint", informationUri = "https://github.com/hadolint/hadolint",
        rules = json.array(rule_list) } },
      results = json.array(results),
    } }),
  }
  return json.encode(doc, { sort_keys = true, indent = true }) .. "\n"
end

local SONAR_SEVERITY = { error = "CRITICAL", warning = "MAJOR", info = "MINOR", style = "INFO" }

--- SonarQube's generic issue import format.
function M.sonarqube(findings, opts)
  local issues = {}
  for i, f in ipairs(findings) do
    issues[i] = { engineId = "hadolint", ruleId = f.rule, severity = SONAR_SEVERITY[f.severity] or "INFO",
      type = f.severity == "error" and "BUG" or "CODE_SMELL",
      primaryLocation = { message = f.message, filePath = file_of(f, opts),
        textRange = { startLine = f.line, endLine = f.line } } }
  end
  return json.encode({ issues = json.array(issues) }, { sort_keys = true }) .. "\n"
end

return M
