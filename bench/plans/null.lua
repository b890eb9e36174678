-- Benchmark plan: `count` independent resources of the null module.
local count = variable("count", { type = "integer", default = 10000 })
local payload = variable("payload", { type = "string", default = "x" })

local null = module("null", {
  source = "../modules/null",
  inputs = { count = count, payload = payload },
})

output("count", null.count)
