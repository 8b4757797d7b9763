--- YAML load and dump (libyaml underneath). See docs/yaml.md.
---
--- Loading follows Kubernetes by default: a manifest or a kubeconfig means here what it means
--- to kubectl (YAML 1.1 booleans such as `on`/`yes`, octal `0644`, keys made strings).
--- Pass `{schema="core"}` for YAML 1.2 core semantics. Mappings and sequences come back as
--- tables with myrmex.json's object/array markers and null is json.null, so
--- `json.encode(yaml.load(text))` is the JSON kubectl would send.
local core = require("myrmex.core.yaml")
local json = require("myrmex.json")

local M = {}

--- The null sentinel, the same value as json.null.
M.null = json.null

local LOAD_OPTS = { schema = "string", skip_empty = "boolean" }

local function check_opts(fname, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(fname .. ": opts must be a table, got " .. type(opts), 3)
  end
  for k, v in pairs(opts) do
    if not known[k] then
      error(fname .. ": opts." .. tostring(k) .. ": unknown option", 3)
    end
    if type(v) ~= known[k] then
      error(fname .. ": opts." .. k .. ": " .. known[k] .. " expected, got " .. type(v), 3)
    end
  end
  if opts.schema and opts.schema ~= "kubernetes" and opts.schema ~= "core" then
    error(fname .. ": opts.schema: 'kubernetes' or 'core' expected, got '" .. opts.schema .. "'", 3)
  end
  return opts
end

local function check_text(fname, text)
  if type(text) ~= "string" then
    error(fname .. ": text must be a string, got " .. type(text), 3)
  end
end

--- Load every document of a YAML stream. An empty document (`---` with nothing after it)
--- is json.null unless `skip_empty` is set. Raises "yaml: line L column C: problem" on
--- malformed input, invalid UTF-8, nesting deeper than 1000, unknown anchors and aliases
--- that expand beyond a budget.
---@param text string
---@param opts? {schema?: "kubernetes"|"core", skip_empty?: boolean}
---@return table documents an array (json array marker)
function M.load_all(text, opts)
  check_text("yaml.load_all", text)
  opts = check_opts("yaml.load_all", opts, LOAD_OPTS)
  local docs = core.load_all(text, opts.schema)
  if not opts.skip_empty then return docs end
  local kept = json.array()
  for _, d in ipairs(docs) do
    if d ~= json.null then kept[#kept + 1] = d end
  end
  return kept
end

--- Load the first document of a YAML stream (json.null when there is none).
---@param text string
---@param opts? {schema?: "kubernetes"|"core"}
---@return any
function M.load(text, opts)
  check_text("yaml.load", text)
  opts = check_opts("yaml.load", opts, LOAD_OPTS)
  local docs = core.load_all(text, opts.schema)
  if docs[1] == nil then return json.null end
  return docs[1]
end

--- Load, returning nil and the message instead of raising on malformed input.
---@param text string
---@param opts? {schema?: "kubernetes"|"core"}
---@return any value, string|nil err
function M.safe_load(text, opts)
  check_text("yaml.safe_load", text)
  opts = check_opts("yaml.safe_load", opts, LOAD_OPTS)
  local ok, docs = pcall(core.load_all, text, opts.schema)
  if not ok then return nil, docs end
  if docs[1] == nil then return json.null end
  return docs[1]
end

--- Dump one value as a YAML document. Mapping keys are sorted; strings that a reader
--- would take for something else (`"on"`, `"1.20"`, `"0777"`, `"null"`) are quoted;
--- floats always read back as floats (`1.0`). Raises "yaml.dump: path: problem" for
--- functions, non-UTF-8 strings, cycles.
---@param value any
---@return string
function M.dump(value)
  if value == nil then value = json.null end
  return core.dump_all({ value })
end

--- Dump a list of values as a multi-document stream (documents separated by `---`).
---@param list any[]
---@return string
function M.dump_all(list)
  if type(list) ~= "table" then
    error("yaml.dump_all: list must be a table, got " .. type(list), 2)
  end
  return core.dump_all(list)
end

--- What a plain (unquoted) scalar means: the value, and whether dump would quote the text.
--- `yaml.resolve("on")` is `true, true`; `yaml.resolve("on", "core")` is `"on", true`.
---@param text string
---@param schema? "kubernetes"|"core"
---@return any value, boolean quoted
function M.resolve(text, schema)
  check_text("yaml.resolve", text)
  return core.resolve(text, schema)
end

return M
