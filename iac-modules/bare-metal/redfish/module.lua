--[[
bare-metal/redfish - the power state and the boot source override of
physical machines, through their BMC's DMTF Redfish API.

Two resource types, one of each per system that asks for it:

  system_power   the system's PowerState (On / Off).  create and update
                 issue #ComputerSystem.Reset and poll the system until it
                 reports the wanted state, or fail after `power_timeout_s`.
  boot_override  Boot.BootSourceOverrideTarget with
                 BootSourceOverrideEnabled Once or Continuous.  A one-time
                 (Once) override is consumed by the next boot; read() tells
                 a consumed override from one changed behind our back.

A system's power resource depends on its boot override, so an apply that
arms a one-time PXE boot and powers the machine on does it in that order.

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
See README.md in this folder.
]]

local RESET_OFF_TYPES = { GracefulShutdown = true, ForceOff = true }
local ENABLED_VALUES = { Once = true, Continuous = true }
local MODE_VALUES = { UEFI = true, Legacy = true }

local function trim_slashes(s)
  return (string.gsub(s, "/+$", ""))
end

-- Percent-encode everything but RFC 3986 unreserved characters.
local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function system_uri(system)
  return "/redfish/v1/Systems/" .. urlencode(system)
end

local function contains(list, v)
  for _, x in ipairs(list or {}) do
    if x == v then
      return true
    end
  end
  return false
end

-- HTTP Basic auth from props, or nil.  A password read back from state is
-- only a hash (a table), which cannot authenticate.
local function basic_auth(props)
  if type(props.username) == "string" and props.username ~= "" and
      type(props.password) == "string" then
    return { type = "basic", user = props.username, password = props.password }
  end
  return nil
end

