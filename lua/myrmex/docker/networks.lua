--- Networks and volumes. Methods of the docker client; see docs/docker.md.
local json = require("myrmex.json")

---@class myrmex.docker.NetworkOptions
---@field name string
---@field driver? string bridge (default), macvlan, ipvlan, overlay, or a plugin
---@field internal? boolean
---@field attachable? boolean
---@field options? table<string,string> driver options
---@field ipam? {subnet?:string, gateway?:string, ip_range?:string, driver?:string}
---@field labels? table<string,string>
---@field enable_ipv6? boolean
---@field check_duplicate? boolean default true

local NETWORK_OPTS = { name = true, driver = true, internal = true, attachable = true,
  options = true, ipam = true, labels = true, enable_ipv6 = true, check_duplicate = true }
local VOLUME_OPTS = { name = true, driver = true, labels = true, options = true }

local function list_or_empty(v)
  if v == nil or json.isnull(v) then return {} end
  return v
end

return function(Client, H)
  local function string_map(fname, key, v)
    if v == nil then return nil end
    if type(v) ~= "table" then H.misuse(fname, key .. ": table of strings expected") end
    local out = json.object()
    for k, val in pairs(v) do out[tostring(k)] = tostring(val) end
    return out
  end

  local function ipam(v)
    if v == nil then return nil end
    if type(v) ~= "table" then H.misuse("create_network", "ipam: table expected") end
    local allowed = H.set { "subnet", "gateway", "ip_range", "driver" }
    for k in pairs(v) do
      if not allowed[k] then H.misuse("create_network", "ipam." .. tostring(k) .. ": unknown key") end
    end
    local cfg = json.array()
    if v.subnet then cfg[1] = { Subnet = v.subnet, Gateway = v.gateway, IPRange = v.ip_range } end
    return { Driver = v.driver or "default", Config = cfg }
  end

  --- Create a network: any driver the engine has (bridge, macvlan, ipvlan, overlay, plugins).
  --- Returns {id=, name=, warning=}.
  ---@param o myrmex.docker.NetworkOptions
  ---@return {id:string, name:string, warning:string|nil}
  function Client:create_network(o)
    o = H.options("create_network", o, NETWORK_OPTS)
    if type(o.name) ~= "string" then H.misuse("create_network", "name must be a string") end
    local body = {
      Name = o.name, Driver = o.driver or "bridge", Internal = o.internal or false,
      Attachable = o.attachable or false, EnableIPv6 = o.enable_ipv6 or nil,
      Options = string_map("create_network", "options", o.options),
      Labels = string_map("create_network", "labels", o.labels), IPAM = ipam(o.ipam),
      CheckDuplicate = o.check_duplicate ~= false,
    }
    return self:_mutate("create_network", o.name, body, function()
      local r = self:_call("create_network", o.name, { method = "POST", path = "/networks/create",
        json = body })
      local warning = r.Warning
      if warning == "" or json.isnull(warning) then warning = nil end
      return { id = r.Id, name = o.name, warning = warning }
    end, { name = o.name })
  end

  --- Networks on the engine.
  ---@param o? {filters?:table}
  ---@return table[]
  function Client:list_networks(o)
    o = H.options("list_networks", o, H.set { "filters" })
    return (self:_call("list_networks", nil, { path = "/networks",
      query = { filters = H.filters(o.filters) } }))
  end

  --- The inspect document of a network (by id or name).
  ---@param ref string
  ---@return table
  function Client:inspect_network(ref)
    return (self:_call("inspect_network", ref, { path = "/networks/" .. H.path(ref) }))
  end

  local function container_id(fname, c)
    if (type(c) == "table" or type(c) == "userdata") and c.id then return c.id end
    if type(c) ~= "string" then H.misuse(fname, "container id, name or handle expected") end
    return c
  end

  --- Attach a container to a network, optionally with aliases and a fixed IPv4 address.
  ---@param net string
  ---@param container string|myrmex.docker.Container
  ---@param o? {aliases?:string[], ipv4?:string}
  function Client:connect_network(net, container, o)
    o = H.options("connect_network", o, H.set { "aliases", "ipv4" })
    local cid = container_id("connect_network", container)
    local body = { Container = cid }
    if o.aliases or o.ipv4 then
      body.EndpointConfig = { Aliases = o.aliases and json.array(o.aliases) or nil,
        IPAMConfig = o.ipv4 and { IPv4Address = o.ipv4 } or nil }
    end
    return self:_mutate("connect_network", net, body, function()
      self:_call("connect_network", net, { method = "POST",
        path = "/networks/" .. H.path(net) .. "/connect", json = body })
      return true
    end)
  end

  --- Detach a container from a network.
  ---@param net string
  ---@param container string|myrmex.docker.Container
  ---@param o? {force?:boolean}
  function Client:disconnect_network(net, container, o)
    o = H.options("disconnect_network", o, H.set { "force" })
    local body = { Container = container_id("disconnect_network", container), Force = o.force or false }
    return self:_mutate("disconnect_network", net, body, function()
      self:_call("disconnect_network", net, { method = "POST",
        path = "/networks/" .. H.path(net) .. "/disconnect", json = body })
      return true
    end)
  end

  --- Remove a network.
  ---@param ref string
  function Client:remove_network(ref)
    return self:_mutate("remove_network", ref, nil, function()
      self:_call("remove_network", ref, { method = "DELETE", path = "/networks/" .. H.path(ref) })
      return true
    end)
  end

  --- Remove unused networks; returns the names removed.
  ---@param o? {filters?:table}
  ---@return string[]
  function Client:prune_networks(o)
    o = H.options("prune_networks", o, H.set { "filters" })
    return self:_mutate("prune_networks", nil, o, function()
      local r = self:_call("prune_networks", nil, { method = "POST", path = "/networks/prune",
        query = { filters = H.filters(o.filters) } })
      return list_or_empty(r.NetworksDeleted)
    end)
  end

  --- Create a volume; returns its inspect document (Name, Driver, Mountpoint, Labels, ...).
  ---@param o? {name?:string, driver?:string, labels?:table<string,string>, options?:table<string,string>}
  ---@return table
  function Client:create_volume(o)
    o = H.options("create_volume", o, VOLUME_OPTS)
    -- The local driver's options bind-mount any host folder (type=none, o=bind, device=/).
    if o.options and next(o.options) ~= nil and require("myrmex.sandbox").active() then
      H.misuse("create_volume", "options are not allowed under --sandbox")
    end
    local body = { Name = o.name, Driver = o.driver or "local",
      Labels = string_map("create_volume", "labels", o.labels),
      DriverOpts = string_map("create_volume", "options", o.options) }
    return self:_mutate("create_volume", o.name, body, function()
      return (self:_call("create_volume", o.name, { method = "POST", path = "/volumes/create",
        json = body }))
    end, { Name = o.name })
  end

  --- Volumes on the engine.
  ---@param o? {filters?:table}
  ---@return table[]
  function Client:list_volumes(o)
    o = H.options("list_volumes", o, H.set { "filters" })
    local r = self:_call("list_volumes", nil, { path = "/volumes",
      query = { filters = H.filters(o.filters) } })
    return list_or_empty(r.Volumes)
  end

  --- The inspect document of a volume.
  ---@param name string
  ---@return table
  function Client:inspect_volume(name)
    return (self:_call("inspect_volume", name, { path = "/volumes/" .. H.path(name) }))
  end

  --- Remove a volume (force: even when in use by a stopped container... as the engine allows).
  ---@param name string
  ---@param o? {force?:boolean}
  function Client:remove_volume(name, o)
    o = H.options("remove_volume", o, H.set { "force" })
    return self:_mutate("remove_volume", name, o, function()
      self:_call("remove_volume", name, { method = "DELETE", path = "/volumes/" .. H.path(name),
        query = { force = o.force or nil } })
      return true
    end)
  end

  --- Remove unused volumes; returns {deleted = names, space_reclaimed = bytes}.
  ---@param o? {filters?:table}
  ---@return {deleted:string[], space_reclaimed:integer}
  function Client:prune_volumes(o)
    o = H.options("prune_volumes", o, H.set { "filters" })
    return self:_mutate("prune_volumes", nil, o, function()
      local r = self:_call("prune_volumes", nil, { method = "POST", path = "/volumes/prune",
        query = { filters = H.filters(o.filters) } })
      return { deleted = list_or_empty(r.VolumesDeleted), space_reclaimed = r.SpaceReclaimed or 0 }
    end)
  end
end
