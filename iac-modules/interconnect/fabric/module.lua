--[[
interconnect/fabric - virtual connections of an interconnect provider
(Equinix Fabric / Megaport style; the lab's `fabric` emulator,
examples/lab/fabric.c): an A side and a Z side, each a port and a VLAN, and
a bandwidth.

Provisioning is asynchronous.  create POSTs the connection (with the create
intent as Idempotency-Key) and polls it with ctx.sleep until it is
PROVISIONED; a FAILED connection is an error that names it and quotes the
provider.  A bandwidth change PATCHes and polls again; delete polls until
the provider answers 404.  Ports and VLANs cannot change on a live
connection: a change of either replaces it.

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
See README.md in this folder.
]]

local function trim_slashes(s)
  return (string.gsub(s, "/+$", ""))
end

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function conn_url(props, id)
  return props.endpoint .. "/v1/connections/" .. urlencode(id)
end

-- The bearer auth for props.token, or nil.  A token read back from state is
-- only a hash (a table), which cannot authenticate.
local function bearer(props)
  if type(props.token) == "string" and props.token ~= "" then
    return { type = "bearer", token = props.token }
  end
  return nil
end

-- "409 VLAN_IN_USE: vlan 100 on port port-1 is already used by ..." from a
-- problem+json answer.
local function problem(resp)
  local p = type(resp.json) == "table" and resp.json or {}
  return string.format("%d %s: %s", resp.status, tostring(p.code or p.title or "error"),
    tostring(p.detail or resp.body or ""))
end

