-- needs: docker
-- Networks and volumes against the real engine. Networks are created, inspected, connected
-- and removed; no traffic is ever sent to container addresses.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local dt = require("tests.support.docker")

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local d
setup(function()
  d = docker.connect()
  dt.image()
end)
teardown(function() dt.cleanup() end)

describe("networks", function()
  it("creates a bridge with IPAM, options and labels, and inspects it", function()
    local name = dt.name("net")
    local n = d:create_network { name = name, driver = "bridge", internal = true, attachable = true,
      ipam = { subnet = "172.31.250.0/24", gateway = "172.31.250.1" },
      options = { ["com.docker.network.bridge.enable_icc"] = "false" },
      labels = { ["myrmex.test"] = dt.run_id, tier = "backend" } }
    assert.matches("^%x+$", n.id)
    local i = d:inspect_network(name)
    assert.are.equal(n.id, i.Id)
    assert.are.equal("bridge", i.Driver)
    assert.is_true(i.Internal)
    assert.is_true(i.Attachable)
    assert.are.equal("172.31.250.0/24", i.IPAM.Config[1].Subnet)
    assert.are.equal("172.31.250.1", i.IPAM.Config[1].Gateway)
    assert.are.equal("false", i.Options["com.docker.network.bridge.enable_icc"])
    assert.are.equal("backend", i.Labels.tier)
    local listed = d:list_networks { filters = { label = { "tier=backend", dt.label_filter } } }
    assert.are.equal(1, #listed)
    local err = raised(d.create_network, d, { name = name, labels = dt.labels })
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
    d:remove_network(name)
    err = raised(d.inspect_network, d, name)
    assert.is_true(errors.is(err, "NotFound"))
  end)

  it("passes any driver through and reports the engine's refusal", function()
    local err = raised(d.create_network, d, { name = dt.name("plug"), driver = "mxt-no-such-plugin",
      labels = dt.labels })
    assert.is_true(errors.is(err), tostring(err))
    assert.matches("mxt%-no%-such%-plugin", err.message)
    assert.has_error(function() d:create_network { name = "x", ipam = { subnet = "10.0.0.0/8", gw = "x" } } end,
      "docker.create_network: ipam.gw: unknown key")
  end)

  it("connects and disconnects a container (not started: no traffic)", function()
    local a, b = dt.name("neta"), dt.name("netb")
    d:create_network { name = a, internal = true, labels = dt.labels }
    d:create_network { name = b, internal = true, labels = dt.labels }
    local c <close> = d:create_container { image = dt.IMAGE, network = a, labels = dt.labels }
    d:connect_network(b, c, { aliases = { "svc" } })
    local nets = c:inspect().NetworkSettings.Networks
    assert.is_not_nil(nets[a])
    assert.are.same({ "svc" }, { nets[b].Aliases[1] })
    d:disconnect_network(b, c.id, { force = true })
    assert.is_nil(c:inspect().NetworkSettings.Networks[b])
    local err = raised(d.disconnect_network, d, b, c)
    assert.is_true(errors.is(err), tostring(err))
    c:remove()
    d:remove_network(a)
    d:remove_network(b)
  end)

  it("prunes unused networks by label", function()
    local name = dt.name("prune")
    d:create_network { name = name, internal = true,
      labels = { ["myrmex.test"] = dt.run_id, prune = dt.run_id } }
    local removed = d:prune_networks { filters = { label = { "prune=" .. dt.run_id } } }
    assert.are.same({ name }, removed)
    assert.are.same({}, d:prune_networks { filters = { label = { "prune=" .. dt.run_id } } })
  end)
end)

describe("volumes", function()
  it("creates, lists, inspects, removes and prunes", function()
    local name = dt.name("vol")
    local v = d:create_volume { name = name, labels = { ["myrmex.test"] = dt.run_id, kind = "cache" },
      options = { type = "tmpfs", device = "tmpfs", o = "size=1m" } }
    assert.are.equal(name, v.Name)
    assert.are.equal("local", v.Driver)
    local i = d:inspect_volume(name)
    assert.are.equal("cache", i.Labels.kind)
    assert.are.equal("tmpfs", i.Options.type)
    local listed = d:list_volumes { filters = { label = { "kind=cache", dt.label_filter } } }
    assert.are.equal(1, #listed)
    -- a volume in use cannot go
    local c <close> = d:create_container { image = dt.IMAGE, labels = dt.labels,
      mounts = { { type = "volume", source = name, target = "/v" } } }
    local err = raised(d.remove_volume, d, name)
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
    c:remove()
    d:remove_volume(name)
    err = raised(d.inspect_volume, d, name)
    assert.is_true(errors.is(err, "NotFound"))

    local p = dt.name("pvol")
    d:create_volume { name = p, labels = { ["myrmex.test"] = dt.run_id, prune = dt.run_id } }
    local r = d:prune_volumes { filters = { label = { "prune=" .. dt.run_id } } }
    assert.are.same({ p }, r.deleted)
    assert.is_number(r.space_reclaimed)
  end)
end)
