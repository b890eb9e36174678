--[[
interconnect/overlay - one L2 link between two sites, configured on each
site's host over SSH (ctx.ssh) with iproute2.

  kind = "vxlan"  a VXLAN tunnel: on each end
                    ip link add NAME type vxlan id VNI local UNDERLAY
                      remote OTHER_UNDERLAY dstport PORT dev DEV
                    ip addr add ADDRESS dev NAME; ip link set NAME up
  kind = "vlan"   an 802.1Q sub-interface of DEV on each end (both hosts on
                  one L2 underlay):  ip link add link DEV name NAME type vlan
                  id VLAN_ID; ip addr add ...; ip link set ... up

One instance of the module is one link and takes both ends as inputs (`a`
and `b`), so the remote of each end is the other end's underlay address and
the pair cannot drift apart in a plan.  Each end is its own resource
(vxlan.a / vxlan.b or vlan.a / vlan.b) on its own host: a failure to reach
one site leaves the other end's work unaffected.

read() parses `ip -d -j link show dev NAME` and `ip -j addr show dev NAME`
(JSON, decoded with ctx.json.decode): a missing link is gone; a changed
VNI, remote, local address, port or parent device shows as a change that
replaces the end; a changed address is updated in place.  See README.md.
]]

local R = require("remote")

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

-- ---------------------------------------------------------------------------
-- reading a link

local SHOW = [[
# overlay: show link
if ! l=$(ip -d -j link show dev "$1" 2>/dev/null); then echo absent; exit 0; fi
printf '%s\n@@@\n' "$l"
ip -j addr show dev "$1"
]]

