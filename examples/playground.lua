-- examples/playground.lua: the bundled fake ThousandEyes token endpoint
-- and API over HTTPS, with a throwaway CA, to try the library, the CLI
-- and the example nginx offline.
--
-- Run from the repository root with `make playground` (PORT=8443 by
-- default).  It prints the `export` lines that point everything at it,
-- then serves until Ctrl-C, and leaves nothing behind.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local fake = require "server"
local transport = require "oauth2.transport"

local port = tonumber(arg[1] or "")
if not port or port < 1 or port > 65535 or port % 1 ~= 0 then
    io.stderr:write("usage: playground.lua PORT (a TCP port from 1 to 65535)\n")
    os.exit(2)
end

-- a User API token the fake API accepts, as if made in the dashboard
local API_TOKEN = "playground-user-api-token"

local ok, server = pcall(fake.start, { tls_port = port })
if not ok then
    io.stderr:write("the playground did not start (is port ", port, " free?):\n",
        tostring(server), "\n")
    os.exit(1)
end
server:control { api_tokens = { API_TOKEN } }

local host = ("https://127.0.0.1:%d"):format(port)
io.stdout:write(([[
# lua-oauth2 playground: the fake token endpoint and API at %s
# (a throwaway CA; every answer is made up).  In another shell:
export THOUSANDEYES_HOST=%s
export THOUSANDEYES_CA_FILE=%s
export THOUSANDEYES_CLIENT_ID=%s
export THOUSANDEYES_CLIENT_SECRET=%s
# or, for a User API token in place of the client credentials:
#   unset THOUSANDEYES_CLIENT_ID THOUSANDEYES_CLIENT_SECRET
#   export THOUSANDEYES_API_TOKEN=%s
# then, for instance:
#   thousandeyes-token api GET /v7/tests --paginate
#   lua5.4 -e 'print(require("oauth2").token {})'
#   nginx -c examples/nginx.conf (its env lines pass these variables on)
# Ctrl-C stops it.
]]):format(host, host, server.ca_file, server.client_id, server.client_secret, API_TOKEN))
io.stdout:flush()

-- serve until interrupted (Ctrl-C raises in the loop), then clean up
pcall(function()
    while true do transport.sleep(1) end
end)
server:stop()
io.stdout:write("# playground stopped\n")
