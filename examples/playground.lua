-- examples/playground.lua: the bundled fake ThousandEyes token endpoint
-- and API over HTTPS, with a throwaway CA, to try the library, the CLI
-- and the example nginx offline.
--
-- Run from the repository root with `make playground` (PORT=8443 by
-- default).  It prints the `export` lines that point everything at it,
-- then serves until Ctrl-C, and leaves nothing behind.
--
-- `make playground-nginx` (NGINX_PORT=8080) also starts nginx with
-- examples/nginx.conf, pointed at the playground's token endpoint and
-- API, and prints a curl line to try it.
--
-- To rehearse the API's refusals offline: /v7/alerts needs the scope
-- alerts:read (a token without it gets 403, as a real one without the
-- permission does), and `make playground API_LIMIT=N` answers 429 with
-- the organization's rate-limit headers past N API requests a minute.

-- the clone, by its full path: the printed lines and nginx work from anywhere
local root = io.popen("pwd"):read("*l")
local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
local interpreter = jit and "luajit" or "lua" .. build
package.path = root .. "/lua/?.lua;" .. root .. "/spec/support/?.lua;" .. package.path
package.cpath = root .. "/build/" .. build .. "/?.so;" .. package.cpath

local fake = require "server"
local transport = require "oauth2.transport"

local function port_of(text)
    local n = tonumber(text or "")
    return n and n >= 1 and n <= 65535 and n % 1 == 0 and n or nil
end
local port = port_of(arg[1])
local api_limit = arg[2] and arg[2] ~= "" and tonumber(arg[2]) or nil
local nginx_port = false
if arg[3] and arg[3] ~= "" then nginx_port = port_of(arg[3]) end
if not port or arg[2] and arg[2] ~= "" and not (api_limit and api_limit >= 1
        and api_limit % 1 == 0) or nginx_port == nil or nginx_port == port then
    io.stderr:write("usage: playground.lua PORT [API_LIMIT [NGINX_PORT]] (TCP ports from 1 "
        .. "to 65535, two different ones; API requests a minute before 429s)\n")
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
# (a throwaway CA; every answer is made up).  It also listens, on
# loopback only, at %s (its control) and %s (mutual TLS).
# In another shell:
export THOUSANDEYES_HOST=%s
export THOUSANDEYES_CA_FILE=%s
export THOUSANDEYES_CLIENT_ID=%s
export THOUSANDEYES_CLIENT_SECRET=%s
# or, for a User API token in place of the client credentials:
#   unset THOUSANDEYES_CLIENT_ID THOUSANDEYES_CLIENT_SECRET
#   export THOUSANDEYES_API_TOKEN=%s
# this clone's library and command-line tool, without installing them:
export LUA_PATH="%s/lua/?.lua;;" LUA_CPATH="%s/build/%s/?.so;;"
alias thousandeyes-token="%s %s/bin/thousandeyes-token"
# then, for instance:
#   thousandeyes-token api GET /v7/tests --paginate
#   %s -e 'print(require("oauth2").token {})'
# To rehearse refusals: /v7/alerts answers 403 to a token without the scope
# alerts:read (thousandeyes-token --scope alerts:read api GET /v7/alerts
# works); %s
# Ctrl-C stops it.
]]):format(host, server.http_url, server.mtls_url, host, server.ca_file, server.client_id,
    server.client_secret, API_TOKEN,
    root, root, build, interpreter, root, interpreter,
    api_limit and ("more than %d API requests a minute answer 429."):format(api_limit)
        or "make playground API_LIMIT=N answers 429 past N API requests a minute."))
io.stdout:flush()

-- nginx with the example configuration, pointed at the playground
local proxy, public
if nginx_port then
    local nginx = require "nginx"
    local shell = require "shell"
    -- the CA where nginx's workers can read it (a certificate is public)
    public = shell.temp_dir()
    shell.run(("chmod 755 %s && cp %s %s/ca.pem && chmod 644 %s/ca.pem"):format(
        shell.quote(public), shell.quote(server.ca_file), shell.quote(public),
        shell.quote(public)))
    local started, why = pcall(nginx.start, nginx.example(nginx_port,
        "127.0.0.1:" .. port, public .. "/ca.pem"), {
        THOUSANDEYES_HOST = host, THOUSANDEYES_CA_FILE = public .. "/ca.pem",
        THOUSANDEYES_CLIENT_ID = server.client_id,
        THOUSANDEYES_CLIENT_SECRET = server.client_secret })
    if not started then
        io.stderr:write("nginx did not start (is port ", nginx_port, " free? nginx and its lua "
            .. "module installed: sh .ci/deps dev):\n", tostring(why), "\n")
        server:stop()
        os.exit(1)
    end
    proxy = why
    -- one request through it: the token injected by nginx reaches the API
    local base = ("http://127.0.0.1:%d"):format(nginx_port)
    local status
    for _ = 1, 50 do
        local session = require("oauth2.core").session()
        local res = session:request { url = base .. "/v7/tests", timeout = 5 }
        session:close()
        status = res and res.status
        if status == 200 then break end
        transport.sleep(0.1)
    end
    io.stdout:write(([[
# nginx runs examples/nginx.conf on %s, its upstream the playground's API
# (GET /v7/tests through it just answered %s).  Try, from any shell:
curl -s %s/v7/tests
#   (nginx added "Authorization: Bearer ..."; the API answers 401 without it)
curl -s %s/oauth2-stats
#   (the shared token's counters; error.log: %s/logs/error.log)
]]):format(base, tostring(status), base, base, proxy.prefix))
    io.stdout:flush()
end

-- serve until interrupted (Ctrl-C raises in the loop), then clean up
pcall(function()
    while true do transport.sleep(1) end
end)
if proxy then proxy:stop() end
if public then os.execute("rm -rf '" .. public .. "'") end
server:stop()
io.stdout:write("# playground stopped\n")
