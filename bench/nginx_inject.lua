-- bench/nginx_inject.lua: oauth2.openresty inside a real nginx.
--
-- Run with `make bench-nginx`.  Starts the fake token endpoint, the fault
-- server and nginx on 127.0.0.1 and measures, as markdown:
--   1. throughput of a location that injects the token from the shared
--      dict against the same location without injection (wrk, interleaved
--      rounds, medians), with 2 and with 4 workers;
--   2. the latency of one token fetch inside nginx, stepped and in a
--      thread pool, against plain LuaJIT, for endpoints answering after
--      0, 5 and 50 ms (medians);
--   3. with a token endpoint that never answers, the latency percentiles
--      of requests that get no token (they must end near wait_timeout);
--   4. with the Redis store (a fleet node; redis-server on loopback):
--      injection throughput against the same location without injection,
--      and the latency of a cold start that finds the token in Redis
--      against one that fetches it.

package.path = "lua/?.lua;spec/support/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/luajit/?.so;" .. package.cpath

local fake = require "server"
local redis_server = require "redis"
local nginx = require "nginx"
local shell = require "shell"
local oauth2 = require "oauth2"
local ffi = require "ffi"

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 11
local SECONDS = tonumber(os.getenv("BENCH_SECONDS")) or 3
local CONNECTIONS = tonumber(os.getenv("BENCH_CONNECTIONS")) or 32
local WAIT_TIMEOUT = 1
-- BENCH_ONLY=redis runs the Redis store's part alone, BENCH_ONLY=inject
-- the first part alone (for before/after runs of two trees in turn)
local ONLY = os.getenv("BENCH_ONLY")

ffi.cdef "typedef struct { long sec; long nsec; } bench_ts; int clock_gettime(int, bench_ts *);"
local ts = ffi.new("bench_ts")
local function now()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local function slurp(path)
    return assert(shell.read_file(path))
end

local median = require("stats").median

-- wrk's output for one URL.
local function wrk(url, args)
    local code, out = shell.run(("wrk -t1 -c%d -d%ds %s %s"):format(CONNECTIONS, SECONDS,
        args or "", url))
    assert(code == 0, out)
    return out
end

-- wrk's requests per second, all answers 2xx.
local function rate(url)
    local out = wrk(url)
    assert(not out:match("Non%-2xx or 3xx responses: (%d+)"), "failing responses:\n" .. out)
    return assert(tonumber(out:match("Requests/sec:%s+([%d%.]+)")), out)
end

-- A duration wrk prints ("12.3ms", "1.01s", "900us") in milliseconds.
local function millis(text)
    local number, unit = text:match("([%d%.]+)(%a+)")
    local scale = { us = 0.001, ms = 1, s = 1000, m = 60000 }
    return tonumber(number) * scale[unit]
end

local function get(url)
    local code, out = shell.run("curl -sf " .. shell.quote(url))
    assert(code == 0, "GET " .. url .. " failed: " .. out)
    return out
end

