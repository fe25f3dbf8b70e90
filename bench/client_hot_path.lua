-- bench/client_hot_path.lua: the cost of a cached client:token().
--
-- Side by side in one run: the cached hot path of oauth2.client with the
-- memory store and with the file store (shared by processes; the hot path
-- must not read the file), and the least any cache can do - a Lua table
-- lookup plus an os.time() expiry check.  Prints ns/call for each (median
-- of interleaved rounds) and the ratios.  Run with `make bench-client`
-- (Lua 5.4 and LuaJIT).  The token
-- comes from an injected session, so nothing touches the network.

local build = jit and "luajit" or _VERSION:match("%d+%.%d+")
package.path = "lua/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/" .. build .. "/?.so;" .. package.cpath

local oauth2 = require "oauth2"

local CALLS = tonumber(os.getenv("BENCH_CALLS")) or 5000000
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local clock = os.clock

-- A session that answers every request with a fresh one-hour token.
local canned = {
    request = function()
        return { status = 200, headers = {},
                 body = '{"access_token":"bench-token-0123456789","token_type":"Bearer",'
                     .. '"expires_in":3600}' }
    end,
}

local client = oauth2.client {
    client_id = "bench", client_secret = "bench-secret", session = canned,
}
assert(client:token())

-- the file store in a private temporary directory
local tmp = io.popen("mktemp -d"):read("*l")
local filed = oauth2.client {
    client_id = "bench", client_secret = "bench-secret-file", session = canned,
    store = tmp .. "/lua-oauth2",
}
assert(filed:token())

-- The baseline: a table lookup and an os.time() check.
local cache = { ["bench"] = { access_token = "bench-token", expires_at = os.time() + 3600 } }
local time = os.time
local function baseline(key)
    local entry = cache[key]
    if entry and time() < entry.expires_at then return entry end
    return nil
end

local function run_baseline(n)
    local started = clock()
    for _ = 1, n do
        if not baseline("bench") then error("baseline miss") end
    end
    return clock() - started
end

local function run_client(n, which)
    which = which or client
    local started = clock()
    for _ = 1, n do
        if not which:token() then error("client miss") end
    end
    return clock() - started
end

local median = require("stats").median

-- warm up (and let LuaJIT compile the loops)
run_baseline(CALLS / 10)
run_client(CALLS / 10)
run_client(CALLS / 10, filed)

local base_times, client_times, file_times = {}, {}, {}
for round = 1, ROUNDS do
    -- alternate the order so none always runs on a warmer machine
    if round % 2 == 1 then
        base_times[round] = run_baseline(CALLS)
        client_times[round] = run_client(CALLS)
        file_times[round] = run_client(CALLS, filed)
    else
        file_times[round] = run_client(CALLS, filed)
        client_times[round] = run_client(CALLS)
        base_times[round] = run_baseline(CALLS)
    end
end
os.execute("rm -rf '" .. tmp .. "'")

local base_ns = median(base_times) / CALLS * 1e9
local client_ns = median(client_times) / CALLS * 1e9
local file_ns = median(file_times) / CALLS * 1e9
local interpreter = jit and jit.version or _VERSION
print(("| %s | %.1f | %.1f | %.1f | %.2fx | %.2fx |"):format(interpreter, client_ns, file_ns,
    base_ns, client_ns / base_ns, file_ns / base_ns))
