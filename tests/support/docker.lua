--- Test helper for specs that need a Docker engine: a busybox image built FROM scratch from
--- Debian's busybox-static (nothing is ever pulled), unique names, labels and cleanup.
--- It drives the docker CLI on purpose, so the image other specs stand on does not depend on
--- the module under test.
---
---   local dt = require("tests.support.docker")
---   local image = dt.image()                  -- "myrmex-test/busybox:1", built once
---   local name = dt.name("web")               -- "mxt-web-<run>-<n>", unique per call
---   dt.cleanup()                              -- everything labelled with this run's label
local sh = require("tests.support.sh")

local M = {}

M.IMAGE = "myrmex-test/busybox:1"
M.BUSYBOX = "/bin/busybox"

-- A token unique to this process, so concurrent spec runs never share names.
local function run_token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(4) or tostring(os.time())
  if f then f:close() end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

M.run_id = run_token()
--- Labels to put on everything a spec creates; cleanup() removes what carries them.
M.labels = { ["myrmex.test"] = M.run_id }
M.label_filter = "myrmex.test=" .. M.run_id

local counter = 0

--- A new unique name: mxt-<prefix>-<run>-<n>.
---@param prefix? string
---@return string
function M.name(prefix)
  counter = counter + 1
  return ("mxt-%s-%s-%d"):format(prefix or "x", M.run_id, counter)
end

--- Run a docker CLI command line; returns {code, stdout, stderr}.
function M.cli(args)
  return sh.run("docker " .. args)
end

--- True when an engine answers.
---@return boolean
function M.available()
  return M.cli("version --format '{{.Server.APIVersion}}'").code == 0
end

--- Write files into a new temporary directory: files = {["path"] = "content" | {mode=, data=}}.
--- Returns the directory.
---@param files table<string, string|{data:string, mode:integer}>
---@return string
function M.tmpdir(files)
  local dir = sh.run("mktemp -d /tmp/mx-docker-XXXXXX").stdout:gsub("%s+$", "")
  for path, v in pairs(files or {}) do
    local data, mode = v, nil
    if type(v) == "table" then data, mode = v.data, v.mode end
    local parent = (dir .. "/" .. path):match("^(.*)/")
    os.execute("mkdir -p " .. sh.q(parent))
    local f = assert(io.open(dir .. "/" .. path, "wb"))
    f:write(data)
    f:close()
    if mode then os.execute(("chmod %o %s"):format(mode, sh.q(dir .. "/" .. path))) end
  end
  return dir
end

--- A build context holding busybox and the given files (see tmpdir) — for specs that build
--- their own images FROM scratch.
---@param files table
---@return string dir
function M.context(files)
  local dir = M.tmpdir(files)
  assert(os.execute(("cp %s %s/busybox"):format(M.BUSYBOX, sh.q(dir))))
  return dir
end

--- The Dockerfile lines that turn a scratch image into a usable busybox system.
M.BASE_DOCKERFILE = table.concat({
  "FROM scratch",
  "COPY busybox /bin/busybox",
  'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp /etc /root'
    .. " && echo root:x:0:0:root:/root:/bin/sh > /etc/passwd"
    .. " && echo nobody:x:65534:65534:nobody:/:/bin/sh >> /etc/passwd"
    .. ' && echo root:x:0: > /etc/group && echo nogroup:x:65534: >> /etc/group"]',
  "ENV PATH=/bin",
  'CMD ["sh"]',
}, "\n") .. "\n"

--- The shared busybox test image, built once per engine (kept between runs: it is small and
--- every docker spec needs it). Returns its reference.
---@return string
function M.image()
  if M.cli("image inspect " .. M.IMAGE).code == 0 then return M.IMAGE end
  local dir = M.context({ Dockerfile = M.BASE_DOCKERFILE })
  local r = sh.run(("DOCKER_BUILDKIT=0 docker build -q --label myrmex.test.base=1 -t %s %s")
    :format(M.IMAGE, sh.q(dir)))
  sh.run({ "rm", "-rf", dir })
  assert(r.code == 0, "building the busybox test image failed: " .. r.stderr)
  return M.IMAGE
end

--- The files of a context whose .dockerignore has every tricky case (a BOM, a comment,
--- ** and negations, a rooted and a nested name, padding, the Dockerfile itself), with a
--- Dockerfile that copies all of it FROM `base`: the builders' specs compare what arrives.
---@param base string
---@return table
function M.ignore_context(base)
  return {
    Dockerfile = "FROM " .. base .. "\nCOPY . /ctx\n",
    [".dockerignore"] = table.concat({
      "\239\187\191# a comment, after a BOM",
      "**/*.o", "!keep.o", "/secret.txt", "build", "!build/keep/me", "docs", "!**/a.md",
      "  spaced.log  ", "Dockerfile",
    }, "\n"),
    ["keep.o"] = "k", ["x.o"] = "x", ["src/deep/y.o"] = "y", ["src/main.c"] = "c",
    ["secret.txt"] = "s", ["src/secret.txt"] = "nested is kept",
    ["build/keep/me"] = "m", ["build/other"] = "o", ["docs/a.md"] = "a",
    ["spaced.log"] = "l", ["run.sh"] = { data = "#!/bin/sh\n", mode = 493 },
    ["private.key"] = { data = "k", mode = 384 },
  }
end

