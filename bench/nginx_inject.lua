-- bench/nginx_inject.lua: throughput of a location that injects the token
-- from the shared dict, against the same location without injection.
--
-- Run with `make bench-nginx`.  Starts the fake token endpoint and nginx
-- (two workers) on 127.0.0.1, warms the token, then runs wrk against
-- /inject and /plain in alternating rounds and prints the medians and
-- their ratio as a markdown table row.

package.path = "lua/?.lua;spec/support/?.lua;" .. package.path
package.cpath = "build/luajit/?.so;" .. package.cpath

local fake = require "server"
local nginx = require "nginx"
local shell = require "shell"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3
local SECONDS = tonumber(os.getenv("BENCH_SECONDS")) or 5
local CONNECTIONS = tonumber(os.getenv("BENCH_CONNECTIONS")) or 32

local function slurp(path)
    return assert(shell.read_file(path))
end

-- wrk's requests per second for one URL.
local function wrk(url)
    local code, out = shell.run(("wrk -t1 -c%d -d%ds %s"):format(CONNECTIONS, SECONDS, url))
    assert(code == 0, out)
    local errors = out:match("Non%-2xx or 3xx responses: (%d+)")
    assert(not errors, "wrk saw failing responses:\n" .. out)
    return assert(tonumber(out:match("Requests/sec:%s+([%d%.]+)")), out)
end

local function median(list)
    table.sort(list)
    return list[math.floor((#list + 1) / 2)]
end

local server = fake.start()
local port, upstream = nginx.free_port(), nginx.free_port()
local proxy
local ok, failure = pcall(function()
    proxy = nginx.start(nginx.fill(slurp("bench/nginx_inject.conf"), {
        USER = nginx.user_line(), ROOT = nginx.root, PORT = port,
        UPSTREAM_PORT = upstream, TOKEN_HOST = server.http_url,
    }))
    local base = "http://127.0.0.1:" .. port
    -- the first request fetches the token; after that it is in the dict
    assert(shell.run("curl -sf -o /dev/null " .. base .. "/inject") == 0, "warm-up failed")
    local inject, plain = {}, {}
    for round = 1, ROUNDS do
        if round % 2 == 1 then
            inject[round] = wrk(base .. "/inject")
            plain[round] = wrk(base .. "/plain")
        else
            plain[round] = wrk(base .. "/plain")
            inject[round] = wrk(base .. "/inject")
        end
    end
    local a, b = median(inject), median(plain)
    print("| location | req/s (median of " .. ROUNDS .. ") |")
    print("| --- | --- |")
    print(("| /inject (token from the shared dict) | %.0f |"):format(a))
    print(("| /plain (no injection) | %.0f |"):format(b))
    print(("\nratio inject/plain: %.3f (token requests: %d)"):format(a / b,
        server:stats().token_requests))
end)
if proxy then proxy:stop() end
server:stop()
if not ok then error(failure, 0) end
