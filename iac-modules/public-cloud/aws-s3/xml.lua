--[[
xml.lua - the little XML this module reads and writes: S3 answers are
small documents whose few interesting elements hold text, so string
patterns suffice.  Not a general XML parser: no CDATA, comments or
namespaces prefixes on the elements looked for.
]]

local M = {}

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }

---@param s string text with XML character and entity references
---@return string
function M.unescape(s)
  return (string.gsub(s, "&(#?x?)(%w+);", function(kind, name)
    if kind == "" then
      return ENTITIES[name]
    end
    local n = tonumber(name, kind == "#x" and 16 or 10)
    return n and utf8.char(n) or nil
  end))
end

---@param s string
---@return string the text escaped for element content and attributes
function M.escape(s)
  return (string.gsub(s, "[<>&\"']", function(c)
    return string.format("&#%d;", string.byte(c))
  end))
end

-- <tag> or <tag attr...>, but not <tagOther>.
local function open_pattern(tag)
  return "<" .. tag .. "%f[%s>][^>]*>"
end

---@param body string|nil
---@param tag string
---@return string|nil the unescaped text inside the first <tag>...</tag>
function M.first(body, tag)
  if type(body) ~= "string" then
    return nil
  end
  local inner = string.match(body, open_pattern(tag) .. "(.-)</" .. tag .. ">")
  return inner and M.unescape(inner) or nil
end

---@param body string|nil
---@param tag string
---@return function iterator over the raw (still escaped) inner text of each <tag>
function M.each(body, tag)
  if type(body) ~= "string" then
    return function() return nil end
  end
  return string.gmatch(body, open_pattern(tag) .. "(.-)</" .. tag .. ">")
end

return M
