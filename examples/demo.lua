-- examples/demo.lua: fetch a token from the bundled fake ThousandEyes endpoint.
--
-- Run from the repository root with `make demo` (or `make demo
-- LUA_VERSION=luajit`).  It starts the fake endpoint on 127.0.0.1 over
-- HTTPS with a throwaway CA, fetches a token the way a script would
-- against https://api.thousandeyes.com, prints it redacted, and stops.
-- On a free port, or the one given (`make demo DEMO_PORT=8443`).

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;lua/?/init.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local oauth2 = require "oauth2"
local fake = require "server"

local port = tonumber(arg[1] or "")
if arg[1] and arg[1] ~= "" and not (port and port >= 1 and port <= 65535 and port % 1 == 0) then
    io.stderr:write("usage: demo.lua [PORT] (a TCP port from 1 to 65535)\n")
    os.exit(2)
end
local started, server = pcall(fake.start, port and { tls_port = port } or nil)
if not started then
    io.stderr:write("the fake endpoint did not start", port and " (is port " .. port
        .. " free?)" or "", ":\n", tostring(server), "\n")
    os.exit(1)
end
local ok, failure = pcall(function()
    print(("fake token endpoint: %s (HTTPS, CA %s)"):format(server.https_url, server.ca_file))
    local token, err = oauth2.token {
        host = server.https_url,
        ca_file = server.ca_file,
        client_id = server.client_id,
        client_secret = server.client_secret,
        scope = "tests:read",
    }
    if not token then
        print(tostring(err))
        return false
    end
    print(tostring(token))
    print(("expires_at: %s (%s UTC)"):format(token.expires_at,
        os.date("!%Y-%m-%d %H:%M:%S", token.expires_at)))
    print(("Authorization: %s %s..."):format(token.token_type, token.access_token:sub(1, 4)))
    return true
end)
server:stop()
if not ok then error(failure, 0) end
if not failure then os.exit(1) end
