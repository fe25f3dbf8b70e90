-- oauth2.json: JSON for API bodies, with empty arrays that stay arrays.
--
--   client:request("PUT", "/v7/tests/http-server/1",
--       { json = { alertRules = oauth2.empty_array } })
--
-- A Lua table cannot tell `[]` from `{}`, and lua-cjson writes an empty
-- table as `{}`, which the API refuses where its description says array
-- (alertRules, labels, sharedWithAccounts, headers...).  Two ways out,
-- the ones OpenResty's lua-cjson (2.1.0.x) has built in:
--
-- * `empty_array`, a value written as `[]`;
-- * `array_mt`, a metatable that marks a table as an array: written as
--   `[]` when empty.  Decoded API answers mark every array with it, so a
--   GET, modify, PUT round trip keeps its empty arrays.
--
-- Where the lua-cjson in use has them (OpenResty's, LuaRocks' 2.1.0.x),
-- they are its own and it does the work.  Where it has not (Debian's
-- 2.1.0 for Lua 5.1-5.4), this module does the same around it: empty
-- arrays are swapped for a placeholder string no answer holds, then
-- swapped back, so every install behaves alike.

local cjson_base = require "cjson.safe"
local core = require "oauth2.core"

local type, next, pairs, setmetatable, getmetatable =
      type, next, pairs, setmetatable, getmetatable
local find, sub, gsub, format = string.find, string.sub, string.gsub, string.format
local concat, floor, error = table.concat, math.floor, error

local _M = { _VERSION = core._VERSION }

-- A lua-cjson instance of our own: its settings are not the caller's.
local cjson = cjson_base.new()

-- Whether this lua-cjson keeps arrays by itself.
local native = cjson.empty_array ~= nil and cjson.array_mt ~= nil
    and type(cjson.decode_array_with_array_mt) == "function"
_M.native = native

if native then
    cjson.decode_array_with_array_mt(true)
    _M.empty_array = cjson.empty_array
    _M.array_mt = cjson.array_mt
else
    _M.array_mt = { __name = "oauth2.array" }
    _M.empty_array = setmetatable({}, {
        __name = "oauth2.empty_array",
        __tostring = function() return "oauth2.empty_array" end,
        __newindex = function() error("oauth2.empty_array cannot hold values", 2) end,
    })
end

local empty_array, array_mt = _M.empty_array, _M.array_mt

-- Tables deeper than this are refused (cjson's own default limit).
local MAX_DEPTH = 1000

-- A string no server writes and no caller sends: what an empty array
-- stands in for while lua-cjson, which cannot write one, does the rest.
local PLACEHOLDER = format("\1oauth2-empty-array-%08x%08x",
    floor(core.random() * 2 ^ 32), floor(core.random() * 2 ^ 32))
local QUOTED = '"' .. gsub(PLACEHOLDER, "\1", "\\u0001") .. '"'
-- ... as a pattern that matches it literally
local QUOTED_PATTERN = gsub(QUOTED, "%p", "%%%0")

-- Whether `value` is written as an empty array.
local function is_empty_array(value)
    return value == empty_array or getmetatable(value) == array_mt and next(value) == nil
end

-- `value` with every empty array swapped for the placeholder: the same
-- table when it holds none (nothing is copied), else a copy.  Or nil and
-- why (too deep: a cycle, most likely).
local function swap_out(value, depth)
    if type(value) ~= "table" then return value end
    if is_empty_array(value) then return PLACEHOLDER end
    if depth > MAX_DEPTH then return nil, "tables nested too deeply (a cycle?)" end
    local copy
    for k, v in pairs(value) do
        if type(v) == "table" then
            local swapped, why = swap_out(v, depth + 1)
            if swapped == nil then return nil, why end
            if swapped ~= v then
                if not copy then
                    copy = {}
                    for k2, v2 in pairs(value) do copy[k2] = v2 end
                end
                copy[k] = swapped
            end
        end
    end
    return copy or value
end

--- The JSON text of `value`, empty arrays written as `[]`; or nil and why.
function _M.encode(value)
    if native then return cjson.encode(value) end
    local swapped, why = swap_out(value, 0)
    if swapped == nil then return nil, why end
    if swapped == PLACEHOLDER then return "[]" end
    local text
    text, why = cjson.encode(swapped)
    if not text then return nil, why end
    if swapped ~= value then text = gsub(text, QUOTED_PATTERN, "[]") end
    return text
end

-- Every placeholder in a decoded value turned back into an empty array
-- (a table marked with array_mt).
local function swap_in(value)
    for k, v in pairs(value) do
        if v == PLACEHOLDER then
            value[k] = setmetatable({}, array_mt)
        elseif type(v) == "table" then
            swap_in(v)
        end
    end
end

-- The text with every empty array outside strings written as the
-- placeholder; nil when it has none.
local function mark_empty_arrays(text)
    if not find(text, "%[%s*%]") then return nil end
    local out, n, from, changed = {}, 0, 1, false
    local i = 1
    while true do
        local at = find(text, '["%[]', i)
        if not at then break end
        if sub(text, at, at) == '"' then
            -- skip the string, escapes and all
            local j = at + 1
            while true do
                local stop = find(text, '["\\]', j)
                if not stop then return nil end -- unterminated: cjson will say so
                if sub(text, stop, stop) == "\\" then
                    j = stop + 2
                else
                    i = stop + 1
                    break
                end
            end
        else
            local _, close = find(text, "^%[%s*%]", at)
            if close then
                n = n + 1
                out[n] = sub(text, from, at - 1)
                n = n + 1
                out[n] = QUOTED
                from, changed = close + 1, true
                i = close + 1
            else
                i = at + 1
            end
        end
    end
    if not changed then return nil end
    out[n + 1] = sub(text, from)
    return concat(out)
end

--- The value of a JSON text, every array marked with array_mt where the
-- lua-cjson in use can, and every empty one (a table marked with
-- array_mt) everywhere; or nil and why.
function _M.decode(text)
    if native then return cjson.decode(text) end
    local marked = mark_empty_arrays(text)
    local value, why = cjson.decode(marked or text)
    if value == nil then return nil, why end
    if marked then
        if value == PLACEHOLDER then return setmetatable({}, array_mt) end
        if type(value) == "table" then swap_in(value) end
    end
    return value
end

return _M