--- The link NAME on props' host: (link, addresses) decoded from ip's JSON,
--- or nil when there is no such link.
local function show(ctx, props)
  local r = R.must(ctx, props, "reading link " .. props.name, SHOW, { props.name })
  if R.trim(r.stdout) == "absent" then
    return nil
  end
  local ltext, atext = string.match(r.stdout, "^(.-)\n@@@\n(.*)$")
  local ok1, links = pcall(ctx.json.decode, ltext or "")
  local ok2, addrs = pcall(ctx.json.decode, atext or "")
  if not (ok1 and ok2) or type(links) ~= "table" or type(links[1]) ~= "table" then
    error(string.format("cannot parse `ip -j` output for %s on %s (iproute2 without JSON "
      .. "support?): %s", props.name, R.where(props), string.sub(r.stdout, 1, 200)), 0)
  end
  local list = {}
  for _, a in ipairs((type(addrs) == "table" and addrs[1] and addrs[1].addr_info) or {}) do
    if a.scope == "global" and a["local"] and a.prefixlen then
      list[#list + 1] = a["local"] .. "/" .. tostring(math.tointeger(a.prefixlen) or a.prefixlen)
    end
  end
  return links[1], list
end

local function is_up(link)
  for _, f in ipairs(link.flags or {}) do
    if f == "UP" then
      return true
    end
  end
  return false
end

--- props as observed: kind-specific fields from linkinfo, the address and
--- the admin state; fields that differ make the planner update or replace.
local function observed(props, link, addrs, kind)
  local now = copy(props)
  local info = link.linkinfo or {}
  local data = info.info_data or {}
  if info.info_kind ~= kind then
    -- a link of another kind holds the name: shown as a VNI / VLAN change
    local marker = "(a " .. tostring(info.info_kind or "plain") .. " link holds this name)"
    if kind == "vxlan" then
      now.vni = marker
    else
      now.vlan_id = marker
    end
    return now
  end
  if kind == "vxlan" then
    now.vni = math.tointeger(data.id) or data.id
    now.remote_ip = data.remote or data.group or "(none)"
    now.local_ip = data["local"] or "(none)"
    now.dstport = math.tointeger(data.port) or data.port
    now.dev = data.link or "(none)"
  else
    now.vlan_id = math.tointeger(data.id) or data.id
    now.dev = link.link or "(none)"
  end
  now.address = "(none)"
  for _, a in ipairs(addrs) do
    if a == props.address then
      now.address = a
    end
  end
  if now.address == "(none)" and addrs[1] then
    now.address = addrs[1]
  end
  now.up = is_up(link)
  return now
end

local function outputs(link)
  return { ifindex = math.tointeger(link.ifindex), mac = link.address, mtu = math.tointeger(link.mtu) }
end

-- ---------------------------------------------------------------------------
-- changing links (as root: through sudo when props.sudo)

local ADD = [[
# overlay: add link
name=$1 kind=$2 addr=$3
shift 3
if [ "$kind" = vxlan ]; then
  ip link add "$name" address "$6" type vxlan id "$1" local "$2" remote "$3" dstport "$4" dev "$5" || exit 1
else
  ip link add link "$2" name "$name" type vlan id "$1" || exit 1
fi
if ! { ip addr add "$addr" dev "$name" && ip link set "$name" up; }; then
  ip link del "$name" 2>/dev/null
  exit 1
fi
]]

local SET = [[
# overlay: configure link
name=$1 addr=$2
ip addr flush dev "$name" scope global && ip addr add "$addr" dev "$name" && ip link set "$name" up
]]

local DEL = [[
# overlay: delete link
if ip link show dev "$1" >/dev/null 2>&1; then ip link del "$1"; fi
]]

--- A stable, locally administered MAC for a VXLAN end: the same host, name
--- and address give the same MAC, so after a replace (a new VNI, a link
--- recreated after drift) the peer's neighbour and forwarding entries are
--- still right and traffic resumes at once instead of after they expire.
local function stable_mac(ctx, props)
  local h = ctx.crypto.sha256(props.host .. "|" .. props.name .. "|" .. props.address)
  return string.format("02:%s:%s:%s:%s:%s", h:sub(1, 2), h:sub(3, 4), h:sub(5, 6), h:sub(7, 8),
    h:sub(9, 10))
end

local function add_args(ctx, props, kind)
  if kind == "vxlan" then
    return { props.name, kind, props.address, props.vni, props.local_ip, props.remote_ip,
      props.dstport, props.dev, stable_mac(ctx, props) }
  end
  return { props.name, kind, props.address, props.vlan_id, props.dev }
end

local function same(a, b, fields)
  for _, f in ipairs(fields) do
    if a[f] ~= b[f] then
      return false
    end
  end
  return true
end

--- A resource type for one end of a link of the given kind.
local function end_type(kind, identity)
  local where_fields = { "host", "port", "name" }
  local replace_on = {}
  for _, f in ipairs(where_fields) do
    replace_on[#replace_on + 1] = f
  end
  for _, f in ipairs(identity) do
    replace_on[#replace_on + 1] = f
  end

  return {
    ---@param ctx table
    ---@param props table {connection..., name, address, up, <kind fields>}
    ---@return string id, table outputs
    create = function(ctx, props)
      local link, addrs = show(ctx, props)
      if link then
        -- a link by this name already (a retried create): adopt it only
        -- when it is the same link, and finish its setup
        local now = observed(props, link, addrs, kind)
        if not same(now, props, identity) then
          error(string.format("%s on %s: a link named %s exists with other settings; remove it "
            .. "or choose another name", kind, R.where(props), props.name), 0)
        end
        R.must(ctx, props, "configuring " .. props.name, SET, { props.name, props.address },
          { privileged = true })
      else
        R.must(ctx, props, "adding " .. kind .. " link " .. props.name, ADD,
          add_args(ctx, props, kind), { privileged = true })
      end
      link = show(ctx, props)
      if not link then
        error(string.format("%s on %s: link %s is missing right after it was added", kind,
          R.where(props), props.name), 0)
      end
      return props.name .. "@" .. props.host, outputs(link)
    end,

    ---@param ctx table
    ---@param id string|nil
    ---@param props table
    ---@return table|nil props_now, table|nil outputs, string|nil id
    read = R.recovering(function(ctx, id, props)
      local link, addrs = show(ctx, props)
      if not link then
        return nil
      end
      return observed(props, link, addrs, kind), outputs(link), props.name .. "@" .. props.host
    end),

    --- Only the address, the admin state or the connection can change in
    --- place; everything else is in replace_on.
    update = function(ctx, id, old, new)
      if R.differ(old, new, { "address", "up" }) then
        R.must(ctx, new, "configuring " .. new.name, SET, { new.name, new.address },
          { privileged = true })
      end
      local link = show(ctx, new)
      return link and outputs(link) or nil
    end,

    delete = function(ctx, id, props)
      R.must(ctx, props, "deleting link " .. props.name, DEL, { props.name }, { privileged = true })
    end,

    replace_on = replace_on,
    sensitive = { "key" },
  }
end

-- ---------------------------------------------------------------------------
-- declare

local function check_int(what, v, lo, hi)
  if type(v) == "number" and (math.type(v) ~= "integer" or v < lo or v > hi) then
    error(string.format("%s must be an integer from %d to %d, not %s", what, lo, hi, tostring(v)), 0)
  end
end

local function check_str(what, v)
  if v == nil then
    error(what .. " is required", 0)
  end
end

return {
  name = "interconnect/overlay",
  version = "1.0.0",

  inputs = {
    kind = { type = "string", default = "vxlan", description = "\"vxlan\" or \"vlan\"" },
    name = { type = "string?",
      description = "link name on both hosts (default vx<vni> or vl<vlan_id>), at most 15 chars" },
    vni = { type = "integer?", description = "VXLAN network identifier (vxlan)" },
    dstport = { type = "integer", default = 4789, description = "VXLAN UDP port (vxlan)" },
    vlan_id = { type = "integer?", description = "802.1Q VLAN id, 1..4094 (vlan)" },
    user = { type = "string", description = "SSH login user on both hosts" },
    port = { type = "integer", default = 22, description = "sshd port (an end may override it)" },
    key_file = { type = "string?", description = "private key file" },
    key = { type = "string?", sensitive = true, description = "private key text" },
    sudo = { type = "boolean", default = false,
      description = "run ip link/addr changes through sudo -n (the login user is not root)" },
    a = { type = "map", description = "end A: {host, port?, host_key_sha256 | known_hosts, "
      .. "underlay (vxlan), dev, address}" },
    b = { type = "map", description = "end B: same fields as a" },
  },

  resources = {
    vxlan = end_type("vxlan", { "vni", "local_ip", "remote_ip", "dstport", "dev" }),
    vlan = end_type("vlan", { "vlan_id", "dev" }),
  },

  ---@param inputs table
  ---@param m table the declaration API: m.resource, m.output
  declare = function(inputs, m)
    local kind = inputs.kind or "vxlan"
    if kind ~= "vxlan" and kind ~= "vlan" then
      error(string.format("kind must be \"vxlan\" or \"vlan\", not %q", tostring(kind)), 0)
    end
    if inputs.key == nil and inputs.key_file == nil then
      error("give `key_file` or `key` (the private key's text, a sensitive input)", 0)
    end
    if inputs.key ~= nil and inputs.key_file ~= nil then
      error("`key` and `key_file` are exclusive", 0)
    end
    local name = inputs.name
    if kind == "vxlan" then
      check_str("vni", inputs.vni)
      check_int("vni", inputs.vni, 0, 16777215)
      check_int("dstport", inputs.dstport, 1, 65535)
      name = name or ("vx" .. tostring(inputs.vni))
    else
      check_str("vlan_id", inputs.vlan_id)
      check_int("vlan_id", inputs.vlan_id, 1, 4094)
      name = name or ("vl" .. tostring(inputs.vlan_id))
    end
    if type(name) == "string" and (#name > 15 or not string.find(name, "^[%w_.%-]+$")) then
      error(string.format("name %q: at most 15 of letters, digits, '_', '.', '-'", name), 0)
    end

    local ends = { a = inputs.a, b = inputs.b }
    for e, t in pairs(ends) do
      if type(t) ~= "table" then
        error(e .. ": want a map {host, dev, address, ...}", 0)
      end
      for _, f in ipairs({ "host", "dev", "address" }) do
        check_str(e .. "." .. f, t[f])
      end
      if kind == "vxlan" then
        check_str(e .. ".underlay", t.underlay)
      end
      if t.host_key_sha256 ~= nil and t.known_hosts ~= nil then
        error(e .. ": host_key_sha256 and known_hosts are exclusive", 0)
      end
      if type(t.address) == "string" and not string.find(t.address, "/%d+$") then
        error(string.format("%s.address %q: want address/prefix, e.g. 10.250.200.1/24", e, t.address), 0)
      end
    end

    local ids, macs = {}, {}
    for e, other in pairs({ a = "b", b = "a" }) do
      local t = ends[e]
      local props = {
        host = t.host, port = t.port or inputs.port or 22, user = inputs.user,
        key_file = inputs.key_file, key = inputs.key,
        host_key_sha256 = t.host_key_sha256, known_hosts = t.known_hosts,
        sudo = inputs.sudo or false,
        name = name, dev = t.dev, address = t.address, up = true,
      }
      if kind == "vxlan" then
        props.vni = inputs.vni
        props.dstport = inputs.dstport or 4789
        props.local_ip = t.underlay
        props.remote_ip = ends[other].underlay
      else
        props.vlan_id = inputs.vlan_id
      end
      local h = m.resource(kind, e, props)
      ids[e] = h.id
      macs[e] = h.mac
    end
    m.output("name", name)
    m.output("links", ids)
    m.output("macs", macs)
  end,
}
