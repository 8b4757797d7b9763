-- needs: k8s
-- Watch bookmarks on the real API server. With allowWatchBookmarks its watch cache sends a
-- BOOKMARK (an object carrying only the cache's current resourceVersion) about once a minute
-- and 2 s before the watch's timeoutSeconds (k8s.io/apiserver cacher, nextBookmarkTime; there
-- is no flag for the period), so a watch of a few seconds gets one when something it does not
-- select changed after it started. tests/k8s/recorder.py, in
-- front, notes the bookmarks it relays and cuts the stream right after one: the client must
-- resume from the bookmark's version, newer than anything it was sent, with no list.
local K = require("tests.k8s.support")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

describe("k8s watch bookmarks on the real API server", function()
  local cl, c
  setup(function()
    cl = K.cluster("bm")
    c = k8s.connect({ kubeconfig = cl.kubeconfig_path })
  end)
  teardown(function() cl.stop() end)

  it("resumes a cut watch from the last bookmark's resourceVersion, without listing again", function()
    -- Secrets have the watch cache (configmaps do not, on this test bed). The watch starts
    -- from rv0 and selects nothing; 2 s in, a Secret it does not select moves the cache past
    -- anything the watch has processed (a change before the watch started would not: the server
    -- sends only bookmarks newer than the events it filtered out for this watch), so the
    -- bookmark 2 s before timeoutSeconds carries a version the watch saw in no event.
    local _, rv0 = c:list("secrets", { label_selector = "bm=watched" })
    local later = server.start("exec bash -c " .. sh.q("echo READY 0; sleep 2; exec kubectl --kubeconfig \"$1\" -n \"$2\" "
      .. "create secret generic unwatched --from-literal=a=b") .. " later " .. sh.q(cl.admin) .. " " .. sh.q(cl.namespace), 20)
    cl:control("cut-after-bookmark", { times = 1 })
    local ok, err = pcall(c.watch, c, "secrets", { label_selector = "bm=watched", resource_version = rv0,
      timeout = 8 }, function(ev) error("no event expected, got " .. ev.type) end)
    later.stop()
    local unwatched = c:get("secrets", "unwatched").metadata.resourceVersion
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Timeout"), tostring(err))

    local bookmarks = cl:control("bookmarks")
    assert.is_true(#bookmarks >= 1, "the server sent no bookmark")
    local bm = bookmarks[1].resourceVersion
    assert.is_true(tonumber(bm) >= tonumber(unwatched), bm .. " < " .. unwatched)
    local watches, lists = {}, 0
    for _, q in ipairs(cl:control("requests")) do
      if q.path:find("/secrets$") then
        if q.query:find("watch=true", 1, true) then
          watches[#watches + 1] = q.query
          assert.truthy(q.query:find("allowWatchBookmarks=true", 1, true), q.query)
        else
          lists = lists + 1
        end
      end
    end
    assert.are.equal(1, lists) -- the spec's own list above
    assert.is_true(#watches >= 2, table.concat(watches, "\n"))
    assert.truthy(watches[1]:find("resourceVersion=" .. rv0 .. "&", 1, true) or watches[1]:find(
      "resourceVersion=" .. rv0 .. "$"), watches[1])
    assert.truthy(watches[2]:find("resourceVersion=" .. bm .. "&", 1, true) or watches[2]:find(
      "resourceVersion=" .. bm .. "$"), watches[2])
  end)
end)
