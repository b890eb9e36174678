--[[
public-cloud/aws-s3 - Amazon S3 buckets and objects over the S3 REST API.

Two resource types: `bucket` (versioning, tags) and `object` (content,
content type, tags).  An object's bytes are a string input, or are
downloaded from `source_url` by the handler (a module cannot read files:
a build artefact is published on an HTTP server and copied into the
bucket, its SHA-256 checked and kept as object metadata).  Requests use path-style URLs
({endpoint}/{bucket}/{key}) and are signed with SigV4 by the HTTP driver
(ctx.http.request auth type "aws_sigv4", service "s3"; the driver adds
x-amz-content-sha256).  Responses are XML; the few elements needed are read
with string patterns (xml.lua).

Works against AWS and against s3rver (the local lab's S3 emulator), which
does not implement bucket versioning or bucket tagging: the module reports
that plainly instead of pretending (see README.md).

Plain Lua 5.4 for mecorch's sandbox: no I/O except through ctx.
]]

local xml = require("xml")

local DEFAULT_CONTENT_TYPE = "binary/octet-stream"

-- Object metadata of an object copied from source_url: the SHA-256 of its
-- bytes and their MD5, which must equal the ETag S3 computes (a PUT made
-- without them, or with other bytes, shows as drift).
local META_SHA256 = "x-amz-meta-mecorch-sha256"
local META_MD5 = "x-amz-meta-mecorch-md5"

-- Statuses the module inspects itself; everything else (5xx after the
-- driver's retries, unexpected codes) is raised by the driver.  501 is
-- listed so NotImplemented is not retried as a server error.
local HANDLED = { 200, 204, 400, 403, 404, 405, 409, 501 }

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

-- Percent-encode everything but RFC 3986 unreserved characters; with
-- keep_slash, '/' too stays as it is (S3 object keys in a path).
local function urlencode(s, keep_slash)
  local pattern = keep_slash and "[^%w%-%._~/]" or "[^%w%-%._~]"
  return (string.gsub(s, pattern, function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function endpoint_of(props)
  return (string.gsub(props.endpoint, "/+$", ""))
end

local function bucket_url(props, bucket)
  return endpoint_of(props) .. "/" .. urlencode(bucket)
end

local function object_url(props, bucket, key)
  return bucket_url(props, bucket) .. "/" .. urlencode(key, true)
end

-- The SigV4 auth table for props; raises when the credentials are only
-- hashes (a resource that left the plan: the state keeps no clear secret).
local function auth_of(props)
  for _, k in ipairs({ "access_key", "secret_key" }) do
    if type(props[k]) ~= "string" then
      error(string.format("aws-s3: the %s of this resource is known only as a hash in the "
        .. "state; keep the module's `access_key` and `secret_key` inputs set while it "
        .. "still declares this resource (destroy with the plan that created it)", k), 0)
    end
  end
  local auth = {
    type = "aws_sigv4",
    access_key = props.access_key,
    secret_key = props.secret_key,
    region = props.region,
    service = "s3",
  }
  if type(props.session_token) == "string" and props.session_token ~= "" then
    auth.session_token = props.session_token
  end
  return auth
end

-- One S3 call.  Returns the response; resp.code and resp.message hold the
-- S3 error (from the XML body) when the status is not 2xx.  Credential
-- errors are raised here, with what to check.
local function s3(ctx, props, method, url, opts)
  opts = opts or {}
  local resp = ctx.http.request({
    method = method,
    url = url,
    headers = opts.headers,
    body = opts.body,
    auth = auth_of(props),
    expect = HANDLED,
  })
  if resp.status >= 300 then
    resp.code = xml.first(resp.body, "Code") or ("HTTP" .. resp.status)
    resp.message = xml.first(resp.body, "Message") or ""
    if resp.status == 403 and (resp.code == "SignatureDoesNotMatch"
        or resp.code == "InvalidAccessKeyId" or resp.code == "AccessDenied"
        or resp.code == "MissingAuthenticationToken" or resp.code == "RequestTimeTooSkewed") then
      error(string.format("S3 refused %s %s (403 %s: %s): check the module's access_key, "
        .. "secret_key and region", method, url, resp.code, resp.message), 0)
    end
  end
  return resp
end

-- Raise an error for an S3 response the caller did not expect.
local function fail(resp, what)
  error(string.format("S3 %s failed: %d %s: %s", what, resp.status, resp.code or "",
    resp.message or ""), 0)
end

-- The XML body of a PUT, with the Content-MD5 that S3 requires for
-- configuration subresources (and checks for objects).
local function xml_put(ctx, body)
  return {
    body = body,
    headers = {
      ["Content-Type"] = "application/xml",
      ["Content-MD5"] = ctx.crypto.md5(body, "base64"),
    },
  }
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end

local function tagging_xml(tags)
  local parts = { '<?xml version="1.0" encoding="UTF-8"?>',
    '<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet>' }
  for _, k in ipairs(sorted_keys(tags)) do
    parts[#parts + 1] = "<Tag><Key>" .. xml.escape(k) .. "</Key><Value>"
      .. xml.escape(tags[k]) .. "</Value></Tag>"
  end
  parts[#parts + 1] = "</TagSet></Tagging>"
  return table.concat(parts)
end

local function parse_tags(body)
  local tags = {}
  for tag in xml.each(body, "Tag") do
    local k = xml.first(tag, "Key")
    if k then
      tags[k] = xml.first(tag, "Value") or ""
    end
  end
  return tags
end

local function tags_equal(a, b)
  for k, v in pairs(a or {}) do
    if b[k] ~= v then
      return false
    end
  end
  for k in pairs(b or {}) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function not_implemented(resp, feature)
  error(string.format("this S3 endpoint does not implement %s (%d %s: %s); leave it at its "
    .. "default for this endpoint", feature, resp.status, resp.code, resp.message), 0)
end

---------------------------------------------------------------------------
-- Buckets
---------------------------------------------------------------------------

local function bucket_outputs(props)
  return {
    name = props.name,
    arn = "arn:aws:s3:::" .. props.name,
    url = bucket_url(props, props.name),
    region = props.region,
  }
end

-- Carry over what is not observable on the bucket (where and how to reach it).
local function bucket_props(props, versioning, tags)
  return {
    endpoint = props.endpoint,
    region = props.region,
    access_key = props.access_key,
    secret_key = props.secret_key,
    session_token = props.session_token,
    name = props.name,
    versioning = versioning,
    tags = tags,
  }
end

-- Bucket versioning: true (Enabled), false (Suspended or never enabled).
-- An endpoint without versioning has unversioned buckets: false.  That is
-- a 501, or (s3rver 3.7, which does not route ?versioning at all) a 200
-- whose document is not a VersioningConfiguration but the bucket listing.
local function read_versioning(ctx, props)
  local resp = s3(ctx, props, "GET", bucket_url(props, props.name) .. "?versioning")
  if resp.status == 200 then
    if not string.find(resp.body, "<VersioningConfiguration", 1, true) then
      ctx.log("debug", "this S3 endpoint answers GetBucketVersioning without a "
        .. "VersioningConfiguration: it has no versioning")
      return false
    end
    return xml.first(resp.body, "Status") == "Enabled"
  elseif resp.status == 501 then
    return false
  elseif resp.status == 404 then
    return nil
  end
  fail(resp, "GetBucketVersioning " .. props.name)
end

local function write_versioning(ctx, props, enabled)
  local body = '<?xml version="1.0" encoding="UTF-8"?>'
    .. '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>'
    .. (enabled and "Enabled" or "Suspended") .. "</Status></VersioningConfiguration>"
  local resp = s3(ctx, props, "PUT", bucket_url(props, props.name) .. "?versioning",
    xml_put(ctx, body))
  -- S3 never answers PutBucketVersioning with BucketAlreadyExists: that is
  -- an endpoint that took the request for CreateBucket (s3rver 3.7).
  if resp.status == 501 or (resp.status == 409 and resp.code == "BucketAlreadyExists") then
    not_implemented(resp, "bucket versioning")
  elseif resp.status ~= 200 then
    fail(resp, "PutBucketVersioning " .. props.name)
  end
end

-- Bucket tags: a map; NoSuchTagSet (404) is no tags, and so is an
-- endpoint without bucket tagging (501).
local function read_bucket_tags(ctx, props)
  local resp = s3(ctx, props, "GET", bucket_url(props, props.name) .. "?tagging")
  if resp.status == 200 then
    return parse_tags(resp.body)
  elseif resp.status == 501 or (resp.status == 404 and resp.code == "NoSuchTagSet") then
    return {}
  elseif resp.status == 404 then
    return nil
  end
  fail(resp, "GetBucketTagging " .. props.name)
end

local function write_bucket_tags(ctx, props, tags)
  local url = bucket_url(props, props.name) .. "?tagging"
  local resp
  if next(tags) == nil then
    resp = s3(ctx, props, "DELETE", url)
  else
    resp = s3(ctx, props, "PUT", url, xml_put(ctx, tagging_xml(tags)))
  end
  if resp.status == 501 then
    not_implemented(resp, "bucket tagging")
  elseif resp.status ~= 200 and resp.status ~= 204 then
    fail(resp, "PutBucketTagging " .. props.name)
  end
end

local function read_bucket(ctx, props)
  local resp = s3(ctx, props, "HEAD", bucket_url(props, props.name))
  if resp.status == 404 then
    return nil
  elseif resp.status ~= 200 then
    fail(resp, "HeadBucket " .. props.name)
  end
  local versioning = read_versioning(ctx, props)
  local tags = read_bucket_tags(ctx, props)
  if versioning == nil or tags == nil then
    return nil -- deleted between the calls
  end
  return bucket_props(props, versioning, tags)
end

---------------------------------------------------------------------------
-- Objects
---------------------------------------------------------------------------

-- The object's bytes as props describe them (content or content_base64).
local function object_bytes(ctx, props)
  if props.content_base64 ~= nil then
    return ctx.crypto.base64_decode(props.content_base64)
  end
  return props.content or ""
end

local function object_outputs(props, etag)
  return {
    etag = etag,
    url = object_url(props, props.bucket, props.key),
  }
end

-- Download the bytes of a source_url object and check them against
-- source_sha256.  The body is a Lua string: binary-safe, held in memory
-- (the action's memory cap, --task-memory, bounds the artefact's size).
local function fetch_source(ctx, props)
  local resp = ctx.http.request({
    method = "GET",
    url = props.source_url,
    expect = { 200 },
    timeout_ms = 600000,
  })
  local body = resp.body or ""
  local sha = ctx.crypto.sha256(body, "hex")
  if sha ~= props.source_sha256 then
    error(string.format("aws-s3: %s/%s: the %d bytes downloaded from %s have SHA-256 %s, "
      .. "not the expected source_sha256 %s", props.bucket, props.key, #body, props.source_url,
      sha, tostring(props.source_sha256)), 0)
  end
  return body, sha
end

local function unquote(etag)
  return etag and (string.gsub(etag, '"', "")) or nil
end

local function put_object_tags(ctx, props, tags)
  local resp = s3(ctx, props, "PUT", object_url(props, props.bucket, props.key) .. "?tagging",
    xml_put(ctx, tagging_xml(tags)))
  if resp.status == 501 then
    not_implemented(resp, "object tagging")
  elseif resp.status ~= 200 then
    fail(resp, "PutObjectTagging " .. props.bucket .. "/" .. props.key)
  end
end

-- PUT the object (and its tags); returns the ETag without quotes.
local function put_object(ctx, props, had_tags)
  local body, sha
  if props.source_url ~= nil then
    body, sha = fetch_source(ctx, props)
  else
    body = object_bytes(ctx, props)
  end
  local md5 = ctx.crypto.md5(body, "raw")
  local headers = {
    ["Content-Type"] = props.content_type,
    ["Content-MD5"] = ctx.crypto.base64_encode(md5),
  }
  if sha then
    headers[META_SHA256] = sha
    headers[META_MD5] = ctx.crypto.hex_encode(md5)
  end
  local resp = s3(ctx, props, "PUT", object_url(props, props.bucket, props.key), {
    body = body,
    headers = headers,
  })
  if resp.status == 404 then
    error(string.format("S3 PutObject %s/%s: the bucket does not exist (%s)", props.bucket,
      props.key, resp.code), 0)
  elseif resp.status ~= 200 then
    fail(resp, "PutObject " .. props.bucket .. "/" .. props.key)
  end
  -- A new version of an object starts without tags on S3; set them again
  -- (and clear them explicitly where the endpoint keeps old ones).
  if next(props.tags or {}) ~= nil or had_tags then
    put_object_tags(ctx, props, props.tags or {})
  end
  local etag = unquote(resp.headers["etag"])
  if etag and not string.find(etag, "-", 1, true) and etag ~= ctx.crypto.hex_encode(md5) then
    error(string.format("S3 PutObject %s/%s: ETag %s does not match the content's MD5 %s",
      props.bucket, props.key, etag, ctx.crypto.hex_encode(md5)), 0)
  end
  return etag
end

-- The object as it is: props_now, etag; nil when it (or its bucket) is gone.
local function read_object(ctx, props)
  local url = object_url(props, props.bucket, props.key)
  local resp = s3(ctx, props, "HEAD", url)
  if resp.status == 404 then
    return nil
  elseif resp.status ~= 200 then
    fail(resp, "HeadObject " .. props.bucket .. "/" .. props.key)
  end
  local etag = unquote(resp.headers["etag"])
  local content_type = resp.headers["content-type"] or DEFAULT_CONTENT_TYPE

  -- An object copied from source_url is known by the SHA-256 of its bytes:
  -- the metadata written with it, while its MD5 is still the ETag;
  -- otherwise (written by someone else, multipart) the bytes are fetched
  -- and hashed.
  local content, content_base64 = props.content, props.content_base64
  local source_sha256
  if props.source_url ~= nil then
    local meta_sha, meta_md5 = resp.headers[META_SHA256], resp.headers[META_MD5]
    if meta_sha and meta_md5 and etag == meta_md5 then
      source_sha256 = meta_sha
    else
      local get = s3(ctx, props, "GET", url)
      if get.status == 404 then
        return nil
      elseif get.status ~= 200 then
        fail(get, "GetObject " .. props.bucket .. "/" .. props.key)
      end
      source_sha256 = ctx.crypto.sha256(get.body, "hex")
    end
  elseif etag ~= ctx.crypto.md5(object_bytes(ctx, props), "hex") then
    -- Same ETag as the MD5 of the desired bytes: the content is unchanged.
    -- Otherwise (changed, or a multipart ETag) fetch the bytes to show them.
    local get = s3(ctx, props, "GET", url)
    if get.status == 404 then
      return nil
    elseif get.status ~= 200 then
      fail(get, "GetObject " .. props.bucket .. "/" .. props.key)
    end
    if props.content_base64 ~= nil or not utf8.len(get.body) then
      content, content_base64 = nil, ctx.crypto.base64_encode(get.body)
    else
      content, content_base64 = get.body, nil
    end
  end

  local tresp = s3(ctx, props, "GET", url .. "?tagging")
  local tags
  if tresp.status == 200 then
    tags = parse_tags(tresp.body)
  elseif tresp.status == 501 then
    tags = {}
  elseif tresp.status == 404 then
    return nil
  else
    fail(tresp, "GetObjectTagging " .. props.bucket .. "/" .. props.key)
  end

  return {
    endpoint = props.endpoint,
    region = props.region,
    access_key = props.access_key,
    secret_key = props.secret_key,
    session_token = props.session_token,
    bucket = props.bucket,
    key = props.key,
    content = content,
    content_base64 = content_base64,
    source_url = props.source_url,           -- where it came from: carried over
    source_sha256 = source_sha256,
    content_type = content_type,
    tags = tags,
  }, etag
end

---------------------------------------------------------------------------
-- Declaration helpers
---------------------------------------------------------------------------

local function check_bucket_name(name, where)
  if type(name) ~= "string" or #name < 3 or #name > 63
      or not string.find(name, "^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
      or string.find(name, "..", 1, true) then
    error(string.format("%s: bucket name %q: use 3 to 63 of [a-z0-9.-], starting and "
      .. "ending with a letter or digit", where, tostring(name)), 0)
  end
end

local function check_tags(tags, where)
  if tags == nil then
    return {}
  end
  if type(tags) ~= "table" or tags[1] ~= nil then
    error(where .. ": tags must be a map of strings", 0)
  end
  for k, v in pairs(tags) do
    if type(k) ~= "string" or type(v) ~= "string" then
      error(string.format("%s: tag %s must map a string to a string", where, tostring(k)), 0)
    end
  end
  return tags
end

local function check_fields(entry, allowed, where)
  if type(entry) ~= "table" or entry[1] ~= nil then
    error(where .. ": want a map of settings", 0)
  end
  for k in pairs(entry) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do
        names[#names + 1] = n
      end
      table.sort(names)
      error(string.format("%s: unknown setting %q (settings: %s)", where, tostring(k),
        table.concat(names, ", ")), 0)
    end
  end
end

return {
  name = "public-cloud/aws-s3",
  version = "1.1.0",

  inputs = {
    region = { type = "string", default = "us-east-1", description = "AWS region" },
    endpoint = { type = "string?",
      description = "S3 endpoint URL; default https://s3.<region>.amazonaws.com" },
    access_key = { type = "string", sensitive = true, description = "AWS access key id" },
    secret_key = { type = "string", sensitive = true, description = "AWS secret access key" },
    session_token = { type = "string?", sensitive = true,
      description = "session token of temporary credentials" },
    buckets = { type = "map", default = {},
      description = "bucket -> { name = <default the key>, versioning = bool, tags = map }" },
    objects = { type = "map", default = {},
      description = "object -> { bucket, key = <default the key>, content | content_base64 | "
        .. "source_url + source_sha256, content_type, tags }" },
  },

  resources = {
    bucket = {
      ---@param ctx table
      ---@param props table {endpoint, region, access_key, secret_key, session_token?, name, versioning, tags}
      ---@return string id, table outputs
      create = function(ctx, props)
        local body = ""
        if props.region ~= "us-east-1" then
          body = '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            .. "<LocationConstraint>" .. xml.escape(props.region)
            .. "</LocationConstraint></CreateBucketConfiguration>"
        end
        local resp = s3(ctx, props, "PUT", bucket_url(props, props.name), { body = body })
        if resp.status == 409 and resp.code == "BucketAlreadyOwnedByYou" then
          ctx.log("info", "bucket " .. props.name .. " already exists and is ours: adopting it")
        elseif resp.status == 409 then
          error(string.format("S3 CreateBucket %s: %s: %s (bucket names are global; if an "
            .. "interrupted run of this plan made it, the next run adopts it)",
            props.name, resp.code, resp.message), 0)
        elseif resp.status ~= 200 then
          fail(resp, "CreateBucket " .. props.name)
        end
        if props.versioning then
          write_versioning(ctx, props, true)
        end
        if next(props.tags) ~= nil then
          write_bucket_tags(ctx, props, props.tags)
        end
        return props.name, bucket_outputs(props)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the bucket an interrupted create made, by name
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local now = read_bucket(ctx, props)
        if not now then
          return nil
        end
        return now, bucket_outputs(props), props.name
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        if (old.versioning and true or false) ~= (new.versioning and true or false) then
          write_versioning(ctx, new, new.versioning)
        end
        if not tags_equal(old.tags or {}, new.tags or {}) then
          write_bucket_tags(ctx, new, new.tags or {})
        end
        return bucket_outputs(new)
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local resp = s3(ctx, props, "DELETE", bucket_url(props, props.name))
        if resp.status == 204 or resp.status == 200 or resp.status == 404 then
          return
        elseif resp.status == 409 then
          error(string.format("S3 DeleteBucket %s: %s: %s (objects not managed by this plan "
            .. "are still in it)", props.name, resp.code, resp.message), 0)
        end
        fail(resp, "DeleteBucket " .. props.name)
      end,

      replace_on = { "endpoint", "region", "name" },
      sensitive = { "access_key", "secret_key", "session_token" },
    },

    object = {
      ---@param ctx table
      ---@param props table {endpoint, region, access_key, secret_key, session_token?, bucket, key, content|content_base64|source_url+source_sha256, content_type, tags}
      ---@return string id, table outputs
      create = function(ctx, props)
        local etag = put_object(ctx, props, false)
        return props.bucket .. "/" .. props.key, object_outputs(props, etag)
      end,

      ---@param ctx table
      ---@param id string|nil nil: find the object an interrupted create made, by bucket and key
      ---@param props table
      ---@return table|nil props_now, table|nil outputs, string|nil id
      read = function(ctx, id, props)
        local now, etag = read_object(ctx, props)
        if not now then
          return nil
        end
        return now, object_outputs(props, etag), props.bucket .. "/" .. props.key
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        local had_tags = next(old.tags or {}) ~= nil
        local same_bytes = old.content == new.content and old.content_base64 == new.content_base64
          and (old.source_url == nil) == (new.source_url == nil)
          and old.source_sha256 == new.source_sha256
        if same_bytes and old.content_type == new.content_type then
          -- The bytes stay (a new source_url with the same SHA-256 is only
          -- recorded): the tags may have changed, the object and its ETag stay.
          put_object_tags(ctx, new, new.tags or {})
          return nil
        end
        return object_outputs(new, put_object(ctx, new, had_tags))
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
        local resp = s3(ctx, props, "DELETE", object_url(props, props.bucket, props.key))
        if resp.status ~= 204 and resp.status ~= 200 and resp.status ~= 404 then
          fail(resp, "DeleteObject " .. props.bucket .. "/" .. props.key)
        end
      end,

      replace_on = { "endpoint", "region", "bucket", "key" },
      sensitive = { "access_key", "secret_key", "session_token" },
    },
  },

  ---@param inputs table {region, endpoint?, access_key, secret_key, session_token?, buckets, objects}
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local region = inputs.region
    local endpoint = inputs.endpoint or ("https://s3." .. region .. ".amazonaws.com")
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

    local handles, bucket_arns, bucket_urls = {}, {}, {}
    for _, name in ipairs(sorted_keys(inputs.buckets)) do
      local b = inputs.buckets[name]
      local where = "buckets." .. name
      check_fields(b, { name = true, versioning = true, tags = true }, where)
      local bucket_name = b.name or name
      check_bucket_name(bucket_name, where)
      if b.versioning ~= nil and type(b.versioning) ~= "boolean" then
        error(where .. ".versioning: want true or false", 0)
      end
      local h = m.resource("bucket", name, with_conn({
        name = bucket_name,
        versioning = b.versioning == true,
        tags = check_tags(b.tags, where .. ".tags"),
      }))
      handles[name] = h
      bucket_arns[name] = h.arn
      bucket_urls[name] = h.url
    end

    local etags, object_urls = {}, {}
    for _, name in ipairs(sorted_keys(inputs.objects)) do
      local o = inputs.objects[name]
      local where = "objects." .. name
      check_fields(o, { bucket = true, key = true, content = true, content_base64 = true,
        source_url = true, source_sha256 = true, content_type = true, tags = true }, where)
      if type(o.bucket) ~= "string" then
        error(where .. ".bucket: want the name of a bucket", 0)
      end
      local key = o.key or name
      if type(key) ~= "string" or key == "" or #key > 1024 then
        error(where .. ".key: want 1 to 1024 bytes", 0)
      end
      local given = (o.content ~= nil and 1 or 0) + (o.content_base64 ~= nil and 1 or 0)
        + (o.source_url ~= nil and 1 or 0)
      if given > 1 then
        error(where .. ": set one of content, content_base64 and source_url", 0)
      end
      if (o.source_url == nil) ~= (o.source_sha256 == nil) then
        error(where .. ": source_url and source_sha256 go together (the SHA-256 of the bytes "
          .. "at source_url, checked when they are copied into the bucket)", 0)
      end
      local sha = o.source_sha256
      if type(sha) == "string" then
        if #sha ~= 64 or not string.find(sha, "^%x+$") then
          error(where .. ".source_sha256: want 64 hex digits", 0)
        end
        sha = string.lower(sha)
      end
      local b64 = o.content_base64
      if type(b64) == "string"
          and (#b64 % 4 ~= 0 or not string.find(b64, "^[A-Za-z0-9+/]*=?=?$")) then
        error(where .. ".content_base64: not base64 text", 0)
      end
      for _, f in ipairs({ "content", "content_base64", "source_url", "source_sha256", "content_type" }) do
        -- a string, or a reference to another resource's output
        if o[f] ~= nil and type(o[f]) ~= "string" and type(o[f]) ~= "userdata" then
          error(string.format("%s.%s: want a string", where, f), 0)
        end
      end
      local props = with_conn({
        -- a bucket of this module: a reference, so the object waits for it
        bucket = handles[o.bucket] and handles[o.bucket].id or o.bucket,
        key = key,
        content_type = o.content_type or DEFAULT_CONTENT_TYPE,
        tags = check_tags(o.tags, where .. ".tags"),
      })
      if o.content_base64 ~= nil then
        props.content_base64 = o.content_base64
      elseif o.source_url ~= nil then
        props.source_url = o.source_url
        props.source_sha256 = sha
      else
        props.content = o.content or ""
      end
      local h = m.resource("object", name, props)
      etags[name] = h.etag
      object_urls[name] = h.url
    end

    m.output("bucket_arns", bucket_arns)
    m.output("bucket_urls", bucket_urls)
    m.output("etags", etags)
    m.output("object_urls", object_urls)
    m.output("endpoint", endpoint)
  end,
}
