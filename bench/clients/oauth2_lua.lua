-- bench client: lua-oauth2, a prepared endpoint (oauth2.endpoint: options
-- validated and the request built once, its own reused connection; the
-- answer decoded and checked, errors mapped, on every call).
-- Usage: lua5.4|luajit oauth2_lua.lua URL N [CA_FILE]  (from the repository root)
local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath
local oauth2 = require "oauth2"
local core = require "oauth2.core"

local url, n, ca = arg[1], tonumber(arg[2]), arg[3]
local endpoint = oauth2.endpoint { token_url = url, client_id = "bench-id",
                                  client_secret = "bench-secret", ca_file = ca, retries = 0 }
local started = core.now()
for _ = 1, n do
    local token, err = endpoint:token()
    if not token then error(tostring(err)) end
end
print(("%.6f %d"):format(core.now() - started, n))
endpoint:close()
