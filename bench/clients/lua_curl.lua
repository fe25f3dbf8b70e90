-- bench client: Debian's lua-curl binding (Lua 5.1), one reused easy handle,
-- lua-cjson to decode.  Usage: lua5.1 lua_curl.lua URL N [CA_FILE]
local curl = require "curl"
local cjson = require "cjson"

local url, n, ca = arg[1], tonumber(arg[2]), arg[3]
local form = "grant_type=client_credentials&client_id=bench-id&client_secret=bench-secret"
local easy = curl.easy_init()
local chunks = {}
easy:setopt(curl.OPT_URL, url)
easy:setopt(curl.OPT_POSTFIELDS, form)
easy:setopt(curl.OPT_HTTPHEADER, { "Content-Type: application/x-www-form-urlencoded",
                                   "Accept: application/json" })
easy:setopt(curl.OPT_WRITEFUNCTION, function(data)
    chunks[#chunks + 1] = data
    return #data
end)
if ca then easy:setopt(curl.OPT_CAINFO, ca) end

-- Lua 5.1 has no wall clock finer than seconds: ask date(1), once each end
local wall = io.popen("date +%s.%N"):read("*l")
for _ = 1, n do
    chunks = {}
    easy:perform()
    local token = cjson.decode(table.concat(chunks))
    assert(token.access_token)
end
local finished = io.popen("date +%s.%N"):read("*l")
print(("%.6f %d"):format(tonumber(finished) - tonumber(wall), n))
