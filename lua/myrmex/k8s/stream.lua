--- Streams into pods for myrmex.k8s: exec and attach over WebSocket with the channel protocol
--- (v5.channel.k8s.io, falling back to v4.channel.k8s.io), port-forward (v4/portforward.k8s.io).
--- The WebSocket itself is myrmex.core.websocket (libwebsockets). See docs/k8s.md.
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local json = require("myrmex.json")
local log = require("myrmex.log")
local rt = require("myrmex.core.runtime")

local M = {}

M.CHANNEL_PROTOCOLS = "v5.channel.k8s.io,v4.channel.k8s.io"
local STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
local CHUNK = 32 * 1024

-- The client's proxy (kubeconfig proxy-url, else HTTPS_PROXY/HTTP_PROXY less NO_PROXY) as
-- libwebsockets takes it: "[user:password@]host:port", tunnelled through with CONNECT. Only
-- http:// proxies can carry a WebSocket there; anything else raises Invalid naming the proxy.
local function ws_proxy(what, proxy)
  if not proxy then return nil end
  local scheme, rest = proxy:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then scheme, rest = "http", proxy end
  if scheme:lower() ~= "http" then
    errors.raise({ code = "Invalid", engine = "k8s", message = what .. ": proxy " .. proxy
      .. ": only http:// proxies carry exec, attach and port-forward streams (CONNECT)" }, 0)
  end
  local hostport = rest:match("^([^/?#]*)")
  local userinfo, hp = hostport:match("^(.*)@([^@]*)$")
  hp = hp or hostport
  if not hp:find(":%d+$") then hp = hp .. ":80" end -- as Go: an http proxy's default port
  if hp:match("^:") then
    errors.raise({ code = "Invalid", engine = "k8s", message = what .. ": proxy " .. proxy .. " has no host" }, 0)
  end
  if userinfo then
    userinfo = userinfo:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    return userinfo .. "@" .. hp
  end
  return hp
end

