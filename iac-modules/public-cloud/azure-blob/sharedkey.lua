--[[
sharedkey.lua - Azure Storage SharedKey request signing (Blob service,
x-ms-version 2015-02-21 and later).

  StringToSign = VERB \n Content-Encoding \n Content-Language \n
                 Content-Length (empty when 0) \n Content-MD5 \n Content-Type \n
                 Date \n If-Modified-Since \n If-Match \n If-None-Match \n
                 If-Unmodified-Since \n Range \n
                 CanonicalizedHeaders CanonicalizedResource
  CanonicalizedHeaders: every x-ms-* header, name lower case, sorted,
                 "name:value\n" (value without leading white space)
  CanonicalizedResource: "/" account URL-path, then for each query
                 parameter sorted by lower-case name "\nname:value" (decoded)
  Authorization: "SharedKey " account ":" base64(HMAC-SHA256(base64decode(key), StringToSign))

The URL path is the path as sent (percent-encoded), including the account
segment of path-style endpoints such as azurite's
http://127.0.0.1:10000/devstoreaccount1, which is why the emulator's
resource starts /devstoreaccount1/devstoreaccount1/...
]]

local M = {}

local SIGNED = { "Content-Encoding", "Content-Language", "Content-Length", "Content-MD5",
  "Content-Type", "Date", "If-Modified-Since", "If-Match", "If-None-Match",
  "If-Unmodified-Since", "Range" }

local function header(headers, name)
  local lname = string.lower(name)
  for k, v in pairs(headers) do
    if string.lower(k) == lname then
      return v
    end
  end
  return nil
end

local function query_names(query)
  local names = {}
  for k in pairs(query or {}) do
    names[#names + 1] = k
  end
  table.sort(names, function(a, b) return string.lower(a) < string.lower(b) end)
  return names
end

---@param endpoint string e.g. https://acct.blob.core.windows.net or http://127.0.0.1:10000/acct
---@param path string the resource path, percent-encoded ("/container/blob")
---@param query table|nil map of query parameters (plain values)
---@return string the request URL
function M.url(endpoint, path, query)
  local parts = {}
  for _, k in ipairs(query_names(query)) do
    parts[#parts + 1] = k .. "=" .. string.gsub(query[k], "[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
    end)
  end
  return endpoint .. path .. (#parts > 0 and ("?" .. table.concat(parts, "&")) or "")
end

---@param endpoint string
---@param path string
---@return string the URL path the service sees: the endpoint's own path, then path
function M.resource_path(endpoint, path)
  local base = string.match(endpoint, "^%a[%w+.-]*://[^/]*(/.*)$") or ""
  base = string.gsub(base, "/+$", "")
  return base .. path
end

---@param r table {account, method, resource (URL path), query, headers, content_length}
---@return string the string to sign
function M.string_to_sign(r)
  local lines = { r.method }
  for _, name in ipairs(SIGNED) do
    local v
    if name == "Content-Length" then
      v = (r.content_length and r.content_length > 0) and tostring(r.content_length) or ""
    else
      v = header(r.headers, name) or ""
    end
    lines[#lines + 1] = v
  end
  local names, values = {}, {}
  for k, v in pairs(r.headers) do
    local lk = string.lower(k)
    if string.sub(lk, 1, 5) == "x-ms-" then
      names[#names + 1] = lk
      values[lk] = (string.gsub(v, "^%s+", ""))
    end
  end
  table.sort(names)
  local ms = {}
  for i, lk in ipairs(names) do
    ms[i] = lk .. ":" .. values[lk]
  end
  local resource = "/" .. r.account .. r.resource
  for _, k in ipairs(query_names(r.query)) do
    resource = resource .. "\n" .. string.lower(k) .. ":" .. r.query[k]
  end
  local canon_headers = #ms > 0 and (table.concat(ms, "\n") .. "\n") or ""
  return table.concat(lines, "\n") .. "\n" .. canon_headers .. resource
end

---@param ctx table
---@param r table as for string_to_sign, plus key (the account key, base64)
---@return string the Authorization header value
function M.authorization(ctx, r)
  local ok, key = pcall(ctx.crypto.base64_decode, r.key)
  if not ok then
    error("azure-blob: account_key is not valid base64", 0)
  end
  local sig = ctx.crypto.hmac_sha256(key, M.string_to_sign(r), "base64")
  return "SharedKey " .. r.account .. ":" .. sig
end

return M
