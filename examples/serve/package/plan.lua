--[[
edge-echo - the plan of an application package (see docs/api.md,
"Application packages").  `mecorch serve` applies it to instantiate the
application in a zone, applies it again with another operational_state to
stop or start it, and destroys it to terminate it.

The server offers these variables; a package plan declares those it uses:
  zone               {id, name, latitude, longitude, countryCode?}
  domains            the zone's domains and their inputs (server config)
  app_instance_id    the MEC 010-2 application instance id
  app_instance_name  its name (or "")
  app_d_id           the AppD id
  tenant             the tenant that owns the instance
  operational_state  "STARTED" or "STOPPED" (declare it to support operate)

This package runs in zones whose `edge` domain is a labcloud
(examples/lab/labcloud.c): {"endpoint": "http://HOST:PORT", "token"?: "..."}.
]]

local zone = variable("zone", { type = "map", description = "the zone chosen for the instance" })
local domains = variable("domains", { type = "map", description = "the zone's domains and their inputs" })
local instance = variable("app_instance_id", { type = "string" })
local state = variable("operational_state", {
  type = "string", default = "STARTED", description = "STARTED or STOPPED",
})

local edge = domains.edge
if type(edge) ~= "table" or type(edge.endpoint) ~= "string" then
  error("zone " .. tostring(zone.id) .. " has no `edge` domain with an endpoint", 0)
end

local generic = "./modules/generic"

local app = module("app", {
  source = generic,
  inputs = {
    endpoint = edge.endpoint,
    token = edge.token,
    collection = "apps",
    objects = {
      [instance] = {
        image = "registry.lab.example/echo:1.0.0",
        zone = zone.id,
        replicas = state == "STARTED" and 1 or 0,
        state = state,
      },
    },
  },
})

module("dns", {
  source = generic,
  inputs = {
    endpoint = edge.endpoint,
    token = edge.token,
    collection = "dns",
    objects = {
      [instance] = { fqdn = instance .. "." .. zone.id .. ".lab.example", target = "app/" .. app.ids[instance] },
    },
  },
})

output("app_id", app.ids[instance], { description = "the application's object in the edge cloud" })
output("fqdn", instance .. "." .. zone.id .. ".lab.example")
