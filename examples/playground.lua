-- examples/playground.lua: the bundled fake ThousandEyes token endpoint
-- and API over HTTPS, with a throwaway CA, to try the library, the CLI
-- and the example nginx offline.
--
-- Run from the repository root with `make playground` (PORT=8443 by
-- default).  It prints the `export` lines that point everything at it,
-- then serves until Ctrl-C, and leaves nothing behind.
--
-- To rehearse the API's refusals offline: /v7/alerts needs the scope
-- alerts:read (a token without it gets 403, as a real one without the
-- permission does), and `make playground API_LIMIT=N` answers 429 with
-- the organization's rate-limit headers past N API requests a minute.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local fake = require "server"
local transport = require "oauth2.transport"

local port = tonumber(arg[1] or "")
local api_limit = arg[2] and arg[2] ~= "" and tonumber(arg[2]) or nil
if not port or port < 1 or port > 65535 or port % 1 ~= 0
        or arg[2] and arg[2] ~= "" and not (api_limit and api_limit >= 1 and api_limit % 1 == 0)
        then
    io.stderr:write("usage: playground.lua PORT [API_LIMIT] (a TCP port from 1 to 65535; "
        .. "API requests a minute before 429s)\n")
    os.exit(2)
end

-- the scope a path needs: a token without it gets 403
local SCOPES = { ["/v7/alerts"] = "alerts:read" }

-- a User API token the fake API accepts, as if made in the dashboard
local API_TOKEN = "playground-user-api-token"

local ok, server = pcall(fake.start, { tls_port = port })
if not ok then
    io.stderr:write("the playground did not start (is port ", port, " free?):\n",
        tostring(server), "\n")
    os.exit(1)
end
server:control { api_tokens = { API_TOKEN }, api_scopes = SCOPES, api_limit = api_limit }

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
# To rehearse refusals: /v7/alerts answers 403 to a token without the scope
# alerts:read (thousandeyes-token --scope alerts:read api GET /v7/alerts
# works); %s
# Ctrl-C stops it.
]]):format(host, host, server.ca_file, server.client_id, server.client_secret, API_TOKEN,
    api_limit and ("more than %d API requests a minute answer 429."):format(api_limit)
        or "make playground API_LIMIT=N answers 429 past N API requests a minute."))
io.stdout:flush()

-- serve until interrupted (Ctrl-C raises in the loop), then clean up
pcall(function()
    while true do transport.sleep(1) end
end)
server:stop()
io.stdout:write("# playground stopped\n")
