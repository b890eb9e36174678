--[[
edge-cloud/kubernetes - Namespaces, ConfigMaps, Services and Deployments on
an edge Kubernetes cluster, through the Kubernetes REST API with a bearer
token.

Objects are created with POST and updated with PUT of the whole object
carrying the resourceVersion just read (a 409 Conflict, someone else
writing in between, means read again and retry).  A Deployment is applied
only once its rollout is complete: observedGeneration caught up with the
spec, every replica updated and available, and the Available condition
True (what `kubectl rollout status` waits for), within `timeout_s`.

What is compared, so that `plan` after `apply` is empty while the server
adds its defaults: a ConfigMap's data in full; of a spec, the fields the
plan sets (the server's defaults such as clusterIP or imagePullPolicy are
not compared); of labels and annotations, the keys the plan sets.  Labels
and annotations the plan does not set are kept on update.

Each object carries the annotation mecorch.io/intent=<ctx.intent>, so a
create that crashed before its result was recorded is found again by
read(nil) and never made twice.

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
See README.md in this folder.
]]

local INTENT_ANNOTATION = "mecorch.io/intent"

local KINDS = {
  namespace = { resource = "namespaces", kind = "Namespace", api = "/api/v1", version = "v1",
                namespaced = false },
  configmap = { resource = "configmaps", kind = "ConfigMap", api = "/api/v1", version = "v1",
                namespaced = true },
  service = { resource = "services", kind = "Service", api = "/api/v1", version = "v1",
              namespaced = true },
  deployment = { resource = "deployments", kind = "Deployment", api = "/apis/apps/v1",
                 version = "apps/v1", namespaced = true },
}

-- ---- helpers ---------------------------------------------------------------

local function trim_slashes(s)
  return (string.gsub(s, "/+$", ""))
end

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

-- v when it is a table, else nil (JSON null arrives as ctx.json.null).
local function tbl(v)
  if type(v) == "table" then
    return v
  end
  return nil
end

local function meta_of(obj)
  return tbl(obj.metadata) or {}
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

local function copy_map(t)
  local out = {}
  for k, v in pairs(t or {}) do
    out[k] = v
  end
  return out
end

local function is_list(t)
  if type(t) ~= "table" then
    return false
  end
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n > 0 and n == #t
end

