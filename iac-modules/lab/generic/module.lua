--[[
lab/generic - objects in a collection of the lab's generic cloud, labcloud
(examples/lab/labcloud.c).

One `object` resource per entry of the `objects` input.  An object is the
entry's fields plus its name, POSTed to {endpoint}/v1/{collection} with the
create intent as Idempotency-Key, so a retried or crashed create never makes
a second object: read(nil) finds the first one by that key.

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
See README.md in this folder.
]]

-- Fields labcloud owns (or this module derives from the resource name):
-- stripped when an object is read back, refused in the `objects` input.
local SERVER_FIELDS = {
  id = true, created_at = true, version = true, idempotency_key = true, name = true,
}

local function trim_slashes(s)
  return (string.gsub(s, "/+$", ""))
end

-- Percent-encode everything but RFC 3986 unreserved characters.
local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function collection_url(props)
  return trim_slashes(props.endpoint) .. "/v1/" .. props.collection
end

local function object_url(props, id)
  return collection_url(props) .. "/" .. urlencode(id)
end

-- The bearer auth for props.token, or nil.  A token read back from state is
-- only a hash (a table), which cannot authenticate.
local function bearer(props)
  if type(props.token) == "string" and props.token ~= "" then
    return { type = "bearer", token = props.token }
  end
  return nil
end

-- One labcloud call.  expect: the statuses that are not errors.  The driver
-- retries transport errors, 429 and 5xx; a 401 is turned into an error that
-- says what to do about it.
local function call(ctx, props, method, url, expect, extra)
  local req = {
    method = method,
    url = url,
    auth = bearer(props),
    expect = { 401 },
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
      error(string.format("labcloud refused %s %s (401): this resource's token is known only "
        .. "as a hash in state; keep the `token` input set when destroying", method, url), 0)
    end
    error(string.format("labcloud refused %s %s (401): check the `token` input", method, url), 0)
  end
  return resp
end

-- The JSON object to store: the fields plus the name.
local function object_body(props)
  local body = {}
  for k, v in pairs(props.fields or {}) do
    body[k] = v
  end
  body.name = props.name
  return body
end

local function outputs(props, obj)
  return {
    id = obj.id,
    version = obj.version,
    url = object_url(props, obj.id),
  }
end

-- The props an existing object corresponds to, in the shape declare()
-- builds, so an unchanged object compares equal.  endpoint and token are
-- not observable on the object: they are carried over from props.
local function props_from(props, obj)
  local fields = {}
  for k, v in pairs(obj) do
    if not SERVER_FIELDS[k] then
      fields[k] = v
    end
  end
  return {
    endpoint = props.endpoint,
    token = props.token,
    collection = props.collection,
    name = obj.name,
    fields = fields,
  }
end

local function checked_object(obj, what)
  if type(obj) ~= "table" or type(obj.id) ~= "string" or obj.id == "" then
    error("labcloud answered " .. what .. " without an object id", 0)
  end
  return obj
end

return {
  name = "lab/generic",
  version = "1.0.0",

  inputs = {
    endpoint = { type = "string", description = "labcloud base URL, e.g. http://127.0.0.1:8080" },
    token = { type = "string?", sensitive = true,
              description = "bearer token, when labcloud runs with --token" },
    collection = { type = "string", default = "objects",
                   description = "the collection the objects live in: [a-z0-9_-]{1,64}" },
    objects = { type = "map", default = {},
                description = "object name -> map of its fields" },
  },

  resources = {
    object = {
      ---@param ctx table
      ---@param props table {endpoint, token?, collection, name, fields}
      ---@return string id, table outputs
      create = function(ctx, props)
        local headers = {}
        if ctx.intent then
          headers["Idempotency-Key"] = ctx.intent
        end
        local resp = call(ctx, props, "POST", collection_url(props), { 200, 201 }, {
          headers = headers,
          json = object_body(props),
          idempotent = true,
        })
        local obj = checked_object(resp.json, "POST")
        return obj.id, outputs(props, obj)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find what a crashed create() made, by ctx.intent
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local obj
        if id == nil or id == "" then
          if not ctx.intent then
            return nil
          end
          local resp = call(ctx, props, "GET",
            collection_url(props) .. "?idempotency_key=" .. urlencode(ctx.intent), { 200 })
          local items = (resp.json and resp.json.items) or {}
          if #items == 0 then
            return nil
          end
          if #items > 1 then
            error(string.format("labcloud holds %d objects created with intent %s",
              #items, ctx.intent), 0)
          end
          obj = checked_object(items[1], "the listing")
        else
          local resp = call(ctx, props, "GET", object_url(props, id), { 200, 404 })
          if resp.status == 404 then
            return nil
          end
          obj = checked_object(resp.json, "GET")
        end
        return props_from(props, obj), outputs(props, obj), obj.id
      end,

      ---@param ctx table
      ---@param id string
      ---@param old_props table
      ---@param new_props table
      ---@return table outputs
      update = function(ctx, id, old_props, new_props)
        local resp = call(ctx, new_props, "PUT", object_url(new_props, id), { 200 },
          { json = object_body(new_props) })
        return outputs(new_props, checked_object(resp.json, "PUT"))
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        -- 404: already gone, which is what was asked for.
        call(ctx, props, "DELETE", object_url(props, id), { 200, 204, 404 })
      end,

      -- Another server, collection or name is another object.
      replace_on = { "endpoint", "collection", "name" },
      create_before_destroy = false,
      sensitive = { "token" },
    },
  },

  ---@param inputs table {endpoint, token?, collection, objects}
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local endpoint = inputs.endpoint
    if type(endpoint) == "string" then
      endpoint = trim_slashes(endpoint)
    end
    local collection = inputs.collection or "objects"
    if type(collection) == "string" and
        (#collection > 64 or not string.find(collection, "^[a-z0-9_-]+$")) then
      error(string.format("collection %q: use 1 to 64 of [a-z0-9_-]", collection), 0)
    end

    local objects = inputs.objects or {}
    local names = {}
    for name in pairs(objects) do
      names[#names + 1] = name
    end
    table.sort(names)

    local ids, urls = {}, {}
    for _, name in ipairs(names) do
      local fields = objects[name]
      if type(fields) ~= "table" or fields[1] ~= nil then
        error(string.format("objects.%s: want a map of fields", name), 0)
      end
      for k in pairs(fields) do
        if SERVER_FIELDS[k] then
          error(string.format("objects.%s.%s: the field %q is set by labcloud or by this module",
            name, k, k), 0)
        end
      end
      local h = m.resource("object", name, {
        endpoint = endpoint,
        token = inputs.token,
        collection = collection,
        name = name,
        fields = fields,
      })
      ids[name] = h.id
      urls[name] = h.url
    end

    m.output("ids", ids)
    m.output("urls", urls)
    m.output("endpoint", endpoint)
  end,
}
