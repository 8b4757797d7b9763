-- myrmex.dockerfile: parsing (continuations, heredocs, directives, flags, forms, ARG/ENV),
-- a table of lint cases where each rule is hit and not hit (heredocs, cache mounts,
-- comments, continuations), and generated Dockerfiles that parse and lint clean.
local dockerfile = require("myrmex.dockerfile")
local archive = require("myrmex.core.archive")

describe("dockerfile.parse", function()
  it("numbers lines through continuations, comments and blank lines", function()
    local df = dockerfile.parse(table.concat({
      "FROM debian:12 AS base", -- 1
      "", -- 2
      "# a comment", -- 3
      "RUN apt-get update \\", -- 4
      "    # a comment inside the continuation", -- 5
      "", -- 6
      "    && apt-get install -y curl", -- 7
      "WORKDIR /src", -- 8
    }, "\n"))
    local run = df.instructions[2]
    assert.are.equal("RUN", run.cmd)
    assert.are.equal(4, run.line)
    assert.are.equal(7, run.end_line)
    assert.are.equal("apt-get update     && apt-get install -y curl", run.args)
    assert.are.same({ "# a comment" }, run.comments)
    assert.are.equal(8, df.instructions[3].line)
    -- An escaped escape ends the line; a split keyword is joined with nothing between.
    df = dockerfile.parse("FROM a:1\nLABEL a=x\\\\\nUS\\\nER \"ro\"ot\n")
    assert.are.equal("LABEL", df.instructions[2].cmd)
    assert.are.same({ { "a", "x\\" } }, df.instructions[2].pairs)
    assert.are.equal("USER", df.instructions[3].cmd)
    assert.are.equal("root", df.instructions[3].expanded)
    -- Windows line ends and a byte order mark change nothing.
    df = dockerfile.parse("\xEF\xBB\xBF# syntax=docker/dockerfile:1\r\nFROM alpine:3.20\r\nRUN a \\\r\n  b\r\n")
    assert.are.equal("docker/dockerfile:1", df.directives.syntax)
    assert.are.equal("a   b", df.instructions[2].args)
  end)

  it("reads heredocs: several per line, <<- tab stripping, quoted delimiters", function()
    local df = dockerfile.parse(table.concat({
      "FROM alpine:3.20", -- 1
      "COPY <<one.txt <<\"two.txt\" /dest/", -- 2
      "first $HOME", -- 3
      "one.txt", -- 4
      "second", -- 5
      "two.txt", -- 6
      "RUN <<-EOT sh", -- 7
      "\techo a | wc -l", -- 8
      "\tEOT", -- 9
      "USER 1000", -- 10
    }, "\n"))
    local copy, run = df.instructions[2], df.instructions[3]
    assert.are.equal(2, #copy.heredocs)
    assert.are.same({ "one.txt", "first $HOME\n", true, 3 },
      { copy.heredocs[1].name, copy.heredocs[1].content, copy.heredocs[1].expand, copy.heredocs[1].line })
    assert.are.same({ "two.txt", "second\n", false }, { copy.heredocs[2].name,
      copy.heredocs[2].content, copy.heredocs[2].expand })
    assert.are.equal(6, copy.end_line)
    assert.are.equal("echo a | wc -l\n", run.heredocs[1].content)
    assert.is_true(run.heredocs[1].strip_tabs)
    assert.are.equal(7, run.line)
    assert.are.equal(9, run.end_line)
    assert.are.equal(10, df.instructions[4].line)
  end)

  it("honours the syntax and escape directives only at the top", function()
    local df = dockerfile.parse("# syntax=docker/dockerfile:1.7\n# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022\n"
      .. "RUN dir c:\\ `\n    && echo done\n")
    assert.are.equal("docker/dockerfile:1.7", df.directives.syntax)
    assert.are.equal("`", df.escape)
    assert.are.equal("dir c:\\     && echo done", df.instructions[2].args)
    -- After any other line the same text is only a comment.
    df = dockerfile.parse("# hello\n# escape=`\nFROM alpine:3.20\n")
    assert.is_nil(df.directives.escape)
    assert.are.equal("\\", df.escape)
    assert.has_error(function() dockerfile.parse("# escape=x\nFROM a:1\n") end,
      "dockerfile.parse: line 1: invalid escape directive 'x' (\\ or ` expected)")
  end)

  it("parses flags, RUN --mount and JSON versus shell form", function()
    local df = dockerfile.parse(table.concat({
      "FROM --platform=$BUILDPLATFORM golang:1.23 AS build",
      "RUN --mount=type=cache,target=/root/.cache/go-build,sharing=locked --mount=type=secret,id=npmrc,dst=/root/.npmrc --network=none go build",
      "CMD [\"/app\", \"--port\", \"8080\"]",
      "ENTRYPOINT [\"/app\", oops]",
      "COPY --from=build --chown=1000:1000 /out /app",
    }, "\n"))
    local run = df.instructions[2]
    assert.are.same({ type = "cache", target = "/root/.cache/go-build", sharing = "locked" }, run.mounts[1])
    assert.are.same({ type = "secret", id = "npmrc", target = "/root/.npmrc" }, run.mounts[2])
    assert.are.equal("network", run.flags[3].name)
    assert.are.equal("none", run.flags[3].value)
    assert.are.equal("go build", run.args)
    assert.are.equal("exec", df.instructions[3].form)
    assert.are.same({ "/app", "--port", "8080" }, df.instructions[3].json)
    assert.are.equal("shell", df.instructions[4].form) -- invalid JSON is the shell form, as in Docker
    assert.are.same({ { name = "from", value = "build" }, { name = "chown", value = "1000:1000" } },
      df.instructions[5].flags)
  end)

  it("substitutes ARG and ENV where Docker does", function()
    local text = table.concat({
      "ARG REGISTRY=docker.io",
      "ARG VERSION=3.19",
      "FROM ${REGISTRY}/library/alpine:${VERSION} AS base",
      "ARG VERSION",
      "ARG MODE",
      "ENV APP_HOME=/opt/app LEVEL=${MODE:-debug} TAGGED=${VERSION:+v$VERSION}",
      "ENV LEGACY value with spaces",
      "WORKDIR $APP_HOME/bin",
      "LABEL a='$APP_HOME' b=\\$APP_HOME",
      "RUN echo $APP_HOME",
      "FROM base",
      "WORKDIR ${APP_HOME}/child",
    }, "\n")
    local df = dockerfile.parse(text)
    assert.are.equal("docker.io/library/alpine:3.19", df.stages[1].image)
    assert.are.equal("debug", df.stages[1].env.LEVEL)
    assert.are.equal("v3.19", df.stages[1].env.TAGGED)
    assert.are.equal("value with spaces", df.stages[1].env.LEGACY)
    assert.are.equal("/opt/app/bin", df.instructions[8].expanded)
    assert.are.equal("a=$APP_HOME b=$APP_HOME", df.instructions[9].expanded)
    assert.are.same({ { "a", "$APP_HOME" }, { "b", "$APP_HOME" } }, df.instructions[9].pairs)
    assert.is_nil(df.instructions[10].expanded) -- RUN is the shell's business
    assert.are.equal("/opt/app/child", df.instructions[12].expanded) -- ENV inherited from base
    assert.are.equal(1, df.stages[2].base_stage)
    -- Build arguments override defaults.
    df = dockerfile.parse(text, { args = { VERSION = "3.20", MODE = "release" } })
    assert.are.equal("docker.io/library/alpine:3.20", df.stages[1].image)
    assert.are.equal("release", df.stages[1].env.LEVEL)
  end)

  it("raises on syntax errors with the line", function()
    assert.has_error(function() dockerfile.parse("FROM a:1\nRUNN make\n") end,
      "dockerfile.parse: line 2: unknown instruction: RUNN")
    assert.has_error(function() dockerfile.parse("RUN make\nFROM a:1\n") end,
      "dockerfile.parse: line 1: RUN before the first FROM (only ARG may come first)")
    assert.has_error(function() dockerfile.parse("FROM a:1\nRUN <<EOF\necho\n") end,
      "dockerfile.parse: line 2: heredoc <<EOF is not terminated")
    assert.has_error(function() dockerfile.parse("# nothing\n") end,
      "dockerfile.parse: line 2: no FROM instruction")
    assert.has_error(function() dockerfile.parse(nil) end,
      "dockerfile.parse: text must be a string, got nil")
  end)
end)

-- Each row: a Dockerfile, the rule, whether it must be hit, and the line when it is.
-- Rows add `USER app` where the rule under test is not about users, to keep them minimal.
local CASES = {
  -- base images
  { "untagged base", "FROM ubuntu\nUSER app\n", "DL3006", true, 1 },
  { "untagged base through an ARG", "ARG BASE=ubuntu\nFROM $BASE\nUSER app\n", "DL3006", true, 2 },
  { "untagged with a registry port", "FROM localhost:5000/app\nUSER app\n", "DL3006", true, 1 },
  { "tagged base", "FROM ubuntu:22.04\nUSER app\n", "DL3006", false },
  { "tag from an ARG", "ARG V=22.04\nFROM ubuntu:$V\nUSER app\n", "DL3006", false },
  { "digest", "FROM ubuntu@sha256:" .. ("a"):rep(64) .. "\nUSER app\n", "DL3006", false },
  { "registry port and tag", "FROM localhost:5000/app:1.2\nUSER app\n", "DL3006", false },
  { "scratch", "FROM scratch\nUSER 1000\n", "DL3006", false },
  { "a previous stage", "FROM golang:1.23 AS build\nFROM build\nUSER app\n", "DL3006", false },
  { "latest", "FROM ubuntu:latest\nUSER app\n", "DL3007", true, 1 },
  { "not latest", "FROM ubuntu:24.04\nUSER app\n", "DL3007", false },
  -- apt
  { "apt-get install without --no-install-recommends",
    "FROM debian:12\nRUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*\nUSER app\n",
    "DL3015", true, 2 },
  { "apt-get install with --no-install-recommends",
    "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl \\\n  && rm -rf /var/lib/apt/lists/*\nUSER app\n",
    "DL3015", false },
  { "apt-get install inside a heredoc, reported at its line",
    "FROM debian:12\nRUN <<EOF\nset -e\napt-get update\napt-get install -y curl\nrm -rf /var/lib/apt/lists/*\nEOF\nUSER app\n",
    "DL3015", true, 5 },
  { "a heredoc script with a python shebang is not shell",
    "FROM python:3.12\nRUN <<EOF\n#!/usr/bin/env python3\nprint('apt-get install -y curl')\nEOF\nUSER app\n", "DL3015", false },
  { "a heredoc script with a bash shebang is shell",
    "FROM debian:12\nRUN <<EOF\n#!/bin/bash\napt-get install -y curl\nEOF\nUSER app\n", "DL3015", true, 4 },
  { "apt-get in a python heredoc is not shell",
    "FROM python:3.12\nRUN python3 <<EOF\nprint('apt-get install -y curl')\nEOF\nUSER app\n", "DL3015", false },
  { "apt lists left behind",
    "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl\nUSER app\n",
    "DL3009", true, 2 },
  { "apt lists removed in the same RUN",
    "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER app\n",
    "DL3009", false },
  { "apt lists on a cache mount (hadolint flags this wrongly)",
    "FROM debian:12\nRUN --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\\n"
      .. "    apt-get update && apt-get install -y --no-install-recommends curl\nUSER app\n",
    "DL3009", false },
  { "cache mount of /var/lib/apt covers the lists",
    "FROM debian:12\nRUN --mount=type=cache,target=/var/lib/apt apt-get update && apt-get install -y --no-install-recommends curl\nUSER app\n",
    "DL3009", false },
  { "apt lists in a builder stage the final image does not use",
    "FROM debian:12 AS build\nRUN apt-get update && apt-get install -y --no-install-recommends gcc\nFROM scratch\nUSER 1000\n",
    "DL3009", false },
  { "apt lists in a stage the final image is built on",
    "FROM debian:12 AS base\nRUN apt-get update && apt-get install -y --no-install-recommends curl\nFROM base\nUSER app\n",
    "DL3009", true, 2 },
  -- cd
  { "cd in RUN", "FROM alpine:3.20\nRUN cd /src && make\nUSER app\n", "DL3003", true, 2 },
  { "WORKDIR instead", "FROM alpine:3.20\nWORKDIR /src\nRUN make\nUSER app\n", "DL3003", false },
  { "cd in a subshell", "FROM alpine:3.20\nRUN (cd /src && make) && make install\nUSER app\n", "DL3003", false },
  { "cd only inside quotes", "FROM alpine:3.20\nRUN echo \"cd /x\" > notes\nUSER app\n", "DL3003", false },
  { "cd in a heredoc script", "FROM alpine:3.20\nRUN <<EOF\nmkdir -p /src\ncd /src\nEOF\nUSER app\n", "DL3003", true, 4 },
  { "cd on a continuation line", "FROM alpine:3.20\nRUN mkdir /src \\\n && cd /src && make\nUSER app\n", "DL3003", true, 2 },
  { "inline ignore comment", "FROM alpine:3.20\n# ignore=DL3003\nRUN cd /src && make\nUSER app\n", "DL3003", false },
  { "hadolint-style ignore comment",
    "FROM alpine:3.20\n# hadolint ignore=DL4006,DL3003\nRUN cd /src && make | tee log\nUSER app\n", "DL3003", false },
  { "an ignore comment only covers the next instruction",
    "FROM alpine:3.20\n# ignore=DL3003\nRUN make\nRUN cd /src && make\nUSER app\n", "DL3003", true, 4 },
  -- sudo
  { "sudo", "FROM debian:12\nRUN sudo make install\nUSER app\n", "DL3004", true, 2 },
  { "the word sudo as an argument", "FROM debian:12\nRUN echo sudo\nUSER app\n", "DL3004", false },
  -- ADD
  { "ADD of a local file", "FROM alpine:3.20\nADD app.py /app/\nUSER app\n", "DL3020", true, 2 },
  { "ADD of a heredoc", "FROM alpine:3.20\nADD <<EOF /etc/motd\nhi\nEOF\nUSER app\n", "DL3020", true, 2 },
  { "ADD of a URL", "FROM alpine:3.20\nADD https://example.com/x.tar.gz /opt/\nUSER app\n", "DL3020", false },
  { "ADD of a local archive", "FROM alpine:3.20\nADD rootfs.tar.xz /\nUSER app\n", "DL3020", false },
  { "ADD of a git repository", "FROM alpine:3.20\nADD git@github.com:moby/buildkit.git /src\nUSER app\n", "DL3020", false },
  { "COPY of a local file", "FROM alpine:3.20\nCOPY app.py /app/\nUSER app\n", "DL3020", false },
  -- users
  { "no USER", "FROM alpine:3.20\nCMD [\"sh\"]\n", "MX001", true, 1 },
  { "a USER", "FROM alpine:3.20\nUSER 1000:1000\n", "MX001", false },
  { "a nonroot base image", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY app /app\n", "MX001", false },
  { "USER only in a builder stage", "FROM alpine:3.20 AS b\nUSER app\nFROM alpine:3.20\nCMD [\"sh\"]\n", "MX001", true, 3 },
  { "last USER is root", "FROM alpine:3.20\nUSER app\nRUN id\nUSER root\n", "DL3002", true, 4 },
  { "root then an unprivileged user", "FROM alpine:3.20\nUSER root\nRUN id\nUSER app\n", "DL3002", false },
  { "USER 0:0", "FROM alpine:3.20\nUSER 0:0\n", "DL3002", true, 2 },
  { "USER 00 is uid 0", "FROM alpine:3.20\nUSER 00\n", "DL3002", true, 2 },
  { "USER +0 is uid 0", "FROM alpine:3.20\nUSER +0\n", "DL3002", true, 2 },
  { "quoted root", "FROM alpine:3.20\nUSER \"root\"\n", "DL3002", true, 2 },
  { "escaped root", "FROM alpine:3.20\nUSER r\\oot\n", "DL3002", true, 2 },
  { "USER 1000", "FROM alpine:3.20\nUSER 1000\n", "DL3002", false },
  -- CMD and ENTRYPOINT
  { "two CMDs", "FROM alpine:3.20\nUSER app\nCMD [\"a\"]\nCMD [\"b\"]\n", "DL4003", true, 4 },
  { "CMDs in different stages", "FROM alpine:3.20 AS a\nCMD [\"a\"]\nFROM alpine:3.20\nUSER app\nCMD [\"b\"]\n", "DL4003", false },
  { "two ENTRYPOINTs", "FROM alpine:3.20\nUSER app\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n", "DL4004", true, 4 },
  { "one ENTRYPOINT", "FROM alpine:3.20\nUSER app\nENTRYPOINT [\"a\"]\nCMD [\"b\"]\n", "DL4004", false },
  { "shell-form ENTRYPOINT", "FROM alpine:3.20\nUSER app\nENTRYPOINT /app --port 80\n", "DL3025", true, 3 },
  { "shell-form CMD", "FROM alpine:3.20\nUSER app\nCMD app --port 80\n", "DL3025", true, 3 },
  { "JSON-form ENTRYPOINT", "FROM alpine:3.20\nUSER app\nENTRYPOINT [\"/app\", \"--port\", \"80\"]\n", "DL3025", false },
  -- pipefail
  { "a pipe", "FROM debian:12\nRUN curl -fsSL https://x | sh\nUSER app\n", "DL4006", true, 2 },
  { "SHELL with pipefail",
    "FROM debian:12\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN curl -fsSL https://x | sh\nUSER app\n",
    "DL4006", false },
  { "SHELL inherited from the base stage",
    "FROM debian:12 AS base\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nFROM base\nRUN curl x | sh\nUSER app\n", "DL4006", false },
  { "set -o pipefail first", "FROM debian:12\nRUN set -o pipefail && curl x | sh\nUSER app\n", "DL4006", false },
  { "heredoc with set -euo pipefail (hadolint is wrong here)",
    "FROM debian:12\nRUN <<EOF bash\nset -euo pipefail\ncurl x | sh\nEOF\nUSER app\n", "DL4006", false },
  { "heredoc without pipefail, at the pipe's line",
    "FROM debian:12\nRUN <<EOF\nset -e\ncurl x | sh\nEOF\nUSER app\n", "DL4006", true, 4 },
  { "a | inside quotes", "FROM debian:12\nRUN echo \"a|b\" > f && grep -E 'x|y' f\nUSER app\n", "DL4006", false },
  { "|| is not a pipe", "FROM debian:12\nRUN make || true\nUSER app\n", "DL4006", false },
  { "2>&1 then a pipe", "FROM debian:12\nRUN make 2>&1 | tee log\nUSER app\n", "DL4006", true, 2 },
  { "exec-form RUN", "FROM debian:12\nRUN [\"sh\", \"-c\", \"a | b\"]\nUSER app\n", "DL4006", false },
  { "a PowerShell SHELL", "FROM mcr.microsoft.com/windows/servercore:ltsc2022\n"
    .. "SHELL [\"powershell\", \"-Command\"]\nRUN Get-ChildItem | Select-Object Name\nUSER app\n", "DL4006", false },
  -- consecutive RUNs
  { "consecutive RUNs", "FROM alpine:3.20\nRUN a\nRUN b\nUSER app\n", "DL3059", true, 3 },
  { "RUNs separated by COPY", "FROM alpine:3.20\nRUN a\nCOPY x /x\nRUN b\nUSER app\n", "DL3059", false },
  { "RUNs with different cache mounts",
    "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install x\nRUN python -m compileall /app\nUSER app\n",
    "DL3059", false },
  { "consecutive RUNs across a comment", "FROM alpine:3.20\nRUN a\n# why\nRUN b\nUSER app\n", "DL3059", true, 4 },
  -- pip cache
  { "pip install keeps its cache", "FROM python:3.12\nRUN pip install flask\nUSER app\n", "DL3042", true, 2 },
  { "pip --no-cache-dir", "FROM python:3.12\nRUN pip install --no-cache-dir flask\nUSER app\n", "DL3042", false },
  { "pip on a cache mount (hadolint flags this wrongly)",
    "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install flask\nUSER app\n", "DL3042", false },
  { "PIP_NO_CACHE_DIR", "FROM python:3.12\nENV PIP_NO_CACHE_DIR=1\nRUN pip install flask\nUSER app\n", "DL3042", false },
  { "pip in a builder stage", "FROM python:3.12 AS build\nRUN pip install flask\nFROM python:3.12-slim\nUSER app\n", "DL3042", false },
  { "python -m pip install", "FROM python:3.12\nRUN python -m pip install flask\nUSER app\n", "DL3042", true, 2 },
  -- dependency order
  { "whole context before npm ci", "FROM node:22\nWORKDIR /app\nCOPY . .\nRUN npm ci\nUSER node\n", "MX002", true, 3 },
  { "manifests first", "FROM node:22\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci\nCOPY . .\nUSER node\n", "MX002", false },
  { "whole context before pip install -r",
    "FROM python:3.12\nCOPY . /app\nRUN pip install --no-cache-dir -r /app/requirements.txt\nUSER app\n", "MX002", true, 2 },
  { "dependencies first, the whole context, then the project itself",
    "FROM python:3.12\nCOPY uv.lock pyproject.toml ./\nRUN uv sync --locked --no-install-project\nCOPY . .\n"
      .. "RUN uv sync --locked\nUSER app\n", "MX002", false },
  { "whole context, then a build that installs nothing", "FROM golang:1.23\nCOPY . .\nRUN go build ./...\nUSER app\n", "MX002", false },
  -- syntax errors
  { "unknown instruction", "FROM alpine:3.20\nRUNN make\n", "DL1000", true, 2 },
  { "unterminated heredoc", "FROM alpine:3.20\nRUN <<EOF\necho hi\n", "DL1000", true, 2 },
}

describe("dockerfile.lint", function()
  for _, case in ipairs(CASES) do
    local name, text, rule, hit, line = case[1], case[2], case[3], case[4], case[5]
    it(rule .. (hit and " hit: " or " not hit: ") .. name, function()
      local found
      for _, f in ipairs(dockerfile.lint(text)) do
        if f.rule == rule then found = f end
        assert.is_string(f.message)
        assert.truthy(({ error = true, warning = true, info = true })[f.severity], f.severity)
      end
      if hit then
        assert(found, rule .. " expected in:\n" .. text)
        assert.are.equal(line, found.line)
      else
        assert(not found, rule .. " not expected (line " .. tostring(found and found.line) .. ")")
      end
    end)
  end

  it("has a hit and a miss for each rule in this table (dockerfile_rules_spec covers every rule)", function()
    local hits, misses = {}, {}
    for _, case in ipairs(CASES) do
      if case[4] then hits[case[3]] = true else misses[case[3]] = true end
    end
    -- DL1000 (does not parse) is missed by every other case.
    for id in pairs(hits) do assert(misses[id] or id == "DL1000", id .. " has no miss case") end
    for id in pairs(misses) do assert(hits[id], id .. " has no hit case") end
  end)

  it("takes a list of rules to ignore", function()
    local text = "FROM alpine:3.20\nRUN a\nRUN b\nUSER app\n"
    assert.are.equal(1, #dockerfile.lint(text))
    assert.are.same({}, dockerfile.lint(text, { ignore = { "DL3059" } }))
    assert.are.same({}, dockerfile.lint(text, { ignore = { DL3059 = true } }))
  end)

  it("returns findings sorted by line, with severities", function()
    local f = dockerfile.lint("FROM ubuntu\nRUN sudo apt-get install -y x | cat\nCMD run\n")
    local got = {}
    for _, x in ipairs(f) do got[#got + 1] = x.line .. " " .. x.rule .. " " .. x.severity end
    assert.are.same({ "1 DL3006 warning", "1 MX001 warning", "2 DL3004 error", "2 DL3008 warning",
      "2 DL3015 info", "2 DL4006 warning", "3 DL3025 warning" }, got)
  end)
end)

describe("dockerfile.generate", function()
  local specs = {
    { language = "c" },
    { language = "c", binary = "build/hello", cmd = { "world" } },
    { language = "cpp", packages = { "libssl-dev" }, entrypoint = "server", ports = { 8443 } },
    { language = "c", version = "14.2", runtime = "distroless", packages = { "zlib1g-dev" } },
    { language = "go", ports = { 8080 }, entrypoint = "api" },
    { language = "python", ports = { 8000 }, packages = { "libpq5" } },
    { language = "python", version = "3.13.1", healthcheck = false },
    { language = "node", ports = { 3000 } },
    { language = "static", ports = { 8080 } },
  }
  for _, spec in ipairs(specs) do
    local label = spec.language .. (spec.binary and " (prebuilt binary)" or "")
      .. (spec.version and (" " .. spec.version) or "")
    it("writes a Dockerfile that parses and lints clean: " .. label, function()
      local out = dockerfile.generate(spec)
      local df = dockerfile.parse(out.dockerfile)
      assert.are.same({}, dockerfile.lint(out.dockerfile))
      local final = df.stages[#df.stages]
      local user
      for _, ins in ipairs(final.instructions) do if ins.cmd == "USER" then user = ins.args end end
      assert.is_string(user)
      assert.is_nil(user:match("^root") or user:match("^0"))
      if not spec.binary and spec.language ~= "static" then
        assert.is_true(#df.stages >= 2, "multi-stage")
      end
      for _, st in ipairs(df.stages) do
        assert.is_nil(st.image:match(":latest$"))
      end
      local has_health = out.dockerfile:find("\nHEALTHCHECK ", 1, true) ~= nil
      local wants = spec.ports and spec.healthcheck ~= false
        and (spec.language == "python" or spec.language == "node" or spec.language == "static")
      assert.are.equal(wants and true or false, has_health)
      if spec.version then assert.truthy(out.dockerfile:find(spec.version, 1, true)) end
    end)
  end

  it("writes a .dockerignore that keeps secrets and junk out of the context", function()
    local function excluded(out, path)
      local pats = {}
      for l in out.dockerignore:gmatch("[^\n]+") do pats[#pats + 1] = l end
      return archive.match(pats, path)
    end
    local node = dockerfile.generate({ language = "node" })
    for _, p in ipairs({ ".git/config", ".env", "certs/server.pem", "node_modules/x/index.js" }) do
      assert.is_true(excluded(node, p), p)
    end
    for _, p in ipairs({ "index.js", "package.json", "src/app.js" }) do
      assert.is_false(excluded(node, p), p)
    end
    local py = dockerfile.generate({ language = "python" })
    assert.is_true(excluded(py, "pkg/__pycache__/m.cpython-312.pyc"))
    assert.is_false(excluded(py, "requirements.txt"))
    local bin = dockerfile.generate({ language = "c", binary = "build/hello" })
    assert.is_false(excluded(bin, "build/hello"))
    assert.is_true(excluded(bin, "src/main.c"))
  end)

  it("names the function on misuse", function()
    assert.has_error(function() dockerfile.generate({ language = "cobol" }) end,
      "dockerfile.generate: spec.language: one of c, cpp, go, python, node, static expected, got cobol")
    assert.has_error(function() dockerfile.generate({ language = "go", prots = { 1 } }) end,
      "dockerfile.generate: spec.prots: unknown key")
    assert.has_error(function() dockerfile.generate({ language = "c", runtime = "alpine" }) end,
      "dockerfile.generate: spec.runtime: 'scratch' or 'distroless' expected, got alpine")
    assert.has_error(function() dockerfile.generate(nil) end, "dockerfile.generate: spec must be a table, got nil")
    assert.has_error(function() dockerfile.lint("FROM a:1\n", { ignroe = { "DL3007" } }) end,
      "dockerfile.lint: option ignroe: unknown key")
    assert.has_error(function() dockerfile.lint("FROM a:1\n", { ignore = "DL3007" }) end,
      "dockerfile.lint: option ignore: table expected, got string")
    assert.has_error(function() dockerfile.parse("FROM a:1\n", { arg = {} }) end,
      "dockerfile.parse: option arg: unknown key")
  end)
end)
