--[[
remote.lua - how the interconnect/overlay module talks to a site's host: the
ctx.ssh connection fields of a resource, shell quoting, and running small
POSIX sh scripts with their arguments passed as positional parameters (never
spliced into the script), through `sudo -n` when the resource asks for it.
]]

local M = {}

-- The connection props every resource of the module carries.
M.CONN = { "host", "port", "user", "key_file", "key", "host_key_sha256", "known_hosts", "sudo" }

--- Single-quote s for sh.
---@param s string
---@return string
function M.q(s)
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

local function trim(s)
  return (string.gsub(s or "", "^%s+", ""):gsub("%s+$", ""))
end
M.trim = trim

--- "user@host:port", for messages.
function M.where(props)
  return string.format("%s@%s:%d", props.user, props.host, props.port)
end

--- The ctx.ssh request fields for props, plus extra.
---@param props table
---@param extra table|nil
---@return table
function M.target(props, extra)
  local t = {
    host = props.host, port = props.port, user = props.user,
    key_file = props.key_file,
    host_key_sha256 = props.host_key_sha256, known_hosts = props.known_hosts,
  }
  if props.key ~= nil then
    if type(props.key) ~= "string" then
      error(string.format("%s: the private key of this resource is known only as a hash in "
        .. "state; keep the `key` input set (or use `key_file`) while destroying", M.where(props)), 0)
    end
    t.key = props.key
  end
  for k, v in pairs(extra or {}) do
    t[k] = v
  end
  return t
end

--- Run script on the host as `sh -c script sh args...`.
---@param ctx table
---@param props table connection props
---@param script string POSIX sh; its arguments are $1, $2, ...
---@param args table|nil list of strings / numbers
---@param opts table|nil {privileged = bool (sudo when props.sudo), stdin = string, timeout_ms = int}
---@return table {status, stdout, stderr}
function M.sh(ctx, props, script, args, opts)
  opts = opts or {}
  local words = { "sh", "-c", M.q(script), "sh" }
  for _, a in ipairs(args or {}) do
    words[#words + 1] = M.q(tostring(a))
  end
  local line = table.concat(words, " ")
  if opts.privileged and props.sudo then
    line = "sudo -n " .. line
  end
  return ctx.ssh.exec(M.target(props, {
    command = line, stdin = opts.stdin, timeout_ms = opts.timeout_ms or 120000,
  }))
end

--- As M.sh, raising "<what> on user@host:port failed (status N): <stderr>"
--- unless the status is 0 (or listed in opts.ok).
function M.must(ctx, props, what, script, args, opts)
  local r = M.sh(ctx, props, script, args, opts)
  local ok = r.status == 0
  for _, s in ipairs((opts and opts.ok) or {}) do
    ok = ok or r.status == s
  end
  if not ok then
    local msg = trim(r.stderr)
    if msg == "" then
      msg = trim(r.stdout)
    end
    error(string.format("%s on %s failed (status %d): %s", what, M.where(props), r.status, msg), 0)
  end
  return r
end

-- Failures that happen before the host runs anything: the host key check
-- and authentication come first on every connection.
local NEVER_RAN = {
  "host key mismatch for ", "unknown host key for ", "authentication failed",
  "cannot read the private key",
}

--- Wrap a read() handler for recovery.  With id == nil the engine asks what
--- a failed or interrupted create left behind, using that create's props;
--- when those props cannot even get past the host key check or the login,
--- the create cannot have run anything either, so there is nothing to find.
---@param read function
---@return function
function M.recovering(read)
  return function(ctx, id, props)
    if id ~= nil then
      return read(ctx, id, props)
    end
    local ok, a, b, c = pcall(read, ctx, id, props)
    if ok then
      return a, b, c
    end
    for _, p in ipairs(NEVER_RAN) do
      if string.find(tostring(a), p, 1, true) then
        ctx.log("warn", "nothing to recover: the create could not log in either (" .. tostring(a) .. ")")
        return nil
      end
    end
    error(a, 0)
  end
end

--- Whether any of fields differs between two props tables (an update that
--- only changes the connection has nothing to do on the host).
function M.differ(old, new, fields)
  for _, f in ipairs(fields) do
    if old[f] ~= new[f] then
      return true
    end
  end
  return false
end

--- "key=value" lines into a table.
function M.kv(text)
  local t = {}
  for line in string.gmatch(text or "", "[^\n]+") do
    local k, v = string.match(line, "^([%w_]+)=(.*)$")
    if k then
      t[k] = v
    end
  end
  return t
end

return M
