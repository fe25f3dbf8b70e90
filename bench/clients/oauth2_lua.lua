-- bench client: lua-oauth2, a prepared endpoint (oauth2.endpoint: options
-- validated and the request built once, its own reused connection; the
-- answer decoded and checked, errors mapped, on every call).  With
-- ONESHOT=1 in the environment, oauth2.token(opts) per request instead:
-- the options checked, the request prepared and a connection opened and
-- closed on every call.
-- Usage: lua5.4|luajit oauth2_lua.lua URL N [CA_FILE]  (from the repository root)
local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath
local oauth2 = require "oauth2"
local core = require "oauth2.core"

local url, n, ca = arg[1], tonumber(arg[2]), arg[3]
local opts = { token_url = url, client_id = "bench-id", client_secret = "bench-secret",
               ca_file = ca, retries = 0 }
local started
if os.getenv("ONESHOT") then
    local token = oauth2.token
    started = core.now()
    for _ = 1, n do
        local ok, err = token(opts)
        if not ok then error(tostring(err)) end
    end
else
    local endpoint = oauth2.endpoint(opts)
    started = core.now()
    for _ = 1, n do
        local ok, err = endpoint:token()
        if not ok then error(tostring(err)) end
    end
    endpoint:close()
end
print(("%.6f %d"):format(core.now() - started, n))
