-- needs: k8s
-- ApplySets (KEP-3659) made and pruned by apply_manifest, and shared with kubectl's
-- `apply --server-side --applyset --prune` both ways. On the real control plane when one
-- runs, else on tests/k8s/apiserver.py (which serves Secrets, labels and server-side apply).
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local applyset = require("myrmex.k8s.applyset")
local errors = require("myrmex.errors")

local function cms(...)
  local docs = {}
  for _, name in ipairs({ ... }) do
    docs[#docs + 1] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " .. name .. "\ndata:\n  k: v\n"
  end
  return table.concat(docs, "---\n")
end

local function names(list)
  local out = {}
  for _, o in ipairs(list) do out[#out + 1] = o.metadata.name end
  table.sort(out)
  return out
end

describe("k8s applysets", function()
  local t, c
  setup(function()
    t = T.open("applyset")
    c = k8s.connect({ kubeconfig = t.kubeconfig })
  end)
  teardown(function() t.stop() end)

  local function members(set_name)
    local id = applyset.id(set_name, t.namespace, "Secret", "")
    return names((c:list("configmaps", { label_selector = applyset.PART_OF_LABEL .. "=" .. id })))
  end

  local function write(name, text)
    local p = t.dir .. "/" .. name
    local f = assert(io.open(p, "wb"))
    f:write(text)
    f:close()
    return p
  end

  it("records the set on a Secret parent with the KEP's labels and annotations", function()
    local objs, pruned = c:apply_manifest(cms("s1-a", "s1-b"), { applyset = "s1", prune = true })
    assert.are.same({ "s1-a", "s1-b" }, names(objs))
    assert.are.same({}, pruned)
    local parent = c:get("secrets", "s1")
    local id = applyset.id("s1", t.namespace, "Secret", "")
    assert.truthy(id:match("^applyset%-[%w_%-]+%-v1$"), id)
    assert.are.equal(id, parent.metadata.labels["applyset.kubernetes.io/id"])
    local ann = parent.metadata.annotations
    assert.are.equal("myrmex/v1", ann["applyset.kubernetes.io/tooling"])
    assert.are.equal("ConfigMap", ann["applyset.kubernetes.io/contains-group-kinds"])
    assert.are.equal("", ann["applyset.kubernetes.io/additional-namespaces"])
    assert.are.same({ "s1-a", "s1-b" }, members("s1"))
  end)

  it("prunes the members the manifest no longer has, and nothing outside the set", function()
    c:apply({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "s1-outsider" }, data = { k = "v" } })
    local objs, pruned = c:apply_manifest(cms("s1-b", "s1-c"), { applyset = "s1", prune = true })
    assert.are.same({ "s1-b", "s1-c" }, names(objs))
    assert.are.same({ "ConfigMap " .. t.namespace .. "/s1-a" }, pruned)
    assert.are.same({ "s1-b", "s1-c" }, members("s1"))
    assert.are.equal("s1-outsider", c:get("configmaps", "s1-outsider").metadata.name)
    local ok, err = pcall(c.get, c, "configmaps", "s1-a")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
  end)

  it("without prune records the members but deletes nothing", function()
    local _, pruned = c:apply_manifest(cms("s1-d"), { applyset = "s1" })
    assert.is_nil(pruned)
    assert.are.same({ "s1-b", "s1-c", "s1-d" }, members("s1"))
  end)

  it("kubectl continues and prunes a set myrmex made (tooling kubectl)", function()
    c:apply_manifest(cms("s2-a", "s2-b"), { applyset = "s2", prune = true, tooling = "kubectl/v1.32.4",
      field_manager = "kubectl" })
    local r = t.kubectl("apply", "--server-side", "--applyset=s2", "--prune", "-f", write("s2.yaml", cms("s2-b", "s2-c")))
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("configmap/s2-a pruned", 1, true), r.stdout)
    assert.are.same({ "s2-b", "s2-c" }, members("s2"))
  end)

  it("continues and prunes a set kubectl made", function()
    local r = t.kubectl("apply", "--server-side", "--applyset=s3", "--prune", "-f", write("s3.yaml", cms("s3-a", "s3-b")))
    assert.are.equal(0, r.code, r.stderr)
    local _, pruned = c:apply_manifest(cms("s3-b"), { applyset = "s3", prune = true,
      tooling = c:get("secrets", "s3").metadata.annotations["applyset.kubernetes.io/tooling"], field_manager = "kubectl" })
    assert.are.same({ "ConfigMap " .. t.namespace .. "/s3-a" }, pruned)
    -- and kubectl still reads it: its own prune of s3-b now.
    r = t.kubectl("apply", "--server-side", "--applyset=s3", "--prune", "-f", write("s3b.yaml", cms("s3-c")))
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("configmap/s3-b pruned", 1, true), r.stdout)
    assert.are.same({ "s3-c" }, members("s3"))
  end)

  it("refuses a set of other tooling, and a parent that is not the set's", function()
    local ok, err = pcall(c.apply_manifest, c, cms("s3-c"), { applyset = "s3", prune = true })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
    assert.truthy(tostring(err):find("managed by tooling kubectl/", 1, true), tostring(err))
    c:apply({ apiVersion = "v1", kind = "Secret", metadata = { name = "plain" } })
    ok, err = pcall(c.apply_manifest, c, cms("x"), { applyset = "plain", prune = true })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("is not that set's parent", 1, true), tostring(err))
  end)

  it("tracks members in other namespaces and prunes them there", function()
    local other = t.namespace .. "-b"
    t.namespace_create(other)
    local function doc(name, ns)
      return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " .. name .. "\n  namespace: " .. ns .. "\n"
    end
    c:apply_manifest(doc("s4-a", t.namespace) .. "---\n" .. doc("s4-b", other), { applyset = "s4", prune = true })
    local ann = c:get("secrets", "s4").metadata.annotations
    assert.are.equal(other, ann["applyset.kubernetes.io/additional-namespaces"])
    local _, pruned = c:apply_manifest(doc("s4-a", t.namespace), { applyset = "s4", prune = true })
    assert.are.same({ "ConfigMap " .. other .. "/s4-b" }, pruned)
    assert.are.equal("", c:get("secrets", "s4").metadata.annotations["applyset.kubernetes.io/additional-namespaces"])
  end)

  it("checks its options", function()
    assert.has_error(function() c:apply_manifest(cms("x"), { prune = true }) end,
      "k8s.apply_manifest: prune needs an applyset (the set says what may be deleted)")
    assert.has_error(function() c:apply_manifest(cms("x"), { applyset = "" }) end)
  end)
end)
