-- myrmex.dockerfile.rules: one row per rule that lint knows, each with a Dockerfile it must
-- catch (on the given line) and the fixed form it must not flag; then hadolint's
-- configuration (.hadolint.yaml, HADOLINT_*, pragmas), ShellCheck inside RUN, the output
-- formats (SARIF checked against the 2.1.0 schema) and `myrmex lint`.
local dockerfile = require("myrmex.dockerfile")
local json = require("myrmex.json")
local process = require("myrmex.process")

local function lines(...) return table.concat({ ... }, "\n") .. "\n" end

-- A clean tail for the final stage, so rows only differ in what they test.
local TAIL = "USER 10001\n"

local SCHEMA = { ["org.opencontainers.image.source"] = "url", ["org.opencontainers.image.created"] = "rfc3339",
  ["org.opencontainers.image.licenses"] = "spdx", ["org.opencontainers.image.revision"] = "hash",
  ["org.opencontainers.image.version"] = "semver", ["org.opencontainers.image.authors"] = "email",
  ["org.opencontainers.image.title"] = "text" }
local GOOD_LABELS = lines(
  "LABEL org.opencontainers.image.source=https://example.com/app \\",
  "  org.opencontainers.image.created=2024-05-01T10:00:00Z \\",
  "  org.opencontainers.image.licenses=\"Apache-2.0 OR MIT\" \\",
  "  org.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567 \\",
  "  org.opencontainers.image.version=1.2.3-rc.1+build.5 \\",
  "  org.opencontainers.image.authors=dev@example.com \\",
  "  org.opencontainers.image.title=app")
local function with_label(key, value)
  local t = GOOD_LABELS:gsub("(" .. key:gsub("%p", "%%%0") .. "=)%S+", "%1" .. value:gsub("%%", "%%%%"))
  return t
end

