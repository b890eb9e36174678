--[[
null - a module that does nothing, for benchmarks of the core.

`count` resources of type `thing`, named t1..tN, with small props.  create
returns a deterministic id derived from the name (no I/O, no randomness),
read returns the props it was given, update and delete do nothing.  What a
plan or apply of this module costs is the cost of mecorch itself: plan
loading, the sandbox, the planner, the executor, the state store.

Plain Lua 5.4 for mecorch's sandbox.
]]

return {
  name = "bench/null",
  version = "1.0.0",

  inputs = {
    count = { type = "integer", default = 10, description = "how many things" },
    payload = { type = "string", default = "x", description = "a prop copied into every thing" },
  },

  resources = {
    thing = {
      ---@param ctx table
      ---@param props table {name, index, payload}
      ---@return string id, table outputs
      create = function(ctx, props)
        local id = "null-" .. props.name
        return id, { id = id, index = props.index }
      end,

      ---@param ctx table
      ---@param id string|nil
      ---@param props table
      ---@return table|nil props_now, table|nil outputs
      read = function(ctx, id, props)
        if id == nil then
          return nil
        end
        return props, { id = id, index = props.index }
      end,

      ---@param ctx table
      ---@param id string
      ---@param old table
      ---@param new table
      ---@return table outputs
      update = function(ctx, id, old, new)
        return { id = id, index = new.index }
      end,

      ---@param ctx table
      ---@param id string
      ---@param props table
      delete = function(ctx, id, props)
      end,
    },
  },

  ---@param inputs table {count, payload}
  ---@param m table the declaration API
  declare = function(inputs, m)
    for i = 1, inputs.count do
      m.resource("thing", "t" .. i, { name = "t" .. i, index = i, payload = inputs.payload })
    end
    m.output("count", inputs.count)
  end,
}
