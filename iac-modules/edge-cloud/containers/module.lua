--[[
edge-cloud/containers - images and containers on an edge host, through the
Docker Engine API (Docker, or podman's Docker-compatible service), on a unix
socket or over TCP.

Two resource types:
  image      a root filesystem tarball imported as an image:
             POST /images/create?fromSrc=<URL>, the engine downloading the
             tarball from `source` (a module cannot read files), tagged `ref`.
  container  created with its image, command, environment, 127.0.0.1 port
             bindings, labels, health check and restart policy, then started.

Every object carries the label mecorch.intent=<ctx.intent>, so a create that
crashed before its id was recorded is found again (read with id == nil) and
never made twice.  A container stopped behind mecorch's back reads back as
running = false (an update starts it again); a removed one reads as gone (a
create makes it again).  Anything else about a container is fixed at
creation, so a change replaces it.

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
See README.md in this folder.
]]

local INTENT_LABEL = "mecorch.intent"
local SHA_LABEL = "mecorch.sha256"
local RESTART_POLICIES = { no = true, always = true, ["unless-stopped"] = true, ["on-failure"] = true }
local NS = 1000000000 -- Docker durations are nanoseconds

-- ---- helpers ---------------------------------------------------------------

local function trim_slashes(s)
  return (string.gsub(s, "/+$", ""))
end

-- Percent-encode everything but RFC 3986 unreserved characters.
local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

-- v when it is a table, else nil: JSON null arrives as ctx.json.null, a
-- value that is neither nil nor a table.
local function tbl(v)
  if type(v) == "table" then
    return v
  end
  return nil
end

-- An image's labels and tags, an empty table for none.
local function image_labels(img)
  return tbl(img.Labels) or (tbl(img.Config) and tbl(img.Config.Labels)) or {}
end

local function image_tags(img)
  return tbl(img.RepoTags) or {}
end

local function container_labels(c)
  return tbl(c.Config) and tbl(c.Config.Labels) or {}
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

-- The API base URL of props: {endpoint}/{api_version}.
local function api(props, path)
  return trim_slashes(props.endpoint) .. "/" .. props.api_version .. path
end

-- One Engine API call.  expect: the statuses that are not errors.
local function call(ctx, props, method, path, expect, extra)
  local req = {
    method = method,
    url = api(props, path),
    unix_socket = props.socket,
    expect = expect,
  }
  for k, v in pairs(extra or {}) do
    req[k] = v
  end
  return ctx.http.request(req)
end

-- The message of an Engine API error body ({"message": ...}), or the body.
local function api_message(resp)
  if type(resp.json) == "table" and type(resp.json.message) == "string" then
    return resp.json.message
  end
  return tostring(resp.body or "")
end

-- Does the image tag t name ref?  Engines qualify short names differently:
-- podman says localhost/name:tag, Docker keeps name:tag.
local function tag_matches(ref, t)
  return t == ref or t == "localhost/" .. ref or t == "docker.io/library/" .. ref
end

-- The user labels of an object: the keys recorded in `want` only, so the
-- engine's, the image's and mecorch's own labels never show as drift.
local function user_labels(labels, want)
  local out = {}
  for k in pairs(want or {}) do
    if labels and labels[k] ~= nil then
      out[k] = labels[k]
    end
  end
  return out
end

-- ---- images ----------------------------------------------------------------

-- A Dockerfile LABEL instruction for import `changes`.
local function label_change(k, v)
  local function q(s)
    return '"' .. string.gsub(s, '(["\\])', "\\%1") .. '"'
  end
  return "LABEL " .. q(k) .. "=" .. q(tostring(v))
end

local function image_outputs(props, img)
  return { id = img.Id, ref = props.ref, size = img.Size }
end

local function image_props(props, img)
  local labels = image_labels(img)
  local ref = ""
  for _, t in ipairs(image_tags(img)) do
    if tag_matches(props.ref, t) then
      ref = props.ref
      break
    end
  end
  if ref == "" and image_tags(img)[1] then
    ref = image_tags(img)[1] -- our tag moved to another image; this one has others
  end
  return {
    endpoint = props.endpoint,
    socket = props.socket,
    api_version = props.api_version,
    ref = ref,
    source = props.source,        -- where it came from is not observable
    sha256 = labels[SHA_LABEL],
    changes = props.changes,      -- folded into the image config; kept as given
    labels = user_labels(labels, props.labels),
  }
end

-- GET /images/{name}/json: the image, or nil when there is none.
local function inspect_image(ctx, props, name)
  local resp = call(ctx, props, "GET", "/images/" .. urlencode(name) .. "/json", { 200, 404 })
  if resp.status == 404 then
    return nil
  end
  if type(resp.json) ~= "table" or type(resp.json.Id) ~= "string" then
    error("the engine answered GET /images/" .. name .. "/json without an image Id", 0)
  end
  return resp.json
end

local image = {
  ---@param ctx table
  ---@param props table {endpoint, socket?, api_version, ref, source, sha256?, changes?, labels}
  ---@return string id, table outputs
  create = function(ctx, props)
    local q = { "fromSrc=" .. urlencode(props.source), "repo=" .. urlencode(props.ref) }
    local changes = {}
    for _, c in ipairs(props.changes or {}) do
      changes[#changes + 1] = c
    end
    for _, k in ipairs(sorted_keys(props.labels)) do
      changes[#changes + 1] = label_change(k, props.labels[k])
    end
    if ctx.intent then
      changes[#changes + 1] = label_change(INTENT_LABEL, ctx.intent)
    end
    if props.sha256 then
      changes[#changes + 1] = label_change(SHA_LABEL, props.sha256)
    end
    for _, c in ipairs(changes) do
      q[#q + 1] = "changes=" .. urlencode(c)
    end
    local resp = call(ctx, props, "POST", "/images/create?" .. table.concat(q, "&"),
      { 200, 201, 400, 404, 500 }, { timeout_ms = 300000 })
    -- The answer is a stream of JSON objects, one per line (Docker) or a
    -- single one (podman); an error may come inside a 200 stream.
    local streamed
    for line in string.gmatch(resp.body or "", "[^\r\n]+") do
      local ok, obj = pcall(ctx.json.decode, line)
      if ok and type(obj) == "table" and obj.error then
        streamed = tostring(obj.error)
      end
    end
    if resp.status >= 400 or streamed then
      error(string.format("importing %s from %s failed (%d): %s", props.ref, props.source,
        resp.status, streamed or api_message(resp)), 0)
    end
    local img = inspect_image(ctx, props, props.ref)
    if not img then
      error("the engine imported " .. props.ref .. " but does not show it", 0)
    end
    return img.Id, image_outputs(props, img)
  end,

  ---@param ctx table
  ---@param id string|nil nil: find what a crashed create() made, by ctx.intent
  ---@param props table
  ---@return table|nil props_now, table|nil outputs, string|nil id
  read = function(ctx, id, props)
    local img
    if id == nil or id == "" then
      if not ctx.intent then
        return nil
      end
      img = inspect_image(ctx, props, props.ref)
      local labels = img and image_labels(img) or {}
      if not img or labels[INTENT_LABEL] ~= ctx.intent then
        return nil
      end
    else
      img = inspect_image(ctx, props, id)
      if not img then
        return nil
      end
    end
    return image_props(props, img), image_outputs(props, img), img.Id
  end,

  -- Only `source` can change without a replace: the image stays as it is.
  ---@param ctx table
  ---@param id string
  ---@param old_props table
  ---@param new_props table
  ---@return table|nil outputs
  update = function(ctx, id, old_props, new_props)
    local img = inspect_image(ctx, new_props, id)
    if not img then
      error("image " .. id .. " disappeared during the update", 0)
    end
    return image_outputs(new_props, img)
  end,

  ---@param ctx table
  ---@param id string
  ---@param props table
  delete = function(ctx, id, props)
    -- 409: a container still uses the image.  When the tag has moved on to
    -- a replacement, the containers using this one are being replaced too:
    -- the image is left to the last of them, whose delete removes it (see
    -- remove_orphan_image).  Otherwise give a concurrent container delete
    -- a moment, then fail.
    for attempt = 1, 20 do
      local resp = call(ctx, props, "DELETE", "/images/" .. urlencode(id), { 200, 204, 404, 409 })
      if resp.status ~= 409 then
        return
      end
      local img = inspect_image(ctx, props, id)
      if not img then
        return
      end
      local tagged = false
      for _, t in ipairs(image_tags(img)) do
        tagged = tagged or tag_matches(props.ref, t)
      end
      if not tagged then
        ctx.log("info", string.format("image %s (%s) is still used by a container; it will be "
          .. "removed with the last container that uses it", props.ref, id))
        return
      end
      if attempt == 20 then
        error(string.format("cannot delete image %s (%s): %s", props.ref, id, api_message(resp)), 0)
      end
      ctx.sleep(500)
    end
  end,

  replace_on = { "endpoint", "socket", "api_version", "ref", "sha256", "changes", "labels" },
  -- The new image is imported (and takes the tag) before the old one goes,
  -- once the containers that used it have been replaced.
  create_before_destroy = true,
}

-- ---- containers ------------------------------------------------------------

local function inspect_container(ctx, props, name)
  local resp = call(ctx, props, "GET", "/containers/" .. urlencode(name) .. "/json", { 200, 404 })
  if resp.status == 404 then
    return nil
  end
  if type(resp.json) ~= "table" or type(resp.json.Id) ~= "string" then
    error("the engine answered GET /containers/" .. name .. "/json without a container Id", 0)
  end
  return resp.json
end

local function container_state(c)
  local st = tbl(c.State) or {}
  local health = tbl(st.Health) and st.Health.Status or nil
  if health == "" then
    health = nil
  end
  return st, health
end

local function container_outputs(props, c)
  local st, health = container_state(c)
  local ports = {}
  for spec, hostport in pairs(props.ports or {}) do
    ports[spec] = "http://" .. hostport
  end
  return {
    id = c.Id,
    name = props.name,
    image_id = c.Image,
    urls = ports,
    status = st.Status,
    health = health,
  }
end

-- The props a container corresponds to, in the shape declare() builds.
local function container_props(props, c)
  local cfg, host = tbl(c.Config) or {}, tbl(c.HostConfig) or {}
  local st = container_state(c)

  local image_ref
  if string.find(props.image, "^sha256:") then
    image_ref = c.Image
  else
    image_ref = cfg.Image
  end

  local env = {}
  for _, kv in ipairs(tbl(cfg.Env) or {}) do
    local k, v = string.match(kv, "^([^=]*)=(.*)$")
    if k and props.env and props.env[k] ~= nil then
      env[k] = v
    end
  end

  local ports = {}
  for spec, binds in pairs(tbl(host.PortBindings) or {}) do
    local b = tbl(binds) and tbl(binds[1]) or nil
    if b then
      local ip = (type(b.HostIp) == "string" and b.HostIp ~= "") and b.HostIp or "0.0.0.0"
      ports[spec] = ip .. ":" .. tostring(b.HostPort)
    end
  end

  local health
  if props.health and tbl(cfg.Healthcheck) and tbl(cfg.Healthcheck.Test) then
    local hc = cfg.Healthcheck
    health = {
      test = hc.Test,
      interval_s = (tonumber(hc.Interval) or 0) / NS,
      timeout_s = (tonumber(hc.Timeout) or 0) / NS,
      retries = tonumber(hc.Retries) or 0,
      start_period_s = (tonumber(hc.StartPeriod) or 0) / NS,
    }
  end

  local rp = tbl(host.RestartPolicy) or {}
  local restart = (type(rp.Name) ~= "string" or rp.Name == "") and "no" or rp.Name
  if restart == "on-failure" and (tonumber(rp.MaximumRetryCount) or 0) > 0 then
    restart = "on-failure:" .. tostring(rp.MaximumRetryCount)
  end

  local name = string.gsub(type(c.Name) == "string" and c.Name or "", "^/", "")
  return {
    endpoint = props.endpoint,
    socket = props.socket,
    api_version = props.api_version,
    name = name,
    image = image_ref,
    cmd = props.cmd and tbl(cfg.Cmd) or nil,
    env = env,
    ports = ports,
    labels = user_labels(container_labels(c), props.labels),
    health = health,
    restart = restart,
    network = type(host.NetworkMode) == "string" and host.NetworkMode or "",
    running = st.Running == true,
    wait_healthy_s = props.wait_healthy_s, -- how to apply, not a property of the container
  }
end

local function create_body(ctx, props)
  local env = {}
  for _, k in ipairs(sorted_keys(props.env)) do
    env[#env + 1] = k .. "=" .. tostring(props.env[k])
  end
  local labels = copy_map(props.labels)
  if ctx.intent then
    labels[INTENT_LABEL] = ctx.intent
  end
  local exposed, bindings = {}, {}
  for spec, hostport in pairs(props.ports or {}) do
    local ip, port = string.match(hostport, "^(.*):(%d+)$")
    exposed[spec] = {}
    bindings[spec] = ctx.json.array({ { HostIp = ip, HostPort = port } })
  end
  local restart, retries = string.match(props.restart, "^([%a-]+):?(%d*)$")
  local body = {
    Image = props.image,
    Env = ctx.json.array(env),
    Labels = labels,
    ExposedPorts = exposed,
    HostConfig = {
      NetworkMode = props.network,
      PortBindings = bindings,
      RestartPolicy = { Name = restart, MaximumRetryCount = tonumber(retries) or 0 },
    },
  }
  if props.cmd then
    body.Cmd = ctx.json.array(props.cmd)
  end
  if props.health then
    local h = props.health
    body.Healthcheck = {
      Test = ctx.json.array(h.test),
      Interval = math.floor(h.interval_s * NS),
      Timeout = math.floor(h.timeout_s * NS),
      Retries = h.retries,
      StartPeriod = math.floor(h.start_period_s * NS),
    }
  end
  return body
end

-- Start the container and check it stays up; with a health check and
-- wait_healthy_s > 0, wait until the engine reports it healthy.  podman
-- without systemd schedules no health checks: there the check is run
-- through podman's own endpoint (GET /libpod/containers/{id}/healthcheck).
local function start_and_wait(ctx, props, id)
  call(ctx, props, "POST", "/containers/" .. urlencode(id) .. "/start", { 204, 304 })
  local c = inspect_container(ctx, props, id)
  if not c then
    error("container " .. props.name .. " disappeared right after start", 0)
  end
  local st = container_state(c)
  if st.Running ~= true and (tonumber(st.ExitCode) or 0) ~= 0 then
    error(string.format("container %s exited with code %s right after start%s", props.name,
      tostring(st.ExitCode), (type(st.Error) == "string" and st.Error ~= "") and (": " .. st.Error)
      or ""), 0)
  end
  local wait_s = props.wait_healthy_s or 0
  if not props.health or wait_s <= 0 then
    return c
  end
  local deadline_ms = wait_s * 1000
  local waited, can_run = 0, true
  local step = math.max(200, math.min(2000, math.floor(props.health.interval_s * 1000)))
  while true do
    local _, health = container_state(c)
    if health == "healthy" then
      return c
    end
    if health == "unhealthy" then
      error(string.format("container %s is unhealthy", props.name), 0)
    end
    if waited >= deadline_ms then
      error(string.format("container %s not healthy after %d s (health: %s)", props.name,
        wait_s, tostring(health)), 0)
    end
    if can_run and waited >= props.health.start_period_s * 1000 then
      local base = trim_slashes(props.endpoint)
      local r = ctx.http.request({
        method = "GET",
        url = base .. "/v4.0.0/libpod/containers/" .. urlencode(id) .. "/healthcheck",
        unix_socket = props.socket,
        expect = { 200, 404, 409, 500 },
      })
      if r.status == 404 and not (type(r.json) == "table" and r.json.cause) then
        can_run = false -- not podman: the engine runs its checks itself
      end
    end
    ctx.sleep(step)
    waited = waited + step
    c = inspect_container(ctx, props, id)
    if not c then
      error("container " .. props.name .. " disappeared while waiting for it to be healthy", 0)
    end
  end
end

-- Remove image id when it is an image this module imported (it carries
-- the intent label) whose tag has moved on and that no container uses any
-- more: what an image replaced while containers still used it leaves.
local function remove_orphan_image(ctx, props, id)
  local img = inspect_image(ctx, props, id)
  if not img then
    return
  end
  if image_labels(img)[INTENT_LABEL] == nil or #image_tags(img) > 0 then
    return
  end
  -- 409: another container still uses it; its own delete comes back here.
  call(ctx, props, "DELETE", "/images/" .. urlencode(id), { 200, 204, 404, 409 })
end

-- Is this engine error a name conflict?  Docker answers 409; podman 4
-- answers 500 "... is already in use".
local function name_conflict(resp)
  return resp.status == 409 or
    (resp.status == 500 and string.find(api_message(resp), "already in use", 1, true) ~= nil)
end

local container = {
  ---@param ctx table
  ---@param props table {endpoint, socket?, api_version, name, image, cmd?, env, ports, labels,
  ---                    health?, restart, network, running, wait_healthy_s}
  ---@return string id, table outputs
  create = function(ctx, props)
    local resp = call(ctx, props, "POST", "/containers/create?name=" .. urlencode(props.name),
      { 201, 409, 500 }, { json = create_body(ctx, props) })
    local id
    if resp.status == 201 then
      id = resp.json and resp.json.Id
    elseif name_conflict(resp) then
      -- Ours when it carries this create's intent (a retried request, or
      -- a run that crashed after the engine made it).
      local c = inspect_container(ctx, props, props.name)
      local labels = c and container_labels(c) or {}
      if not c or not ctx.intent or labels[INTENT_LABEL] ~= ctx.intent then
        error(string.format("a container named %s already exists and was not created by %s; "
          .. "remove it or choose another name", props.name, ctx.address), 0)
      end
      id = c.Id
    else
      error(string.format("creating container %s failed (%d): %s", props.name, resp.status,
        api_message(resp)), 0)
    end
    if type(id) ~= "string" or id == "" then
      error("the engine created container " .. props.name .. " without answering its Id", 0)
    end
    local c
    if props.running then
      c = start_and_wait(ctx, props, id)
    else
      c = inspect_container(ctx, props, id)
    end
    return id, container_outputs(props, c or { Id = id })
  end,

  ---@param ctx table
  ---@param id string|nil nil: find what a crashed create() made, by ctx.intent
  ---@param props table
  ---@return table|nil props_now, table|nil outputs, string|nil id
  read = function(ctx, id, props)
    local c
    if id == nil or id == "" then
      if not ctx.intent then
        return nil
      end
      c = inspect_container(ctx, props, props.name)
      local labels = c and container_labels(c) or {}
      if not c or labels[INTENT_LABEL] ~= ctx.intent then
        return nil
      end
    else
      c = inspect_container(ctx, props, id)
      if not c then
        return nil
      end
    end
    return container_props(props, c), container_outputs(props, c), c.Id
  end,

  -- Everything but `running` (and wait_healthy_s) is replace_on: an update
  -- starts a stopped container, or stops one that should not run.
  ---@param ctx table
  ---@param id string
  ---@param old_props table
  ---@param new_props table
  ---@return table outputs
  update = function(ctx, id, old_props, new_props)
    local c = inspect_container(ctx, new_props, id)
    if not c then
      error("container " .. new_props.name .. " disappeared during the update", 0)
    end
    local st = container_state(c)
    if new_props.running and st.Running ~= true then
      c = start_and_wait(ctx, new_props, id)
    elseif not new_props.running and st.Running == true then
      call(ctx, new_props, "POST", "/containers/" .. urlencode(id) .. "/stop?t=10", { 204, 304 })
      c = inspect_container(ctx, new_props, id) or c
    end
    return container_outputs(new_props, c)
  end,

  ---@param ctx table
  ---@param id string
  ---@param props table
  delete = function(ctx, id, props)
    local path = "/containers/" .. urlencode(id)
    -- A graceful stop first (force alone is SIGKILL on Docker); then remove.
    local c = inspect_container(ctx, props, id)
    call(ctx, props, "POST", path .. "/stop?t=5", { 204, 304, 404 })
    call(ctx, props, "DELETE", path .. "?force=true&v=true", { 200, 204, 404 })
    if c and c.Image then
      remove_orphan_image(ctx, props, c.Image)
    end
  end,

  replace_on = { "endpoint", "socket", "api_version", "name", "image", "cmd", "env", "ports",
                 "labels", "health", "restart", "network" },
  create_before_destroy = false,
}

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

local function check_list(v, what)
  if type(v) ~= "table" then
    error(what .. ": want a list of strings", 0)
  end
  local n = 0
  for _ in pairs(v) do
    n = n + 1
  end
  if n == 0 or n ~= #v then
    error(what .. ": want a non-empty list of strings", 0)
  end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      error(string.format("%s[%d]: want a string", what, i), 0)
    end
  end
  return v
end

local function string_map(m, what)
  local out = {}
  for k, v in pairs(check_map(m, what)) do
    if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
      error(string.format("%s.%s: want a string", what, tostring(k)), 0)
    end
    out[k] = tostring(v)
  end
  return out
end

-- ports: { ["8081"] = 18081, ["53/udp"] = "127.0.0.1:5353" } ->
-- { ["8081/tcp"] = "127.0.0.1:18081", ["53/udp"] = "127.0.0.1:5353" }
local function normalize_ports(ports, host_ip, what)
  local out = {}
  for spec, host in pairs(check_map(ports, what)) do
    local port, proto = string.match(tostring(spec), "^(%d+)/?(%a*)$")
    if not port then
      error(string.format("%s: %q is not PORT or PORT/PROTO", what, tostring(spec)), 0)
    end
    proto = proto ~= "" and proto or "tcp"
    local ip, hp
    if type(host) == "number" then
      ip, hp = host_ip, tostring(math.floor(host))
    elseif type(host) == "string" then
      ip, hp = string.match(host, "^(.*):(%d+)$")
      if not ip then
        ip, hp = host_ip, string.match(host, "^(%d+)$")
      end
    end
    if not hp or tonumber(hp) < 1 or tonumber(hp) > 65535 then
      error(string.format("%s.%s: want a host port 1-65535 or \"IP:PORT\"", what, spec), 0)
    end
    out[port .. "/" .. proto] = ip .. ":" .. hp
  end
  return out
end

local function normalize_health(h, what)
  if h == nil then
    return nil
  end
  if type(h) ~= "table" then
    error(what .. ": want a table {test=, interval_s=, timeout_s=, retries=, start_period_s=}", 0)
  end
  local test
  if type(h.test) == "string" then
    test = { "CMD-SHELL", h.test }
  else
    test = check_list(h.test, what .. ".test")
    if test[1] ~= "CMD" and test[1] ~= "CMD-SHELL" and test[1] ~= "NONE" then
      test = { "CMD", table.unpack(test) }
    end
  end
  return {
    test = test,
    interval_s = h.interval_s or 30,
    timeout_s = h.timeout_s or 30,
    retries = h.retries or 3,
    start_period_s = h.start_period_s or 0,
  }
end

return {
  name = "edge-cloud/containers",
  version = "1.0.0",

  inputs = {
    socket = { type = "string?",
               description = "unix socket of the engine's API, e.g. /run/podman/podman.sock" },
    endpoint = { type = "string", default = "http://localhost",
                 description = "engine API base URL (with socket, only the path matters)" },
    api_version = { type = "string", default = "v1.41", description = "API version path prefix" },
    host_ip = { type = "string", default = "127.0.0.1",
                description = "host address of port bindings given as a bare port" },
    labels = { type = "map", default = {},
               description = "labels put on every image and container this instance makes" },
    images = { type = "map", default = {},
               description = "image key -> {ref, source, sha256?, changes?, labels?}" },
    containers = { type = "map", default = {},
                   description = "container name -> {image, cmd?, env?, ports?, labels?, health?, "
                     .. "restart?, network?, running?, wait_healthy_s?}" },
  },

  resources = {
    image = image,
    container = container,
  },

  ---@param inputs table
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local base = {
      endpoint = type(inputs.endpoint) == "string" and trim_slashes(inputs.endpoint) or inputs.endpoint,
      socket = inputs.socket,
      api_version = inputs.api_version or "v1.41",
    }
    local common_labels = string_map(inputs.labels, "labels")

    local image_ids, image_refs = {}, {}
    for _, key in ipairs(sorted_keys(inputs.images)) do
      local spec = inputs.images[key]
      local what = "images." .. key
      if type(spec) ~= "table" then
        error(what .. ": want a map {ref, source, sha256?, changes?, labels?}", 0)
      end
      -- a string, or a reference known after apply (another resource's URL)
      if type(spec.source) ~= "userdata" and (type(spec.source) ~= "string" or spec.source == "") then
        error(what .. ".source: want the URL the engine downloads the tarball from", 0)
      end
      if spec.sha256 ~= nil and (type(spec.sha256) ~= "string" or
          not string.find(spec.sha256, "^%x+$") or #spec.sha256 ~= 64) then
        error(what .. ".sha256: want 64 hex digits", 0)
      end
      local ref = spec.ref or ("localhost/" .. key .. ":latest")
      if not string.find(ref, ":[%w_.-]+$") or string.find(ref, "@") then
        ref = ref .. ":latest"
      end
      local labels = copy_map(common_labels)
      for k, v in pairs(string_map(spec.labels, what .. ".labels")) do
        labels[k] = v
      end
      local props = copy_map(base)
      props.ref = ref
      props.source = spec.source
      props.sha256 = spec.sha256 and string.lower(spec.sha256) or nil
      props.changes = spec.changes and check_list(spec.changes, what .. ".changes") or nil
      props.labels = labels
      local h = m.resource("image", key, props)
      image_ids[key] = h.id
      image_refs[key] = ref
    end

    local ids, urls = {}, {}
    for _, name in ipairs(sorted_keys(inputs.containers)) do
      local spec = inputs.containers[name]
      local what = "containers." .. name
      if type(spec) ~= "table" then
        error(what .. ": want a map {image, cmd?, env?, ports?, ...}", 0)
      end
      if not string.find(name, "^[%w][%w_.-]*$") then
        error(what .. ": container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*", 0)
      end
      if type(spec.image) ~= "string" or spec.image == "" then
        error(what .. ".image: want a key of `images` or an image reference", 0)
      end
      local labels = copy_map(common_labels)
      for k, v in pairs(string_map(spec.labels, what .. ".labels")) do
        labels[k] = v
      end
      local ports = normalize_ports(spec.ports, inputs.host_ip or "127.0.0.1", what .. ".ports")
      local restart = spec.restart or "no"
      local rname = string.match(restart, "^([%a-]+)")
      if not RESTART_POLICIES[rname or ""] or
          (restart ~= rname and not string.find(restart, "^on%-failure:%d+$")) then
        error(what .. ".restart: want no, always, unless-stopped, on-failure or on-failure:N", 0)
      end
      local network = spec.network
      if network == nil then
        network = next(ports) and "bridge" or "none"
      end
      local running = spec.running
      if running == nil then
        running = true
      end
      local props = copy_map(base)
      props.name = name
      props.image = image_ids[spec.image] or spec.image
      props.cmd = spec.cmd and check_list(spec.cmd, what .. ".cmd") or nil
      props.env = string_map(spec.env, what .. ".env")
      props.ports = ports
      props.labels = labels
      props.health = normalize_health(spec.health, what .. ".health")
      props.restart = restart
      props.network = network
      props.running = running
      props.wait_healthy_s = spec.wait_healthy_s or 0
      -- An image of this instance is referenced by id: the container
      -- depends on it, and a new image replaces the container.
      local h = m.resource("container", name, props)
      ids[name] = h.id
      local u = {}
      for spec_port, hostport in pairs(ports) do
        u[spec_port] = "http://" .. hostport
      end
      urls[name] = u
    end

    m.output("image_ids", image_ids)
    m.output("image_refs", image_refs)
    m.output("container_ids", ids)
    m.output("urls", urls)
  end,
}