-- The messages of a Redfish error body, joined, or the status alone.
local function redfish_message(resp)
  local err = type(resp.json) == "table" and resp.json.error
  if type(err) ~= "table" then
    return "status " .. tostring(resp.status)
  end
  local parts = {}
  for _, m in ipairs(err["@Message.ExtendedInfo"] or {}) do
    if type(m) == "table" and type(m.Message) == "string" then
      parts[#parts + 1] = m.Message
    end
  end
  if #parts == 0 and type(err.message) == "string" then
    parts[1] = err.message
  end
  return table.concat(parts, " ") .. " (" .. tostring(err.code or resp.status) .. ")"
end

-- One Redfish call.  expect: the statuses that are not errors.  The driver
-- retries transport errors, 429 and 5xx (POST and PATCH only when marked
-- idempotent); a 401 becomes an error that says what to do about it.
local function call(ctx, props, method, path, expect, extra)
  local req = {
    method = method,
    url = props.endpoint .. path,
    auth = basic_auth(props),
    headers = { ["OData-Version"] = "4.0" },
    expect = { 401 },
  }
  for _, s in ipairs(expect) do
    req.expect[#req.expect + 1] = s
  end
  for k, v in pairs(extra or {}) do
    if k == "headers" then
      for hk, hv in pairs(v) do
        req.headers[hk] = hv
      end
    else
      req[k] = v
    end
  end
  local resp = ctx.http.request(req)
  if resp.status == 401 then
    if type(props.password) == "table" then
      error(string.format("the BMC refused %s %s (401): the password is known only as a hash "
        .. "in state; keep the `password` input set when destroying", method, path), 0)
    end
    error(string.format("the BMC refused %s %s (401): check `username` and `password`",
      method, path), 0)
  end
  return resp
end

-- GET a ComputerSystem: the resource and its ETag, or nil when it is gone.
local function get_system(ctx, props, uri)
  local resp = call(ctx, props, "GET", uri, { 200, 404 })
  if resp.status == 404 then
    return nil
  end
  local sys = resp.json
  if type(sys) ~= "table" or type(sys["@odata.id"]) ~= "string" then
    error("the BMC answered GET " .. uri .. " without a ComputerSystem", 0)
  end
  return sys, resp.headers["etag"] or sys["@odata.etag"]
end

-- The system, or an error naming what the BMC does have.
local function must_get_system(ctx, props, uri)
  local sys, etag = get_system(ctx, props, uri)
  if sys then
    return sys, etag
  end
  local names = {}
  local resp = call(ctx, props, "GET", "/redfish/v1/Systems", { 200, 404 })
  for _, m in ipairs((resp.json and resp.json.Members) or {}) do
    names[#names + 1] = tostring(m["@odata.id"])
  end
  error(string.format("no system %s at %s (the BMC has: %s)", props.system, props.endpoint,
    #names > 0 and table.concat(names, ", ") or "none"), 0)
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

-- ---- power --------------------------------------------------------------

local function power_outputs(sys)
  return { uri = sys["@odata.id"], power_state = sys.PowerState }
end

local function power_props(props, sys)
  return {
    endpoint = props.endpoint,
    username = props.username,
    password = props.password,
    system = props.system,
    power_state = sys.PowerState,
    off_reset_type = props.off_reset_type,
    on_delete = props.on_delete,
    timeout_s = props.timeout_s,
    poll_interval_ms = props.poll_interval_ms,
  }
end

-- Bring the system to PowerState `want`: Reset (On, or off_reset_type),
-- then poll until the system reports it, for at most timeout_s.  A system
-- already there is left alone.
local function ensure_power(ctx, props, want)
  local uri = system_uri(props.system)
  local sys = must_get_system(ctx, props, uri)
  if sys.PowerState == want then
    return sys
  end
  local action = (sys.Actions or {})["#ComputerSystem.Reset"]
  if type(action) ~= "table" or type(action.target) ~= "string" then
    error(string.format("system %s offers no #ComputerSystem.Reset action", props.system), 0)
  end
  local reset_type = want == "On" and "On" or props.off_reset_type
  local allowed = action["ResetType@Redfish.AllowableValues"]
  if type(allowed) == "table" and not contains(allowed, reset_type) then
    error(string.format("system %s does not allow ResetType %s (allowed: %s)", props.system,
      reset_type, table.concat(allowed, ", ")), 0)
  end
  -- On, ForceOff and GracefulShutdown converge: repeating one is harmless,
  -- so a lost answer may be retried.
  local resp = call(ctx, props, "POST", action.target, { 200, 202, 204, 400, 409 }, {
    json = { ResetType = reset_type },
    idempotent = true,
  })
  if resp.status == 400 or resp.status == 409 then
    error(string.format("system %s refused Reset %s: %s", props.system, reset_type,
      redfish_message(resp)), 0)
  end
  ctx.log("info", string.format("%s: Reset %s accepted; waiting for PowerState %s",
    props.system, reset_type, want))
  local expired, slept = deadline(ctx, props.timeout_s)
  while true do
    sys = must_get_system(ctx, props, uri)
    if sys.PowerState == want then
      return sys
    end
    if expired() then
      error(string.format("system %s did not reach PowerState %s within %d s after Reset %s "
        .. "(it still reports %s)", props.system, want, props.timeout_s, reset_type,
        tostring(sys.PowerState)), 0)
    end
    ctx.sleep(props.poll_interval_ms)
    slept(props.poll_interval_ms)
  end
end

-- ---- boot override ------------------------------------------------------

local function boot_props(props, boot)
  local p = {
    endpoint = props.endpoint,
    username = props.username,
    password = props.password,
    system = props.system,
    target = boot.BootSourceOverrideTarget,
    enabled = boot.BootSourceOverrideEnabled,
    generation = props.generation,
  }
  if props.mode ~= nil then
    p.mode = boot.BootSourceOverrideMode
  end
  return p
end

local function boot_matches(props, boot)
  return boot.BootSourceOverrideEnabled == props.enabled and
      boot.BootSourceOverrideTarget == props.target and
      (props.mode == nil or boot.BootSourceOverrideMode == props.mode)
end

-- PATCH the Boot object to `want` (a partial Boot object) under If-Match,
-- re-reading and retrying when the system changed in between (412).  A
-- system that already matches is not patched.  Returns the system.
local function patch_boot(ctx, props, want)
  local uri = system_uri(props.system)
  for _ = 1, 5 do
    local sys, etag = must_get_system(ctx, props, uri)
    local boot = sys.Boot or {}
    local same = true
    for k, v in pairs(want) do
      if boot[k] ~= v then
        same = false
      end
    end
    if same then
      return sys
    end
    for k, v in pairs(want) do
      local allowed = boot[k .. "@Redfish.AllowableValues"]
      if type(allowed) == "table" and not contains(allowed, v) then
        error(string.format("system %s does not allow %s %s (allowed: %s)", props.system, k,
          tostring(v), table.concat(allowed, ", ")), 0)
      end
    end
    local headers = {}
    if type(etag) == "string" and etag ~= "" then
      headers["If-Match"] = etag
    end
    -- Setting absolute values: a retried PATCH does no harm.
    local resp = call(ctx, props, "PATCH", uri, { 200, 204, 400, 412 }, {
      headers = headers,
      json = { Boot = want },
      idempotent = true,
    })
    if resp.status == 200 or resp.status == 204 then
      if resp.status == 200 and type(resp.json) == "table" and resp.json.Boot then
        return resp.json
      end
      return must_get_system(ctx, props, uri)
    end
    if resp.status == 400 then
      error(string.format("system %s refused the boot override: %s", props.system,
        redfish_message(resp)), 0)
    end
    ctx.log("debug", props.system .. ": the system changed since it was read (412); again")
  end
  error(string.format("system %s kept changing while its Boot was patched (5 ETag mismatches)",
    props.system), 0)
end

local function boot_want(props)
  local want = {
    BootSourceOverrideEnabled = props.enabled,
    BootSourceOverrideTarget = props.target,
  }
  if props.mode ~= nil then
    want.BootSourceOverrideMode = props.mode
  end
  return want
end

-- ---- the module ---------------------------------------------------------

return {
  name = "bare-metal/redfish",
  version = "1.0.0",

  inputs = {
    endpoint = { type = "string", description = "the BMC's base URL, e.g. https://10.0.0.5" },
    username = { type = "string?", description = "Redfish user (HTTP Basic)" },
    password = { type = "string?", sensitive = true, description = "Redfish password" },
    systems = { type = "map", default = {},
                description = "system id -> { power = \"On\"|\"Off\", boot = { target, enabled, mode, generation } }" },
    off_reset_type = { type = "string", default = "GracefulShutdown",
                       description = "ResetType that powers a system off: GracefulShutdown or ForceOff" },
    on_delete = { type = "string", default = "keep",
                  description = "what removing a system's `power` does: keep (leave it as is) or off" },
    power_timeout_s = { type = "integer", default = 300,
                        description = "how long a power change may take" },
    poll_interval_ms = { type = "integer", default = 2000,
                         description = "pause between two reads of a system while waiting" },
  },

  resources = {
    system_power = {
      ---@param ctx table
      ---@param props table {endpoint, username?, password?, system, power_state, off_reset_type, on_delete, timeout_s, poll_interval_ms}
      ---@return string id, table outputs
      create = function(ctx, props)
        local sys = ensure_power(ctx, props, props.power_state)
        return sys["@odata.id"], power_outputs(sys)
      end,

      ---@param ctx table
      ---@param id string|nil the system's URI; nil: recovery of a crashed create
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        -- The system is the object: after a crashed create it is adopted as
        -- is, and the plan then asks again for what it lacks.
        local sys = get_system(ctx, props, id or system_uri(props.system))
        if not sys then
          return nil
        end
        return power_props(props, sys), power_outputs(sys), sys["@odata.id"]
      end,

      ---@param ctx table
      ---@param id string
      ---@param old_props table
      ---@param new_props table
      ---@return table outputs
      update = function(ctx, id, old_props, new_props)
        return power_outputs(ensure_power(ctx, new_props, new_props.power_state))
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        -- A machine is not destroyed by forgetting it: on_delete = "keep"
        -- leaves it as it is, "off" powers it off first.
        if props.on_delete == "off" then
          if get_system(ctx, props, id) then
            ensure_power(ctx, props, "Off")
          end
        end
      end,

      replace_on = { "endpoint", "system" },
      sensitive = { "password" },
    },

    boot_override = {
      ---@param ctx table
      ---@param props table {endpoint, username?, password?, system, target, enabled, mode?, generation}
      ---@return string id, table outputs
      create = function(ctx, props)
        local sys = patch_boot(ctx, props, boot_want(props))
        return sys["@odata.id"], { uri = sys["@odata.id"], state = "armed" }
      end,

      ---@param ctx table
      ---@param id string|nil nil: recovery of a crashed create
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local sys = get_system(ctx, props, id or system_uri(props.system))
        if not sys then
          return nil
        end
        local boot = sys.Boot or {}
        local uri = sys["@odata.id"]
        if boot_matches(props, boot) then
          return boot_props(props, boot), { uri = uri, state = "armed" }, uri
        end
        if id == nil then
          -- A crashed create counts only if the override is really there.
          return nil
        end
        if props.enabled == "Once" and boot.BootSourceOverrideEnabled == "Disabled" then
          -- Redfish resets Enabled to Disabled, keeping the target, when the
          -- system boots with a one-time override: it did what it was for,
          -- and it reads back as the Once override it was (with the target
          -- the machine shows), so the plan stays empty.  It is not re-armed
          -- (that would boot the machine from the same source at every
          -- reboot); a new `generation` arms it again.  A target that is
          -- not ours is drift, and the update that follows arms ours.
          local now = boot_props(props, boot)
          now.enabled = "Once"
          if boot.BootSourceOverrideTarget == props.target then
            ctx.log("info", string.format("%s: the one-time boot override (%s) was consumed "
              .. "by a boot; not re-armed (change `generation` to arm it again)",
              props.system, props.target))
          end
          return now, { uri = uri, state = "consumed" }, uri
        end
        -- Changed behind our back: report what is there.
        return boot_props(props, boot), { uri = uri, state = "changed" }, uri
      end,

      ---@param ctx table
      ---@param id string
      ---@param old_props table
      ---@param new_props table
      ---@return table outputs
      update = function(ctx, id, old_props, new_props)
        -- A new target or mode, or a drifted override put back: one PATCH of
        -- what is wanted (skipped when the system already has it).
        local sys = patch_boot(ctx, new_props, boot_want(new_props))
        return { uri = sys["@odata.id"], state = "armed" }
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local sys = get_system(ctx, props, id)
        if sys and (sys.Boot or {}).BootSourceOverrideEnabled ~= "Disabled" then
          patch_boot(ctx, props, { BootSourceOverrideEnabled = "Disabled" })
        end
      end,

      -- A new generation is a new one-time override: replaced, so arming it
      -- is a create, which is retried until it happens (an update that
      -- failed would be recovered by reading back a generation the machine
      -- cannot show).
      replace_on = { "endpoint", "system", "generation" },
      sensitive = { "password" },
    },
  },

  ---@param inputs table
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local endpoint = inputs.endpoint
    if type(endpoint) == "string" then
      endpoint = trim_slashes(endpoint)
    end
    if not RESET_OFF_TYPES[inputs.off_reset_type] then
      error(string.format("off_reset_type %q: use GracefulShutdown or ForceOff",
        tostring(inputs.off_reset_type)), 0)
    end
    if inputs.on_delete ~= "keep" and inputs.on_delete ~= "off" then
      error(string.format("on_delete %q: use keep or off", tostring(inputs.on_delete)), 0)
    end
    if inputs.power_timeout_s < 1 or inputs.poll_interval_ms < 1 then
      error("power_timeout_s and poll_interval_ms must be positive", 0)
    end

    local ids = {}
    for id in pairs(inputs.systems) do
      ids[#ids + 1] = id
    end
    table.sort(ids)

    local uris, power = {}, {}
    for _, id in ipairs(ids) do
      local entry = inputs.systems[id]
      if type(entry) ~= "table" or entry[1] ~= nil then
        error(string.format("systems.%s: want a map with `power` and/or `boot`", id), 0)
      end
      for k in pairs(entry) do
        if k ~= "power" and k ~= "boot" then
          error(string.format("systems.%s.%s: unknown key (use power, boot)", id, k), 0)
        end
      end
      local common = {
        endpoint = endpoint,
        username = inputs.username,
        password = inputs.password,
        system = id,
      }
      local boot_h
      if entry.boot ~= nil then
        local b = entry.boot
        if type(b) ~= "table" or type(b.target) ~= "string" or b.target == "" then
          error(string.format("systems.%s.boot: want { target = \"Pxe\", enabled = \"Once\" }", id), 0)
        end
        for k in pairs(b) do
          if k ~= "target" and k ~= "enabled" and k ~= "mode" and k ~= "generation" then
            error(string.format("systems.%s.boot.%s: unknown key (use target, enabled, mode, "
              .. "generation)", id, k), 0)
          end
        end
        local enabled = b.enabled or "Once"
        if not ENABLED_VALUES[enabled] then
          error(string.format("systems.%s.boot.enabled %q: use Once or Continuous (remove "
            .. "`boot` to disable the override)", id, tostring(enabled)), 0)
        end
        if b.mode ~= nil and not MODE_VALUES[b.mode] then
          error(string.format("systems.%s.boot.mode %q: use UEFI or Legacy", id, tostring(b.mode)), 0)
        end
        local props = {
          endpoint = common.endpoint, username = common.username, password = common.password,
          system = id, target = b.target, enabled = enabled, mode = b.mode,
          generation = b.generation or 1,
        }
        boot_h = m.resource("boot_override", id, props)
      end
      if entry.power ~= nil then
        if entry.power ~= "On" and entry.power ~= "Off" then
          error(string.format("systems.%s.power %q: use On or Off", id, tostring(entry.power)), 0)
        end
        local props = {
          endpoint = common.endpoint, username = common.username, password = common.password,
          system = id, power_state = entry.power,
          off_reset_type = inputs.off_reset_type, on_delete = inputs.on_delete,
          timeout_s = inputs.power_timeout_s, poll_interval_ms = inputs.poll_interval_ms,
        }
        -- Arm the override before the power change that should boot from it.
        local h = m.resource("system_power", id, props, { depends_on = boot_h and { boot_h } or nil })
        uris[id] = h.id
        power[id] = entry.power
      elseif boot_h then
        uris[id] = boot_h.id
      end
    end

    m.output("systems", uris)
    m.output("power", power)
    m.output("endpoint", endpoint)
  end,
}
