-- Deploy an image to Kubernetes: render (or take) manifests, server-side apply, wait for the
-- rollout; on failure roll back to the revision that ran before (rollout_undo), unless this
-- deploy left the pod template as it was. Without a configured cluster the apply is planned.
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local rt = require("myrmex.core.runtime")
local common = require("_common")

local function cluster_configured()
  local env = rt.environ()
  if (env.KUBECONFIG or "") ~= "" or (env.KUBERNETES_SERVICE_HOST or "") ~= "" then return true end
  return rt.stat((env.HOME or "") .. "/.kube/config") ~= nil
end

--- The Deployment and Service for one image, as YAML documents.
local function render(p)
  local labels = { ["app.kubernetes.io/name"] = p.name, ["app.kubernetes.io/managed-by"] = "myrmex" }
  local container = { name = p.name, image = p.image,
    resources = { requests = { cpu = p.cpu, memory = p.memory }, limits = { memory = p.memory } } }
  if p.port > 0 then container.ports = { { containerPort = p.port, name = "http" } } end
  local docs = {
    { apiVersion = "apps/v1", kind = "Deployment",
      metadata = { name = p.name, namespace = p.namespace, labels = labels },
      spec = { replicas = p.replicas, selector = { matchLabels = { ["app.kubernetes.io/name"] = p.name } },
        template = { metadata = { labels = labels }, spec = { containers = { container } } } } },
  }
  if p.port > 0 then
    docs[2] = { apiVersion = "v1", kind = "Service",
      metadata = { name = p.name, namespace = p.namespace, labels = labels },
      spec = { selector = { ["app.kubernetes.io/name"] = p.name },
        ports = { { port = p.port, targetPort = "http", name = "http" } } } }
  end
  local parts = {}
  for i, d in ipairs(docs) do parts[i] = yaml.dump(d) end
  return table.concat(parts, "---\n"), docs
end

return {
  description = "Deploy an image to Kubernetes (server-side apply, rollout wait, rollback on failure)",
  params = {
    image = { type = "string", required = true, doc = "image reference to deploy" },
    name = { type = "string", default = "app", doc = "Deployment and Service name" },
    namespace = { type = "string", doc = "default: the namespace of the kubeconfig context, as kubectl" },
    replicas = { type = "integer", default = 2 },
    port = { type = "integer", default = 0, doc = "container port (0: no Service)" },
    cpu = { type = "string", default = "100m" },
    memory = { type = "string", default = "64Mi" },
    manifests = { type = "string", doc = "apply this YAML file instead of rendering one" },
    out = { type = "string", doc = "also write the rendered manifests here" },
    timeout = { type = "number", default = 300, doc = "seconds to wait for the rollout" },
  },
  run = function(p, ctx)
    local text = ctx.step("render", function()
      local t = p.manifests and assert(common.read(p.manifests), "cannot read " .. p.manifests) or render(p)
      if p.out then common.write(p.out, t) end
      return t
    end)
    local k8s = common.optional("myrmex.k8s")
    if not (k8s and cluster_configured()) or plan.active() then
      if not plan.active() then
        log.warn("no Kubernetes cluster configured: the apply is planned, not made", { name = p.name })
      end
      for _, doc in ipairs(yaml.load_all(text)) do
        plan.record({ engine = "k8s", op = "apply", target = doc.kind .. "/" .. doc.metadata.name,
          args = { namespace = doc.metadata.namespace, image = p.image } })
      end
      return { planned = true, manifests = text }
    end
    local c = k8s.connect({ namespace = p.namespace })
    -- What ran before (nil on a first deploy): its revision is the one to roll back to.
    local had, previous = pcall(c.get, c, "deployments", p.name, { namespace = p.namespace })
    previous = had and previous or nil
    ctx.step("apply", function() return c:apply_manifest(text, { field_manager = "myrmex" }) end)
    local ok, err = pcall(ctx.step, "rollout", function()
      return c:rollout_wait("Deployment", p.name, { namespace = p.namespace, timeout = p.timeout })
    end)
    if not ok then
      local now = c:get("deployments", p.name, { namespace = p.namespace })
      if previous and json.encode(now.spec.template, { sort_keys = true })
          == json.encode(previous.spec.template, { sort_keys = true }) then
        -- This deploy did not change the pods: undoing would go back past what was running.
        log.error("rollout failed; the pod template is unchanged, nothing to roll back", { name = p.name })
        error(err, 0)
      end
      log.error("rollout failed, rolling back", { name = p.name, to = previous and "previous revision" or "nothing" })
      ctx.step("rollback", function()
        if not previous then
          return c:delete("deployments", p.name, { namespace = p.namespace })
        end
        local rev = tonumber((previous.metadata.annotations or {})["deployment.kubernetes.io/revision"])
        return c:rollout_undo(p.name, { namespace = p.namespace, to_revision = rev and math.tointeger(rev) })
      end)
      error(err, 0)
    end
    return { applied = true, manifests = text }
  end,
}