-- The part of `actual` that `shape` describes: for maps, the keys of shape;
-- for lists, element by element (the length is actual's).  This is what
-- makes server-side defaults invisible to the comparison while a changed
-- or removed field still shows.
local function project(actual, shape)
  if type(shape) ~= "table" or type(actual) ~= "table" then
    return actual
  end
  if is_list(shape) or is_list(actual) then
    local out = {}
    for i, v in ipairs(actual) do
      out[i] = project(v, shape[i])
    end
    return out
  end
  local out = {}
  for k, v in pairs(shape) do
    local a = actual[k]
    if a ~= nil and type(a) ~= "userdata" then
      out[k] = project(a, v)
    end
  end
  return out
end

-- Keep of m (labels or annotations) the keys present in want.
local function only_keys(m, want)
  local out = {}
  for k in pairs(want or {}) do
    if tbl(m) and type(m[k]) == "string" then
      out[k] = m[k]
    end
  end
  return out
end

local function bearer(props)
  if type(props.token) == "string" and props.token ~= "" then
    return { type = "bearer", token = props.token }
  end
  return nil
end

-- The collection path of a kind (in props' namespace), or an object's path.
local function kpath(k, props, name)
  local p = k.api
  if k.namespaced then
    p = p .. "/namespaces/" .. urlencode(props.namespace)
  end
  p = p .. "/" .. k.resource
  if name then
    p = p .. "/" .. urlencode(name)
  end
  return p
end

local function status_message(resp)
  if tbl(resp.json) and type(resp.json.message) == "string" then
    return resp.json.message
  end
  return tostring(resp.body or "")
end

-- One API call.  expect: the statuses that are not errors; 401 and 403 are
-- turned into errors that say what to do about them.
local function call(ctx, props, method, path, expect, extra)
  local req = {
    method = method,
    url = trim_slashes(props.endpoint) .. path,
    auth = bearer(props),
    expect = { 401, 403 },
  }
  for _, s in ipairs(expect) do
    req.expect[#req.expect + 1] = s
  end
  for k, v in pairs(extra or {}) do
    req[k] = v
  end
  local resp = ctx.http.request(req)
  if resp.status == 401 then
    if type(props.token) == "table" then
      error(string.format("the Kubernetes API refused %s %s (401): this resource's token is "
        .. "known only as a hash in state; keep the `token` input set when destroying", method,
        path), 0)
    end
    error(string.format("the Kubernetes API refused %s %s (401 Unauthorized): check the `token` "
      .. "input", method, path), 0)
  end
  if resp.status == 403 then
    error(string.format("the Kubernetes API forbids %s %s (403): %s", method, path,
      status_message(resp)), 0)
  end
  return resp
end

local function get_object(ctx, k, props, name)
  local resp = call(ctx, props, "GET", kpath(k, props, name), { 200, 404 })
  if resp.status == 404 then
    return nil
  end
  if not tbl(resp.json) or not tbl(resp.json.metadata) then
    error("the Kubernetes API answered GET " .. kpath(k, props, name) .. " without an object", 0)
  end
  return resp.json
end

-- ---- rollouts and namespace termination -----------------------------------

local function condition(obj, ctype)
  for _, c in ipairs(tbl(tbl(obj.status) and obj.status.conditions) or {}) do
    if tbl(c) and c.type == ctype then
      return c
    end
  end
  return nil
end

-- nil when the rollout of obj's current spec is complete, else what is
-- missing.  Raises when the Deployment reports it can no longer progress.
local function rollout_pending(obj)
  local m, spec, st = meta_of(obj), tbl(obj.spec) or {}, tbl(obj.status) or {}
  local want = tonumber(spec.replicas) or 1
  local progressing = condition(obj, "Progressing")
  if progressing and progressing.status == "False" and
      progressing.reason == "ProgressDeadlineExceeded" then
    error(string.format("deployment %s/%s failed to roll out: %s", m.namespace, m.name,
      tostring(progressing.message)), 0)
  end
  if (tonumber(st.observedGeneration) or 0) < (tonumber(m.generation) or 0) then
    return "the controller has not observed generation " .. tostring(m.generation) .. " yet"
  end
  local updated = tonumber(st.updatedReplicas) or 0
  local available = tonumber(st.availableReplicas) or 0
  local total = tonumber(st.replicas) or 0
  if updated < want then
    return string.format("%d of %d replicas updated", updated, want)
  end
  if total > updated then
    return string.format("%d old replicas pending termination", total - updated)
  end
  if available < want then
    return string.format("%d of %d updated replicas available", available, want)
  end
  local available_c = condition(obj, "Available")
  if not available_c or available_c.status ~= "True" then
    return "the Available condition is not True"
  end
  return nil
end

local function wait_rollout(ctx, k, props)
  local waited, step = 0, 200
  local limit = (tonumber(props.timeout_s) or 300) * 1000
  while true do
    local obj = get_object(ctx, k, props, props.name)
    if not obj then
      error(string.format("deployment %s/%s disappeared during its rollout", props.namespace,
        props.name), 0)
    end
    local pending = rollout_pending(obj)
    if not pending then
      return obj
    end
    if waited >= limit then
      error(string.format("deployment %s/%s did not roll out within %s s: %s", props.namespace,
        props.name, tostring(props.timeout_s), pending), 0)
    end
    ctx.sleep(step)
    waited = waited + step
    step = math.min(step * 2, 2000)
  end
end

-- Wait until namespace name is gone (404), for at most limit_s.
local function wait_namespace_gone(ctx, props, name, limit_s)
  local waited, step = 0, 100
  while get_object(ctx, KINDS.namespace, props, name) do
    if waited >= limit_s * 1000 then
      error(string.format("namespace %s still terminating after %d s", name, limit_s), 0)
    end
    ctx.sleep(step)
    waited = waited + step
    step = math.min(step * 2, 2000)
  end
end

local function terminating(obj)
  local m = meta_of(obj)
  return m.deletionTimestamp ~= nil and type(m.deletionTimestamp) ~= "userdata"
end

-- ---- objects: body, props, outputs -----------------------------------------

-- The object to send for props.  current: the object on the server (on an
-- update), whose resourceVersion is sent and whose labels and annotations
-- the plan does not manage are kept.
local function body_of(ctx, k, props, current, old_props)
  local labels, annotations = copy_map(props.labels), copy_map(props.annotations)
  if current then
    local cm = meta_of(current)
    local managed_l = (old_props and old_props.labels) or {}
    local managed_a = (old_props and old_props.annotations) or {}
    for key, v in pairs(tbl(cm.labels) or {}) do
      if labels[key] == nil and managed_l[key] == nil then
        labels[key] = v
      end
    end
    for key, v in pairs(tbl(cm.annotations) or {}) do
      if annotations[key] == nil and managed_a[key] == nil then
        annotations[key] = v
      end
    end
  elseif ctx.intent then
    annotations[INTENT_ANNOTATION] = ctx.intent
  end
  local meta = { name = props.name, labels = labels, annotations = annotations }
  if k.namespaced then
    meta.namespace = props.namespace
  end
  if current then
    meta.resourceVersion = meta_of(current).resourceVersion
  end
  local body = { apiVersion = k.version, kind = k.kind, metadata = meta }
  if k.kind == "ConfigMap" then
    body.data = props.data
  elseif k.kind ~= "Namespace" then
    body.spec = props.spec
  end
  if k.kind == "Service" and current then
    -- clusterIP is immutable: send the one the server allocated.
    local cur = tbl(current.spec) or {}
    local spec = copy_map(props.spec)
    if spec.clusterIP == nil and cur.clusterIP ~= nil then
      spec.clusterIP = cur.clusterIP
      spec.clusterIPs = cur.clusterIPs
    end
    body.spec = spec
  end
  return body
end

-- The props obj corresponds to, in the shape declare() builds.
local function props_of(k, props, obj)
  local m = meta_of(obj)
  local out = {
    endpoint = props.endpoint,
    token = props.token,
    name = m.name,
    labels = only_keys(m.labels, props.labels),
    annotations = only_keys(m.annotations, props.annotations),
  }
  if k.namespaced then
    out.namespace = m.namespace
  end
  if k.kind == "ConfigMap" then
    out.data = tbl(obj.data) or {}
  elseif k.kind ~= "Namespace" then
    out.spec = project(tbl(obj.spec) or {}, props.spec)
  end
  if k.kind == "Deployment" then
    local sel = tbl(tbl(obj.spec) and obj.spec.selector) or {}
    out.selector = tbl(sel.matchLabels) or {}
    if props.rolled_out ~= nil then
      -- An unfinished (or failed) rollout plans as an update that waits for it.
      local ok, pending = pcall(rollout_pending, obj)
      out.rolled_out = ok and pending == nil
    end
    out.wait = props.wait           -- how to apply, not a property of the object
    out.timeout_s = props.timeout_s
  end
  return out
end

local function outputs_of(k, obj)
  local m = meta_of(obj)
  local out = { name = m.name, uid = m.uid }
  if k.namespaced then
    out.namespace = m.namespace
  end
  if k.kind == "Namespace" then
    out.phase = tbl(obj.status) and obj.status.phase or nil
  elseif k.kind == "Service" then
    local spec = tbl(obj.spec) or {}
    out.cluster_ip = type(spec.clusterIP) == "string" and spec.clusterIP or nil
    out.dns_name = m.name .. "." .. m.namespace .. ".svc.cluster.local"
  elseif k.kind == "Deployment" then
    local st = tbl(obj.status) or {}
    out.generation = m.generation
    out.available_replicas = tonumber(st.availableReplicas) or 0
    out.revision = tbl(m.annotations) and m.annotations["deployment.kubernetes.io/revision"] or nil
  end
  return out
end

-- ---- the resource types -----------------------------------------------------

local function resource_type(type_name)
  local k = KINDS[type_name]
  local rt = {}

  ---@param ctx table
  ---@param props table {endpoint, token?, namespace?, name, labels, annotations, data|spec, ...}
  ---@return string id, table outputs
  rt.create = function(ctx, props)
    local obj
    for _ = 1, 3 do
      local resp = call(ctx, props, "POST", kpath(k, props), { 201, 200, 409 },
        { json = body_of(ctx, k, props, nil), idempotent = true })
      if resp.status ~= 409 then
        obj = resp.json
        break
      end
      local cur = get_object(ctx, k, props, props.name)
      if cur and k.kind == "Namespace" and terminating(cur) then
        -- The name is free again once the old namespace is purged.
        wait_namespace_gone(ctx, props, props.name, 120)
      elseif cur and ctx.intent and tbl(meta_of(cur).annotations) and
          meta_of(cur).annotations[INTENT_ANNOTATION] == ctx.intent then
        obj = cur -- made by this very create (a retried POST, or a run that crashed)
        break
      elseif cur then
        error(string.format("%s %s%s already exists and was not created by %s; delete it or "
          .. "import it", k.kind, k.namespaced and (props.namespace .. "/") or "", props.name,
          tostring(ctx.address)), 0)
      end
    end
    if not tbl(obj) or not tbl(obj.metadata) or type(obj.metadata.uid) ~= "string" then
      error(string.format("creating %s %s failed: the API did not answer the object", k.kind,
        props.name), 0)
    end
    if k.kind == "Deployment" and props.wait then
      obj = wait_rollout(ctx, k, props)
    end
    return obj.metadata.uid, outputs_of(k, obj)
  end

  ---@param ctx table
  ---@param id string|nil nil: find what a crashed create() made, by ctx.intent
  ---@param props table
  ---@return table|nil props_now, table|nil outputs, string|nil id
  rt.read = function(ctx, id, props)
    local obj = get_object(ctx, k, props, props.name)
    if not obj then
      return nil
    end
    local m = meta_of(obj)
    if id == nil or id == "" then
      local ann = tbl(m.annotations) or {}
      if not ctx.intent or ann[INTENT_ANNOTATION] ~= ctx.intent then
        return nil
      end
    elseif m.uid ~= id then
      return nil -- another object of the same name: ours is gone
    end
    if k.kind == "Namespace" and terminating(obj) then
      return nil -- on its way out
    end
    return props_of(k, props, obj), outputs_of(k, obj), m.uid
  end

  ---@param ctx table
  ---@param id string
  ---@param old_props table
  ---@param new_props table
  ---@return table outputs
  rt.update = function(ctx, id, old_props, new_props)
    local obj
    for attempt = 1, 5 do
      local cur = get_object(ctx, k, new_props, new_props.name)
      if not cur or meta_of(cur).uid ~= id then
        error(string.format("%s %s disappeared during the update", k.kind, new_props.name), 0)
      end
      local resp = call(ctx, new_props, "PUT", kpath(k, new_props, new_props.name), { 200, 409 },
        { json = body_of(ctx, k, new_props, cur, old_props) })
      if resp.status == 200 then
        obj = resp.json
        break
      end
      if attempt == 5 then
        error(string.format("updating %s %s: %s", k.kind, new_props.name, status_message(resp)), 0)
      end
      ctx.sleep(100 * attempt) -- written by someone else in between: read again
    end
    if k.kind == "Deployment" and new_props.wait then
      obj = wait_rollout(ctx, k, new_props)
    end
    return outputs_of(k, obj)
  end

  ---@param ctx table
  ---@param id string
  ---@param props table
  rt.delete = function(ctx, id, props)
    local path = kpath(k, props, props.name)
    -- The uid precondition: never delete a newer object of the same name.
    local resp = call(ctx, props, "DELETE", path, { 200, 202, 404, 409 },
      { json = { kind = "DeleteOptions", apiVersion = "v1", preconditions = { uid = id } } })
    if resp.status == 409 and k.kind ~= "Namespace" then
      local cur = get_object(ctx, k, props, props.name)
      if cur and meta_of(cur).uid == id then
        error(string.format("deleting %s %s: %s", k.kind, props.name, status_message(resp)), 0)
      end
      return -- the name now belongs to another object: ours is gone
    end
    if k.kind == "Namespace" then
      -- 409: already terminating.  Done once the namespace is purged.
      local cur = get_object(ctx, k, props, props.name)
      if cur and meta_of(cur).uid == id then
        wait_namespace_gone(ctx, props, props.name, 120)
      end
    end
  end

  if k.kind == "Namespace" then
    rt.replace_on = { "endpoint", "name" }
  elseif k.kind == "Deployment" then
    -- spec.selector is immutable: a new selector needs a new Deployment.
    rt.replace_on = { "endpoint", "namespace", "name", "selector" }
  else
    rt.replace_on = { "endpoint", "namespace", "name" }
  end
  rt.create_before_destroy = false
  rt.sensitive = { "token" }
  return rt
end

-- ---- declaration -----------------------------------------------------------

local function check_map(v, what)
  if v == nil then
    return {}
  end
  if type(v) ~= "table" or v[1] ~= nil then
    error(what .. ": want a map", 0)
  end
  return v
end

local function string_map(m, what)
  local out = {}
  for key, v in pairs(check_map(m, what)) do
    if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
      error(string.format("%s.%s: want a string", what, tostring(key)), 0)
    end
    out[key] = tostring(v)
  end
  return out
end

-- Lowercase letters, digits and `extra`, starting and ending alphanumeric.
local function dns_name(s, max, extra)
  return type(s) == "string" and #s >= 1 and #s <= max and
    string.find(s, "^[a-z0-9][a-z0-9" .. extra .. "]*$") ~= nil and
    string.find(s, "[a-z0-9]$") ~= nil
end

local function dns_label(s)
  return dns_name(s, 63, "%-")
end

-- "ns/name" or "name" (namespace from the entry or the default).
local function split_key(key, entry, default_ns, what)
  local ns, name = string.match(key, "^([^/]+)/([^/]+)$")
  if not ns then
    ns, name = entry.namespace or default_ns, key
  elseif entry.namespace and entry.namespace ~= ns then
    error(what .. ": the key names namespace " .. ns .. " but namespace = " .. entry.namespace, 0)
  end
  if not dns_label(ns) then
    error(what .. ": namespace " .. tostring(ns) .. " is not a DNS-1123 label", 0)
  end
  if not dns_name(name, 253, "%-%.") then
    error(what .. ": " .. tostring(name) .. " is not a valid object name (lowercase DNS-1123)", 0)
  end
  return ns, name
end

-- A Deployment spec from the shorthand {image, replicas?, port?, env?, args?}.
local function deployment_spec(name, e, what)
  if type(e.image) ~= "string" or e.image == "" then
    error(what .. ": give `spec` (a Deployment spec) or `image`", 0)
  end
  local selector = { app = name }
  for key, v in pairs(string_map(e.selector, what .. ".selector")) do
    selector[key] = v
  end
  local cname = string.gsub(string.gsub(name, "%.", "-"), "^(.-)%-*$", "%1")
  local container = { name = string.sub(cname, 1, 63), image = e.image }
  if e.port then
    container.ports = { { containerPort = math.floor(e.port), name = "http" } }
  end
  if e.args then
    container.args = e.args
  end
  if e.env then
    local env = {}
    for _, key in ipairs(sorted_keys(e.env)) do
      env[#env + 1] = { name = key, value = tostring(e.env[key]) }
    end
    if #env > 0 then
      container.env = env
    end
  end
  return {
    replicas = e.replicas or 1,
    selector = { matchLabels = selector },
    template = {
      metadata = { labels = copy_map(selector) },
      spec = { containers = { container } },
    },
  }
end

return {
  name = "edge-cloud/kubernetes",
  version = "1.0.0",

  inputs = {
    endpoint = { type = "string", description = "API server URL, e.g. https://10.0.0.1:6443" },
    token = { type = "string?", sensitive = true, description = "bearer token" },
    namespace = { type = "string", default = "default",
                  description = "namespace of objects whose key and entry name none" },
    labels = { type = "map", default = {}, description = "labels put on every object" },
    namespaces = { type = "map", default = {}, description = "name -> {labels?, annotations?}" },
    configmaps = { type = "map", default = {},
                   description = "[ns/]name -> {namespace?, data, labels?, annotations?}" },
    services = { type = "map", default = {},
                 description = "[ns/]name -> {namespace?, spec, labels?, annotations?}" },
    deployments = { type = "map", default = {},
                    description = "[ns/]name -> {namespace?, spec | image+replicas?+port?+env?+args?, "
                      .. "labels?, annotations?, wait? (true), timeout_s? (300)}" },
  },

  resources = {
    namespace = resource_type("namespace"),
    configmap = resource_type("configmap"),
    service = resource_type("service"),
    deployment = resource_type("deployment"),
  },

  ---@param inputs table
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local endpoint = type(inputs.endpoint) == "string" and trim_slashes(inputs.endpoint)
      or inputs.endpoint
    local common = string_map(inputs.labels, "labels")

    local function base(e, what)
      local labels = copy_map(common)
      for key, v in pairs(string_map(e.labels, what .. ".labels")) do
        labels[key] = v
      end
      return {
        endpoint = endpoint,
        token = inputs.token,
        labels = labels,
        annotations = string_map(e.annotations, what .. ".annotations"),
      }
    end

    local ns_names = {}
    local namespaces = {}
    for _, name in ipairs(sorted_keys(inputs.namespaces)) do
      local e = inputs.namespaces[name]
      local what = "namespaces." .. name
      if type(e) ~= "table" then
        error(what .. ": want a map {labels?, annotations?}", 0)
      end
      if not dns_label(name) then
        error(what .. ": namespace names are DNS-1123 labels", 0)
      end
      local props = base(e, what)
      props.name = name
      local h = m.resource("namespace", name, props)
      -- Objects in this namespace reference it: created after, deleted before.
      ns_names[name] = h.name
      namespaces[name] = h.id
    end

    local function each(kind_name, input, build)
      local uids = {}
      for _, key in ipairs(sorted_keys(input)) do
        local e = input[key]
        local what = kind_name .. "s." .. key
        if type(e) ~= "table" then
          error(what .. ": want a map", 0)
        end
        local ns, name = split_key(key, e, inputs.namespace or "default", what)
        local props = base(e, what)
        props.namespace = ns_names[ns] or ns
        props.name = name
        build(props, e, what, name)
        local h = m.resource(kind_name, ns .. "/" .. name, props)
        uids[ns .. "/" .. name] = h.id
      end
      return uids
    end

    local configmaps = each("configmap", inputs.configmaps, function(props, e, what)
      props.data = string_map(e.data, what .. ".data")
    end)
    local services = each("service", inputs.services, function(props, e, what)
      if type(e.spec) ~= "table" then
        error(what .. ".spec: want a Service spec", 0)
      end
      props.spec = e.spec
    end)
    local deployments = each("deployment", inputs.deployments, function(props, e, what, name)
      if e.spec ~= nil and type(e.spec) ~= "table" then
        error(what .. ".spec: want a Deployment spec", 0)
      end
      props.spec = e.spec or deployment_spec(name, e, what)
      local sel = type(props.spec.selector) == "table" and props.spec.selector.matchLabels
      if type(sel) ~= "table" then
        error(what .. ".spec.selector.matchLabels: want a map of labels", 0)
      end
      props.selector = sel
      props.wait = e.wait ~= false
      if props.wait then
        props.rolled_out = true
      end
      props.timeout_s = e.timeout_s or 300
    end)

    m.output("namespaces", namespaces)
    m.output("configmaps", configmaps)
    m.output("services", services)
    m.output("deployments", deployments)
  end,
}