-- {rule, caught, line, clean, opts}
local ROWS = {
  { "DL1000", "FROM a:1\nRUN <<EOF\nno end\n", 2, "FROM a:1\nRUN <<EOF\nok\nEOF\n" },
  { "DL1001", "FROM a:1\n# hadolint ignore=DL3059\nRUN a\n", 2, "FROM a:1\nRUN a\n",
    { override = { warning = { "DL1001" } } } },
  { "DL3000", "FROM a:1\nARG DIR=app\nWORKDIR $DIR\n", 3, "FROM a:1\nARG DIR=/app\nWORKDIR $DIR\n" },
  { "DL3001", "FROM a:1\nRUN service nginx start\n", 2, "FROM a:1\nRUN nginx -t\n" },
  { "DL3002", "FROM a:1\nUSER root\n", 2, "FROM a:1\nUSER root\nRUN x\nUSER app\n" },
  { "DL3003", "FROM a:1\nRUN cd /x && make\n", 2, "FROM a:1\nRUN (cd /x && make)\n" },
  { "DL3004", "FROM a:1\nRUN sudo make install\n", 2, "FROM a:1\nRUN echo sudo\n" },
  { "DL3005", "FROM a:1\nRUN apt-get dist-upgrade\n", 2, "FROM a:1\nRUN apt-get upgrade -y\n" },
  { "DL3006", "ARG BASE=ubuntu\nFROM $BASE\n", 2, "ARG BASE=ubuntu:24.04\nFROM $BASE\n" },
  { "DL3007", "FROM ubuntu:latest\n", 1, "FROM ubuntu:24.04\n" },
  { "DL3008", "FROM a:1\nRUN <<EOF\napt-get install -y --no-install-recommends curl\nEOF\n", 3,
    "FROM a:1\nRUN <<EOF\napt-get install -y --no-install-recommends curl=8.5.0-2 ./local.deb\nEOF\n" },
  { "DL3009", "FROM a:1\nRUN apt-get update && apt-get install -y x\n", 2,
    "FROM a:1\nRUN --mount=type=cache,target=/var/lib/apt/lists apt-get update && apt-get install -y x\n" },
  { "DL3010", "FROM a:1\nCOPY app.tar.gz /tmp/\nRUN tar -xzf /tmp/app.tar.gz -C /opt\n", 2,
    "FROM a:1\nCOPY app.tar.gz /srv/releases/\n" },
  { "DL3011", "FROM a:1\nEXPOSE 80 99999/tcp\n", 2, "FROM a:1\nEXPOSE 80 65535/udp 8000-8010\n" },
  { "DL3012", "FROM a:1\nHEALTHCHECK CMD a\nHEALTHCHECK CMD b\n", 3,
    "FROM a:1 AS one\nHEALTHCHECK CMD a\nFROM a:1\nHEALTHCHECK CMD b\n" },
  { "DL3013", "FROM a:1\nRUN pip install --no-cache-dir flask\n", 2,
    "FROM a:1\nRUN pip install --no-cache-dir flask==3.0.3 -r requirements.txt .\n" },
  { "DL3014", "FROM a:1\nRUN apt-get install --no-install-recommends x=1\n", 2,
    "FROM a:1\nRUN apt-get -qy install --no-install-recommends x=1\n" },
  { "DL3015", "FROM a:1\nRUN apt-get install -y x=1\n", 2, "FROM a:1\nRUN apt-get install -y --no-install-recommends x=1\n" },
  { "DL3016", "FROM a:1\nRUN npm install -g @scope/tool typescript@latest\n", 2,
    "FROM a:1\nRUN npm install -g @scope/tool@1.2.0 typescript@5.4.5 && npm install\n" },
  { "DL3018", "FROM a:1\nRUN apk add --no-cache bash\n", 2, "FROM a:1\nRUN apk add --no-cache --virtual .deps bash=5.2.26-r0\n" },
  { "DL3019", "FROM a:1\nRUN apk add bash=5.2\n", 2,
    "FROM a:1\nRUN --mount=type=cache,target=/var/cache/apk apk add bash=5.2\n" },
  { "DL3020", "FROM a:1\nADD src /src\n", 2, "FROM a:1\nADD https://example.com/x.tgz /x/\nADD rootfs.tar.xz /\n" },
  { "DL3021", "FROM a:1\nCOPY a b c\n", 2, "FROM a:1\nCOPY a b c/\n" },
  { "DL3022", "FROM a:1\nCOPY --from=build /x /x\n", 2,
    "ARG B=build\nFROM a:1 AS build\nFROM a:1\nCOPY --from=${B} /x /x\nCOPY --from=0 /y /y\nCOPY --from=alpine:3.20 /z /z\n" },
  { "DL3023", "FROM a:1 AS app\nCOPY --from=app /x /y\n", 2, "FROM a:1 AS build\nFROM a:1 AS app\nCOPY --from=build /x /y\n" },
  { "DL3024", "FROM a:1 AS x\nFROM a:1 AS x\n", 2, "FROM a:1 AS x\nFROM a:1 AS y\n" },
  { "DL3025", "FROM a:1\nCMD run --fast\n", 2, "FROM a:1\nCMD [\"run\", \"--fast\"]\n" },
  { "DL3026", "FROM a:1 AS b\nFROM quay.io/x/y:1\n", 2, "FROM registry.example.com/a:1 AS b\nFROM b\nFROM docker.io/library/c:1\n",
    { trusted_registries = { "*.example.com", "docker.io" } } },
  { "DL3027", "FROM a:1\nRUN apt install -y x\n", 2, "FROM a:1\nRUN apt-get install -y x\n" },
  { "DL3028", "FROM a:1\nRUN gem install rails\n", 2, "FROM a:1\nRUN gem install rails:7.1.3 && gem install rake -v 13.2\n" },
  { "DL3029", "FROM --platform=linux/amd64 a:1\n", 1, "FROM --platform=$BUILDPLATFORM a:1\n" },
  { "DL3030", "FROM a:1\nRUN yum install x-1.0 && yum clean all\n", 2, "FROM a:1\nRUN yum install -y x-1.0 && yum clean all\n" },
  { "DL3032", "FROM a:1\nRUN yum install -y x-1.0\n", 2, "FROM a:1\nRUN yum install -y x-1.0 && yum clean all\n" },
  { "DL3033", "FROM a:1\nRUN yum install -y python3-pip && yum clean all\n", 2,
    "FROM a:1\nRUN yum install -y python3-pip-21.3.1 && yum clean all\n" },
  { "DL3034", "FROM a:1\nRUN zypper install x=1 && zypper clean\n", 2, "FROM a:1\nRUN zypper -n install x=1 && zypper clean\n" },
  { "DL3035", "FROM a:1\nRUN zypper -n dup\n", 2, "FROM a:1\nRUN zypper -n update\n" },
  { "DL3036", "FROM a:1\nRUN zypper -n install x=1\n", 2, "FROM a:1\nRUN zypper -n install x=1 && zypper cc\n" },
  { "DL3037", "FROM a:1\nRUN zypper -n install x && zypper clean\n", 2, "FROM a:1\nRUN zypper -n install x>=1.2 && zypper clean\n" },
  { "DL3038", "FROM a:1\nRUN dnf install x-1 && dnf clean all\n", 2, "FROM a:1\nRUN dnf install -y x-1 && dnf clean all\n" },
  { "DL3040", "FROM a:1\nRUN dnf install -y x-1\n", 2,
    "FROM a:1\nRUN --mount=type=cache,target=/var/cache/dnf dnf install -y x-1\n" },
  { "DL3041", "FROM a:1\nRUN microdnf install nginx && microdnf clean all\n", 2,
    "FROM a:1\nRUN microdnf install nginx-1.24.0 && microdnf clean all\n" },
  { "DL3042", "FROM a:1\nRUN pip install x==1\n", 2, "FROM a:1\nRUN --mount=type=cache,target=/root/.cache/pip pip install x==1\n" },
  { "DL3043", "FROM a:1\nONBUILD FROM b:1\n", 2, "FROM a:1\nONBUILD RUN make\n" },
  { "DL3044", "FROM a:1\nENV A=/opt B=$A/bin\n", 2, "FROM a:1\nENV A=/opt\nENV B=$A/bin PATH=/x:$PATH\n" },
  { "DL3045", "FROM a:1\nCOPY app.py app/\n", 2, "FROM a:1 AS base\nWORKDIR /srv\nFROM base\nCOPY app.py app/\n" },
  { "DL3046", "FROM a:1\nRUN useradd -u 1000000 app\n", 2, "FROM a:1\nRUN useradd -l -u 1000000 app\n" },
  { "DL3047", "FROM a:1\nRUN wget https://example.com/f\n", 2,
    "FROM a:1\nRUN wget --progress=dot:giga https://example.com/f && wget -qO- https://example.com/g | tar -x\n" },
  { "DL3048", "FROM a:1\nLABEL Invalid_Key=1\n", 2, "FROM a:1\nLABEL org.example.valid-key=1\n" },
  { "DL3049", "FROM a:1\n", 1, "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3050", "FROM a:1\n" .. GOOD_LABELS .. "LABEL extra=1\n", 9, "FROM a:1\n" .. GOOD_LABELS,
    { label_schema = SCHEMA, strict_labels = true } },
  { "DL3051", "FROM a:1\n" .. with_label("org.opencontainers.image.title", "\"\""), 2, "FROM a:1\n" .. GOOD_LABELS,
    { label_schema = SCHEMA } },
  { "DL3052", "FROM a:1\n" .. with_label("org.opencontainers.image.source", "example.com/app"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3053", "FROM a:1\n" .. with_label("org.opencontainers.image.created", "2024-02-30T10:00:00Z"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3054", "FROM a:1\n" .. with_label("org.opencontainers.image.licenses", "Apache2"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3055", "FROM a:1\n" .. with_label("org.opencontainers.image.revision", "main"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3056", "FROM a:1\n" .. with_label("org.opencontainers.image.version", "1.02.3"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3057", "FROM a:1 AS b\nHEALTHCHECK CMD a\nFROM a:1\n", 3, "FROM a:1 AS b\nHEALTHCHECK CMD a\nFROM b\n",
    { override = { info = { "DL3057" } } } },
  { "DL3058", "FROM a:1\n" .. with_label("org.opencontainers.image.authors", "dev@@example"), 2,
    "FROM a:1\n" .. GOOD_LABELS, { label_schema = SCHEMA } },
  { "DL3059", "FROM a:1\nRUN a\nRUN b\n", 3, "FROM a:1\nRUN a\nRUN --mount=type=cache,target=/c b\n" },
  { "DL3060", "FROM a:1\nRUN yarn install --frozen-lockfile\n", 2,
    "FROM a:1\nRUN yarn install --frozen-lockfile && yarn cache clean\n" },
  { "DL3061", "LABEL a=b\nFROM a:1\n", 1, "ARG V=1\nFROM a:$V\n" },
  { "DL3062", "FROM a:1\nRUN go install example.com/cmd/tool@latest\n", 2,
    "FROM a:1\nRUN go install example.com/cmd/tool@v1.4.0 && go install ./cmd/...\n" },
  { "DL4000", "FROM a:1\nMAINTAINER me\n", 2, "FROM a:1\nLABEL org.opencontainers.image.authors=me\n" },
  { "DL4001", "FROM a:1\nRUN wget -q a\nRUN curl -o b c\n", 3, "FROM a:1 AS x\nRUN wget -q a\nFROM a:1\nRUN curl -o b c\n" },
  { "DL4003", "FROM a:1\nCMD [\"a\"]\nCMD [\"b\"]\n", 3, "FROM a:1 AS x\nCMD [\"a\"]\nFROM a:1\nCMD [\"b\"]\n" },
  { "DL4004", "FROM a:1\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n", 3, "FROM a:1\nENTRYPOINT [\"a\"]\nCMD [\"b\"]\n" },
  { "DL4005", "FROM a:1\nRUN ln -sf /bin/bash /bin/sh\n", 2, "FROM a:1\nSHELL [\"/bin/bash\", \"-c\"]\nRUN ln -s /a /b\n" },
  { "DL4006", "FROM a:1\nRUN <<EOF\nset -e\ncurl x | sh\nEOF\n", 4, "FROM a:1\nRUN <<EOF\nset -eo pipefail\ncurl x | sh\nEOF\n" },
  { "MX001", "FROM a:1\n", 1, "FROM gcr.io/distroless/static:nonroot\n" },
  { "MX002", "FROM a:1\nCOPY . .\nRUN npm ci\n", 2, "FROM a:1\nCOPY package*.json ./\nRUN npm ci\nCOPY . .\n" },
}

local function lint(text, opts)
  opts = opts or {}
  local o = { shell = false }
  for k, v in pairs(opts) do o[k] = v end
  return dockerfile.lint(text, o)
end

local function lines_of(findings, id)
  local out = {}
  for _, f in ipairs(findings) do if f.rule == id then out[#out + 1] = f.line end end
  return out
end

describe("dockerfile rules", function()
  for _, row in ipairs(ROWS) do
    local id, bad, line, good, opts = row[1], row[2], row[3], row[4], row[5]
    it(id .. ": caught on line " .. line .. ", the fixed form is clean", function()
      -- These two are about the final USER: the clean tail would hide them.
      local tail = (id == "MX001" or id == "DL3002") and "" or TAIL
      local got = lines_of(lint(bad .. tail, opts), id)
      assert(#got > 0, id .. " not found in:\n" .. bad)
      assert.are.equal(line, got[1])
      assert.are.same({}, lines_of(lint(good .. TAIL, opts), id), id .. " flagged in:\n" .. good)
    end)
  end

  it("has a row for every rule, with hadolint's severities", function()
    local rows = {}
    for _, row in ipairs(ROWS) do rows[row[1]] = true end
    local seen = {}
    for _, r in ipairs(dockerfile.rules()) do
      assert(rows[r.id], r.id .. " has no row")
      seen[r.id] = r.severity
    end
    assert.are.equal(#ROWS, #dockerfile.rules())
    -- A few of hadolint's severities that differ from the default warning.
    assert.are.same({ "error", "info", "error", "info", "ignore", "style", "ignore", "error" },
      { seen.DL3000, seen.DL3001, seen.DL3011, seen.DL3019, seen.DL3057, seen.DL3048, seen.DL1001, seen.DL4000 })
  end)

  it("is listed rule by rule, with its severity, in docs/dockerfile.md", function()
    local src = os.getenv("MYRMEX_SOURCE_DIR") or "."
    local f = assert(io.open(src .. "/docs/dockerfile.md", "r"))
    local doc = f:read("a")
    f:close()
    for _, r in ipairs(dockerfile.rules()) do
      assert(doc:find("\n| " .. r.id .. " | " .. r.severity .. " |", 1, true), r.id .. " " .. r.severity .. " not in the docs")
    end
  end)

  it("reads heredoc bodies, cache mounts, ARG values and stage scope where hadolint does not", function()
    -- The body line, not the RUN line.
    assert.are.same({ 4 }, lines_of(lint("FROM a:1\nRUN <<EOF\nset -e\napk add curl\nEOF\n"), "DL3018"))
    -- A heredoc fed to python is not shell.
    assert.are.same({}, lines_of(lint("FROM a:1\nRUN python3 <<EOF\nprint('apt-get install x')\nEOF\n"), "DL3008"))
    -- --from through an ARG, and a stage defined later is not "previously defined".
    assert.are.same({ 2 }, lines_of(lint("FROM a:1 AS one\nCOPY --from=two /a /a\nFROM a:1 AS two\n"), "DL3022"))
    -- ARG values: a tag that is latest through a build argument, and one given by opts.args.
    assert.are.same({ 2 }, lines_of(lint("ARG TAG=latest\nFROM alpine:$TAG\n"), "DL3007"))
    assert.are.same({}, lines_of(lint("ARG TAG=latest\nFROM alpine:$TAG\n", { args = { TAG = "3.20" } }), "DL3007"))
    assert.are.same({ 3 }, lines_of(lint("FROM a:1\nARG P=70000\nEXPOSE $P\n"), "DL3011"))
    -- A RUN with a secret mount cannot be merged with one without it.
    assert.are.same({}, lines_of(lint("FROM a:1\nRUN a\nRUN --mount=type=secret,id=npmrc,target=/root/.npmrc b\n"),
      "DL3059"))
    -- An ONBUILD RUN trigger is a RUN for the command rules.
    assert.are.same({ 2 }, lines_of(lint("FROM a:1\nONBUILD RUN apt-get install -y x\n"), "DL3008"))
    -- Builder stages the final image does not use keep their caches.
    assert.are.same({}, lines_of(lint("FROM a:1 AS b\nRUN yum install -y x-1\nFROM a:1\n"), "DL3032"))
  end)
end)

describe("dockerfile.lint configuration", function()
  it("overrides severities, ignores rules and errors on a bad option", function()
    local f = lint("FROM a:1\nMAINTAINER x\n" .. TAIL, { override = { info = { "DL4000" } } })
    assert.are.equal("DL4000", f[1].rule)
    assert.are.equal("info", f[1].severity)
    assert.are.same({}, lines_of(lint("FROM a:1\nMAINTAINER x\n", { ignore = { "DL4000" } }), "DL4000"))
    assert.has_error(function() dockerfile.lint("FROM a:1\n", { override = { fatal = { "DL1" } } }) end,
      "dockerfile.lint: option override: unknown severity 'fatal' (error, warning, info, style or ignore)")
    assert.has_error(function() dockerfile.lint("FROM a:1\n", { label_schema = { a = "uri" } }) end,
      "dockerfile.lint: option label_schema: label 'a' has unknown type 'uri' (text, url, semver, hash, "
      .. "rfc3339, spdx or email)")
  end)

  it("honours # hadolint ignore= above an instruction and global ignore= anywhere", function()
    local text = "FROM a:1\nRUN a\n# hadolint ignore=DL3059\nRUN b\nRUN c\n# hadolint global ignore=DL4000\nMAINTAINER x\n"
    assert.are.same({ 5 }, lines_of(lint(text), "DL3059"))
    assert.are.same({}, lines_of(lint(text), "DL4000"))
    assert.are.same({ 4, 5 }, lines_of(lint(text, { disable_ignore_pragma = true }), "DL3059"))
  end)

  it("reads .hadolint.yaml and HADOLINT_* variables, the variables winning", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
ignored: [DL3059]
override:
  error: [DL3008]
trustedRegistries: [registry.example.com]
failure-threshold: warning
label-schema:
  org.opencontainers.image.version: semver
strict-labels: true
]])
    f:close()
    local env = { HADOLINT_FAILURE_THRESHOLD = "error", HADOLINT_OVERRIDE_STYLE = "DL3006",
      HADOLINT_REQUIRE_LABELS = "maintainer:email" }
    local cfg = require("myrmex.dockerfile.lint").config({ file = path, getenv = function(k) return env[k] end })
    assert.are.equal("error", cfg.failure_threshold)
    assert.are.same({ "DL3059" }, cfg.lint.ignore)
    assert.are.same({ "DL3008" }, cfg.lint.override.error)
    assert.are.same({ "DL3006" }, cfg.lint.override.style)
    assert.are.same({ "registry.example.com" }, cfg.lint.trusted_registries)
    assert.are.same({ ["org.opencontainers.image.version"] = "semver", maintainer = "email" }, cfg.lint.label_schema)
    assert.is_true(cfg.lint.strict_labels)
    local found = lint("FROM ubuntu\nRUN apt-get install -y --no-install-recommends x\nRUN b\n", cfg.lint)
    local got = {}
    for _, x in ipairs(found) do got[#got + 1] = x.rule .. " " .. x.severity end
    assert.are.same({ "DL3006 style", "DL3026 error", "DL3049 info", "DL3049 info", "MX001 warning",
      "DL3008 error" }, got)
    f = assert(io.open(path, "w"))
    f:write("ignored: [DL3059]\noverides: {}\n")
    f:close()
    assert.has_error(function() require("myrmex.dockerfile.lint").config({ file = path, env = false }) end,
      "dockerfile.config: " .. path .. ": overides: unknown key")
    os.remove(path)
  end)

  it("fails at or above the threshold", function()
    local f = lint("FROM a:1\nRUN a\nRUN b\n" .. TAIL)
    assert.is_true(dockerfile.fails(f))
    assert.is_true(dockerfile.fails(f, "info"))
    assert.is_false(dockerfile.fails(f, "warning"))
    assert.is_false(dockerfile.fails(f, "none"))
    assert.has_error(function() dockerfile.fails(f, "fatal") end)
  end)
end)

local SHELLCHECK = process.which("shellcheck")

describe("ShellCheck inside RUN", function()
  local text = lines(
    "FROM a:1", -- 1
    "ARG name", -- 2
    "RUN echo $1 && \\", -- 3
    "    echo $name", -- 4
    "RUN <<EOF", -- 5
    "set -e", -- 6
    "for f in $(ls); do echo $f; done", -- 7
    "EOF", -- 8
    "# hadolint ignore=SC2086", -- 9
    "RUN echo $1", -- 10
    "RUN [\"echo\", \"$1\"]", -- 11
    "USER 1") -- 12

  it("reports SC findings on the Dockerfile line they belong to, one process for the file", function()
    if not SHELLCHECK then
      pending("shellcheck is not installed (Debian: apt-get install shellcheck)")
      return
    end
    local found = dockerfile.lint(text)
    local got = {}
    for _, f in ipairs(found) do
      if f.rule:match("^SC") then got[#got + 1] = f.line .. " " .. f.rule end
    end
    -- $1 and $NAME unquoted on the joined RUN (reported on its first line); ls in a for
    -- loop and the unquoted $f in the heredoc body, on their own lines. The ignored RUN and
    -- the exec form give nothing.
    assert.are.same({ "3 SC2086", "3 SC2086", "7 SC2045", "7 SC2086" }, got)
    assert.are.same({}, lines_of(dockerfile.lint(text, { shell = false }), "SC2086"))
    -- One shellcheck process for the file, whatever the number of RUNs: a wrapper counts.
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local wrapper = dir .. "/shellcheck"
    local w = assert(io.open(wrapper, "w"))
    w:write("#!/bin/sh\necho run >> " .. dir .. "/count\nexec " .. SHELLCHECK .. " \"$@\"\n")
    w:close()
    assert(os.execute("chmod +x " .. wrapper))
    local via = dockerfile.lint(text, { shell = wrapper })
    local c = assert(io.open(dir .. "/count", "r"))
    local runs = select(2, c:read("a"):gsub("run\n", ""))
    c:close()
    os.execute("rm -rf " .. dir)
    assert.are.equal(1, runs)
    assert.are.same(found, via)
  end)

  it("raises an Engine error when shellcheck fails, and runs without it when told", function()
    local err = select(2, pcall(dockerfile.lint, "FROM a:1\nRUN echo\n", { shell = "/bin/false" }))
    assert.is_true(require("myrmex.errors").is(err, "Engine"), tostring(err))
    assert.are.equal("shellcheck: Engine: dockerfile.lint: /bin/false wrote output that is not its json1 format",
      tostring(err))
    local missing = select(2, pcall(dockerfile.lint, "FROM a:1\nRUN echo\n", { shell = "/nonexistent/shellcheck" }))
    assert.is_true(require("myrmex.errors").is(missing, "NotFound"), tostring(missing))
  end)

  it("keeps a heredoc body's own #! line first, so bash syntax is bash and lines still match", function()
    if not SHELLCHECK then
      pending("shellcheck is not installed (Debian: apt-get install shellcheck)")
      return
    end
    local found = dockerfile.lint("FROM a:1\nRUN <<EOF\n#!/bin/bash\nset -e\n[[ -d /x ]] && echo $x\nEOF\nUSER 1\n")
    local got = {}
    for _, f in ipairs(found) do
      if f.rule:match("^SC") then got[#got + 1] = f.line .. ":" .. tostring(f.column) .. " " .. f.rule end
    end
    -- No SC1128 (shebang not first) and no SC3010 ([[ ]] in sh): only $x, on line 5.
    assert.are.same({ "5:21 SC2086", "5:21 SC2154" }, got)
  end)
end)

describe("dockerfile.format", function()
  local findings = lint("FROM ubuntu\nRUN apt-get install x\nMAINTAINER \"a <b>\"\n")

  it("writes hadolint's tty and json", function()
    local tty = dockerfile.format(findings, "tty", { file = "app/Dockerfile" })
    assert.is_truthy(tty:find("app/Dockerfile:1 DL3006 warning: base image 'ubuntu' has no tag", 1, true))
    local list = json.decode(dockerfile.format(findings, "json"))
    assert.are.same({ code = "DL3006", column = 1, file = "Dockerfile", level = "warning", line = 1,
      message = findings[1].message }, list[1])
    assert.are.equal(#findings, #list)
  end)

  it("writes checkstyle with escaped attributes, codeclimate and GitLab's report", function()
    local xml = dockerfile.format(findings, "checkstyle")
    assert.is_truthy(xml:find("<checkstyle version=\"4.3\">", 1, true))
    assert.is_truthy(xml:find("source=\"DL4000\"", 1, true))
    local cc = dockerfile.format(findings, "codeclimate")
    local n = 0
    for obj in cc:gmatch("([^%z]+)%z") do
      n = n + 1
      local issue = json.decode(obj)
      assert.are.equal("issue", issue.type)
      assert.is_number(issue.location.lines.begin)
    end
    assert.are.equal(#findings, n)
    local gl = json.decode(dockerfile.format(findings, "gitlab_codeclimate"))
    assert.are.equal(64, #gl[1].fingerprint)
    assert.are_not.equal(gl[1].fingerprint, gl[2].fingerprint)
    local sq = json.decode(dockerfile.format(findings, "sonarqube"))
    assert.are.equal("CRITICAL", sq.issues[#sq.issues].severity)
    assert.has_error(function() dockerfile.format(findings, "html") end)
  end)

  it("writes SARIF 2.1.0 that validates against the schema", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(dockerfile.format(findings, "sarif", { file = "Dockerfile" }))
    f:close()
    local fixtures = os.getenv("MYRMEX_FIXTURES") or "tests/fixtures"
    local src = os.getenv("MYRMEX_SOURCE_DIR") or "."
    local res = process.run({ argv = { "/usr/bin/python3", src .. "/tests/support/validate_schema.py",
      fixtures .. "/sarif/sarif-schema-2.1.0.json", path } })
    os.remove(path)
    assert.are.equal(0, res.status, res.stdout .. res.stderr)
    local doc = json.decode(dockerfile.format(findings, "sarif"))
    assert.are.equal("DL3006", doc.runs[1].results[1].ruleId)
    assert.are.equal("warning", doc.runs[1].results[1].level)
  end)
end)

describe("myrmex lint", function()
  local bin = os.getenv("MYRMEX_BIN") or "build/myrmex"
  -- No configuration of the machine's user may leak in: HOME and XDG_CONFIG_HOME point at
  -- an empty folder, and the command runs there (no ./.hadolint.yaml).
  local home = os.tmpname()
  os.remove(home)
  assert(os.execute("mkdir -p " .. home))
  local function run(args, stdin, env)
    local argv = { bin, "lint" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local e = { HOME = home, XDG_CONFIG_HOME = home }
    local lua_path = os.getenv("MYRMEX_LUA_PATH")
    if lua_path and lua_path:sub(1, 1) ~= "/" then e.MYRMEX_LUA_PATH = os.getenv("PWD") .. "/" .. lua_path end
    for k, v in pairs(env or {}) do e[k] = v end
    return process.run({ argv = argv, stdin = stdin, env = process.environ(e), cwd = home })
  end
  teardown(function() os.execute("rm -rf " .. home) end)

  it("exits 0 when clean, 1 with findings at the threshold, and reads stdin for -", function()
    local clean = run({ "--no-shellcheck", "-" }, "FROM a:1\nUSER 1\n")
    assert.are.equal(0, clean.status, clean.stderr)
    assert.are.equal("", clean.stdout)
    local bad = run({ "--no-shellcheck", "-" }, "FROM a:1\nRUN a\nRUN b\nUSER 1\n")
    assert.are.equal(1, bad.status)
    assert.are.equal("-:3 DL3059 info: consecutive RUN instructions with the same flags: join them to save "
      .. "a layer\n", bad.stdout)
    assert.are.equal(0, run({ "--no-shellcheck", "-t", "warning", "-" }, "FROM a:1\nRUN a\nRUN b\nUSER 1\n").status)
    assert.are.equal(0, run({ "--no-shellcheck", "--no-fail", "-" }, "FROM a:1\nRUN a\nRUN b\nUSER 1\n").status)
    local env = run({ "--no-shellcheck", "-" }, "FROM a:1\nRUN a\nRUN b\nUSER 1\n",
      { HADOLINT_IGNORE = "DL3059" })
    assert.are.equal(0, env.status, env.stdout)
  end)

  it("writes the chosen format and names a missing file or a bad option in one line", function()
    local r = run({ "--no-shellcheck", "--format", "json", "-" }, "FROM ubuntu\nUSER 1\n")
    assert.are.equal(1, r.status)
    assert.are.equal("DL3006", json.decode(r.stdout)[1].code)
    local missing = run({ "/nonexistent/Dockerfile" })
    assert.are.equal(1, missing.status)
    assert.is_truthy(missing.stderr:find("/nonexistent/Dockerfile", 1, true))
    local nocfg = run({ "-c", "/nonexistent/.hadolint.yaml", "-" }, "FROM a:1\n")
    assert.are.equal(1, nocfg.status)
    assert.are.equal("myrmex lint: dockerfile.config: /nonexistent/.hadolint.yaml: No such file or directory\n",
      nocfg.stderr)
    local badopt = run({ "--format", "html", "-" }, "FROM a:1\n")
    assert.are.equal(1, badopt.status)
    assert.is_truthy(badopt.stderr:find("--format: one of tty, json", 1, true), badopt.stderr)
  end)
end)
