--[[
public-cloud/aws-dynamodb - Amazon DynamoDB tables and items over the
DynamoDB JSON 1.0 protocol (POST / with X-Amz-Target: DynamoDB_20120810.<Op>),
signed with SigV4 (service "dynamodb") by the HTTP driver.

Two resource types: `table` (key schema, billing mode, tags; create waits
for ACTIVE by polling DescribeTable) and `item` (a key and attributes,
given as a plain map converted to DynamoDB JSON, or in DynamoDB JSON).

Works against AWS and against dynalite (the local lab's DynamoDB emulator).
Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
]]

local KEY_TYPES = { S = true, N = true, B = true }
local BILLING = { PAY_PER_REQUEST = true, PROVISIONED = true }

-- Error types that mean the credentials (or the clock) are wrong.
local AUTH_ERRORS = {
  UnrecognizedClientException = true,
  InvalidSignatureException = true,
  SignatureDoesNotMatchException = true,
  MissingAuthenticationTokenException = true,
  IncompleteSignatureException = true,
  InvalidAccessKeyIdException = true,
  AccessDeniedException = true,
  RequestTimeTooSkewedException = true,
}
-- Error types worth another try after a pause.
local THROTTLED = {
  ThrottlingException = true,
  ProvisionedThroughputExceededException = true,
  RequestLimitExceeded = true,
  LimitExceededException = true,
}

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

local function auth_of(props)
  for _, k in ipairs({ "access_key", "secret_key" }) do
    if type(props[k]) ~= "string" then
      error(string.format("aws-dynamodb: the %s of this resource is known only as a hash in "
        .. "the state; keep the module's `access_key` and `secret_key` inputs set while it "
        .. "still declares this resource (destroy with the plan that created it)", k), 0)
    end
  end
  local auth = {
    type = "aws_sigv4",
    access_key = props.access_key,
    secret_key = props.secret_key,
    region = props.region,
    service = "dynamodb",
  }
  if type(props.session_token) == "string" and props.session_token ~= "" then
    auth.session_token = props.session_token
  end
  return auth
end

-- One DynamoDB operation.  Returns the decoded answer, or nil, the error
-- type (the part after '#', e.g. "ResourceNotFoundException") and its
-- message.  Every operation this module sends may be repeated safely (the
-- handlers check what a repeat finds), so the driver may retry 5xx too.
local function ddb(ctx, props, op, body)
  local tries = 0
  while true do
    local resp = ctx.http.request({
      method = "POST",
      url = props.endpoint .. "/",
      headers = {
        ["Content-Type"] = "application/x-amz-json-1.0",
        ["X-Amz-Target"] = "DynamoDB_20120810." .. op,
      },
      json = body,
      auth = auth_of(props),
      expect = { 200, 400, 403 },
      idempotent = true,
    })
    if resp.status == 200 then
      return resp.json or {}
    end
    local j = resp.json or {}
    local etype = tostring(j.__type or ("HTTP" .. resp.status))
    etype = string.match(etype, "#(.+)$") or etype
    local msg = tostring(j.message or j.Message or resp.body)
    if AUTH_ERRORS[etype] or resp.status == 403 then
      error(string.format("DynamoDB refused %s (%d %s: %s): check the module's access_key, "
        .. "secret_key and region", op, resp.status, etype, msg), 0)
    end
    tries = tries + 1
    if not (THROTTLED[etype] and tries < 8) then
      return nil, etype, msg
    end
    ctx.sleep(math.min(100 * 2 ^ tries, 5000))
  end
end

local function fail(op, etype, msg)
  error(string.format("DynamoDB %s failed: %s: %s", op, etype, msg), 0)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

---------------------------------------------------------------------------
-- Tables
---------------------------------------------------------------------------

local function table_outputs(t)
  return { name = t.TableName, arn = t.TableArn }
end

-- DescribeTable: the table in any status, or nil when there is none.
local function describe_any(ctx, props)
  local r, etype, msg = ddb(ctx, props, "DescribeTable", { TableName = props.name })
  if not r then
    if etype == "ResourceNotFoundException" then
      return nil
    end
    fail("DescribeTable " .. props.name, etype, msg)
  end
  if type(r.Table) ~= "table" then
    error("DynamoDB DescribeTable " .. props.name .. " answered without a Table", 0)
  end
  return r.Table
end

-- The table, or nil when there is none or it is being deleted.
local function describe(ctx, props)
  local t = describe_any(ctx, props)
  if t and t.TableStatus == "DELETING" then
    return nil
  end
  return t
end

-- Poll DescribeTable until the table is ACTIVE; returns its description.
local function wait_active(ctx, props)
  local start, delay = ctx.time.now(), 100
  while true do
    local t = describe(ctx, props)
    if not t then
      error("DynamoDB table " .. props.name .. " disappeared while waiting for it to be ACTIVE", 0)
    end
    if t.TableStatus == "ACTIVE" then
      return t
    end
    if ctx.time.now() - start > props.timeout_s then
      error(string.format("DynamoDB table %s is still %s after %d s", props.name,
        tostring(t.TableStatus), props.timeout_s), 0)
    end
    ctx.sleep(delay)
    delay = math.min(delay * 2, 2000)
  end
end

-- Poll until DescribeTable no longer finds the table (DELETING is not gone:
-- the name stays taken until then).
local function wait_gone(ctx, props)
  local start, delay = ctx.time.now(), 100
  while describe_any(ctx, props) do
    if ctx.time.now() - start > props.timeout_s then
      error(string.format("DynamoDB table %s still exists %d s after DeleteTable", props.name,
        props.timeout_s), 0)
    end
    ctx.sleep(delay)
    delay = math.min(delay * 2, 2000)
  end
end

local function read_tags(ctx, props, arn)
  local tags, token = {}, nil
  repeat
    local r, etype, msg = ddb(ctx, props, "ListTagsOfResource",
      { ResourceArn = arn, NextToken = token })
    if not r then
      if etype == "ResourceNotFoundException" then
        return nil
      end
      fail("ListTagsOfResource " .. props.name, etype, msg)
    end
    for _, tag in ipairs(r.Tags or {}) do
      tags[tag.Key] = tag.Value
    end
    token = r.NextToken
  until token == nil
  return tags
end

local function write_tags(ctx, props, arn, old, new)
  local remove, add = {}, {}
  for _, k in ipairs(sorted_keys(old)) do
    if new[k] == nil then
      remove[#remove + 1] = k
    end
  end
  for _, k in ipairs(sorted_keys(new)) do
    if old[k] ~= new[k] then
      add[#add + 1] = { Key = k, Value = new[k] }
    end
  end
  if #remove > 0 then
    local r, etype, msg = ddb(ctx, props, "UntagResource", { ResourceArn = arn, TagKeys = remove })
    if not r then
      fail("UntagResource " .. props.name, etype, msg)
    end
  end
  if #add > 0 then
    local r, etype, msg = ddb(ctx, props, "TagResource", { ResourceArn = arn, Tags = add })
    if not r then
      fail("TagResource " .. props.name, etype, msg)
    end
  end
end

-- The props a described table corresponds to, in the shape declare() builds.
local function table_props(props, t, tags)
  local types, hash, range = {}, nil, nil
  for _, a in ipairs(t.AttributeDefinitions or {}) do
    types[a.AttributeName] = a.AttributeType
  end
  for _, k in ipairs(t.KeySchema or {}) do
    local key = { name = k.AttributeName, type = types[k.AttributeName] }
    if k.KeyType == "HASH" then
      hash = key
    else
      range = key
    end
  end
  local billing = (t.BillingModeSummary and t.BillingModeSummary.BillingMode) or "PROVISIONED"
  local now = {
    endpoint = props.endpoint,
    region = props.region,
    access_key = props.access_key,
    secret_key = props.secret_key,
    session_token = props.session_token,
    timeout_s = props.timeout_s,
    name = t.TableName,
    hash_key = hash,
    range_key = range,
    billing_mode = billing,
    tags = tags,
  }
  if billing == "PROVISIONED" and t.ProvisionedThroughput then
    now.read_capacity = t.ProvisionedThroughput.ReadCapacityUnits
    now.write_capacity = t.ProvisionedThroughput.WriteCapacityUnits
  end
  return now
end

local function same_key(a, b)
  if a == nil or b == nil then
    return a == nil and b == nil
  end
  return a.name == b.name and a.type == b.type
end

local function billing_request(props)
  local req = { BillingMode = props.billing_mode }
  if props.billing_mode == "PROVISIONED" then
    req.ProvisionedThroughput = {
      ReadCapacityUnits = props.read_capacity,
      WriteCapacityUnits = props.write_capacity,
    }
  end
  return req
end

---------------------------------------------------------------------------
-- Items: plain Lua values <-> DynamoDB JSON
---------------------------------------------------------------------------

local function is_list(ctx, v)
  return v[1] ~= nil or ctx.json.encode(v) == "[]"
end

local function number_text(v)
  if math.type(v) == "integer" then
    return tostring(v)
  end
  if v ~= v or v == math.huge or v == -math.huge then
    error("DynamoDB numbers must be finite", 0)
  end
  local s = string.format("%.14g", v)
  if tonumber(s) ~= v then
    s = string.format("%.17g", v)
  end
  return s
end

-- A plain value as a DynamoDB attribute value.
local function to_ddb(ctx, v)
  local t = type(v)
  if t == "string" then
    return { S = v }
  elseif t == "number" then
    return { N = number_text(v) }
  elseif t == "boolean" then
    return { BOOL = v }
  elseif v == ctx.json.null then
    return { NULL = true }
  elseif t == "table" then
    if is_list(ctx, v) then
      local l = {}
      for i, x in ipairs(v) do
        l[i] = to_ddb(ctx, x)
      end
      return { L = ctx.json.array(l) }
    end
    local m = {}
    for k, x in pairs(v) do
      m[k] = to_ddb(ctx, x)
    end
    return { M = m }
  end
  error("cannot store a " .. t .. " in DynamoDB", 0)
end

local function number_value(s)
  local n = tonumber(s)
  if n and math.type(n) == "float" and not string.find(s, "[.eE]") then
    return n -- an integer too large for Lua: kept as a float
  end
  return n
end

-- A DynamoDB attribute value as a plain value.  Sets and binaries have no
-- plain form: they stay typed ({SS = {...}}, {B = "..."}).
local function from_ddb(ctx, av)
  if av.S ~= nil then
    return av.S
  elseif av.N ~= nil then
    return number_value(av.N)
  elseif av.BOOL ~= nil then
    return av.BOOL
  elseif av.NULL ~= nil then
    return ctx.json.null
  elseif av.L ~= nil then
    local l = {}
    for i, x in ipairs(av.L) do
      l[i] = from_ddb(ctx, x)
    end
    return ctx.json.array(l)
  elseif av.M ~= nil then
    local m = {}
    for k, x in pairs(av.M) do
      m[k] = from_ddb(ctx, x)
    end
    return m
  end
  return av
end

-- A map of attributes in DynamoDB JSON, from props (format "plain" or "dynamodb").
local function ddb_map(ctx, values, format)
  local out = {}
  for k, v in pairs(values or {}) do
    out[k] = format == "dynamodb" and v or to_ddb(ctx, v)
  end
  return out
end

-- Structural equality; numbers by value (42 == 42.0).
local function deep_equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function item_id(props)
  local parts = {}
  for _, k in ipairs(sorted_keys(props.key)) do
    local v = props.key[k]
    if type(v) == "table" then
      v = v.S or v.N or v.B or "?"
    end
    parts[#parts + 1] = k .. "=" .. tostring(v)
  end
  return props.table .. "/" .. table.concat(parts, ",")
end

local function full_item(ctx, props)
  local item = ddb_map(ctx, props.attributes, props.format)
  for k, v in pairs(ddb_map(ctx, props.key, props.format)) do
    item[k] = v
  end
  return item
end

-- GetItem (consistent).  Returns the item in DynamoDB JSON, or nil when it
-- or its table is gone.
local function get_item(ctx, props)
  local r, etype, msg = ddb(ctx, props, "GetItem", {
    TableName = props.table,
    Key = ddb_map(ctx, props.key, props.format),
    ConsistentRead = true,
  })
  if not r then
    if etype == "ResourceNotFoundException" then
      return nil
    end
    fail("GetItem " .. item_id(props), etype, msg)
  end
  return r.Item
end

-- The props an item corresponds to: the key from props, the attributes as
-- stored (minus the key attributes), in props.format.
local function item_props(ctx, props, item)
  local attrs = {}
  for k, av in pairs(item) do
    if props.key[k] == nil then
      attrs[k] = props.format == "dynamodb" and av or from_ddb(ctx, av)
    end
  end
  return {
    endpoint = props.endpoint,
    region = props.region,
    access_key = props.access_key,
    secret_key = props.secret_key,
    session_token = props.session_token,
    table = props.table,
    format = props.format,
    key = props.key,
    attributes = attrs,
  }
end

local function put_item(ctx, props, condition)
  local req = { TableName = props.table, Item = full_item(ctx, props) }
  if condition then
    local first = sorted_keys(props.key)[1]
    req.ConditionExpression = "attribute_not_exists(#k)"
    req.ExpressionAttributeNames = { ["#k"] = first }
  end
  return ddb(ctx, props, "PutItem", req)
end

---------------------------------------------------------------------------
-- Declaration helpers
---------------------------------------------------------------------------

local function check_fields(entry, allowed, where)
  if type(entry) ~= "table" or entry[1] ~= nil then
    error(where .. ": want a map of settings", 0)
  end
  for k in pairs(entry) do
    if not allowed[k] then
      local names = sorted_keys(allowed)
      error(string.format("%s: unknown setting %q (settings: %s)", where, tostring(k),
        table.concat(names, ", ")), 0)
    end
  end
end

local function check_key(k, where)
  if type(k) == "string" then
    k = { name = k, type = "S" }
  end
  if type(k) ~= "table" or type(k.name) ~= "string" or k.name == ""
      or not KEY_TYPES[k.type or "S"] then
    error(where .. ": want an attribute name, or { name = <attribute>, type = \"S\"|\"N\"|\"B\" }", 0)
  end
  return { name = k.name, type = k.type or "S" }
end

local function check_capacity(v, where)
  if math.type(v) ~= "integer" or v < 1 then
    error(where .. ": want a positive integer", 0)
  end
  return v
end

return {
  name = "public-cloud/aws-dynamodb",
  version = "1.0.0",

  inputs = {
    region = { type = "string", default = "us-east-1", description = "AWS region" },
    endpoint = { type = "string?",
      description = "DynamoDB endpoint URL; default https://dynamodb.<region>.amazonaws.com" },
    access_key = { type = "string", sensitive = true, description = "AWS access key id" },
    secret_key = { type = "string", sensitive = true, description = "AWS secret access key" },
    session_token = { type = "string?", sensitive = true,
      description = "session token of temporary credentials" },
    timeout_s = { type = "integer", default = 600,
      description = "how long to wait for a table to become ACTIVE or to go away" },
    tables = { type = "map", default = {},
      description = "table -> { name?, hash_key, range_key?, billing_mode?, read_capacity?, "
        .. "write_capacity?, tags? }" },
    items = { type = "map", default = {},
      description = "item -> { table, key, attributes?, format? (\"plain\" or \"dynamodb\") }" },
  },

  resources = {
    table = {
      ---@param ctx table
      ---@param props table {endpoint, region, access_key, secret_key, session_token?, timeout_s, name, hash_key, range_key?, billing_mode, read_capacity?, write_capacity?, tags}
      ---@return string id, table outputs
      create = function(ctx, props)
        local keys, attrs = { { AttributeName = props.hash_key.name, KeyType = "HASH" } },
          { { AttributeName = props.hash_key.name, AttributeType = props.hash_key.type } }
        if props.range_key then
          keys[2] = { AttributeName = props.range_key.name, KeyType = "RANGE" }
          attrs[2] = { AttributeName = props.range_key.name, AttributeType = props.range_key.type }
        end
        local req = billing_request(props)
        req.TableName = props.name
        req.KeySchema = keys
        req.AttributeDefinitions = attrs
        local r, etype, msg = ddb(ctx, props, "CreateTable", req)
        if not r and etype == "ResourceInUseException" then
          local t = describe_any(ctx, props)
          if not t or t.TableStatus == "DELETING" then
            -- a table of this name is going away (a replace): wait, retry
            wait_gone(ctx, props)
            r, etype, msg = ddb(ctx, props, "CreateTable", req)
          end
        end
        if not r then
          if etype ~= "ResourceInUseException" then
            fail("CreateTable " .. props.name, etype, msg)
          end
          -- The table exists: adopt it if it is the table asked for (an
          -- earlier attempt of this create), refuse otherwise.
          local t = describe(ctx, props)
          local now = t and table_props(props, t, {})
          if not now or not same_key(now.hash_key, props.hash_key)
              or not same_key(now.range_key, props.range_key) then
            error(string.format("DynamoDB table %s already exists with another key schema; "
              .. "import it or choose another name", props.name), 0)
          end
          ctx.log("info", "table " .. props.name .. " already exists with this key schema: adopting it")
        end
        local t = wait_active(ctx, props)
        local now = table_props(props, t, {})
        if now.billing_mode ~= props.billing_mode or now.read_capacity ~= props.read_capacity
            or now.write_capacity ~= props.write_capacity then
          local upd = billing_request(props)
          upd.TableName = props.name
          local u, ut, um = ddb(ctx, props, "UpdateTable", upd)
          if not u then
            fail("UpdateTable " .. props.name, ut, um)
          end
          t = wait_active(ctx, props)
        end
        local old = read_tags(ctx, props, t.TableArn) or {}
        write_tags(ctx, props, t.TableArn, old, props.tags)
        return props.name, table_outputs(t)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the table an interrupted create made, by name
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local t = describe(ctx, props)
        if not t then
          return nil
        end
        local tags = read_tags(ctx, props, t.TableArn)
        if not tags then
          return nil
        end
        return table_props(props, t, tags), table_outputs(t), props.name
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        local t = wait_active(ctx, new)
        if old.billing_mode ~= new.billing_mode or old.read_capacity ~= new.read_capacity
            or old.write_capacity ~= new.write_capacity then
          local upd = billing_request(new)
          upd.TableName = new.name
          local r, etype, msg = ddb(ctx, new, "UpdateTable", upd)
          if not r then
            fail("UpdateTable " .. new.name, etype, msg)
          end
          t = wait_active(ctx, new)
        end
        write_tags(ctx, new, t.TableArn, old.tags or {}, new.tags or {})
        return table_outputs(t)
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        for _ = 1, 20 do
          local r, etype, msg = ddb(ctx, props, "DeleteTable", { TableName = props.name })
          if r or etype == "ResourceNotFoundException" then
            wait_gone(ctx, props)
            return
          end
          if etype ~= "ResourceInUseException" then
            fail("DeleteTable " .. props.name, etype, msg)
          end
          -- still being created or updated: wait, then try again
          if not describe(ctx, props) then
            return
          end
          wait_active(ctx, props)
        end
        error("DynamoDB table " .. props.name .. " stays in use; DeleteTable gave up", 0)
      end,

      replace_on = { "endpoint", "region", "name", "hash_key", "range_key" },
      sensitive = { "access_key", "secret_key", "session_token" },
    },

    item = {
      ---@param ctx table
      ---@param props table {endpoint, region, access_key, secret_key, session_token?, table, format, key, attributes}
      ---@return string id, table outputs
      create = function(ctx, props)
        local r, etype, msg = put_item(ctx, props, true)
        if not r then
          if etype ~= "ConditionalCheckFailedException" then
            fail("PutItem " .. item_id(props), etype, msg)
          end
          -- An item with this key exists.  If it is exactly the one asked
          -- for, a retried request already wrote it; otherwise refuse to
          -- overwrite data this plan did not create.
          local item = get_item(ctx, props)
          if not item or not deep_equal(item_props(ctx, props, item).attributes,
              props.attributes or {}) then
            error(string.format("DynamoDB item %s already exists with other attributes; "
              .. "import it or remove it first", item_id(props)), 0)
          end
        end
        return item_id(props), { table = props.table }
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the item an interrupted create made, by its key
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local item = get_item(ctx, props)
        if not item then
          return nil
        end
        return item_props(ctx, props, item), { table = props.table }, item_id(props)
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        local r, etype, msg = put_item(ctx, new, false)
        if not r then
          fail("PutItem " .. item_id(new), etype, msg)
        end
        return { table = new.table }
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local r, etype, msg = ddb(ctx, props, "DeleteItem", {
          TableName = props.table,
          Key = ddb_map(ctx, props.key, props.format),
        })
        if not r and etype ~= "ResourceNotFoundException" then
          fail("DeleteItem " .. item_id(props), etype, msg)
        end
      end,

      replace_on = { "endpoint", "region", "table", "key", "format" },
      sensitive = { "access_key", "secret_key", "session_token" },
    },
  },

  ---@param inputs table {region, endpoint?, access_key, secret_key, session_token?, timeout_s, tables, items}
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local region = inputs.region
    local endpoint = inputs.endpoint or ("https://dynamodb." .. region .. ".amazonaws.com")
    if type(endpoint) == "string" then
      endpoint = string.gsub(endpoint, "/+$", "")
    end
    local conn = {
      endpoint = endpoint,
      region = region,
      access_key = inputs.access_key,
      secret_key = inputs.secret_key,
      session_token = inputs.session_token,
    }
    local function with_conn(t)
      for k, v in pairs(conn) do
        t[k] = v
      end
      return t
    end

    local handles, arns = {}, {}
    for _, name in ipairs(sorted_keys(inputs.tables)) do
      local t = inputs.tables[name]
      local where = "tables." .. name
      check_fields(t, { name = true, hash_key = true, range_key = true, billing_mode = true,
        read_capacity = true, write_capacity = true, tags = true }, where)
      local table_name = t.name or name
      if type(table_name) ~= "string" or #table_name < 3 or #table_name > 255
          or not string.find(table_name, "^[%w_.-]+$") then
        error(where .. ": table name: use 3 to 255 of [a-zA-Z0-9_.-]", 0)
      end
      local billing = t.billing_mode or "PAY_PER_REQUEST"
      if not BILLING[billing] then
        error(where .. ".billing_mode: want PAY_PER_REQUEST or PROVISIONED", 0)
      end
      local props = with_conn({
        timeout_s = inputs.timeout_s,
        name = table_name,
        hash_key = check_key(t.hash_key, where .. ".hash_key"),
        range_key = t.range_key ~= nil and check_key(t.range_key, where .. ".range_key") or nil,
        billing_mode = billing,
        tags = t.tags or {},
      })
      if billing == "PROVISIONED" then
        props.read_capacity = check_capacity(t.read_capacity, where .. ".read_capacity")
        props.write_capacity = check_capacity(t.write_capacity, where .. ".write_capacity")
      elseif t.read_capacity ~= nil or t.write_capacity ~= nil then
        error(where .. ": read_capacity and write_capacity need billing_mode = \"PROVISIONED\"", 0)
      end
      for k, v in pairs(props.tags) do
        if type(k) ~= "string" or type(v) ~= "string" then
          error(where .. ".tags: want a map of strings", 0)
        end
      end
      local h = m.resource("table", name, props)
      handles[name] = h
      arns[name] = h.arn
    end

    local ids = {}
    for _, name in ipairs(sorted_keys(inputs.items)) do
      local it = inputs.items[name]
      local where = "items." .. name
      check_fields(it, { table = true, key = true, attributes = true, format = true }, where)
      if type(it.table) ~= "string" then
        error(where .. ".table: want the name of a table", 0)
      end
      local format = it.format or "plain"
      if format ~= "plain" and format ~= "dynamodb" then
        error(where .. ".format: want \"plain\" or \"dynamodb\"", 0)
      end
      if type(it.key) ~= "table" or next(it.key) == nil or it.key[1] ~= nil then
        error(where .. ".key: want a map of the key attributes", 0)
      end
      local attrs = it.attributes or {}
      for k in pairs(attrs) do
        if it.key[k] ~= nil then
          error(string.format("%s.attributes.%s: a key attribute belongs in key", where, k), 0)
        end
      end
      local h = m.resource("item", name, with_conn({
        -- a table of this module: a reference, so the item waits for it
        table = handles[it.table] and handles[it.table].id or it.table,
        format = format,
        key = it.key,
        attributes = attrs,
      }))
      ids[name] = h.id
    end

    m.output("table_arns", arns)
    m.output("item_ids", ids)
    m.output("endpoint", endpoint)
  end,
}
