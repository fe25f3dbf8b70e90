-- bench client: lua-oauth2, oauth2.token on a reused session (options
-- validated, form built, JSON decoded, errors mapped on every call).
-- Usage: lua5.4|luajit oauth2_lua.lua URL N [CA_FILE]  (from the repository root)
local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath
local oauth2 = require "oauth2"
local core = require "oauth2.core"

local url, n, ca = arg[1], tonumber(arg[2]), arg[3]
local session = oauth2.session()
local opts = { token_url = url, client_id = "bench-id", client_secret = "bench-secret",
               session = session, ca_file = ca, retries = 0 }
local started = core.now()
for _ = 1, n do
    local token, err = oauth2.token(opts)
    if not token then error(tostring(err)) end
end
print(("%.6f %d"):format(core.now() - started, n))
session:close()
