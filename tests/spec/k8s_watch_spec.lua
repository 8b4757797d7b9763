-- Watches after 410 Gone: the collection is listed again and compared with what the caller
-- was told, as client-go's reflector and informer do. tests/k8s/apiserver.py answers 410 on
-- demand (/_test/compact), which a real API server does only when etcd compacts.
local F = require("tests.k8s.faults")
local k8s = require("myrmex.k8s")

local function cm(name, v)
  return { apiVersion = "v1", kind = "ConfigMap", metadata = { name = name, labels = { set = "w410" } },
    data = { v = v } }
end

describe("k8s watch", function()
  local srv, c
  setup(function()
    srv = F.start()
    c = k8s.connect({ kubeconfig = srv.kubeconfig })
  end)
  teardown(function() srv.stop() end)

  it("after 410 re-lists and sends DELETED for what vanished, MODIFIED for what changed, nothing else again",
    function()
      for _, n in ipairs({ "w-a", "w-b", "w-d" }) do c:apply(cm(n, "1")) end
      local events, initial = {}, 0
      c:watch("configmaps", { label_selector = "set=w410", timeout = 60 }, function(ev)
        events[#events + 1] = ev.type .. " " .. ev.object.metadata.name
        if ev.type == "ADDED" and #events <= 3 then
          initial = initial + 1
          if initial == 3 then
            -- The gap: changes the watch will not be told about, then the history is compacted
            -- so the watch from the list's version gets 410.
            c:delete("configmaps", "w-a")
            c:apply(cm("w-b", "2"))
            c:apply(cm("w-c", "1"))
            srv:control("compact")
          end
        end
        if ev.type == "DELETED" then return false end
      end)
      assert.are.same({ "ADDED w-a", "ADDED w-b", "ADDED w-d", "MODIFIED w-b", "ADDED w-c", "DELETED w-a" }, events)
      -- One list at the start, one after the 410.
      local lists = 0
      for _, r in ipairs(srv:requests("GET", "/configmaps?")) do
        if not r.path:find("watch=true", 1, true) then lists = lists + 1 end
      end
      assert.are.equal(2, lists)
    end)

  it("DELETED after a 410 carries the last object seen", function()
    c:apply(cm("w-e", "7"))
    local last
    local n = 0
    c:watch("configmaps", { label_selector = "set=w410", timeout = 60 }, function(ev)
      n = n + 1
      if n == 1 then
        c:delete("configmaps", "w-e")
        srv:control("compact")
      end
      if ev.type == "DELETED" then last = ev.object return false end
    end)
    assert.are.equal("w-e", last.metadata.name)
    assert.are.equal("7", last.data.v)
  end)

  it("resumes a dropped watch from the last version seen, without events again", function()
    local events = {}
    c:apply(cm("w-f", "1"))
    c:watch("configmaps", { label_selector = "set=w410", name = "w-f", timeout = 60 }, function(ev)
      events[#events + 1] = ev.type .. " " .. ev.object.data.v
      if #events == 1 then c:apply(cm("w-f", "2")) end
      if #events == 2 then
        srv:control("drop-watches")
        c:apply(cm("w-f", "3"))
      end
      if #events == 3 then return false end
    end)
    assert.are.same({ "ADDED 1", "MODIFIED 2", "MODIFIED 3" }, events)
  end)
end)
