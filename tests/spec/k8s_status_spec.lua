-- needs: k8s
-- Errors keep the real API server's Status: 403 Forbidden with its reason (RBAC), 422 Invalid
-- with its causes, and admission denials naming the webhook or the policy.
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")
local digest = require("myrmex.digest")
local http = require("myrmex.http")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

local function slurp(p) return assert(sh.read(p)) end

-- Create `obj` until admission denies it (policies and webhooks take effect a moment after
-- they are created); the error of the denial.
local function denied(c, obj)
  for _ = 1, 100 do
    local ok, err = pcall(c.create, c, obj)
    if not ok then return err end
    c:delete(obj.kind, obj.metadata.name, { wait = true })
    http.sleep(0.2)
  end
  error("admission never denied " .. obj.metadata.name)
end

describe("k8s errors from the real API server", function()
  local t, c
  local cleanup = {}
  setup(function()
    t = T.open("status", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
  end)
  teardown(function()
    for _, f in ipairs(cleanup) do pcall(f) end
    t.stop()
  end)

  it("403 is Forbidden with the server's reason and message", function()
    c:apply({ apiVersion = "v1", kind = "ServiceAccount", metadata = { name = "reader" } })
    local tok = c:request("POST", "/api/v1/namespaces/" .. t.namespace .. "/serviceaccounts/reader/token",
      { body = { apiVersion = "authentication.k8s.io/v1", kind = "TokenRequest", spec = { expirationSeconds = 600 } } })
    local cfg = yaml.load(slurp(t.kubeconfig))
    for _, u in ipairs(cfg.users) do u.user = { token = tok.status.token } end
    local path = t.dir .. "/reader.kubeconfig"
    local f = assert(io.open(path, "wb"))
    f:write(json.encode(cfg))
    f:close()
    local r = k8s.connect({ kubeconfig = path })
    local ok, err = pcall(r.request, r, "GET", "/api/v1/namespaces/" .. t.namespace .. "/secrets")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Forbidden"), tostring(err))
    assert.are.equal(403, err.status)
    assert.are.equal("Forbidden", err.details.reason)
    assert.truthy(tostring(err):find('User "system:serviceaccount:' .. t.namespace
      .. ':reader" cannot list resource "secrets"', 1, true), tostring(err))
  end)

  it("422 is Invalid with the causes, field by field", function()
    local ok, err = pcall(c.create, c, { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "Bad_Name" } })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.are.equal(422, err.status)
    assert.are.equal("Invalid", err.details.reason)
    assert.are.equal("metadata.name", err.details.causes[1].field)
    assert.are.equal("FieldValueInvalid", err.details.causes[1].reason)
    assert.truthy(tostring(err):find('ConfigMap "Bad_Name" is invalid: metadata.name', 1, true), tostring(err))
  end)

  it("a ValidatingAdmissionPolicy's denial names the policy and its binding", function()
    local name = "no-bad-" .. t.namespace
    c:apply({ apiVersion = "admissionregistration.k8s.io/v1", kind = "ValidatingAdmissionPolicy",
      metadata = { name = name }, spec = { failurePolicy = "Fail",
        matchConstraints = { resourceRules = { { apiGroups = { "" }, apiVersions = { "v1" },
          operations = { "CREATE" }, resources = { "configmaps" } } } },
        validations = { { expression = "!has(object.metadata.labels) || !('bad' in object.metadata.labels)",
          message = "bad labels are not allowed" } } } })
    cleanup[#cleanup + 1] = function() c:delete("validatingadmissionpolicies", name) end
    c:apply({ apiVersion = "admissionregistration.k8s.io/v1", kind = "ValidatingAdmissionPolicyBinding",
      metadata = { name = name }, spec = { policyName = name, validationActions = { "Deny" },
        matchResources = { namespaceSelector = { matchLabels = { ["kubernetes.io/metadata.name"] = t.namespace } } } } })
    cleanup[#cleanup + 1] = function() c:delete("validatingadmissionpolicybindings", name) end
    local err = denied(c, { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "vap", labels = { bad = "1" } } })
    assert.is_true(errors.is(err), tostring(err))
    assert.are.equal(name, err.details.policy)
    assert.are.equal(name, err.details.binding)
    assert.truthy(tostring(err):find("denied request: bad labels are not allowed", 1, true), tostring(err))
  end)

  it("a webhook's denial names the webhook, with the webhook's code and message", function()
    assert(sh.run({ "bash", sh.src .. "/tests/support/tlsgen.sh", t.dir }).code == 0)
    local hook = server.start("exec /usr/bin/python3 " .. sh.q(sh.src .. "/tests/k8s/webhook.py") .. " "
      .. t.dir .. "/server.pem " .. t.dir .. "/server.key 'no configmaps here'", 20)
    cleanup[#cleanup + 1] = hook.stop
    local name = "deny." .. t.namespace .. ".myrmex.test"
    c:apply({ apiVersion = "admissionregistration.k8s.io/v1", kind = "ValidatingWebhookConfiguration",
      metadata = { name = name }, webhooks = { { name = name, admissionReviewVersions = { "v1" },
        sideEffects = "None", failurePolicy = "Fail", timeoutSeconds = 5,
        clientConfig = { url = "https://127.0.0.1:" .. hook.port .. "/validate",
          caBundle = digest.base64(slurp(t.dir .. "/ca.pem")) },
        namespaceSelector = { matchLabels = { ["kubernetes.io/metadata.name"] = t.namespace } },
        rules = { { apiGroups = { "" }, apiVersions = { "v1" }, operations = { "CREATE" },
          resources = { "configmaps" } } } } } })
    cleanup[#cleanup + 1] = function() c:delete("validatingwebhookconfigurations", name) end
    local err = denied(c, { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "hooked" } })
    assert.is_true(errors.is(err, "Forbidden"), tostring(err))
    assert.are.equal(name, err.details.webhook)
    assert.truthy(tostring(err):find('admission webhook "' .. name .. '" denied the request: no configmaps here', 1,
      true), tostring(err))
  end)
end)
