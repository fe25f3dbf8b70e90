-- bench: RSS of a Lua 5.4 process before and after N exchanges through
-- oauth2.token on one session (default 100,000), after a warm-up.
-- Usage: lua5.4 memory.lua URL [N]  (from the repository root)
package.path = "lua/?.lua;" .. package.path
package.cpath = "build/5.4/?.so;" .. package.cpath
local oauth2 = require "oauth2"

local url, n = arg[1], tonumber(arg[2]) or 100000

local function rss_kib()
    for line in io.lines("/proc/self/status") do
        local kib = line:match("^VmRSS:%s+(%d+)")
        if kib then return tonumber(kib) end
    end
end

local session = oauth2.session()
local opts = { token_url = url, client_id = "bench-id", client_secret = "bench-secret",
               session = session, retries = 0 }
local function run(count)
    for _ = 1, count do assert(oauth2.token(opts)) end
    collectgarbage()
    collectgarbage()
end
run(2000)
local before = rss_kib()
run(n)
local after = rss_kib()
session:close()
print(("RSS of a Lua 5.4 process: %d KiB after a 2,000-exchange warm-up, %d KiB after "
    .. "%d more exchanges: growth %d KiB."):format(before, after, n, after - before))
