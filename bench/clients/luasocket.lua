-- bench client: LuaSocket's socket.http (ssl.https from LuaSec for TLS) and
-- lua-cjson.  socket.http closes the connection after every request: it
-- cannot reuse one.  Usage: lua5.4 luasocket.lua URL N [CA_FILE]
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson"

local url, n, ca = arg[1], tonumber(arg[2]), arg[3]
local form = "grant_type=client_credentials&client_id=bench-id&client_secret=bench-secret"
local request = http.request
http.TIMEOUT = 10
if url:match("^https:") then
    local https = require "ssl.https"
    https.TIMEOUT = 10
    request = https.request
end

local started = socket.gettime()
for _ = 1, n do
    local body = {}
    local ok, status = request {
        url = url, method = "POST",
        source = ltn12.source.string(form),
        sink = ltn12.sink.table(body),
        headers = { ["content-type"] = "application/x-www-form-urlencoded",
                    ["content-length"] = tostring(#form), accept = "application/json" },
        cafile = ca, verify = ca and "peer" or nil, protocol = ca and "any" or nil,
    }
    assert(ok and status == 200, tostring(status))
    assert(cjson.decode(table.concat(body)).access_token)
end
print(("%.6f %d"):format(socket.gettime() - started, n))
