-- needs: k8s
-- CRDs and objects of their kinds in one manifest, on the real control plane (the Python
-- server has no apiextensions): apply_manifest waits for each CRD to be Established and served
-- by discovery before applying its objects, and says which CRD never got there.
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")

local function crd(group, plural, kind)
  return ([[
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %s.%s
spec:
  group: %s
  scope: Namespaced
  names: {plural: %s, singular: %s, kind: %s, listKind: %sList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
]]):format(plural, group, group, plural, plural:sub(1, -2), kind, kind)
end

local function cr(group, kind, name, size)
  return ("apiVersion: %s/v1\nkind: %s\nmetadata:\n  name: %s\nspec:\n  size: %d\n"):format(group, kind, name, size)
end

describe("k8s CRDs in a manifest", function()
  local t, c, group
  local crds = {}
  setup(function()
    t = T.open("crd", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
    group = t.namespace .. ".myrmex.test"
  end)
  teardown(function()
    for _, name in ipairs(crds) do pcall(c.delete, c, "customresourcedefinitions.apiextensions.k8s.io", name) end
    t.stop()
  end)

  it("applies a CRD and its objects in order, whatever the manifest order", function()
    crds[#crds + 1] = "widgets." .. group
    local text = table.concat({ cr(group, "Widget", "w1", 1), crd(group, "widgets", "Widget"),
      cr(group, "Widget", "w2", 2) }, "---\n")
    local objs = c:apply_manifest(text)
    assert.are.equal(3, #objs)
    assert.are.equal("CustomResourceDefinition", objs[1].kind)
    local w2 = c:get("widgets." .. group, "w2")
    assert.are.equal(2, w2.spec.size)
    local items = c:list("Widget", { api_version = group .. "/v1" })
    assert.are.equal(2, #items)
  end)

  it("raises Timeout naming a CRD that never becomes Established, and applies none of its objects", function()
    -- Same kind as widgets in the same group: the server refuses the names (KindConflict).
    crds[#crds + 1] = "gizmos." .. group
    local text = crd(group, "gizmos", "Widget") .. "---\n" .. cr(group, "Widget", "w3", 3)
    local ok, err = pcall(c.apply_manifest, c, text, { crd_timeout = 3 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Timeout"), tostring(err))
    local msg = tostring(err)
    assert.truthy(msg:find("CustomResourceDefinition gizmos." .. group .. " is not Established after 3s", 1, true), msg)
    assert.truthy(msg:find("NamesAccepted=False", 1, true), msg)
    local gone = pcall(c.get, c, "widgets." .. group, "w3")
    assert.is_false(gone)
  end)

  it("checks crd_timeout", function()
    assert.has_error(function() c:apply_manifest("", { crd_timeout = 0 }) end,
      "k8s.apply_manifest: crd_timeout must be a positive number of seconds")
  end)
end)