--- Connect in a child myrmex with extra environment (Lua cannot change its own environment);
--- returns what the child printed: "<host> <ping>" or the error.
---@param env table<string,string>
---@return string
function M.connect_in_child(env)
  local script = sh.tmpfile([[
    local ok, d = pcall(require("myrmex.docker").connect)
    if ok then io.write(d.host, " ", tostring(d:ping())) else io.write("error ", tostring(d)) end
  ]], ".lua")
  local r = sh.run({ sh.bin, script }, { env = env })
  os.remove(script)
  return r.stdout
end

--- A container config for the specs, filled in and returned: the test image (built by
--- M.image() in the spec's setup), this run's label and no network, unless `t` sets them.
---@param t table
---@return table
function M.config(t)
  t.image = t.image or M.IMAGE
  t.labels = t.labels or M.labels
  if t.network == nil then t.network = "none" end
  return t
end

--- Remove every container, network, volume and image labelled with this run's label.
function M.cleanup()
  local f = M.label_filter
  local function ids(list_cmd)
    local seen, out = {}, {}
    for id in M.cli(list_cmd).stdout:gmatch("%S+") do
      if not seen[id] then seen[id], out[#out + 1] = true, id end
    end
    return table.concat(out, " ")
  end
  local kinds = {
    { "ps -aq --filter label=" .. f, "rm -f -v" },
    { "network ls -q --filter label=" .. f, "network rm" },
    { "volume ls -q --filter label=" .. f, "volume rm -f" },
    { "images -q --filter label=" .. f, "rmi -f" },
  }
  for _, k in ipairs(kinds) do
    local list = ids(k[1])
    if list ~= "" then M.cli(k[2] .. " " .. list) end
  end
end

--- Names of containers (all states) that carry this run's label.
---@return string[]
function M.containers()
  local out = {}
  local r = M.cli(("ps -a --filter label=%s --format '{{.Names}}'"):format(M.label_filter))
  for name in r.stdout:gmatch("[^\n]+") do out[#out + 1] = name end
  return out
end

--- Start tests/support/docker_proxy.py in the background. opts: {die_after=seconds,
--- mute=true, cut_save_after=BYTES, builder_version="1", tcp=PORT, tls={cert=, key=, client_ca=?}}. Returns {host = "unix://..." or
--- "tcp://127.0.0.1:PORT", pid, stop()}.
---@param opts? {die_after?:number, mute?:boolean, cut_save_after?:integer, builder_version?:string, tcp?:integer, tls?:table}
---@return {host:string, pid:integer, stop:fun()}
function M.proxy(opts)
  opts = opts or {}
  local listen = opts.tcp and ("127.0.0.1:" .. opts.tcp) or ("/tmp/" .. M.name("proxy") .. ".sock")
  local out = os.tmpname()
  local flags = { opts.die_after and ("--die-after " .. opts.die_after) or "", opts.mute and "--mute" or "",
    opts.cut_save_after and ("--cut-save-after " .. math.tointeger(opts.cut_save_after)) or "",
    opts.builder_version and ("--builder-version " .. sh.q(opts.builder_version)) or "" }
  if opts.tls then
    flags[#flags + 1] = "--tls-cert " .. sh.q(opts.tls.cert) .. " --tls-key " .. sh.q(opts.tls.key)
    if opts.tls.client_ca then flags[#flags + 1] = "--tls-client-ca " .. sh.q(opts.tls.client_ca) end
  end
  local cmd = ("python3 %s/tests/support/docker_proxy.py %s %s >%s 2>&1 &"):format(
    sh.src, sh.q(listen), table.concat(flags, " "), out)
  os.execute(cmd)
  local pid
  for _ = 1, 200 do
    local f = io.open(out)
    local text = f and f:read("a") or ""
    if f then f:close() end
    pid = tonumber(text:match("^(%d+)\n"))
    if pid then break end
    os.execute("sleep 0.02")
  end
  os.remove(out)
  assert(pid, "docker_proxy.py did not start")
  return {
    host = opts.tcp and ("tcp://" .. listen) or ("unix://" .. listen),
    pid = pid,
    stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end,
  }
end

--- True in an AddressSanitizer build: its quarantine keeps freed memory resident, so peak-RSS
--- bounds are only asserted in normal builds.
---@return boolean
function M.sanitized()
  for line in io.lines("/proc/self/maps") do
    if line:find("libasan", 1, true) then return true end
  end
  return false
end

--- A free TCP port on 127.0.0.1 (the kernel picks it; the race is harmless in tests).
---@return integer
function M.free_port()
  local r = sh.run([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  return assert(tonumber(r.stdout))
end

--- A throw-away PKI (tests/support/tlsgen.sh) in a new directory, plus the DOCKER_CERT_PATH
--- names: ca.pem, cert.pem/key.pem (the client), server.pem/server.key, other-ca.pem.
---@return string dir
function M.pki()
  local dir = M.tmpdir {}
  local r = sh.run({ "bash", sh.src .. "/tests/support/tlsgen.sh", dir })
  assert(r.code == 0, "tlsgen.sh failed: " .. r.stderr)
  sh.run(("cp %s/client.pem %s/cert.pem && cp %s/client.key %s/key.pem"):format(dir, dir, dir, dir))
  return dir
end

--- The peak resident memory of this process so far, in KiB.
---@return integer
function M.peak_rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s+(%d+)"))
end

return M