-- One provider call.  expect: the statuses that are not errors.  The
-- driver retries transport errors, 429 and 5xx (POST and PATCH only when
-- marked idempotent or carrying an Idempotency-Key).
local function call(ctx, props, method, url, expect, extra)
  local req = { method = method, url = url, auth = bearer(props), expect = { 401 } }
  for _, s in ipairs(expect) do
    req.expect[#req.expect + 1] = s
  end
  for k, v in pairs(extra or {}) do
    req[k] = v
  end
  local resp = ctx.http.request(req)
  if resp.status == 401 then
    if type(props.token) == "table" then
      error(string.format("the provider refused %s %s (401): the token is known only as a hash "
        .. "in state; keep the `token` input set when destroying", method, url), 0)
    end
    error(string.format("the provider refused %s %s (401): check the `token` input", method, url), 0)
  end
  return resp
end

local function checked(conn, what)
  if type(conn) ~= "table" or type(conn.id) ~= "string" or conn.id == "" then
    error("the provider answered " .. what .. " without a connection id", 0)
  end
  return conn
end

-- GET a connection, or nil when the provider answers 404.
local function get_conn(ctx, props, id)
  local resp = call(ctx, props, "GET", conn_url(props, id), { 200, 404 })
  if resp.status == 404 then
    return nil
  end
  return checked(resp.json, "GET")
end

-- A deadline timeout_s from now: returns a function that tells whether it
-- has passed.  ctx.time is the wall clock; without it, the pauses are
-- counted instead (note(ms) after each ctx.sleep).
local function deadline(ctx, timeout_s)
  if type(ctx.time) == "table" and type(ctx.time.now) == "function" then
    local stop = ctx.time.now() + timeout_s
    return function() return ctx.time.now() >= stop end, function() end
  end
  local slept = 0
  return function() return slept >= timeout_s * 1000 end, function(ms) slept = slept + ms end
end

-- Poll connection id until done(conn) is true (conn is nil once gone),
-- for at most timeout_s.
local function wait_for(ctx, props, id, what, done)
  local expired, slept = deadline(ctx, props.timeout_s)
  while true do
    local conn = get_conn(ctx, props, id)
    if done(conn) then
      return conn
    end
    if expired() then
      error(string.format("connection %s (%s) is still %s after %d s waiting for %s",
        props.name, id, conn and conn.state or "present", props.timeout_s, what), 0)
    end
    ctx.sleep(props.poll_interval_ms)
    slept(props.poll_interval_ms)
  end
end

local function settled(conn)
  return conn == nil or conn.state ~= "PENDING"
end

-- The props an existing connection corresponds to, in declare()'s shape.
-- endpoint, token and the waiting knobs are not visible on the connection.
local function props_from(props, conn)
  return {
    endpoint = props.endpoint,
    token = props.token,
    name = conn.name,
    a_side = { port_id = conn.a_side.port_id, vlan = conn.a_side.vlan },
    z_side = { port_id = conn.z_side.port_id, vlan = conn.z_side.vlan },
    bandwidth_mbps = conn.bandwidth_mbps,
    state = conn.state,
    timeout_s = props.timeout_s,
    poll_interval_ms = props.poll_interval_ms,
  }
end

local function outputs(props, conn)
  return {
    url = conn_url(props, conn.id),
    state = conn.state,
    created_at = conn.created_at,
  }
end

local function fail_provisioning(props, conn)
  error(string.format("connection %s (%s) failed to provision: %s", props.name, conn.id,
    tostring(conn.failure_reason or "the provider gave no reason")), 0)
end

-- A connection the provider is tearing down does not count: read() reports
-- it gone, and a create waits for its VLANs to be released.
local function live(conn)
  return conn ~= nil and conn.state ~= "DEPROVISIONING"
end

local function same_sides(props, conn)
  return conn.a_side.port_id == props.a_side.port_id and conn.a_side.vlan == props.a_side.vlan and
      conn.z_side.port_id == props.z_side.port_id and conn.z_side.vlan == props.z_side.vlan
end

-- The connection a crashed create made: by its Idempotency-Key, else by
-- name with the very ports and VLANs this resource asks for (a pair that
-- only one live connection can hold).
local function find_adoptable(ctx, props)
  local base = props.endpoint .. "/v1/connections"
  if ctx.intent then
    local resp = call(ctx, props, "GET", base .. "?idempotency_key=" .. urlencode(ctx.intent), { 200 })
    local items = (resp.json and resp.json.items) or {}
    if #items > 1 then
      error(string.format("the provider holds %d connections created with intent %s", #items,
        ctx.intent), 0)
    end
    if #items == 1 then
      return checked(items[1], "the listing")
    end
  end
  local resp = call(ctx, props, "GET", base .. "?name=" .. urlencode(props.name), { 200 })
  for _, conn in ipairs((resp.json and resp.json.items) or {}) do
    if live(checked(conn, "the listing")) and same_sides(props, conn) then
      return conn
    end
  end
  return nil
end

-- POST the connection.  A 409 VLAN_IN_USE from a connection that is being
-- deprovisioned (a replace, or a delete cut short) is waited out.
local function post(ctx, props)
  local body = {
    name = props.name,
    a_side = props.a_side,
    z_side = props.z_side,
    bandwidth_mbps = props.bandwidth_mbps,
  }
  local headers = {}
  if ctx.intent then
    headers["Idempotency-Key"] = ctx.intent
  end
  local expired, slept = deadline(ctx, props.timeout_s)
  while true do
    local resp = call(ctx, props, "POST", props.endpoint .. "/v1/connections",
      { 200, 201, 400, 409, 422 }, { headers = headers, json = body, idempotent = true })
    if resp.status == 200 or resp.status == 201 then
      return checked(resp.json, "POST")
    end
    local holder = resp.status == 409 and type(resp.json) == "table" and resp.json.connection_id
    local blocking = type(holder) == "string" and get_conn(ctx, props, holder)
    if not blocking or blocking.state ~= "DEPROVISIONING" or expired() then
      error(string.format("connection %s: the provider refused it (%s)", props.name,
        problem(resp)), 0)
    end
    ctx.log("info", string.format("%s: waiting for %s (%s) to release its VLAN", props.name,
      holder, blocking.state))
    ctx.sleep(props.poll_interval_ms)
    slept(props.poll_interval_ms)
  end
end

return {
  name = "interconnect/fabric",
  version = "1.0.0",

  inputs = {
    endpoint = { type = "string", description = "provider API base URL, e.g. http://127.0.0.1:8080" },
    token = { type = "string?", sensitive = true, description = "API bearer token" },
    connections = { type = "map", default = {},
                    description = "name -> { a_side = {port_id, vlan}, z_side = {port_id, vlan}, bandwidth_mbps }" },
    timeout_s = { type = "integer", default = 900,
                  description = "how long provisioning, a change or deprovisioning may take" },
    poll_interval_ms = { type = "integer", default = 5000,
                         description = "pause between two reads of a connection while waiting" },
  },

  resources = {
    connection = {
      ---@param ctx table
      ---@param props table {endpoint, token?, name, a_side, z_side, bandwidth_mbps, state, timeout_s, poll_interval_ms}
      ---@return string id, table outputs
      create = function(ctx, props)
        local conn = post(ctx, props)
        ctx.log("info", string.format("%s: %s is %s; waiting for PROVISIONED", props.name,
          conn.id, conn.state))
        local id = conn.id
        conn = wait_for(ctx, props, id, "PROVISIONED", settled)
        if conn == nil then
          error(string.format("connection %s (%s) disappeared while it was provisioned",
            props.name, id), 0)
        end
        if conn.state == "FAILED" then
          fail_provisioning(props, conn)
        end
        if conn.state ~= "PROVISIONED" then
          error(string.format("connection %s (%s) is %s, not PROVISIONED", props.name, id,
            conn.state), 0)
        end
        return id, outputs(props, conn)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find what a crashed create made (ctx.intent, else name + sides)
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local conn
        if id == nil or id == "" then
          conn = find_adoptable(ctx, props)
        else
          conn = get_conn(ctx, props, id)
        end
        if not live(conn) then
          return nil
        end
        if conn.state == "PENDING" then
          -- Provisioning or a change in flight (a run cut short): what it
          -- becomes is what there is.
          conn = wait_for(ctx, props, conn.id, "the change in flight", settled)
          if not live(conn) then
            return nil
          end
        end
        if conn.failure_reason ~= nil and conn.failure_reason ~= ctx.json.null and
            conn.state ~= "FAILED" then
          ctx.log("warn", string.format("%s (%s): %s", props.name, conn.id, conn.failure_reason))
        end
        -- A FAILED connection reads back with state = "FAILED": the plan
        -- replaces it.
        return props_from(props, conn), outputs(props, conn), conn.id
      end,

      ---@param ctx table
      ---@param id string
      ---@param old_props table
      ---@param new_props table
      ---@return table outputs
      update = function(ctx, id, old_props, new_props)
        local props = new_props
        local conn = wait_for(ctx, props, id, "the change in flight", settled)
        if not live(conn) then
          error(string.format("connection %s (%s) is gone", props.name, id), 0)
        end
        local patch = {}
        if conn.bandwidth_mbps ~= props.bandwidth_mbps then
          patch.bandwidth_mbps = props.bandwidth_mbps
        end
        if conn.name ~= props.name then
          patch.name = props.name
        end
        if next(patch) == nil then
          return outputs(props, conn)
        end
        -- Absolute values: a repeated PATCH asks for the same thing.
        local resp = call(ctx, props, "PATCH", conn_url(props, id), { 200, 400, 409, 422 },
          { json = patch, idempotent = true })
        if resp.status ~= 200 then
          error(string.format("connection %s (%s): the provider refused the change (%s)",
            props.name, id, problem(resp)), 0)
        end
        conn = wait_for(ctx, props, id, "the bandwidth change", settled)
        if not live(conn) then
          error(string.format("connection %s (%s) went away during the change", props.name, id), 0)
        end
        if conn.state == "FAILED" then
          fail_provisioning(props, conn)
        end
        if conn.bandwidth_mbps ~= props.bandwidth_mbps then
          error(string.format("connection %s (%s): the change to %d Mbps failed: %s", props.name,
            id, props.bandwidth_mbps, tostring(conn.failure_reason)), 0)
        end
        return outputs(props, conn)
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        -- 404: already gone, which is what was asked for.
        call(ctx, props, "DELETE", conn_url(props, id), { 200, 202, 204, 404 })
        wait_for(ctx, props, id, "deprovisioning", function(conn)
          return conn == nil
        end)
      end,

      -- Ports and VLANs cannot change on a live connection; a connection
      -- that read back FAILED is replaced.
      replace_on = { "endpoint", "a_side", "z_side", "state" },
      create_before_destroy = false,
      sensitive = { "token" },
    },
  },

  ---@param inputs table {endpoint, token?, connections, timeout_s, poll_interval_ms}
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local endpoint = inputs.endpoint
    if type(endpoint) == "string" then
      endpoint = trim_slashes(endpoint)
    end
    if inputs.timeout_s < 1 or inputs.poll_interval_ms < 1 then
      error("timeout_s and poll_interval_ms must be positive", 0)
    end
    local names = {}
    for name in pairs(inputs.connections) do
      names[#names + 1] = name
    end
    table.sort(names)

    local function side(name, which, s)
      if type(s) ~= "table" or type(s.port_id) ~= "string" or s.port_id == "" then
        error(string.format("connections.%s.%s: want { port_id = \"...\", vlan = N }", name, which), 0)
      end
      for k in pairs(s) do
        if k ~= "port_id" and k ~= "vlan" then
          error(string.format("connections.%s.%s.%s: unknown key", name, which, k), 0)
        end
      end
      if math.type(s.vlan) ~= "integer" or s.vlan < 1 or s.vlan > 4094 then
        error(string.format("connections.%s.%s.vlan: want an integer 1..4094, got %s", name,
          which, tostring(s.vlan)), 0)
      end
      return { port_id = s.port_id, vlan = s.vlan }
    end

    local ids, states = {}, {}
    for _, name in ipairs(names) do
      local c = inputs.connections[name]
      if type(c) ~= "table" or c[1] ~= nil then
        error(string.format("connections.%s: want a map { a_side, z_side, bandwidth_mbps }", name), 0)
      end
      for k in pairs(c) do
        if k ~= "a_side" and k ~= "z_side" and k ~= "bandwidth_mbps" then
          error(string.format("connections.%s.%s: unknown key (use a_side, z_side, "
            .. "bandwidth_mbps)", name, k), 0)
        end
      end
      if math.type(c.bandwidth_mbps) ~= "integer" or c.bandwidth_mbps < 1 then
        error(string.format("connections.%s.bandwidth_mbps: want a positive integer", name), 0)
      end
      local h = m.resource("connection", name, {
        endpoint = endpoint,
        token = inputs.token,
        name = name,
        a_side = side(name, "a_side", c.a_side),
        z_side = side(name, "z_side", c.z_side),
        bandwidth_mbps = c.bandwidth_mbps,
        state = "PROVISIONED",
        timeout_s = inputs.timeout_s,
        poll_interval_ms = inputs.poll_interval_ms,
      })
      ids[name] = h.id
      states[name] = h.state
    end
    m.output("ids", ids)
    m.output("states", states)
    m.output("endpoint", endpoint)
  end,
}
