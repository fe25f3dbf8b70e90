-- bench/stats.lua: the statistics the benchmarks share.
local _M = {}

-- The median of a list of numbers (the lower middle one for an even
-- count); the list is left as it was.
function _M.median(list)
    local copy = {}
    for i, v in ipairs(list) do copy[i] = v end
    table.sort(copy)
    return copy[math.floor((#copy + 1) / 2)]
end

return _M
