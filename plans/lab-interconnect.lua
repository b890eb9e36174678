--[[
lab-interconnect - two sites managed over SSH and joined by a VXLAN overlay.

Each site (A and B) gets a package, a file and a supervised service from
bare-metal/ssh-host; interconnect/overlay builds one VXLAN link between
them (one resource per end, each configured on its own host).  Nothing
references across sites, so the two sites are applied in parallel and a
site that cannot be reached leaves the other's work unaffected.

Against the netns lab (examples/lab/sites.sh up 2 DIR; values from
DIR/sites.env):

  mecorch apply plans/lab-interconnect.lua \
    --var user=$LAB_USER --var key_file=$LAB_KEY \
    --var a_host=$SITE1_ADDR --var a_fp=$SITE1_FP --var a_root=$SITE1_ROOT \
    --var b_host=$SITE2_ADDR --var b_fp=$SITE2_FP --var b_root=$SITE2_ROOT

then, from the root namespace: ip netns exec $SITE1_NS ping 10.250.200.2
]]

local user = variable("user", { type = "string", description = "SSH login user on both sites" })
local key_file = variable("key_file", { type = "string", description = "private key file" })
local sudo = variable("sudo", {
  type = "boolean", default = true,
  description = "the login user is not root: change links through sudo -n",
})

local function site(tag)
  return {
    host = variable(tag .. "_host", { type = "string", description = "site " .. tag .. " sshd address" }),
    fp = variable(tag .. "_fp", { type = "string", description = "site " .. tag .. " host key, SHA256:..." }),
    root = variable(tag .. "_root", {
      type = "string", description = "site " .. tag .. " directory for the managed file and pidfile",
    }),
    dev = variable(tag .. "_dev", { type = "string", default = "eth0", description = "underlay device" }),
  }
end

local A, B = site("a"), site("b")

local vni = variable("vni", { type = "integer", default = 42, description = "VXLAN network id" })
local a_overlay = variable("a_overlay", { type = "string", default = "10.250.200.1/24" })
local b_overlay = variable("b_overlay", { type = "string", default = "10.250.200.2/24" })
local pkg = variable("package", {
  type = "string", default = "iproute2",
  description = "a package every site must have (installed through apt-get when missing)",
})

-- Where the in-tree modules come from: ../iac-modules by default, or this
-- project's own repository as a git source, e.g.
-- git+file:///src/mecorch//iac-modules?ref=<commit> (examples/pcei/run.sh
-- passes that when the modules' tree has no uncommitted changes).
local modules = variable("modules", {
  type = "string", default = "../iac-modules",
  description = "base of the in-tree modules: a path, or a git URL ending in //iac-modules[?ref=...]",
})
local function mod(path)
  local base, query = modules:match("^(.-)(%?.*)$")
  if not base then base, query = modules, "" end
  return base .. "/" .. path .. query
end

local host_module = mod("bare-metal/ssh-host")

local function site_module(name, s)
  return module(name, {
    source = host_module,
    inputs = {
      host = s.host, user = user, key_file = key_file, host_key_sha256 = s.fp, sudo = sudo,
      packages = { pkg },
      files = {
        motd = { path = s.root .. "/motd", content = "managed by mecorch: " .. name .. "\n", mode = "0644" },
      },
      services = {
        beacon = {
          command = "while :; do date +%s > " .. s.root .. "/beacon; sleep 5; done",
          pidfile = s.root .. "/beacon.pid",
          log = s.root .. "/beacon.log",
        },
      },
    },
  })
end

local site_a = site_module("site_a", A)
local site_b = site_module("site_b", B)

local link = module("overlay", {
  source = mod("interconnect/overlay"),
  inputs = {
    kind = "vxlan", vni = vni, user = user, key_file = key_file, sudo = sudo,
    a = { host = A.host, host_key_sha256 = A.fp, underlay = A.host, dev = A.dev, address = a_overlay },
    b = { host = B.host, host_key_sha256 = B.fp, underlay = B.host, dev = B.dev, address = b_overlay },
  },
})

output("overlay", link.links, { description = "link id on each end" })
output("beacons", { a = site_a.services.beacon, b = site_b.services.beacon },
  { description = "pid of each site's service" })
