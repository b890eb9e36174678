-- Benchmark plan: `count` independent objects of lab/generic in labcloud.
local endpoint = variable("endpoint", { type = "string", description = "labcloud base URL" })
local count = variable("count", { type = "integer", default = 1000 })

local objects = {}
for i = 1, count do
  objects["o" .. i] = { index = i }
end

module("objects", {
  source = "../../iac-modules/lab/generic",
  inputs = { endpoint = endpoint, collection = "bench", objects = objects },
})
