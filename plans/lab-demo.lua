--[[
lab-demo - a small deployment against the local lab cloud (labcloud):
a network, servers attached to it, and DNS records that point at the
servers.  Three instances of one module, wired by references: a server
needs the network's id, a record needs its server's id, so mecorch creates
them in that order and in parallel within each level.

  mecorch apply plans/lab-demo.lua --var endpoint=http://127.0.0.1:PORT
]]

local endpoint = variable("endpoint", {
  type = "string", description = "labcloud base URL",
})
local servers = variable("servers", {
  type = "integer", default = 3, description = "how many servers",
})
local size = variable("size", {
  type = "string", default = "small", description = "server size",
})
local zone = variable("zone", {
  type = "string", default = "lab.example", description = "DNS zone of the records",
})

-- Where the module comes from: the in-tree folder by default; scripts/demo
-- passes the project's own repository as a git source pinned to a commit.
local generic = variable("module_source", {
  type = "string", default = "../iac-modules/lab/generic",
  description = "source of the lab/generic module (path or git URL)",
})

local net = module("network", {
  source = generic,
  inputs = {
    endpoint = endpoint,
    collection = "networks",
    objects = { edge = { cidr = "10.20.0.0/24", vlan = 120 } },
  },
})

local server_objects = {}
for i = 1, servers do
  server_objects["srv" .. i] = { size = size, network_id = net.ids.edge, index = i }
end
local srv = module("servers", {
  source = generic,
  inputs = { endpoint = endpoint, collection = "servers", objects = server_objects },
})

local records = {}
for i = 1, servers do
  local name = "srv" .. i
  records[name] = { fqdn = name .. "." .. zone, target = "server/" .. srv.ids[name] }
end
module("dns", {
  source = generic,
  inputs = { endpoint = endpoint, collection = "dns", objects = records },
})

output("network_id", net.ids.edge, { description = "id of the edge network" })
output("server_ids", srv.ids, { description = "server name -> id" })
output("first_server_url", "http://" .. "lab/" .. srv.ids.srv1)
