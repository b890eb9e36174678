--[[
public-cloud/azure-blob - Azure Blob Storage containers and block blobs
over the Blob service REST API, signed with SharedKey in this module.

Two resource types: `container` (metadata) and `blob` (content, content
type, metadata).  Each request carries x-ms-date (ctx.time.http_date) and
x-ms-version 2021-08-06 and an `Authorization: SharedKey <account>:<sig>`
header, sig = base64(HMAC-SHA256(base64decode(account_key), string-to-sign))
with the string-to-sign built as the Blob service specifies (sharedkey.lua).

Works against Azure and against azurite (the local lab's emulator, which
verifies SharedKey signatures).  Plain Lua 5.4 for mecorch's sandbox: no
I/O except through ctx.
]]

local sharedkey = require("sharedkey")

local API_VERSION = "2021-08-06"
local DEFAULT_CONTENT_TYPE = "application/octet-stream"

-- Statuses the module inspects itself (the driver raises on the others,
-- after retrying 5xx and connection failures).
local HANDLED = { 200, 201, 202, 400, 403, 404, 409, 412 }

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

-- Percent-encode everything but RFC 3986 unreserved characters; with
-- keep_slash, '/' too (virtual directories in blob names).
local function urlencode(s, keep_slash)
  local pattern = keep_slash and "[^%w%-%._~/]" or "[^%w%-%._~]"
  return (string.gsub(s, pattern, function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function container_path(container)
  return "/" .. urlencode(container)
end

local function blob_path(container, blob)
  return container_path(container) .. "/" .. urlencode(blob, true)
end

local function check_key(props)
  if type(props.account_key) ~= "string" then
    error("azure-blob: the account_key of this resource is known only as a hash in the state; "
      .. "keep the module's `account_key` input set while it still declares this resource "
      .. "(destroy with the plan that created it)", 0)
  end
end

-- One signed Blob service call.  path: the resource path below the
-- endpoint ("/container/blob"); query: a map of query parameters.
-- Returns the response; resp.code / resp.message hold the service's error
-- when the status is not 2xx.  A refused signature is raised here.
local function call(ctx, props, method, path, query, headers, body)
  check_key(props)
  local h = {}
  for k, v in pairs(headers or {}) do
    h[k] = v
  end
  h["x-ms-date"] = ctx.time.http_date()
  h["x-ms-version"] = API_VERSION
  local url = sharedkey.url(props.endpoint, path, query)
  h["Authorization"] = sharedkey.authorization(ctx, {
    account = props.account,
    key = props.account_key,
    method = method,
    resource = sharedkey.resource_path(props.endpoint, path),
    query = query,
    headers = h,
    content_length = body and #body or 0,
  })
  local resp = ctx.http.request({
    method = method,
    url = url,
    headers = h,
    body = body,
    expect = HANDLED,
  })
  if resp.status >= 300 then
    resp.code = string.match(resp.body or "", "<Code>(.-)</Code>")
      or resp.headers["x-ms-error-code"] or ("HTTP" .. resp.status)
    resp.message = string.match(resp.body or "", "<Message>(.-)</Message>") or ""
    resp.message = string.gsub(resp.message, "%s+", " ")
    if resp.status == 403 then
      error(string.format("Azure refused %s %s (403 %s: %s): check the module's account and "
        .. "account_key", method, url, resp.code, resp.message), 0)
    end
  end
  return resp
end

local function fail(resp, what)
  error(string.format("Azure %s failed: %d %s: %s", what, resp.status, resp.code or "",
    resp.message or ""), 0)
end

-- x-ms-meta-* request headers for a metadata map.
local function meta_headers(metadata, headers)
  headers = headers or {}
  for k, v in pairs(metadata or {}) do
    headers["x-ms-meta-" .. k] = v
  end
  return headers
end

-- The metadata map in a response's headers (names come back lower case).
local function meta_of(resp)
  local meta = {}
  for k, v in pairs(resp.headers) do
    local name = string.match(k, "^x%-ms%-meta%-(.+)$")
    if name then
      meta[name] = v
    end
  end
  return meta
end

local function conn_props(props, t)
  t.endpoint = props.endpoint
  t.account = props.account
  t.account_key = props.account_key
  return t
end

---------------------------------------------------------------------------
-- Containers
---------------------------------------------------------------------------

local function container_outputs(props)
  return { name = props.name, url = props.endpoint .. container_path(props.name) }
end

-- Get Container Properties: props_now, or nil when there is no container.
local function read_container(ctx, props)
  local resp = call(ctx, props, "GET", container_path(props.name), { restype = "container" })
  if resp.status == 404 then
    return nil
  elseif resp.status ~= 200 then
    fail(resp, "Get Container Properties " .. props.name)
  end
  return conn_props(props, { name = props.name, metadata = meta_of(resp) })
end

local function set_container_metadata(ctx, props)
  local resp = call(ctx, props, "PUT", container_path(props.name),
    { restype = "container", comp = "metadata" }, meta_headers(props.metadata))
  if resp.status ~= 200 then
    fail(resp, "Set Container Metadata " .. props.name)
  end
end

---------------------------------------------------------------------------
-- Blobs
---------------------------------------------------------------------------

local function blob_bytes(ctx, props)
  if props.content_base64 ~= nil then
    return ctx.crypto.base64_decode(props.content_base64)
  end
  return props.content or ""
end

local function blob_outputs(props, resp)
  return {
    etag = resp.headers["etag"],
    content_md5 = resp.headers["content-md5"],
    url = props.endpoint .. blob_path(props.container, props.name),
  }
end

local function put_blob(ctx, props)
  local body = blob_bytes(ctx, props)
  local headers = meta_headers(props.metadata, {
    ["x-ms-blob-type"] = "BlockBlob",
    ["Content-Type"] = props.content_type,
    ["Content-MD5"] = ctx.crypto.md5(body, "base64"),
  })
  local resp = call(ctx, props, "PUT", blob_path(props.container, props.name), nil, headers, body)
  if resp.status == 404 then
    error(string.format("Azure Put Blob %s/%s: the container does not exist (%s)",
      props.container, props.name, resp.code), 0)
  elseif resp.status ~= 201 then
    fail(resp, "Put Blob " .. props.container .. "/" .. props.name)
  end
  return blob_outputs(props, resp)
end

-- The blob as it is: props_now and outputs; nil when it (or its container) is gone.
local function read_blob(ctx, props)
  local path = blob_path(props.container, props.name)
  local resp = call(ctx, props, "HEAD", path)
  if resp.status == 404 then
    return nil
  elseif resp.status ~= 200 then
    fail(resp, "Get Blob Properties " .. props.container .. "/" .. props.name)
  end
  -- The service keeps the MD5 of a blob uploaded in one Put Blob; when it
  -- matches the desired bytes the content is unchanged, otherwise fetch
  -- the bytes to show what is there.
  local content, content_base64 = props.content, props.content_base64
  local md5 = resp.headers["content-md5"]
  if md5 == nil or md5 ~= ctx.crypto.md5(blob_bytes(ctx, props), "base64") then
    local get = call(ctx, props, "GET", path)
    if get.status == 404 then
      return nil
    elseif get.status ~= 200 then
      fail(get, "Get Blob " .. props.container .. "/" .. props.name)
    end
    if props.content_base64 ~= nil or not utf8.len(get.body) then
      content, content_base64 = nil, ctx.crypto.base64_encode(get.body)
    else
      content, content_base64 = get.body, nil
    end
  end
  return conn_props(props, {
    container = props.container,
    name = props.name,
    content = content,
    content_base64 = content_base64,
    content_type = resp.headers["content-type"] or DEFAULT_CONTENT_TYPE,
    metadata = meta_of(resp),
  }), blob_outputs(props, resp)
end

---------------------------------------------------------------------------
-- Declaration helpers
---------------------------------------------------------------------------

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

local function check_fields(entry, allowed, where)
  if type(entry) ~= "table" or entry[1] ~= nil then
    error(where .. ": want a map of settings", 0)
  end
  for k in pairs(entry) do
    if not allowed[k] then
      error(string.format("%s: unknown setting %q (settings: %s)", where, tostring(k),
        table.concat(sorted_keys(allowed), ", ")), 0)
    end
  end
end

-- Metadata names are C# identifiers, case-insensitive: kept lower case,
-- as the service answers them.
local function check_metadata(meta, where)
  local out = {}
  if meta == nil then
    return out
  end
  if type(meta) ~= "table" or meta[1] ~= nil then
    error(where .. ": want a map of strings", 0)
  end
  for k, v in pairs(meta) do
    if type(k) ~= "string" or not string.find(k, "^[%a_][%w_]*$") then
      error(string.format("%s: metadata name %q: use a letter or _ then letters, digits, _",
        where, tostring(k)), 0)
    end
    if type(v) ~= "string" or string.find(v, "[\r\n]") or string.find(v, "^%s") or
        string.find(v, "%s$") then
      error(string.format("%s.%s: want a one-line string without leading or trailing spaces",
        where, k), 0)
    end
    out[string.lower(k)] = v
  end
  return out
end

local function check_container_name(name, where)
  if type(name) ~= "string" or #name < 3 or #name > 63
      or not string.find(name, "^[a-z0-9][a-z0-9-]*[a-z0-9]$")
      or string.find(name, "--", 1, true) then
    error(string.format("%s: container name %q: use 3 to 63 of [a-z0-9-], starting and ending "
      .. "with a letter or digit, no double dash", where, tostring(name)), 0)
  end
end

return {
  name = "public-cloud/azure-blob",
  version = "1.0.0",

  inputs = {
    account = { type = "string", description = "storage account name" },
    account_key = { type = "string", sensitive = true,
      description = "storage account key (base64), for SharedKey signing" },
    endpoint = { type = "string?",
      description = "Blob service URL; default https://<account>.blob.core.windows.net "
        .. "(azurite: http://127.0.0.1:10000/devstoreaccount1)" },
    containers = { type = "map", default = {},
      description = "container -> { name = <default the key>, metadata = map }" },
    blobs = { type = "map", default = {},
      description = "blob -> { container, name = <default the key>, content | content_base64, "
        .. "content_type, metadata }" },
  },

  resources = {
    container = {
      ---@param ctx table
      ---@param props table {endpoint, account, account_key, name, metadata}
      ---@return string id, table outputs
      create = function(ctx, props)
        local resp = call(ctx, props, "PUT", container_path(props.name), { restype = "container" },
          meta_headers(props.metadata))
        if resp.status == 409 and resp.code == "ContainerAlreadyExists" then
          -- Containers have no owner within an account: adopt it and make
          -- its metadata the desired one.
          ctx.log("info", "container " .. props.name .. " already exists: adopting it")
          set_container_metadata(ctx, props)
        elseif resp.status ~= 201 then
          fail(resp, "Create Container " .. props.name)
        end
        return props.name, container_outputs(props)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the container an interrupted create made, by name
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local now = read_container(ctx, props)
        if not now then
          return nil
        end
        return now, container_outputs(props), props.name
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        set_container_metadata(ctx, new)
        return container_outputs(new)
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local resp = call(ctx, props, "DELETE", container_path(props.name), { restype = "container" })
        if resp.status ~= 202 and resp.status ~= 404 then
          fail(resp, "Delete Container " .. props.name)
        end
      end,

      replace_on = { "endpoint", "account", "name" },
      sensitive = { "account_key" },
    },

    blob = {
      ---@param ctx table
      ---@param props table {endpoint, account, account_key, container, name, content|content_base64, content_type, metadata}
      ---@return string id, table outputs
      create = function(ctx, props)
        return props.container .. "/" .. props.name, put_blob(ctx, props)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the blob an interrupted create made, by container and name
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local now, outputs = read_blob(ctx, props)
        if not now then
          return nil
        end
        return now, outputs, props.container .. "/" .. props.name
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        -- Put Blob replaces content, type and metadata in one call.
        return put_blob(ctx, new)
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local resp = call(ctx, props, "DELETE", blob_path(props.container, props.name))
        if resp.status ~= 202 and resp.status ~= 404 then
          fail(resp, "Delete Blob " .. props.container .. "/" .. props.name)
        end
      end,

      replace_on = { "endpoint", "account", "container", "name" },
      sensitive = { "account_key" },
    },
  },

  ---@param inputs table {account, account_key, endpoint?, containers, blobs}
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local account = inputs.account
    if type(account) == "string" and not string.find(account, "^[a-z0-9]+$") then
      error(string.format("account %q: use lower-case letters and digits", account), 0)
    end
    local key = inputs.account_key
    if type(key) == "string" and (#key == 0 or #key % 4 ~= 0
        or not string.find(key, "^[A-Za-z0-9+/]+=?=?$")) then
      error("account_key: want the storage account key as base64 text", 0)
    end
    local endpoint = inputs.endpoint or ("https://" .. account .. ".blob.core.windows.net")
    if type(endpoint) == "string" then
      endpoint = string.gsub(endpoint, "/+$", "")
    end
    local function with_conn(t)
      t.endpoint = endpoint
      t.account = account
      t.account_key = inputs.account_key
      return t
    end

    local handles, container_urls = {}, {}
    for _, key in ipairs(sorted_keys(inputs.containers)) do
      local c = inputs.containers[key]
      local where = "containers." .. key
      check_fields(c, { name = true, metadata = true }, where)
      local name = c.name or key
      check_container_name(name, where)
      local h = m.resource("container", key, with_conn({
        name = name,
        metadata = check_metadata(c.metadata, where .. ".metadata"),
      }))
      handles[key] = h
      container_urls[key] = h.url
    end

    local blob_urls, etags = {}, {}
    for _, key in ipairs(sorted_keys(inputs.blobs)) do
      local b = inputs.blobs[key]
      local where = "blobs." .. key
      check_fields(b, { container = true, name = true, content = true, content_base64 = true,
        content_type = true, metadata = true }, where)
      if type(b.container) ~= "string" then
        error(where .. ".container: want the name of a container", 0)
      end
      local name = b.name or key
      if type(name) ~= "string" or name == "" or #name > 1024 then
        error(where .. ".name: want 1 to 1024 characters", 0)
      end
      if b.content ~= nil and b.content_base64 ~= nil then
        error(where .. ": set content or content_base64, not both", 0)
      end
      local b64 = b.content_base64
      if type(b64) == "string"
          and (#b64 % 4 ~= 0 or not string.find(b64, "^[A-Za-z0-9+/]*=?=?$")) then
        error(where .. ".content_base64: not base64 text", 0)
      end
      for _, f in ipairs({ "content", "content_base64", "content_type" }) do
        if b[f] ~= nil and type(b[f]) ~= "string" and type(b[f]) ~= "userdata" then
          error(string.format("%s.%s: want a string", where, f), 0)
        end
      end
      local props = with_conn({
        -- a container of this module: a reference, so the blob waits for it
        container = handles[b.container] and handles[b.container].id or b.container,
        name = name,
        content_type = b.content_type or DEFAULT_CONTENT_TYPE,
        metadata = check_metadata(b.metadata, where .. ".metadata"),
      })
      if b.content_base64 ~= nil then
        props.content_base64 = b.content_base64
      else
        props.content = b.content or ""
      end
      local h = m.resource("blob", key, props)
      blob_urls[key] = h.url
      etags[key] = h.etag
    end

    m.output("container_urls", container_urls)
    m.output("blob_urls", blob_urls)
    m.output("etags", etags)
    m.output("endpoint", endpoint)
  end,
}