-- The WebSocket URL, headers and TLS table of a request to `path` with the client's settings.
local function target(client, path, query)
  local headers, tls = client:_auth(false)
  local list = {}
  for k, v in pairs(headers) do list[#list + 1] = k .. ": " .. v end
  local a = client.settings.auth
  if a.kind == "basic" then
    list[#list + 1] = "Authorization: Basic " .. require("myrmex.digest").base64(a.username .. ":" .. a.password)
  end
  list[#list + 1] = "User-Agent: myrmex"
  local url = client.server:gsub("^http", "ws") .. path .. "?" .. http.encode_query(query)
  return url, list, tls
end

-- Open a WebSocket to `path`; wait until it is open. A refused upgrade raises what the
-- server says about the same request without the upgrade (its Status: NotFound, Forbidden...).
local function open(client, what, path, query, protocols, timeout)
  local ws = require("myrmex.core.websocket")
  local url, headers, tls = target(client, path, query)
  local conn, kind, msg = ws.connect({ url = url, headers = headers, protocols = protocols, tls = tls,
    proxy = ws_proxy(what, client.settings.proxy) })
  if not conn then
    errors.raise({ code = "Unreachable", engine = "k8s", message = what .. ": " .. tostring(msg)
      .. " (" .. tostring(kind) .. ")" }, 0)
  end
  local deadline = rt.monotonic() + timeout
  while true do
    local state = conn:poll(100)
    if state == "open" then break end
    if state ~= "connecting" then
      local info = conn:info()
      conn:close()
      if info.http_status and info.http_status >= 400 then
        -- The Status body of a refused upgrade does not reach us through libwebsockets; the same
        -- request as a plain POST meets the same authorization and lookup first.
        local ok, err = pcall(client.request, client, "POST", path, { query = query, retries = 0, what = what })
        if not ok then error(err, 0) end
        errors.raise({ code = errors.from_status(info.http_status) or "Engine", engine = "k8s",
          status = info.http_status, message = what .. ": the server refused the WebSocket upgrade ("
          .. info.http_status .. ")" }, 0)
      end
      errors.raise({ code = "Unreachable", engine = "k8s", message = what .. ": " .. tostring(info.error)
        .. " (" .. client.server .. ")" }, 0)
    end
    if rt.monotonic() > deadline then
      conn:close()
      errors.raise({ code = "Timeout", engine = "k8s", message = what .. ": no WebSocket after " .. timeout .. "s" }, 0)
    end
  end
  return conn
end

-- The exit code in the error channel's Status (v4 and v5 send one when the process ended):
-- Success is 0, NonZeroExitCode carries it as an ExitCode cause; anything else failed to run.
local function exit_code(what, text)
  local ok, st = pcall(json.decode, text)
  if not ok or type(st) ~= "table" then
    errors.raise({ code = "Engine", engine = "k8s", message = what .. ": unreadable status: " .. text:sub(1, 200) }, 0)
  end
  if st.status == "Success" then return 0 end
  if st.reason == "NonZeroExitCode" then
    for _, c in ipairs(type(st.details) == "table" and st.details.causes or {}) do
      if c.reason == "ExitCode" then return tonumber(c.message) end
    end
  end
  errors.raise({ code = "Engine", engine = "k8s", status = st.code, message = what .. ": " .. tostring(st.message),
    details = { reason = st.reason, status = st } }, 0)
end

M._exit_code = exit_code
M._ws_proxy = ws_proxy

--- Run a command in a container (exec) or attach to its main process, and collect its output.
--- opts: cmd (exec), stdin (string), container, timeout, namespace, tty, on_output(stream, data)
--- (false: detach, the result has detached = true and no exit code).
function M.run(client, pod, opts, attach)
  local fname = attach and "k8s.attach" or "k8s.exec"
  local ns = opts.namespace or client.namespace
  local what = (attach and "attach to pod " or "exec in pod ") .. ns .. "/" .. pod
  local query = { container = opts.container, stdout = "true", stderr = not opts.tty and "true" or nil,
    stdin = opts.stdin and "true" or nil, tty = opts.tty and "true" or nil }
  if not attach then
    if type(opts.cmd) ~= "table" or #opts.cmd == 0 then error(fname .. ": cmd must be a non-empty list", 3) end
    local cmd = {}
    for i, a in ipairs(opts.cmd) do
      if type(a) ~= "string" then error(fname .. ": cmd[" .. i .. "] must be a string", 3) end
      cmd[i] = a
    end
    query.command = cmd
  end
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" then error(fname .. ": stdin must be a string", 3) end
  if opts.on_output ~= nil and type(opts.on_output) ~= "function" then
    error(fname .. ": on_output must be a function", 3)
  end
  local path = "/api/v1/namespaces/" .. http.escape(ns) .. "/pods/" .. http.escape(pod)
    .. (attach and "/attach" or "/exec")
  local conn <close> = open(client, what, path, query, M.CHANNEL_PROTOCOLS, client.timeout)
  local proto = conn:info().protocol
  log.debug("k8s: stream open", { pod = pod, protocol = proto, op = attach and "attach" or "exec" })
  if opts.stdin then
    for i = 1, #opts.stdin, CHUNK do conn:send(string.char(STDIN) .. opts.stdin:sub(i, i + CHUNK - 1)) end
    -- v5 can say that stdin ended; with v4 the process sees no end of its input.
    if proto == "v5.channel.k8s.io" then conn:send(string.char(CLOSE, STDIN)) end
  end
  local out, err, status = {}, {}, nil
  local deadline = opts.timeout and (rt.monotonic() + opts.timeout)
  local detached = false
  local function output(list, name, data)
    list[#list + 1] = data
    if opts.on_output and #data > 0 and opts.on_output(name, data) == false then detached = true end
  end
  while not detached do
    local state = conn:poll(100)
    while not detached do
      local m = conn:recv()
      if not m then break end
      local ch, data = m:byte(1), m:sub(2)
      if ch == STDOUT then output(out, "stdout", data)
      elseif ch == STDERR then output(err, "stderr", data)
      elseif ch == ERROR then status = (status or "") .. data end
    end
    if detached then break end
    if state ~= "open" and state ~= "connecting" then
      local info = conn:info()
      if state == "failed" and not status then
        errors.raise({ code = "Unreachable", engine = "k8s", message = what .. ": " .. tostring(info.error) }, 0)
      end
      break
    end
    if deadline and rt.monotonic() > deadline then
      errors.raise({ code = "Timeout", engine = "k8s", message = what .. ": still running after " .. opts.timeout
        .. "s" }, 0)
    end
  end
  if detached then
    -- Leaving is closing the WebSocket (the <close> above); the process goes on.
    return { stdout = table.concat(out), stderr = table.concat(err), protocol = proto, detached = true }
  end
  if not status then
    errors.raise({ code = "Engine", engine = "k8s", message = what .. ": the stream ended without a status" }, 0)
  end
  return { exit_code = exit_code(what, status), stdout = table.concat(out), stderr = table.concat(err),
    protocol = proto }
end

--- Forward a local loopback port to `port` of a pod (as `kubectl port-forward`): a thread
--- listens on 127.0.0.1 and carries each connection over its own WebSocket to the pod's
--- portforward subresource (v4.channel.k8s.io). The pod must exist and be Running.
function M.port_forward(client, pod, port, opts)
  local ns = opts.namespace or client.namespace
  local what = "port-forward to pod " .. ns .. "/" .. pod .. ":" .. port
  local p = client:get("pods", pod, { namespace = ns })
  local phase = type(p.status) == "table" and p.status.phase or nil
  if phase ~= "Running" then
    errors.raise({ code = "Invalid", engine = "k8s", message = what .. ": the pod is not running (phase "
      .. tostring(phase) .. ")" }, 0)
  end
  local path = "/api/v1/namespaces/" .. http.escape(ns) .. "/pods/" .. http.escape(pod) .. "/portforward"
  local url, headers, tls = target(client, path, { ports = port })
  local fwd, kind, msg = require("myrmex.core.websocket").forward({ url = url, headers = headers,
    protocols = "v4.channel.k8s.io", tls = tls, proxy = ws_proxy(what, client.settings.proxy) })
  if not fwd then
    errors.raise({ code = "Unreachable", engine = "k8s", message = what .. ": " .. tostring(msg)
      .. " (" .. tostring(kind) .. ")" }, 0)
  end
  log.debug("k8s: port-forward listening", { pod = pod, port = port, local_port = fwd:port() })
  return fwd
end

return M