-- ROUNDS rounds of wrk over each of `paths` (under base), in turn and in
-- reverse order on every other round, so drift hits them alike; the
-- req/s of each path by round.
local function interleaved(base, paths)
    local rates = {}
    for _, path in ipairs(paths) do rates[path] = {} end
    for round = 1, ROUNDS do
        for i = 1, #paths do
            local path = paths[round % 2 == 1 and i or #paths + 1 - i]
            rates[path][round] = rate(base .. path)
        end
    end
    return rates
end

local server = fake.start()
local faults = fake.start_faults()
local redis = redis_server.start()

-- Start nginx with `workers`, run fn(base), stop it.
local function with_nginx(workers, fn)
    local port, upstream = nginx.free_port(), nginx.free_port()
    local proxy
    local ok, failure = pcall(function()
        proxy = nginx.start(nginx.fill(slurp("bench/nginx_inject.conf"), {
            USER = nginx.user_line(), ROOT = nginx.root, PORT = port, WORKERS = workers,
            UPSTREAM_PORT = upstream, TOKEN_HOST = server.http_url,
            SILENT_URL = faults.url("silent"), WAIT_TIMEOUT = WAIT_TIMEOUT,
            REDIS_URL = redis.url,
        }))
        fn("http://127.0.0.1:" .. port)
    end)
    if proxy then proxy:stop() end
    if not ok then error(failure, 0) end
end

local ok, failure = pcall(function()
  if ONLY ~= "redis" then
    print("## Injection throughput (median of " .. ROUNDS .. " interleaved rounds, wrk -c"
        .. CONNECTIONS .. ", " .. SECONDS .. " s each)\n")
    print("| workers | /inject req/s | /plain req/s | ratio of medians | median of paired ratios "
        .. "| empty access_by_lua / plain, paired |")
    print("| --- | --- | --- | --- | --- | --- |")
    for _, workers in ipairs { 2, 4 } do
        with_nginx(workers, function(base)
            -- the first request fetches the token; after that it is in the dict
            get(base .. "/inject")
            local rates = interleaved(base, { "/inject", "/plain", "/empty-lua" })
            local inject, plain, empty = rates["/inject"], rates["/plain"], rates["/empty-lua"]
            -- this machine's speed swings between rounds: the ratio of each
            -- round's pair, run back to back, is steadier than a ratio of medians
            local pairs_inject, pairs_empty = {}, {}
            for round = 1, ROUNDS do
                pairs_inject[round] = inject[round] / plain[round]
                pairs_empty[round] = empty[round] / plain[round]
            end
            local a, b = median(inject), median(plain)
            print(("| %d | %.0f | %.0f | %.3f | %.3f | %.3f |"):format(workers, a, b, a / b,
                median(pairs_inject), median(pairs_empty)))
        end)
    end
    if ONLY == "inject" then return end

    print("\n## Fetch latency, median ms per token fetch\n")
    print("| endpoint delay | plain LuaJIT | nginx, stepped | nginx, thread pool |")
    print("| --- | --- | --- | --- |")
    with_nginx(2, function(base)
        for _, case in ipairs { { 0, 200 }, { 5, 60 }, { 50, 15 } } do
            local ms, n = case[1], case[2]
            local url = base .. "/slow-token?ms=" .. ms
            local times = {}
            for i = 1, n do
                local started = now()
                assert(oauth2.token { token_url = url, client_id = "id",
                                      client_secret = "secret-x", retries = 0 })
                times[i] = (now() - started) * 1000
            end
            local step = tonumber(get(("%s/fetch-latency?ms=%d&n=%d&mode=step")
                :format(base, ms, n)))
            local thread = tonumber(get(("%s/fetch-latency?ms=%d&n=%d&mode=thread")
                :format(base, ms, n)))
            print(("| %d ms | %.2f | %.2f | %.2f |"):format(ms, median(times), step, thread))
        end

        print("\n## A token endpoint that never answers (wait_timeout = " .. WAIT_TIMEOUT
            .. " s, wrk -c200, 5 s)\n")
        local _, out = shell.run(("wrk -t1 -c200 -d5s --timeout 10s --latency %s/outage")
            :format(base))
        local p50, p99 = out:match("50%%%s+(%S+)"), out:match("99%%%s+(%S+)")
        local count = out:match("(%d+) requests in")
        print("| requests | p50 | p99 | target p99 |")
        print("| --- | --- | --- | --- |")
        print(("| %s | %.0f ms | %.0f ms | under %d ms |"):format(count, millis(p50),
            millis(p99), WAIT_TIMEOUT * 1000 + 100))
    end)
  end

    print("\n## The Redis store (a fleet node, 2 workers)\n")
    print("| /inject-redis req/s | /inject req/s (no store) | /plain req/s | redis / plain, "
        .. "paired | no store / plain, paired | redis / no store, paired |")
    print("| --- | --- | --- | --- | --- | --- |")
    with_nginx(2, function(base)
        get(base .. "/inject-redis")
        get(base .. "/inject")
        local rates = interleaved(base, { "/inject-redis", "/inject", "/plain" })
        local redis_rates, inject, plain = rates["/inject-redis"], rates["/inject"],
            rates["/plain"]
        local to_plain, inject_plain, to_inject = {}, {}, {}
        for round = 1, ROUNDS do
            to_plain[round] = redis_rates[round] / plain[round]
            inject_plain[round] = inject[round] / plain[round]
            to_inject[round] = redis_rates[round] / inject[round]
        end
        print(("| %.0f | %.0f | %.0f | %.3f | %.3f | %.3f |"):format(median(redis_rates),
            median(inject), median(plain), median(to_plain), median(inject_plain),
            median(to_inject)))

        print("\n| cold start (median of 100, ms) | token found in Redis | token fetched "
            .. "(fake endpoint, no delay) |")
        print("| --- | --- | --- |")
        local found = tonumber(get(base .. "/cold-start?n=100&mode=redis"))
        local fetched = tonumber(get(base .. "/cold-start?n=100&mode=fetch"))
        print(("| header() with an empty dict | %.2f | %.2f |"):format(found, fetched))
    end)
    print(("\ntoken requests to the fake endpoint: %d"):format(server:stats().token_requests))
end)
redis:stop()
faults:stop()
server:stop()
if not ok then error(failure, 0) end
